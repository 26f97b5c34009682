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

pub mod kpi;
pub mod state;
pub mod store;

// Where these lived before `time/` and `signals::dedup`: the public paths
// stay (the engine re-exports what lies below it).
pub use crate::signals::dedup;
pub use crate::time::{merge, timers, watermark};

use std::sync::Arc;

use serde::Serialize;

use crate::model::{
    ChurnLevel, DerivedEvent, DerivedType, EventTime, JourneyStage, Payload, TouchType, Touchpoint,
};
pub use crate::signals::config::{self, EngineConfig};
use crate::signals::dedup::hash_id;
use crate::time::timers::{PopAction, TimerKey, TimerKind, TimerQueue};
use crate::time::watermark::Watermark;
use kpi::{Kpi, Population};
use state::Customer;

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

/// What caused a derived event; its id is a pure function of this.
#[derive(Debug, Clone, Copy)]
pub enum Cause<'a> {
    /// A touchpoint, by its `event_id`.
    Touch(&'a str),
    /// A timer: kind, due time and a discriminator (cart or campaign id).
    Timer {
        /// Kind of timer.
        kind: TimerKind,
        /// Due time.
        due: EventTime,
        /// Cart id or campaign id ("" when none).
        discriminator: &'a str,
    },
}

/// The deterministic id of a derived event: a UUID (version 8, RFC 9562
/// "custom") holding the 128-bit XXH3 hash of its type, the customer and
/// its cause. Same cause, same id, on every machine and version.
///
/// # Examples
/// ```
/// use touchstream::engine::{event_id, Cause};
/// use touchstream::model::DerivedType;
/// let a = event_id(DerivedType::EngagementScore, "c1", Cause::Touch("e1"));
/// let b = event_id(DerivedType::EngagementScore, "c1", Cause::Touch("e1"));
/// assert_eq!(a, b);
/// assert_ne!(a, event_id(DerivedType::ChurnRisk, "c1", Cause::Touch("e1")));
/// ```
pub fn event_id(kind: DerivedType, customer: &str, cause: Cause<'_>) -> crate::model::EventId {
    let due_bytes;
    let parts: &[&[u8]] = match cause {
        Cause::Touch(id) => &[
            kind.as_str().as_bytes(),
            customer.as_bytes(),
            b"tp",
            id.as_bytes(),
        ],
        Cause::Timer {
            kind: tk,
            due,
            discriminator,
        } => {
            due_bytes = due.to_le_bytes();
            &[
                kind.as_str().as_bytes(),
                customer.as_bytes(),
                b"timer",
                tk.as_str().as_bytes(),
                &due_bytes,
                discriminator.as_bytes(),
            ]
        }
    };
    crate::model::EventId(uuid::Uuid::new_v8(hash_parts(parts).to_be_bytes()).as_u128())
}

/// XXH3-128 of the parts, each prefixed by its length (u64, little
/// endian). Short inputs are gathered on the stack and hashed in one call;
/// longer ones go through the streaming hasher (same bytes, same digest).
fn hash_parts(parts: &[&[u8]]) -> u128 {
    let total: usize = parts.iter().map(|p| 8 + p.len()).sum();
    let mut buf = [0u8; 512];
    if total <= buf.len() {
        let mut at = 0;
        for p in parts {
            buf[at..at + 8].copy_from_slice(&(p.len() as u64).to_le_bytes());
            buf[at + 8..at + 8 + p.len()].copy_from_slice(p);
            at += 8 + p.len();
        }
        xxhash_rust::xxh3::xxh3_128(&buf[..at])
    } else {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        for p in parts {
            h.update(&(p.len() as u64).to_le_bytes());
            h.update(p);
        }
        h.digest128()
    }
}

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

/// Records a KPI fact when collection is on.
fn kpi(kpis: &mut Option<Vec<Kpi>>, k: impl FnOnce() -> Kpi) {
    if let Some(v) = kpis {
        v.push(k());
    }
}

