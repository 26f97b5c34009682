//! An independent, deliberately naive reference model of SPEC sections 3,
//! 4, 5 and 7 (time, derived events, event ids, precise readings).
//!
//! Written from `SPEC.md` alone, not from `src/engine` or `src/signals`:
//! every accepted touchpoint of a customer is kept for ever (until the
//! customer is evicted) and every signal is recomputed from scratch from
//! that list; pending timers live in one unsorted `Vec` that is scanned for
//! the smallest (due, order set) entry. Derived events are built directly
//! as `serde_json::Value`s in the shape SPEC 4 describes, so the engine's
//! own serialisation is checked too.
//!
//! What the model borrows from the crate: the data types of the input
//! (`Touchpoint`, `Channel`, `TouchType`, `Survey`), the plain-data
//! `EngineConfig` (its numbers only) and the SPEC 5 id hash
//! (`touchstream::engine::event_id`), which the brief allows reusing, with
//! the engine's timer discriminators (cart "k:<id>" or "-", campaign id),
//! a detail SPEC 5 leaves open.
//!
//! Readings the model takes where the SPEC leaves room:
//! - "latest"/"last" (cart activity, checkout, currency, NPS answer) is by
//!   event time, the later arrival among equal times;
//! - a timer set again to the same due time keeps its place among ties;
//!   eviction (state_ttl, due at the newest event time + ttl) comes after
//!   every other timer due at the same instant;
//! - a timer a record sets at or before the watermark fires right after
//!   that record;
//! - only the churn timer re-evaluates churn; any fired timer moves the
//!   customer's clock; at most one event per type per cause (a first event
//!   that makes churn high moves the journey straight from null to at_risk);
//! - fatigue's "count before it" is the count at the new clock without the
//!   message itself; a missing money value counts as 0;
//! - a survey_trigger stamped after a click's due time (a late click under
//!   a conversion window shorter than the allowed lateness) still counts
//!   for the cooldown ("in the last X" is age < X; at most one per 30 d).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};
use touchstream::config::EngineConfig;
use touchstream::engine::timers::TimerKind;
use touchstream::engine::{event_id, Cause};
use touchstream::model::{Channel, DerivedType, Survey, TouchType, Touchpoint};

pub const DAY: i64 = 86_400_000;

/// What the model did with a touchpoint (mirrors SPEC 2/3/7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelOutcome {
    Accepted { late: bool },
    Duplicate,
    TooLate,
}

/// One accepted touchpoint, as the model keeps it.
#[derive(Debug, Clone)]
struct Touch {
    id: String,
    channel: Channel,
    kind: TouchType,
    t: i64,
    value: Option<f64>,
    currency: Option<String>,
    order_id: Option<String>,
    campaign_id: Option<String>,
    survey: Option<Survey>,
    score: Option<i32>,
}

impl Touch {
    fn own(&self) -> bool {
        self.kind != TouchType::MessageSent
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    Low,
    Medium,
    High,
}

impl Level {
    fn name(self) -> &'static str {
        match self {
            Level::Low => "low",
            Level::Medium => "medium",
            Level::High => "high",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Awareness,
    Engagement,
    Transaction,
    Retention,
    AtRisk,
}

impl Stage {
    fn name(self) -> &'static str {
        match self {
            Stage::Awareness => "awareness",
            Stage::Engagement => "engagement",
            Stage::Transaction => "transaction",
            Stage::Retention => "retention",
            Stage::AtRisk => "at_risk",
        }
    }
    /// Rank on the forward path (at_risk is off the path).
    fn rank(self) -> u8 {
        match self {
            Stage::Awareness => 0,
            Stage::Engagement => 1,
            Stage::Transaction => 2,
            Stage::Retention => 3,
            Stage::AtRisk => 255,
        }
    }
}

/// An open cart (SPEC 7: keyed by cart_id, None = the unnamed cart).
#[derive(Debug, Clone)]
struct Cart {
    key: Option<String>,
    /// Indices into the customer's `touches` (its cart activities).
    activities: Vec<usize>,
    /// Abandoned already: not abandoned again until an order closes it.
    abandoned: bool,
}

#[derive(Debug, Clone)]
struct Abandonment {
    cart_id: Option<String>,
    at: i64,
    recovered: bool,
}

#[derive(Debug, Clone)]
struct Customer {
    id: String,
    /// Every accepted touchpoint, in arrival order.
    touches: Vec<Touch>,
    /// Largest due time of a fired timer of this customer (SPEC 7 clock).
    fired_due: Option<i64>,
    last_score: Option<f64>,
    carts: Vec<Cart>,
    abandonments: Vec<Abandonment>,
    level: Level,
    stage: Option<Stage>,
    fatigue_armed: bool,
    /// `at` of every survey_trigger emitted.
    survey_triggers: Vec<i64>,
}

impl Customer {
    fn new(id: &str) -> Self {
        Customer {
            id: id.to_string(),
            touches: Vec::new(),
            fired_due: None,
            last_score: None,
            carts: Vec::new(),
            abandonments: Vec::new(),
            level: Level::Low,
            stage: None,
            fatigue_armed: true,
            survey_triggers: Vec::new(),
        }
    }

