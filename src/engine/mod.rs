//! The pure, deterministic event-time engine of one partition.
//!
//! Touchpoints and watermarks in, derived events out: no I/O, no wall
//! clock, no threads. Replay and the Kafka service run this same code; the
//! edges only decode, validate, and call [`Engine::on_touchpoint`] and
//! [`Engine::advance_watermark`].
//!
//! Timers live in one queue ordered by (due time, order set); when a record
//! advances the watermark, the timers it reaches fire first, in that order,
//! then the record is applied. Events one cause produces come out in the
//! order of the SPEC table.
//!
//! This file holds the engine, its counters and its public record path;
//! the rooms beside it: `apply.rs` (a touchpoint's signal steps),
//! `fire.rs` (timers, one function per kind, eviction), `emit.rs` (derived
//! events, KPI facts, the dirty list), `ids.rs` (event ids),
//! `snapshot.rs` (checkpoint changes, restore, snapshot rows).

mod apply;
pub mod binary;
mod emit;
mod fire;
mod ids;
pub mod kpi;
mod snapshot;
pub mod state;
pub mod store;

// Where these lived before `time/` and `signals::dedup`: the public paths
// stay (the engine re-exports what lies below it).
pub use crate::signals::dedup;
pub use crate::time::{merge, timers, watermark};

pub use ids::{event_id, Cause};
pub use snapshot::{next_slot, PartitionMeta, SnapshotRow, StateChange};

use std::sync::Arc;

use crate::model::{DerivedEvent, EventTime, Touchpoint};
pub use crate::signals::config::{self, EngineConfig};
use crate::signals::dedup::hash_id;
use crate::time::timers::TimerQueue;
use crate::time::watermark::Watermark;
use kpi::{Kpi, Population};
use state::Customer;

/// How many customers [`Engine::estimated_state_bytes`] reads at most.
pub const STATE_BYTES_SAMPLE: usize = 1024;

/// What happened to a touchpoint offered to the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Applied to state; `late` when older than the watermark.
    Accepted {
        /// Older than the watermark (but within the allowed lateness).
        late: bool,
    },
    /// Its `event_id` is among the customer's last 32: dropped silently.
    Duplicate,
    /// Older than watermark − allowed lateness: rejected (`too_late`).
    TooLate,
}

/// Counters the engine keeps; the edges export them as metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Touchpoints applied.
    pub accepted: u64,
    /// Accepted touchpoints older than the watermark.
    pub late: u64,
    /// Duplicates dropped.
    pub duplicates: u64,
    /// Too-late touchpoints rejected.
    pub too_late: u64,
    /// Timers that fired.
    pub timers_fired: u64,
    /// Customers evicted by `state_ttl`.
    pub evicted: u64,
    /// Derived events emitted, by type (SPEC table order).
    pub emitted: [u64; 9],
}

/// The engine of one partition.
#[derive(Debug)]
pub struct Engine {
    cfg: Arc<EngineConfig>,
    store: store::Store,
    timers: TimerQueue,
    watermark: Watermark,
    stats: EngineStats,
    dirty: Vec<u32>,
    evicted: Vec<(Arc<str>, u8)>,
    kpis: Option<Vec<Kpi>>,
    population: Population,
}

impl Engine {
    /// An empty engine.
    ///
    /// # Examples
    /// ```
    /// use std::sync::Arc;
    /// use touchstream::config::EngineConfig;
    /// use touchstream::engine::{Engine, Outcome};
    /// use touchstream::model::{Channel, Touchpoint, TouchType};
    ///
    /// let mut engine = Engine::new(Arc::new(EngineConfig::default()));
    /// let mut out = Vec::new();
    /// let tp = Touchpoint::new("e1", "c1", Channel::Web, TouchType::AddToCart, 0);
    /// assert_eq!(engine.on_touchpoint(&tp, &mut out), Outcome::Accepted { late: false });
    /// assert_eq!(out[0].kind.as_str(), "engagement_score");
    /// // One hour of event time later the cart is abandoned.
    /// engine.advance_watermark(3_600_000, &mut out);
    /// assert_eq!(out.last().unwrap().kind.as_str(), "cart_abandoned");
    /// ```
    pub fn new(cfg: Arc<EngineConfig>) -> Self {
        let ooo = cfg.max_out_of_orderness;
        Engine {
            cfg,
            store: store::Store::default(),
            timers: TimerQueue::new(),
            watermark: Watermark::new(ooo),
            stats: EngineStats::default(),
            dirty: Vec::new(),
            evicted: Vec::new(),
            kpis: None,
            population: Population::default(),
        }
    }

    /// Turns KPI collection on or off (off by default; replay leaves it off).
    pub fn collect_kpis(&mut self, on: bool) {
        self.kpis = if on {
            Some(self.kpis.take().unwrap_or_default())
        } else {
            None
        };
    }

    /// KPI facts since the last [`Engine::clear_kpis`] (the edge reads them
    /// after every record, then clears them: no allocation per record).
    pub fn kpis(&self) -> &[Kpi] {
        self.kpis.as_deref().unwrap_or_default()
    }

    /// Forgets the KPI facts read with [`Engine::kpis`].
    pub fn clear_kpis(&mut self) {
        if let Some(k) = &mut self.kpis {
            k.clear();
        }
    }

    /// Customers per churn level and journey stage.
    pub fn population(&self) -> Population {
        self.population
    }