/// The KPI fact of a customer turning `high` churn risk: its predicted CLV
/// (0 without an order).
fn value_at_risk(
    cfg: &EngineConfig,
    churn: &crate::signals::churn::Churn,
    value: Option<&crate::signals::value::ValueState>,
    clock: EventTime,
) -> Kpi {
    let empty = crate::signals::value::ValueState::default();
    let value = value.unwrap_or(&empty);
    Kpi::ClvTurningHighRisk {
        currency: value.currency.as_ref().map(|(_, c)| c.to_string()),
        predicted_clv: crate::signals::value::predict(cfg, churn, value, clock)
            .map_or(0.0, |p| p.predicted_clv),
    }
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

fn mark_dirty(dirty: &mut Vec<u32>, c: &mut Customer, slot: u32) {
    if !c.dirty {
        c.dirty = true;
        dirty.push(slot);
    }
}

/// The customer of the derived events one touchpoint or timer causes: its
/// id is made into the events' shared `Arc` once, at the first of them.
struct Who<'a> {
    id: &'a str,
    arc: Option<Arc<str>>,
}

impl<'a> Who<'a> {
    fn new(id: &'a str) -> Self {
        Who { id, arc: None }
    }

    fn arc(&mut self) -> Arc<str> {
        self.arc.get_or_insert_with(|| Arc::from(self.id)).clone()
    }
}