    fn newest(&self) -> i64 {
        self.touches
            .iter()
            .map(|t| t.t)
            .max()
            .expect("a customer has a touch")
    }

    /// SPEC 7: the later of the newest event time and the due time of the
    /// last fired timer.
    fn clock(&self) -> i64 {
        self.newest().max(self.fired_due.unwrap_or(i64::MIN))
    }

    fn last_activity(&self) -> Option<i64> {
        self.touches.iter().filter(|t| t.own()).map(|t| t.t).max()
    }

    fn orders(&self) -> Vec<i64> {
        let mut o: Vec<i64> = self
            .touches
            .iter()
            .filter(|t| t.kind == TouchType::OrderPlaced)
            .map(|t| t.t)
            .collect();
        o.sort();
        o
    }
}

/// The identity of a pending timer.
#[derive(Debug, Clone, PartialEq, Eq)]
enum TimerId {
    /// The cart's key.
    Cart(Option<String>),
    Churn,
    /// Index of the click in the customer's touches.
    Survey(usize),
    /// State TTL (eviction); not a SPEC timer, ordered after the others at
    /// the same instant.
    Ttl,
}

#[derive(Debug, Clone)]
struct Timer {
    cust: String,
    id: TimerId,
    due: i64,
    seq: u64,
}

impl Timer {
    fn key(&self) -> (i64, u8, u64) {
        let class = u8::from(self.id == TimerId::Ttl);
        (self.due, class, self.seq)
    }
}

/// The reference model of one partition.
pub struct Model {
    cfg: EngineConfig,
    max_t: Option<i64>,
    wm: Option<i64>,
    customers: BTreeMap<String, Customer>,
    timers: Vec<Timer>,
    seq: u64,
    /// Orders whose SPEC attribution set reaches a touch with `KEEP` − 1 or
    /// more newer own touches of the customer: beyond what the engine
    /// retains (its documented bound against bursts, `attribution::KEEP`;
    /// see `tests/reference_model.rs`, finding 1). Counted so generators can
    /// leave that situation out.
    pub orders_beyond_keep: usize,
}

fn names(chs: impl IntoIterator<Item = Channel>) -> Value {
    let set: BTreeSet<&'static str> = chs.into_iter().map(|c| c.as_str()).collect();
    json!(set.into_iter().collect::<Vec<_>>())
}

/// The latest of `items` by time; among equal times the one that came last.
fn latest_by_time<T: Copy>(items: impl IntoIterator<Item = (i64, T)>) -> Option<(i64, T)> {
    let mut best: Option<(i64, T)> = None;
    for (t, x) in items {
        if best.is_none_or(|(bt, _)| t >= bt) {
            best = Some((t, x));
        }
    }
    best
}

impl Model {
    pub fn new(cfg: EngineConfig) -> Self {
        Model {
            cfg,
            max_t: None,
            wm: None,
            customers: BTreeMap::new(),
            timers: Vec::new(),
            seq: 0,
            orders_beyond_keep: 0,
        }
    }

    pub fn watermark(&self) -> Option<i64> {
        self.wm
    }

    // ------------------------------------------------------------------
    // Timers

    /// Sets (or, with `None`, cancels) one of a customer's timers. Setting
    /// the same due time again keeps the timer's place among ties.
    fn set_timer(&mut self, cust: &str, id: TimerId, due: Option<i64>) {
        let pos = self
            .timers
            .iter()
            .position(|t| t.cust == cust && t.id == id);
        match (pos, due) {
            (Some(p), Some(d)) if self.timers[p].due == d => {}
            (Some(p), _) => {
                self.timers.remove(p);
                if let Some(d) = due {
                    self.push_timer(cust, id, d);
                }
            }
            (None, Some(d)) => self.push_timer(cust, id, d),
            (None, None) => {}
        }
    }

    fn push_timer(&mut self, cust: &str, id: TimerId, due: i64) {
        self.seq += 1;
        self.timers.push(Timer {
            cust: cust.to_string(),
            id,
            due,
            seq: self.seq,
        });
    }

    /// Fires every timer due at or before `wm`, in (due, order set) order.
    fn fire_until(&mut self, wm: i64, out: &mut Vec<Value>) {
        let mut fired = 0u32;
        loop {
            fired += 1;
            assert!(fired < 1_000_000, "model: runaway timers");
            let next = self
                .timers
                .iter()
                .enumerate()
                .filter(|(_, t)| t.due <= wm)
                .min_by_key(|(_, t)| t.key())
                .map(|(i, _)| i);
            let Some(i) = next else { break };
            let timer = self.timers.remove(i);
            self.fire(timer, out);
        }
    }

