//! The engine's state out and back in: the changes a checkpoint writes
//! (`drain_changes`, `meta`), rebuilding an engine from them (`restore`),
//! and the `replay --snapshot` rows. Reads and rebuilds state; it must not
//! emit derived events or fire timers.

use std::sync::Arc;

use serde::Serialize;

use super::state::Customer;
use super::Engine;
use crate::model::{ChurnLevel, EventTime, JourneyStage};
use crate::signals::config::EngineConfig;
use crate::time::timers::{self, TimerKind};
use crate::time::watermark::Watermark;

/// One line of `replay --snapshot`: a customer's state at the final watermark.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SnapshotRow {
    /// The customer.
    pub customer_id: String,
    /// Score at the customer's newest event.
    pub engagement_score: f64,
    /// Journey stage.
    pub stage: Option<JourneyStage>,
    /// Churn level.
    pub churn_level: ChurnLevel,
    /// p_alive at the final watermark (or the customer's clock if later).
    pub p_alive: Option<f64>,
    /// Number of orders.
    pub orders: u32,
    /// First order time.
    pub first_order_at: Option<EventTime>,
    /// Last order time.
    pub last_order_at: Option<EventTime>,
    /// Last own touch.
    pub last_activity_at: Option<EventTime>,
    /// Channels of own touches in the 30 d before the newest event, sorted.
    pub channels: crate::model::ChannelSet,
    /// Predicted customer lifetime value at the final watermark (or the
    /// customer's clock if later); null before a first order.
    pub predicted_clv: Option<f64>,
    /// Expected orders over the CLV horizon, likewise.
    pub expected_orders: Option<f64>,
}

/// One change of a partition's state, for the changelog.
#[derive(Debug, Clone, PartialEq)]
pub enum StateChange {
    /// The customer's state now.
    Upsert(Customer),
    /// The customer was evicted; `slot` is the changelog slot to record
    /// the deletion in (the one not holding its last state).
    Delete {
        /// The customer.
        id: Arc<str>,
        /// Changelog slot (1 or 2).
        slot: u8,
    },
}

/// The changelog slot after `slot` (1 ↔ 2; never-written starts at 1).
pub fn next_slot(slot: u8) -> u8 {
    if slot == 1 {
        2
    } else {
        1
    }
}

/// Partition-level state that is not per customer: the watermark and the
/// timer sequence counter. Together with every customer's state it
/// restores an engine exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct PartitionMeta {
    /// The watermark.
    pub watermark: Watermark,
    /// The next timer sequence number.
    pub next_seq: u64,
}

impl Engine {
    /// Partition-level state for a checkpoint.
    pub fn meta(&self) -> PartitionMeta {
        PartitionMeta {
            watermark: self.watermark,
            next_seq: self.timers.next_seq(),
        }
    }

    /// Every change since the last drain: evictions first, then the
    /// current state of every customer that changed.
    pub fn drain_changes(&mut self) -> Vec<StateChange> {
        let mut out: Vec<StateChange> = self
            .evicted
            .drain(..)
            .map(|(id, slot)| StateChange::Delete { id, slot })
            .collect();
        for slot in std::mem::take(&mut self.dirty) {
            if let Some(c) = self.store.get_mut(slot) {
                if c.dirty {
                    c.dirty = false;
                    c.slot = next_slot(c.slot);
                    out.push(StateChange::Upsert(c.clone()));
                }
            }
        }
        out
    }

    /// Rebuilds an engine from a checkpoint: the partition meta and every
    /// customer's state (each id once). Timers are re-queued from the
    /// customers' state.
    pub fn restore(
        cfg: Arc<EngineConfig>,
        meta: PartitionMeta,
        customers: impl IntoIterator<Item = Customer>,
    ) -> Self {
        let mut e = Engine::new(cfg);
        e.watermark = meta.watermark;
        // The days up to the watermark count as loaded, as they do in the
        // run that wrote the checkpoint: timers due in them are queued
        // directly (nothing of those days is staged).
        if let Some(wm) = e.watermark.current() {
            let none_yet = e.timers.take_staged(wm);
            debug_assert!(none_yet.is_empty());
        }
        // Inserted as they come (slot order does not affect output), never
        // collected: restoring holds no second copy.
        for mut c in customers {
            c.dirty = false;
            e.population.level(None, Some(c.churn.level));
            e.population.stage(None, c.journey.stage);
            let slot = e.store.insert(c);
            let Some(c) = e.store.get_mut(slot) else {
                continue;
            };
            let target = |kind| timers::TimerTarget { slot, kind };
            e.timers
                .restore(&mut c.churn.timer, target(TimerKind::Churn));
            if let Some(r) = &mut c.rare {
                r.cart.restore_timers(&mut e.timers, slot);
                r.survey.restore_timers(&mut e.timers, slot);
            }
        }
        e.timers.set_next_seq(meta.next_seq);
        e
    }

    /// Every live customer's snapshot row at the current watermark, sorted
    /// by customer id.
    pub fn snapshot(&self) -> Vec<SnapshotRow> {
        let wm = self.watermark.current().unwrap_or(EventTime::MIN);
        let mut rows: Vec<SnapshotRow> = self
            .store
            .iter()
            .map(|c| (c, c.full_churn()))
            .map(|(c, churn)| {
                let at = wm.max(c.clock);
                let value = c.value.as_deref().cloned().unwrap_or_default();
                let prediction = crate::signals::value::predict(&self.cfg, &churn, &value, at);
                SnapshotRow {
                    customer_id: c.id().to_string(),
                    engagement_score: c
                        .engagement
                        .score(&self.cfg, c.lists.touches().recent_channels(c.newest)),
                    stage: c.journey.stage,
                    churn_level: c.churn.level,
                    p_alive: churn.p_alive(&self.cfg, at),
                    orders: churn.orders,
                    first_order_at: churn.first_order_at(),
                    last_order_at: churn.last_order_at(),
                    last_activity_at: churn.last_activity_at(),
                    channels: c.lists.touches().recent_channels(c.newest),
                    predicted_clv: prediction.map(|p| p.predicted_clv),
                    expected_orders: prediction.map(|p| p.expected_orders),
                }
            })
            .collect();
        rows.sort_by(|a, b| a.customer_id.cmp(&b.customer_id));
        rows
    }
}