/// Emits a payload as a derived event.
fn emit(
    out: &mut Vec<DerivedEvent>,
    stats: &mut EngineStats,
    customer: &mut Who<'_>,
    at: EventTime,
    cause: Cause<'_>,
    payload: Payload,
) {
    let kind = payload.derived_type();
    stats.emitted[kind as usize] += 1;
    out.push(DerivedEvent {
        kind,
        event_id: event_id(kind, customer.id, cause),
        customer_id: customer.arc(),
        at,
        payload,
    });
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
    /// customer's state. Timers are re-queued from the customers' state.
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
        let mut all: Vec<Customer> = customers.into_iter().collect();
        // Slot order does not affect output; sort for a reproducible layout.
        all.sort_by(|a, b| a.id().cmp(b.id()));
        for mut c in all {
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

    /// Approximate bytes of state (customers and timer entries).
    pub fn approx_state_bytes(&self) -> usize {
        let customers: usize = self.store.iter().map(Customer::approx_bytes).sum();
        customers + self.timers.approx_bytes()
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

    fn slot_for(&mut self, id: &str, t: EventTime) -> (u32, bool) {
        if let Some(slot) = self.store.find(id) {
            return (slot, false);
        }
        let slot = self.store.insert(Customer::new(id, t));
        self.population
            .level(None, Some(crate::model::ChurnLevel::Low));
        (slot, true)
    }

    fn apply(&mut self, tp: &Touchpoint, h: u64, known: Option<u32>, out: &mut Vec<DerivedEvent>) {
        let t = tp.timestamp;
        let (slot, is_new) = match known {
            Some(slot) => (slot, false),
            None => self.slot_for(&tp.customer_id, t),
        };
        let cfg = &*self.cfg;
        let wm = self.watermark.current().unwrap_or(t);
        let late_horizon = wm.saturating_sub(cfg.allowed_lateness);
        let Engine {
            store,
            timers,
            stats,
            dirty,
            kpis,
            population,
            ..
        } = self;
        let Some(c) = store.get_mut(slot) else {
            return;
        };
        mark_dirty(dirty, c, slot);
        kpi(kpis, || Kpi::Touch {
            channel: tp.channel,
            kind: tp.kind,
        });
        let newest_before = (!is_new).then_some(c.newest);
        c.newest = c.newest.max(t);
        c.clock = c.clock.max(t);
        c.lists.remember_event(h);
        let (clock, newest) = (c.clock, c.newest);
        let cause = Cause::Touch(&tp.event_id);
        let mut who = Who::new(&tp.customer_id);
        let kind = tp.kind;
        let is_order = kind == TouchType::OrderPlaced;

        // engagement_score
        c.engagement.apply(cfg, kind, t, newest_before);
        let mut channels = c.lists.touches().recent_channels(newest);
        if kind.is_own() {
            // Not recorded by attribution yet (an order is attributed first).
            channels = crate::signals::engagement::with_touch(channels, newest, t, tp.channel);
        }
        if let Some(p) = c.engagement.evaluate(cfg, channels) {
            emit(out, stats, &mut who, t, cause, p);
        }
        // cart_abandoned (timers only) / cart_recovered
        if kind.is_cart_activity()
            && c.rare
                .get_or_insert_with(Box::default)
                .cart
                .on_activity(cfg, tp, timers, slot, &c.lists)
        {
            kpi(kpis, || Kpi::CartStarted {
                channel: tp.channel,
            });
        }
        if is_order {
            kpi(kpis, || Kpi::Order {
                channel: tp.channel,
                currency: tp.currency.clone(),
                value: tp.value,
            });
            c.lists.reopen_carts();
            if let Some(p) = c
                .rare
                .as_mut()
                .and_then(|r| r.cart.on_order(cfg, tp, timers))
            {
                kpi(kpis, || Kpi::CartRecovered {
                    channel: tp.channel,
                });
                emit(out, stats, &mut who, t, cause, p);
            }
        }
        // churn_risk
        let before = c.full_churn();
        if is_order {
            c.value
                .get_or_insert_with(Box::default)
                .on_order(tp, before.first_order_at());
        }
        let mut full = before.clone();
        full.apply(cfg, tp);
        let level_before = full.level;
        let churn = full.reevaluate(
            cfg,
            clock,
            timers,
            slot,
            newest.saturating_add(cfg.state_ttl),
        );
        c.store_churn(&full, &before);
        let became_high = matches!(
            churn,
            Some(Payload::ChurnRisk {
                level: ChurnLevel::High,
                ..
            })
        );
        if let Some(p) = churn {
            population.level(Some(level_before), Some(c.churn.level));
            emit(out, stats, &mut who, t, cause, p);
        }
        if became_high {
            kpi(kpis, || {
                value_at_risk(cfg, &full, c.value.as_deref(), clock)
            });
        }
        // journey_stage_changed
        let from = c.journey.stage;
        c.journey.on_touch(kind, c.churn.orders);
        if became_high {
            c.journey.on_high_risk();
        }
        if let Some(to) = c.journey.stage.filter(|s| Some(*s) != from) {
            population.stage(from, Some(to));
            let p = Payload::JourneyStageChanged {
                from,
                to,
                channel: Some(tp.channel),
            };
            emit(out, stats, &mut who, t, cause, p);
        }
        // survey_trigger (timers only)
        if kind == TouchType::MessageClicked {
            if let Some(campaign) = tp.campaign_id.as_deref() {
                c.rare_mut()
                    .survey
                    .on_click(cfg, t, campaign, tp.channel, timers, slot);
                kpi(kpis, || Kpi::CampaignClick {
                    channel: tp.channel,
                });
            }
        }
        if is_order {
            // Recorded even with no click pending: a late click may still
            // arrive within the allowed lateness and find it.
            let converted = c.rare_mut().survey.on_order(cfg, t, late_horizon);
            for channel in converted {
                kpi(kpis, || Kpi::CampaignConversion { channel });
            }
        }
        // KPI-only facts: surveys, support resolution, channel switches.
        if let (Some(survey), Some(score)) = (tp.survey, tp.score) {
            kpi(kpis, || Kpi::SurveyScore {
                survey,
                channel: tp.channel,
                score,
            });
        }
        match kind {
            TouchType::SupportContact if c.lists.support_open().is_none() => c
                .lists
                .set_support_open(Some(crate::signals::Packed::new(t, tp.channel))),
            TouchType::SupportResolved => {
                let open = c.lists.support_open();
                c.lists.set_support_open(None);
                if let Some((opened, channel)) = open.map(|p| (p.time(), p.channel())) {
                    let seconds = (t - opened).max(0) as f64 / 1000.0;
                    kpi(kpis, || Kpi::SupportResolved { channel, seconds });
                }
            }
            _ => {}
        }
        if kind.is_own() {
            if let Some(from) = c.last_channel.filter(|f| *f != tp.channel) {
                kpi(kpis, || Kpi::ChannelSwitch {
                    from,
                    to: tp.channel,
                });
            }
            c.last_channel = Some(tp.channel);
        }
        // contact_fatigue
        if kind == TouchType::MessageSent {
            if let Some(p) = c.lists.on_message(cfg, t, tp.channel, clock) {
                emit(out, stats, &mut who, t, cause, p);
            }
        }
        // order_attributed
        if kind.is_own() {
            if is_order {
                let models = c.lists.touches().attribute(t, tp.channel);
                let p = Payload::OrderAttributed {
                    order_id: tp.order_id.clone(),
                    order_value: tp.value,
                    currency: tp.currency.clone(),
                    channel: tp.channel,
                    models: Box::new(models),
                };
                emit(out, stats, &mut who, t, cause, p);
                // customer_value
                if let Some(p) = c
                    .value
                    .as_deref()
                    .and_then(|v| crate::signals::value::payload(cfg, &full, v, clock))
                {
                    if let Payload::CustomerValue { predicted_clv, .. } = &p {
                        kpi(kpis, || Kpi::PredictedClv {
                            stage: c.journey.stage,
                            level: c.churn.level,
                            predicted_clv: *predicted_clv,
                        });
                    }
                    emit(out, stats, &mut who, t, cause, p);
                }
            }
            c.lists.record_touch(t, tp.channel, late_horizon);
        }
        c.tidy(cfg, late_horizon);
    }

    fn fire_until(&mut self, wm: EventTime, out: &mut Vec<DerivedEvent>) {
        // Staged churn timers of the days the watermark entered go to the
        // queue first, so that the pop order below is the whole order.
        for (day, slots) in self.timers.take_staged(wm) {
            for slot in slots {
                if let Some(c) = self.store.get_mut(slot) {
                    let target = timers::TimerTarget {
                        slot,
                        kind: TimerKind::Churn,
                    };
                    self.timers.load(&mut c.churn.timer, day, target);
                } else {
                    self.timers.skip_stale();
                }
            }
        }
        while let Some((key, target)) = self.timers.pop_due(wm) {
            if self.fire_one(key, target, out) {
                self.evict(target.slot);
            }
        }
    }

    /// Runs one popped timer; returns true when the customer's state TTL
    /// is up (its churn timer, due at the TTL instant at the latest, queues
    /// the TTL check).
    fn fire_one(
        &mut self,
        key: TimerKey,
        target: timers::TimerTarget,
        out: &mut Vec<DerivedEvent>,
    ) -> bool {
        {
            let cfg = &*self.cfg;
            let late_horizon = self
                .watermark
                .current()
                .unwrap_or(key.due)
                .saturating_sub(cfg.allowed_lateness);
            let Engine {
                store,
                timers,
                stats,
                dirty,
                kpis,
                population,
                ..
            } = self;
            let Some(c) = store.get_mut(target.slot) else {
                return false;
            };
            let due = key.due;
            match target.kind {
                TimerKind::Cart => {
                    let Some(r) = c.rare.as_mut() else {
                        return false;
                    };
                    let (action, payload) = r.cart.on_timer(key, target, timers, &mut c.lists);
                    if action == PopAction::Fire {
                        mark_dirty(dirty, c, target.slot);
                        stats.timers_fired += 1;
                        c.clock = c.clock.max(due);
                        if let Some(p) = payload {
                            let discriminator = match &p {
                                Payload::CartAbandoned {
                                    cart_id, channel, ..
                                } => {
                                    let channel = *channel;
                                    kpi(kpis, || Kpi::CartAbandoned { channel });
                                    // Named carts "k:<id>", the unnamed cart "-": never equal.
                                    cart_id
                                        .as_deref()
                                        .map_or_else(|| "-".to_string(), |id| format!("k:{id}"))
                                }
                                _ => String::new(),
                            };
                            let cause = Cause::Timer {
                                kind: TimerKind::Cart,
                                due,
                                discriminator: &discriminator,
                            };
                            emit(out, stats, &mut Who::new(c.id()), due, cause, p);
                        }
                    }
                }
                TimerKind::Churn => {
                    if timers.resolve(&mut c.churn.timer, key, target) != PopAction::Fire {
                        return false;
                    }
                    let expires = c.newest.saturating_add(cfg.state_ttl);
                    mark_dirty(dirty, c, target.slot);
                    stats.timers_fired += 1;
                    c.clock = c.clock.max(due);
                    let cause = Cause::Timer {
                        kind: TimerKind::Churn,
                        due,
                        discriminator: "",
                    };
                    let level_before = c.churn.level;
                    let before = c.full_churn();
                    let mut full = before.clone();
                    let churn = full.reevaluate(cfg, c.clock, timers, target.slot, expires);
                    c.store_churn(&full, &before);
                    let became_high = matches!(
                        churn,
                        Some(Payload::ChurnRisk {
                            level: ChurnLevel::High,
                            ..
                        })
                    );
                    if let Some(p) = churn {
                        population.level(Some(level_before), Some(c.churn.level));
                        emit(out, stats, &mut Who::new(c.id()), due, cause, p);
                    }
                    if became_high {
                        kpi(kpis, || {
                            value_at_risk(cfg, &full, c.value.as_deref(), c.clock)
                        });
                    }
                    c.tidy_quiet(cfg, late_horizon);
                    let from = c.journey.stage;
                    if became_high && from.is_some() {
                        c.journey.on_high_risk();
                        if c.journey.stage != from {
                            population.stage(from, c.journey.stage);
                            let p = Payload::JourneyStageChanged {
                                from,
                                to: JourneyStage::AtRisk,
                                channel: None,
                            };
                            emit(out, stats, &mut Who::new(c.id()), due, cause, p);
                        }
                    }
                    if due >= expires {
                        // The state TTL is up: a level that flips at this
                        // very instant has changed above; the eviction comes
                        // after every other timer due now (TTL checks order
                        // last among equal due times).
                        timers.cancel(&mut c.churn.timer);
                        timers.add_ttl(due, target.slot);
                    }
                }
                TimerKind::Survey => {
                    let Some(discriminator) = c
                        .rare
                        .as_ref()
                        .and_then(|r| r.survey.campaign_of(key))
                        .map(str::to_string)
                    else {
                        return false;
                    };
                    mark_dirty(dirty, c, target.slot);
                    stats.timers_fired += 1;
                    c.clock = c.clock.max(due);
                    let payload = c.rare.as_mut().and_then(|r| r.survey.on_timer(cfg, key));
                    if let Some(p) = payload {
                        let cause = Cause::Timer {
                            kind: TimerKind::Survey,
                            due,
                            discriminator: &discriminator,
                        };
                        emit(out, stats, &mut Who::new(c.id()), due, cause, p);
                    }
                    c.tidy(cfg, late_horizon);
                }
                TimerKind::Ttl => {
                    // Nothing arrives between the churn timer that queued
                    // this check and the check itself (both are due now),
                    // but the test costs nothing.
                    return due >= c.newest.saturating_add(cfg.state_ttl);
                }
            }
        }
        false
    }

    /// Removes a customer whose state TTL is up, with its timers.
    fn evict(&mut self, slot: u32) {
        let Some(mut c) = self.store.remove(slot) else {
            return;
        };
        self.timers.cancel(&mut c.churn.timer);
        if let Some(r) = &mut c.rare {
            r.cart.cancel_timers(&mut self.timers);
            r.survey.cancel_timers(&mut self.timers);
        }
        self.population.level(Some(c.churn.level), None);
        self.population.stage(c.journey.stage, None);
        self.evicted.push((Arc::from(c.id()), next_slot(c.slot)));
        self.stats.evicted += 1;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(parts: &[&[u8]]) -> u128 {
        let mut bytes = Vec::new();
        for p in parts {
            bytes.extend_from_slice(&(p.len() as u64).to_le_bytes());
            bytes.extend_from_slice(p);
        }
        xxhash_rust::xxh3::xxh3_128(&bytes)
    }

    #[test]
    fn hashed_parts_are_the_same_on_the_stack_and_streamed() {
        let long = vec![b'x'; 700];
        for parts in [
            vec![&b"engagement_score"[..], b"c1", b"tp", b"e1"],
            vec![&b"a"[..], &long[..], b"", b"z"],
            vec![&long[..496]],
            vec![&long[..505]],
        ] {
            assert_eq!(hash_parts(&parts), reference(&parts));
        }
    }
}