    fn fire(&mut self, timer: Timer, out: &mut Vec<Value>) {
        if timer.id == TimerId::Ttl {
            self.customers.remove(&timer.cust);
            self.timers.retain(|t| t.cust != timer.cust);
            return;
        }
        let cfg = self.cfg.clone();
        let c = self
            .customers
            .get_mut(&timer.cust)
            .expect("timer of a live customer");
        c.fired_due = Some(c.fired_due.map_or(timer.due, |d| d.max(timer.due)));
        let due = timer.due;
        match timer.id.clone() {
            TimerId::Cart(key) => {
                let cart = c
                    .carts
                    .iter_mut()
                    .find(|k| k.key == key)
                    .expect("cart timer of an open cart");
                let acts: Vec<&Touch> = cart.activities.iter().map(|&i| &c.touches[i]).collect();
                let (last_at, last) =
                    latest_by_time(acts.iter().map(|t| (t.t, *t))).expect("cart activity");
                let checkout = latest_by_time(
                    acts.iter()
                        .filter(|t| t.kind == TouchType::CheckoutStarted)
                        .map(|t| (t.t, *t)),
                );
                let value = match checkout {
                    Some((_, t)) => t.value.unwrap_or(0.0),
                    None => {
                        let mut s = 0.0;
                        for t in &acts {
                            match t.kind {
                                TouchType::AddToCart => s += t.value.unwrap_or(0.0),
                                TouchType::RemoveFromCart => s -= t.value.unwrap_or(0.0),
                                _ => {}
                            }
                        }
                        f64::max(s, 0.0)
                    }
                };
                let currency = latest_by_time(
                    acts.iter()
                        .filter(|t| t.currency.is_some())
                        .map(|t| (t.t, *t)),
                )
                .and_then(|(_, t)| t.currency.clone());
                let ev = json!({
                    "cart_id": key,
                    "cart_value": value,
                    "currency": currency,
                    "channel": last.channel.as_str(),
                    "last_activity_at": last_at,
                });
                cart.abandoned = true;
                c.abandonments.push(Abandonment {
                    cart_id: key.clone(),
                    at: due,
                    recovered: false,
                });
                // The engine's id encoding of the cart (SPEC 5 leaves the
                // timer discriminator open): "k:<id>", unnamed cart "-".
                let disc = key
                    .as_ref()
                    .map_or_else(|| "-".to_string(), |k| format!("k:{k}"));
                out.push(timer_event(
                    DerivedType::CartAbandoned,
                    &c.id,
                    TimerKind::Cart,
                    due,
                    &disc,
                    ev,
                ));
            }
            TimerId::Survey(idx) => {
                let click = c.touches[idx].clone();
                let window = cfg.conversion_window;
                let converted = c.touches.iter().any(|t| {
                    t.kind == TouchType::OrderPlaced && click.t <= t.t && t.t <= click.t + window
                });
                // "a survey_trigger in the 30 d before the due time", with
                // SPEC 7's "in the last X means age < X": a trigger stamped
                // after this due time (a late click whose timer is already
                // due) counts too — "at most one per customer per 30 d".
                let cooled = c
                    .survey_triggers
                    .iter()
                    .any(|&p| due - p < cfg.survey_cooldown);
                if !converted && !cooled {
                    c.survey_triggers.push(due);
                    let campaign = click.campaign_id.clone().unwrap_or_default();
                    let ev = json!({
                        "survey": "nps",
                        "campaign_id": campaign,
                        "channel": click.channel.as_str(),
                        "clicked_at": click.t,
                    });
                    out.push(timer_event(
                        DerivedType::SurveyTrigger,
                        &c.id,
                        TimerKind::Survey,
                        due,
                        &campaign,
                        ev,
                    ));
                }
            }
            TimerId::Churn => {
                let now = c.clock();
                let (level, payload) = churn_eval(&cfg, c, now);
                let before = c.level;
                if level != before {
                    c.level = level;
                    out.push(timer_event(
                        DerivedType::ChurnRisk,
                        &c.id,
                        TimerKind::Churn,
                        due,
                        "",
                        with_prev(payload, before),
                    ));
                    if level == Level::High && c.stage != Some(Stage::AtRisk) {
                        let from = c.stage.map(Stage::name);
                        c.stage = Some(Stage::AtRisk);
                        out.push(timer_event(
                            DerivedType::JourneyStageChanged,
                            &c.id,
                            TimerKind::Churn,
                            due,
                            "",
                            json!({"from": from, "to": "at_risk", "channel": null}),
                        ));
                    }
                }
                let next = churn_next(&cfg, c, now);
                let id = c.id.clone();
                self.set_timer(&id, TimerId::Churn, next);
            }
            TimerId::Ttl => unreachable!(),
        }
    }

