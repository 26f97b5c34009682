//! `survey_trigger` (SPEC 4, SPEC 7 "Survey").
//!
//! Every `message_clicked` with a `campaign_id` arms its own timer at
//! click plus `conversion_window`. When it fires it triggers an NPS survey
//! unless an order came within [click, click + window] or the customer had
//! a trigger in the 30 d before the due time. Order times are kept only as long as a
//! pending or still-acceptable click can need them.

use serde::{Deserialize, Serialize};
use thin_vec::ThinVec;

use crate::model::{Channel, EventTime, Payload, Survey};
use crate::signals::config::EngineConfig;
use crate::time::timers::{TimerKey, TimerKind, TimerQueue, TimerTarget};

/// Pending clicks kept per customer at most, a defence against abuse far
/// above real use (beyond it the oldest pending click is dropped).
pub const MAX_PENDING_CLICKS: usize = 256;
/// Order times kept per customer at most.
pub const MAX_ORDER_TIMES: usize = 32;

/// A click waiting for its conversion window to close.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Click {
    at: EventTime,
    campaign_id: Box<str>,
    channel: Channel,
    key: TimerKey,
    /// An order came within the window (counted once as a conversion).
    #[serde(default)]
    converted: bool,
}

/// Survey state of one customer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SurveyState {
    clicks: ThinVec<Click>,
    /// Recent order times, sorted.
    orders: ThinVec<EventTime>,
    /// Due time of the last trigger.
    last_trigger: Option<EventTime>,
}

impl SurveyState {
    /// Heap bytes used (approximate).
    pub fn heap_bytes(&self) -> usize {
        super::thin_bytes(&self.clicks)
            + self
                .clicks
                .iter()
                .map(|c| c.campaign_id.len())
                .sum::<usize>()
            + super::thin_bytes(&self.orders)
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.clicks.is_empty() && self.orders.is_empty() && self.last_trigger.is_none()
    }

    /// A campaign click: arm its timer.
    pub fn on_click(
        &mut self,
        cfg: &EngineConfig,
        at: EventTime,
        campaign_id: &str,
        channel: Channel,
        timers: &mut TimerQueue,
        slot: u32,
    ) {
        if self.clicks.len() >= MAX_PENDING_CLICKS {
            let dropped = self.clicks.remove(0);
            timers.remove(dropped.key);
        }
        let due = at.saturating_add(cfg.conversion_window);
        let key = timers.add_fixed(
            due,
            TimerTarget {
                slot,
                kind: TimerKind::Survey,
            },
        );
        let i = self.clicks.partition_point(|c| c.key <= key);
        self.clicks.insert(
            i,
            Click {
                at,
                campaign_id: campaign_id.into(),
                channel,
                key,
                converted: false,
            },
        );
    }

    /// An order: remembered for pending and future clicks. `horizon` is the
    /// oldest time a click that can still matter may have.
    /// Returns the channels of the pending clicks this order converts (each
    /// click converts once).
    pub fn on_order(
        &mut self,
        cfg: &EngineConfig,
        at: EventTime,
        horizon: EventTime,
    ) -> Vec<Channel> {
        let mut converted = Vec::new();
        for c in &mut self.clicks {
            if !c.converted && at >= c.at && at - c.at <= cfg.conversion_window {
                c.converted = true;
                converted.push(c.channel);
            }
        }
        let i = self.orders.partition_point(|&t| t <= at);
        self.orders.insert(i, at);
        self.forget_orders(horizon);
        if self.orders.len() > MAX_ORDER_TIMES {
            let extra = self.orders.len() - MAX_ORDER_TIMES;
            self.orders.drain(..extra);
        }
        converted
    }

    /// A survey timer popped; returns the trigger if it fires.
    pub fn on_timer(&mut self, cfg: &EngineConfig, key: TimerKey) -> Option<Payload> {
        let i = self.clicks.iter().position(|c| c.key == key)?;
        let click = self.clicks.remove(i);
        super::free_if_empty(&mut self.clicks);
        let due = key.due;
        let converted = self.orders.iter().any(|&t| t >= click.at && t <= due);
        let cooling = self
            .last_trigger
            .is_some_and(|last| due - last < cfg.survey_cooldown);
        if converted || cooling {
            return None;
        }
        self.last_trigger = Some(due);
        Some(Payload::SurveyTrigger {
            survey: Survey::Nps,
            campaign_id: click.campaign_id.into(),
            channel: click.channel,
            clicked_at: click.at,
        })
    }

    /// Forgets order times no pending or future click can use (older than
    /// both the oldest pending click and `horizon`, before which no click
    /// can arrive any more) and a last trigger too old to hold back any
    /// click still to fire: pending ones may be due before `horizon` (a
    /// watermark jump fires several in one go), future ones are due after.
    pub fn forget(&mut self, cfg: &EngineConfig, horizon: EventTime) {
        let next_due = self
            .clicks
            .iter()
            .map(|c| c.key.due)
            .min()
            .unwrap_or(horizon)
            .min(horizon);
        self.forget_orders(horizon);
        if self
            .last_trigger
            .is_some_and(|last| last <= next_due.saturating_sub(cfg.survey_cooldown))
        {
            self.last_trigger = None;
        }
    }

    /// Drops order times older than both the oldest pending click and
    /// `horizon` (no click before it can arrive any more).
    fn forget_orders(&mut self, horizon: EventTime) {
        if self.orders.is_empty() {
            return;
        }
        let oldest_click = self
            .clicks
            .iter()
            .map(|c| c.at)
            .min()
            .unwrap_or(horizon)
            .min(horizon);
        let keep_from = self.orders.partition_point(|&t| t < oldest_click);
        if keep_from > 0 {
            self.orders.drain(..keep_from);
            super::free_if_empty(&mut self.orders);
        }
    }

    /// Campaign id of a pending click (for the derived event id).
    pub fn campaign_of(&self, key: TimerKey) -> Option<&str> {
        self.clicks
            .iter()
            .find(|c| c.key == key)
            .map(|c| &*c.campaign_id)
    }

    /// Re-creates queue entries after a restore.
    pub fn restore_timers(&self, timers: &mut TimerQueue, slot: u32) {
        for c in &self.clicks {
            timers.restore_fixed(
                c.key,
                TimerTarget {
                    slot,
                    kind: TimerKind::Survey,
                },
            );
        }
    }

    /// Removes every queued timer (eviction).
    pub fn cancel_timers(&mut self, timers: &mut TimerQueue) {
        for c in self.clicks.drain(..) {
            timers.remove(c.key);
        }
    }
}