    /// The configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    /// The current watermark (`None` before the first accepted event).
    pub fn watermark(&self) -> Option<EventTime> {
        self.watermark.current()
    }

    /// The newest accepted event time.
    pub fn max_event_time(&self) -> Option<EventTime> {
        self.watermark.max_event()
    }

    /// Counters so far.
    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    /// Customers in state.
    pub fn customers(&self) -> usize {
        self.store.len()
    }

    /// Pending timer entries.
    pub fn pending_timers(&self) -> usize {
        self.timers.len()
    }

    /// Approximate bytes of state (customers and timer entries): a walk
    /// over every customer (see [`Engine::estimated_state_bytes`]).
    pub fn approx_state_bytes(&self) -> usize {
        let customers: usize = self.store.iter().map(Customer::approx_bytes).sum();
        customers + self.timers.approx_bytes()
    }

    /// [`Engine::approx_state_bytes`] estimated from at most
    /// [`STATE_BYTES_SAMPLE`] customers spread evenly over the store: the
    /// `touchstream_state_bytes` gauge, read at every checkpoint, never
    /// walks every customer. Exact up to that many customers.
    pub fn estimated_state_bytes(&self) -> usize {
        let (mut n, mut bytes) = (0u64, 0u64);
        for c in self.store.spread(STATE_BYTES_SAMPLE) {
            n += 1;
            bytes += c.approx_bytes() as u64;
        }
        let customers = (bytes * self.store.len() as u64)
            .checked_div(n)
            .unwrap_or(0);
        usize::try_from(customers).unwrap_or(usize::MAX) + self.timers.approx_bytes()
    }

    /// Approximate heap bytes of the timer queue.
    pub fn timer_queue_bytes(&self) -> usize {
        self.timers.approx_bytes()
    }

    /// A customer's state, if present.
    pub fn customer(&self, id: &str) -> Option<&Customer> {
        self.store.get(self.store.find(id)?)
    }

    /// Offers one validated touchpoint. Duplicates and too-late records
    /// change nothing; otherwise the timers the advanced watermark reaches
    /// fire first, then the touchpoint is applied.
    pub fn on_touchpoint(&mut self, tp: &Touchpoint, out: &mut Vec<DerivedEvent>) -> Outcome {
        let to = self.watermark.after_event(tp.timestamp);
        self.on_touchpoint_to(tp, Some(to), out)
    }

    /// Offers one validated touchpoint of a task with several inputs (SPEC
    /// 8): as [`Engine::on_touchpoint`], but an accepted record moves the
    /// watermark to `to`, the task's watermark with this record (`None`
    /// while an input holds it), instead of its own time −
    /// `max_out_of_orderness`. Late and too late are judged against the
    /// watermark before it.
    pub fn on_touchpoint_to(
        &mut self,
        tp: &Touchpoint,
        to: Option<EventTime>,
        out: &mut Vec<DerivedEvent>,
    ) -> Outcome {
        let t = tp.timestamp;
        let h = hash_id(&tp.event_id);
        let known = self.store.find(&tp.customer_id);
        if let Some(slot) = known {
            if self.store.get(slot).is_some_and(|c| {
                c.prefetch();
                c.lists.is_duplicate(h)
            }) {
                self.stats.duplicates += 1;
                return Outcome::Duplicate;
            }
        }
        if self.watermark.is_too_late(t, self.cfg.allowed_lateness) {
            self.stats.too_late += 1;
            return Outcome::TooLate;
        }
        let late = self.watermark.is_late(t);
        let before = self.watermark.current();
        let wm = self.watermark.observe_to(t, to);
        let evictions = self.stats.evicted;
        if let Some(wm) = wm.filter(|w| before != Some(*w)) {
            self.fire_until(wm, out);
        }
        // Timers may have evicted (and freed the slot of) this customer.
        let known = if self.stats.evicted == evictions {
            known
        } else {
            None
        };
        self.apply(tp, h, known, out);
        // A late record may set a timer the watermark has already reached
        // (e.g. a cart timer): it fires now, after the record.
        if let Some(wm) = wm.filter(|w| self.timers.peek_due().is_some_and(|d| d <= *w)) {
            self.fire_until(wm, out);
        }
        self.stats.accepted += 1;
        if late {
            self.stats.late += 1;
        }
        Outcome::Accepted { late }
    }

    /// Offers a record of a task with several inputs (SPEC 8), the one
    /// record path of `replay A B C` and of a Kafka task: `to` is the task's
    /// watermark with it ([`watermark::InputWatermarks::task_watermark`]).
    /// A record that changes no state (a duplicate, too late) still counts
    /// in its input's watermark.
    pub fn on_merged(
        &mut self,
        tp: &Touchpoint,
        to: Option<EventTime>,
        out: &mut Vec<DerivedEvent>,
    ) -> Outcome {
        let outcome = self.on_touchpoint_to(tp, to, out);
        if let (Some(to), Outcome::Duplicate | Outcome::TooLate) = (to, outcome) {
            self.advance_watermark(to, out);
        }
        outcome
    }

    /// Moves the watermark to `to` (if later) and fires every timer it reaches.
    pub fn advance_watermark(&mut self, to: EventTime, out: &mut Vec<DerivedEvent>) {
        let before = self.watermark.current();
        let wm = self.watermark.advance_to(to);
        if before != Some(wm) {
            self.fire_until(wm, out);
        }
    }
}