    /// SPEC 3: an idle partition's watermark follows the wall clock; moves
    /// the watermark to `to` (if later) and fires what it reaches.
    pub fn advance_watermark(&mut self, to: i64) -> Vec<Value> {
        let mut out = Vec::new();
        let wm = self.wm.map_or(to, |w| w.max(to));
        if self.wm != Some(wm) {
            self.wm = Some(wm);
            self.fire_until(wm, &mut out);
        }
        out
    }

    // ------------------------------------------------------------------
    // Touchpoints

    /// Offers one (validated) touchpoint; returns the outcome and the
    /// derived events this call produced, in order.
    pub fn on_touchpoint(&mut self, tp: &Touchpoint) -> (ModelOutcome, Vec<Value>) {
        let mut out = Vec::new();
        // SPEC 7: duplicate drop first (accepted events only, last 32) ...
        if let Some(c) = self.customers.get(&tp.customer_id) {
            if c.touches.iter().rev().take(32).any(|t| t.id == tp.event_id) {
                return (ModelOutcome::Duplicate, out);
            }
        }
        // ... then too_late: older than watermark − allowed_lateness.
        if let Some(wm) = self.wm {
            if tp.timestamp < wm - self.cfg.allowed_lateness {
                return (ModelOutcome::TooLate, out);
            }
        }
        let late = self.wm.is_some_and(|wm| tp.timestamp < wm);
        let max_t = self.max_t.map_or(tp.timestamp, |m| m.max(tp.timestamp));
        self.max_t = Some(max_t);
        let new_wm = max_t - self.cfg.max_out_of_orderness;
        let new_wm = self.wm.map_or(new_wm, |w| w.max(new_wm));
        if self.wm != Some(new_wm) {
            self.wm = Some(new_wm);
            // Timers the new watermark reaches fire before the record.
            self.fire_until(new_wm, &mut out);
        }
        self.apply(tp, &mut out);
        // A record may set a timer the watermark has already reached.
        self.fire_until(new_wm, &mut out);
        (ModelOutcome::Accepted { late }, out)
    }

    fn apply(&mut self, tp: &Touchpoint, out: &mut Vec<Value>) {
        let cfg = self.cfg.clone();
        let c = self
            .customers
            .entry(tp.customer_id.clone())
            .or_insert_with(|| Customer::new(&tp.customer_id));
        let first = c.touches.is_empty();
        c.touches.push(Touch {
            id: tp.event_id.clone(),
            channel: tp.channel,
            kind: tp.kind,
            t: tp.timestamp,
            value: tp.value,
            currency: tp.currency.clone(),
            order_id: tp.order_id.clone(),
            campaign_id: tp.campaign_id.clone(),
            survey: tp.survey,
            score: tp.score,
        });
        let idx = c.touches.len() - 1;
        let now = c.clock();
        let cust = c.id.clone();
        let ev = |kind: DerivedType, payload: Value| touch_event(kind, &cust, tp, payload);

        // 1. engagement_score
        let (score, channels) = engagement(&cfg, c);
        if first
            || c.last_score
                .is_some_and(|p| (score - p).abs() >= cfg.min_delta)
        {
            out.push(ev(
                DerivedType::EngagementScore,
                json!({"score": score, "previous": c.last_score, "channels": channels}),
            ));
            c.last_score = Some(score);
        }

        // 2. carts (cart_abandoned only comes from timers)
        if tp.kind.is_cart_activity() {
            match c.carts.iter_mut().find(|k| k.key == tp.cart_id) {
                Some(cart) => cart.activities.push(idx),
                None => c.carts.push(Cart {
                    key: tp.cart_id.clone(),
                    activities: vec![idx],
                    abandoned: false,
                }),
            }
        }
        let is_order = tp.kind == TouchType::OrderPlaced;

        // 3. cart_recovered
        if is_order {
            let o = tp.timestamp;
            let in_window =
                |a: &Abandonment| !a.recovered && o - a.at >= 0 && o - a.at <= cfg.recovery_window;
            let most_recent = |pred: &dyn Fn(&Abandonment) -> bool| {
                latest_by_time(
                    c.abandonments
                        .iter()
                        .enumerate()
                        .filter(|(_, a)| in_window(a) && pred(a))
                        .map(|(i, a)| (a.at, i)),
                )
                .map(|(_, i)| i)
            };
            let pick = match &tp.cart_id {
                Some(k) => most_recent(&|a: &Abandonment| a.cart_id.as_ref() == Some(k)),
                None => None,
            }
            .or_else(|| most_recent(&|_| true));
            if let Some(i) = pick {
                let a = &mut c.abandonments[i];
                a.recovered = true;
                out.push(ev(
                    DerivedType::CartRecovered,
                    json!({
                        "cart_id": a.cart_id,
                        "order_id": tp.order_id,
                        "order_value": tp.value,
                        "abandoned_at": a.at,
                    }),
                ));
            }
            // Any order closes all open carts.
            c.carts.clear();
        }

        // 4. churn_risk
        let (level, payload) = churn_eval(&cfg, c, now);
        let before = c.level;
        let became_high = level == Level::High && before != Level::High;
        if level != before {
            c.level = level;
            out.push(ev(DerivedType::ChurnRisk, with_prev(payload, before)));
        }

        // 5. journey_stage_changed
        let orders = c.orders().len();
        let target = if is_order {
            if orders >= 2 {
                Stage::Retention
            } else {
                Stage::Transaction
            }
        } else if tp.kind.is_passive() {
            Stage::Awareness
        } else {
            Stage::Engagement
        };
        let mut stage = match c.stage {
            None => target,
            Some(Stage::AtRisk) if is_order => target,
            Some(Stage::AtRisk) => Stage::AtRisk,
            Some(s) if target.rank() > s.rank() => target,
            Some(s) => s,
        };
        if became_high {
            stage = Stage::AtRisk;
        }
        if c.stage != Some(stage) {
            out.push(ev(
                DerivedType::JourneyStageChanged,
                json!({
                    "from": c.stage.map(Stage::name),
                    "to": stage.name(),
                    "channel": tp.channel.as_str(),
                }),
            ));
            c.stage = Some(stage);
        }

        // 6. survey_trigger: only from timers; a click arms one.
        let click_due = (tp.kind == TouchType::MessageClicked && tp.campaign_id.is_some())
            .then(|| tp.timestamp + cfg.conversion_window);

        // 7. contact_fatigue
        if tp.kind == TouchType::MessageSent {
            let counted: Vec<&Touch> = c
                .touches
                .iter()
                .filter(|t| t.kind == TouchType::MessageSent && now - 7 * DAY < t.t && t.t <= now)
                .collect();
            let count = counted.len();
            let before = count - usize::from(now - 7 * DAY < tp.timestamp);
            if before <= cfg.contact_cap as usize {
                c.fatigue_armed = true;
            }
            if c.fatigue_armed && count > cfg.contact_cap as usize {
                c.fatigue_armed = false;
                out.push(ev(
                    DerivedType::ContactFatigue,
                    json!({
                        "messages_7d": count,
                        "channels": names(counted.iter().map(|t| t.channel)),
                    }),
                ));
            }
        }

        // 8. order_attributed
        if is_order {
            let (payload, newer) = attribution(c, idx);
            if newer >= touchstream::signals::attribution::KEEP - 1 {
                self.orders_beyond_keep += 1;
            }
            out.push(ev(DerivedType::OrderAttributed, payload));
            // 9. customer_value
            out.push(ev(DerivedType::CustomerValue, customer_value(&cfg, c, now)));
        }

        // Timers this touchpoint sets or moves.
        let mut wanted: Vec<(TimerId, Option<i64>)> = Vec::new();
        // Carts closed by an order lose their timer.
        let open: Vec<Option<String>> = c.carts.iter().map(|k| k.key.clone()).collect();
        for cart in &c.carts {
            let acts: Vec<&Touch> = cart.activities.iter().map(|&i| &c.touches[i]).collect();
            let eligible = acts
                .iter()
                .any(|t| matches!(t.kind, TouchType::AddToCart | TouchType::CheckoutStarted));
            let due = (eligible && !cart.abandoned)
                .then(|| acts.iter().map(|t| t.t).max().expect("activity") + cfg.cart_timeout);
            wanted.push((TimerId::Cart(cart.key.clone()), due));
        }
        if let Some(d) = click_due {
            wanted.push((TimerId::Survey(idx), Some(d)));
        }
        wanted.push((TimerId::Churn, churn_next(&cfg, c, now)));
        wanted.push((TimerId::Ttl, Some(c.newest() + cfg.state_ttl)));
        let stale: Vec<Option<String>> = self
            .timers
            .iter()
            .filter_map(|t| match &t.id {
                TimerId::Cart(k) if t.cust == cust && !open.contains(k) => Some(k.clone()),
                _ => None,
            })
            .collect();
        for k in stale {
            self.set_timer(&cust, TimerId::Cart(k), None);
        }
        for (id, due) in wanted {
            self.set_timer(&cust, id, due);
        }
    }

    // ------------------------------------------------------------------
    // Snapshot (SPEC 6/7), keyed by customer id

    pub fn snapshot(&self) -> BTreeMap<String, Value> {
        let wm = self.wm.unwrap_or(i64::MIN);
        self.customers
            .values()
            .map(|c| {
                let (score, channels) = engagement(&self.cfg, c);
                let orders = c.orders();
                let at = c.clock().max(wm);
                let row = json!({
                    "customer_id": c.id,
                    "engagement_score": score,
                    "stage": c.stage.map(Stage::name),
                    "churn_level": c.level.name(),
                    "p_alive": p_alive(&self.cfg, &orders, at),
                    "orders": orders.len(),
                    "first_order_at": orders.first(),
                    "last_order_at": orders.last(),
                    "last_activity_at": c.last_activity(),
                    "channels": channels,
                    "predicted_clv": (!orders.is_empty()).then(|| clv(&self.cfg, c, at).1),
                    "expected_orders": (!orders.is_empty()).then(|| clv(&self.cfg, c, at).0),
                });
                (c.id.clone(), row)
            })
            .collect()
    }
}

// ----------------------------------------------------------------------
// Event construction

fn touch_event(kind: DerivedType, cust: &str, tp: &Touchpoint, payload: Value) -> Value {
    let id = event_id(kind, cust, Cause::Touch(&tp.event_id));
    finish(kind, id.to_string(), cust, tp.timestamp, payload)
}

fn timer_event(
    kind: DerivedType,
    cust: &str,
    tk: TimerKind,
    due: i64,
    disc: &str,
    payload: Value,
) -> Value {
    let id = event_id(
        kind,
        cust,
        Cause::Timer {
            kind: tk,
            due,
            discriminator: disc,
        },
    );
    finish(kind, id.to_string(), cust, due, payload)
}

fn finish(kind: DerivedType, id: String, cust: &str, at: i64, payload: Value) -> Value {
    let mut v = json!({
        "type": kind.as_str(),
        "event_id": id,
        "customer_id": cust,
        "at": at,
    });
    let m = v.as_object_mut().expect("object");
    for (k, x) in payload.as_object().expect("payload object") {
        m.insert(k.clone(), x.clone());
    }
    v
}

fn with_prev(mut payload: Value, before: Level) -> Value {
    payload["previous_level"] = json!(before.name());
    payload
}

// ----------------------------------------------------------------------
// Signals, recomputed from scratch

/// SPEC 4 engagement: (score, sorted channels of own touches in the last
/// 30 d), with t_now the customer's newest event time.
fn engagement(cfg: &EngineConfig, c: &Customer) -> (f64, Value) {
    let t_now = c.newest();
    let mut raw = 0.0;
    for t in &c.touches {
        let w = cfg.weights[t.kind.index()];
        raw += w * 0.5f64.powf((t_now - t.t) as f64 / cfg.half_life as f64);
    }
    let chans: BTreeSet<&'static str> = c
        .touches
        .iter()
        .filter(|t| t.own() && t_now - t.t < 30 * DAY)
        .map(|t| t.channel.as_str())
        .collect();
    let mult = 1.0 + cfg.channel_bonus * (chans.len() as f64 - 1.0);
    let raw = f64::max(raw * mult, 0.0);
    let score = 100.0 * (1.0 - (-raw / cfg.scale).exp());
    (score, json!(chans.into_iter().collect::<Vec<_>>()))
}

/// The customer's orders by event time (ties: arrival order).
fn order_touches(c: &Customer) -> Vec<&Touch> {
    let mut o: Vec<(usize, &Touch)> = c
        .touches
        .iter()
        .enumerate()
        .filter(|(_, t)| t.kind == TouchType::OrderPlaced)
        .collect();
    o.sort_by_key(|(i, t)| (t.t, *i));
    o.into_iter().map(|(_, t)| t).collect()
}

/// SPEC 4 "Customer lifetime value" at `now`: (expected_orders,
/// predicted_clv), from lifetimes' formulas as written: 2F1 summed as is
/// (Euler's transformation only where that overflows), the Gamma-Gamma
/// mean as a weighted average, and monthly differences of E.
fn clv(cfg: &EngineConfig, c: &Customer, now: i64) -> (f64, f64) {
    let orders = order_touches(c);
    let first = orders[0].t;
    let last = orders.iter().map(|t| t.t).max().expect("an order");
    let x = (orders.len() - 1) as f64;
    let t_x = (last - first) as f64 / DAY as f64;
    let big_t = (now.max(last) - first) as f64 / DAY as f64;
    let repeat: Vec<f64> = orders[1..].iter().filter_map(|t| t.value).collect();
    let (p, q, v) = (cfg.gamma_gamma.p, cfg.gamma_gamma.q, cfg.gamma_gamma.v);
    let population_mean = v * p / (q - 1.0);
    let mean = if repeat.is_empty() {
        population_mean
    } else {
        let xv = repeat.len() as f64;
        let m = repeat.iter().sum::<f64>() / xv;
        let w = p * xv / (p * xv + q - 1.0);
        (1.0 - w) * population_mean + w * m
    };
    let (r, alpha, a, b) = (cfg.r, cfg.alpha, cfg.a, cfg.b);
    let expected = |t: f64| -> f64 {
        if t == 0.0 {
            return 0.0;
        }
        let (aa, bb, cc) = (r + x, b + x, a + b + x - 1.0);
        let z = t / (alpha + big_t + t);
        let series = |a1: f64, b1: f64| {
            let (mut sum, mut term, mut n) = (1.0f64, 1.0f64, 0.0);
            while term.abs() > 1e-17 * sum.abs() && n < 1e6 {
                term *= (a1 + n) * (b1 + n) / ((cc + n) * (n + 1.0)) * z;
                sum += term;
                n += 1.0;
            }
            sum
        };
        let mut ln_hyp = series(aa, bb).ln();
        if !ln_hyp.is_finite() {
            ln_hyp = series(cc - aa, cc - bb).ln() + (cc - aa - bb) * (1.0 - z).ln();
        }
        let first_term = (a + b + x - 1.0) / (a - 1.0);
        let second = 1.0 - (ln_hyp + (r + x) * ((alpha + big_t) / (alpha + t + big_t)).ln()).exp();
        let denominator = 1.0
            + if x > 0.0 {
                (a / (b + x - 1.0)) * ((alpha + big_t) / (alpha + t_x)).powf(r + x)
            } else {
                0.0
            };
        first_term * second / denominator
    };
    let mut value = 0.0;
    for i in 1..=cfg.horizon_months {
        let t = 30.0 * f64::from(i);
        let n = expected(t) - expected(t - 30.0);
        value += mean * n / (1.0 + cfg.monthly_discount).powf(f64::from(i));
    }
    (expected(30.0 * f64::from(cfg.horizon_months)), value)
}

/// The `customer_value` payload after an order, at the customer's clock.
fn customer_value(cfg: &EngineConfig, c: &Customer, now: i64) -> Value {
    let orders = order_touches(c);
    let values: Vec<f64> = orders.iter().filter_map(|t| t.value).collect();
    let total: f64 = values.iter().sum();
    let currency = orders.iter().rev().find_map(|t| t.currency.clone());
    let times: Vec<i64> = orders.iter().map(|t| t.t).collect();
    let (expected_orders, predicted_clv) = clv(cfg, c, now);
    json!({
        "orders": orders.len(),
        "total_spend": total,
        "average_order_value": (!values.is_empty()).then(|| total / values.len() as f64),
        "expected_orders": expected_orders,
        "predicted_clv": predicted_clv,
        "currency": currency,
        "p_alive": p_alive(cfg, &times, now),
    })
}

/// BG/NBD p_alive (SPEC 4 closed form); null without an order.
fn p_alive(cfg: &EngineConfig, orders: &[i64], now: i64) -> Option<f64> {
    let first = *orders.first()?;
    let last = *orders.last()?;
    let x = (orders.len() - 1) as f64;
    if orders.len() == 1 {
        return Some(1.0);
    }
    let t_x = (last - first) as f64 / DAY as f64;
    let big_t = (now - first) as f64 / DAY as f64;
    let k = cfg.a / (cfg.b + x - 1.0);
    let ratio = ((cfg.alpha + big_t) / (cfg.alpha + t_x)).powf(cfg.r + x);
    Some(1.0 / (1.0 + k * ratio))
}

/// The first millisecond at which p_alive is below `th` (None with fewer
/// than two orders): solved from the closed form, then settled by
/// evaluating p_alive itself at neighbouring milliseconds.
fn crossing(cfg: &EngineConfig, orders: &[i64], th: f64) -> Option<i64> {
    if orders.len() < 2 {
        return None;
    }
    let first = orders[0];
    let last = *orders.last().expect("orders");
    let x = (orders.len() - 1) as f64;
    let k = cfg.a / (cfg.b + x - 1.0);
    let t_x = (last - first) as f64 / DAY as f64;
    let ratio = ((1.0 / th - 1.0) / k).powf(1.0 / (cfg.r + x));
    let big_t = (cfg.alpha + t_x) * ratio - cfg.alpha;
    let approx = big_t * DAY as f64;
    if !approx.is_finite() || approx.abs() > 1e16 {
        return None;
    }
    let below = |m: i64| p_alive(cfg, orders, m).expect("p") < th;
    let mut m = first + approx.floor() as i64;
    let mut guard = 0;
    while below(m - 1) {
        m -= 1;
        guard += 1;
        assert!(guard < 10_000, "crossing search diverged");
    }
    while !below(m) {
        m += 1;
        guard += 1;
        assert!(guard < 10_000, "crossing search diverged");
    }
    Some(m)
}

/// SPEC 4/7 churn: the level at `now` and the payload (without
/// `previous_level`).
fn churn_eval(cfg: &EngineConfig, c: &Customer, now: i64) -> (Level, Value) {
    let orders = c.orders();
    let p = p_alive(cfg, &orders, now);
    let age = c.last_activity().map(|a| now - a);
    let last_unsub = c
        .touches
        .iter()
        .filter(|t| t.kind == TouchType::Unsubscribed)
        .map(|t| t.t)
        .max();
    let unsub_recent = last_unsub.is_some_and(|u| now - u < 30 * DAY);
    let last_nps = latest_by_time(
        c.touches
            .iter()
            .filter(|t| {
                t.kind == TouchType::SurveyResponse
                    && t.survey == Some(Survey::Nps)
                    && t.score.is_some()
            })
            .map(|t| (t.t, t.score.expect("score"))),
    );
    let detractor = last_nps.is_some_and(|(_, s)| s <= 6);
    let p_high = p.is_some_and(|p| p < 0.3);
    let p_med = p.is_some_and(|p| p < 0.7);
    let inactive_90 = age.is_some_and(|a| a >= 90 * DAY);
    let inactive_30 = age.is_some_and(|a| a >= 30 * DAY);
    let level = if p_high || inactive_90 || unsub_recent {
        Level::High
    } else if p_med || inactive_30 || detractor {
        Level::Medium
    } else {
        Level::Low
    };
    let mut reasons = Vec::new();
    if p_med {
        reasons.push("p_alive");
    }
    if inactive_30 {
        reasons.push("inactive");
    }
    if unsub_recent {
        reasons.push("unsubscribed");
    }
    if detractor {
        reasons.push("nps_detractor");
    }
    let payload = json!({
        "level": level.name(),
        "p_alive": p,
        "days_inactive": age.map(|a| a.div_euclid(DAY)),
        "reasons": reasons,
    });
    (level, payload)
}

/// SPEC 7: the next instant after `now` at which any churn condition can
/// flip by time alone.
fn churn_next(cfg: &EngineConfig, c: &Customer, now: i64) -> Option<i64> {
    let orders = c.orders();
    let mut cands = Vec::new();
    if let Some(a) = c.last_activity() {
        cands.push(a + 30 * DAY);
        cands.push(a + 90 * DAY);
    }
    if let Some(u) = c
        .touches
        .iter()
        .filter(|t| t.kind == TouchType::Unsubscribed)
        .map(|t| t.t)
        .max()
    {
        cands.push(u + 30 * DAY);
    }
    cands.extend(crossing(cfg, &orders, 0.7));
    cands.extend(crossing(cfg, &orders, 0.3));
    cands.into_iter().filter(|&d| d > now).min()
}

/// SPEC 4/7 attribution of the order at `touches[idx]`; also how many own
/// touches (other than the order) are newer, by (time, arrival), than the
/// oldest touch it uses (0 when it uses none).
fn attribution(c: &Customer, idx: usize) -> (Value, usize) {
    let order = &c.touches[idx];
    let o = order.t;
    // (time, arrival index) of every own touch in (o − 30 d, o] but the order.
    let mut keys: Vec<(i64, usize)> = c
        .touches
        .iter()
        .enumerate()
        .filter(|(i, t)| *i != idx && t.own() && o - 30 * DAY < t.t && t.t <= o)
        .map(|(i, t)| (t.t, i))
        .collect();
    keys.sort(); // by time, arrival order among equal times
    if keys.len() > 64 {
        keys.drain(..keys.len() - 64);
    }
    let newer = keys.first().map_or(0, |&oldest| {
        c.touches
            .iter()
            .enumerate()
            .filter(|(i, t)| *i != idx && t.own() && (t.t, *i) > oldest)
            .count()
    });
    let ts: Vec<&Touch> = keys.iter().map(|&(_, i)| &c.touches[i]).collect();
    let n = ts.len();
    let one = |ch: Channel| json!({ ch.as_str(): 1.0 });
    let models = if n == 0 {
        let m = one(order.channel);
        json!({
            "last_touch": m, "first_touch": m, "linear": m,
            "time_decay": m, "position_based": m,
        })
    } else {
        let sum = |ws: Vec<f64>| {
            let mut m: BTreeMap<&'static str, f64> = BTreeMap::new();
            for (t, w) in ts.iter().zip(ws) {
                *m.entry(t.channel.as_str()).or_default() += w;
            }
            json!(m)
        };
        let linear = sum(vec![1.0 / n as f64; n]);
        let decay: Vec<f64> = ts
            .iter()
            .map(|t| 0.5f64.powf((o - t.t) as f64 / (7 * DAY) as f64))
            .collect();
        let total: f64 = decay.iter().sum();
        let time_decay = sum(decay.iter().map(|w| w / total).collect());
        let pos: Vec<f64> = match n {
            1 => vec![1.0],
            2 => vec![0.5, 0.5],
            _ => (0..n)
                .map(|i| {
                    if i == 0 || i == n - 1 {
                        0.4
                    } else {
                        0.2 / (n - 2) as f64
                    }
                })
                .collect(),
        };
        json!({
            "last_touch": one(ts[n - 1].channel),
            "first_touch": one(ts[0].channel),
            "linear": linear,
            "time_decay": time_decay,
            "position_based": sum(pos),
        })
    };
    let payload = json!({
        "order_id": order.order_id,
        "order_value": order.value,
        "currency": order.currency,
        "channel": order.channel.as_str(),
        "models": models,
    });
    (payload, newer)
}
