//! Differential test: the real engine against an independent, naive
//! reference model of SPEC sections 3, 4, 5 and 7 (`tests/reference/`).
//!
//! The same input goes to both; after every record (and every idle
//! watermark advance) the outcome (accepted / late / duplicate /
//! too_late), the watermark and the derived events produced must be
//! identical — compared as JSON, floats to a relative 1e-9, everything else
//! exactly, event ids included — and at the end so must the snapshot rows.
//!
//! Inputs: generated traffic (`touchstream::generate`) under four
//! configurations, and random short scenarios (proptest) of 1-3 customers
//! with orders, carts, campaign clicks, message bursts, unsubscribes,
//! surveys, duplicates, out-of-order, late and too-late records, idle
//! watermark advances and jumps of days to months.
//!
//! Where the engine deviates from the SPEC (or the SPEC is ambiguous), the
//! situation is left out of the generators with a comment naming it
//! ("Finding N"); nothing else is.

mod reference;

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;
use serde_json::Value;
use touchstream::config::EngineConfig;
use touchstream::engine::{Engine, Outcome};
use touchstream::generate::{stream, GenConfig};
use touchstream::model::{Channel, Survey, TouchType, Touchpoint};

use reference::{Model, ModelOutcome, DAY};

const HOUR: i64 = 3_600_000;
const MIN: i64 = 60_000;
const SEC: i64 = 1_000;
/// 2026-01-05T00:00:00Z.
const T0: i64 = 1_767_571_200_000;
/// The state TTL of one random configuration: exactly the 30 d of the
/// inactivity and unsubscribe conditions, so eviction often ties with a
/// churn timer (finding 3, fixed: the level that flips at the TTL instant
/// is emitted, and the eviction comes after every timer due then).
const SHORT_TTL: i64 = 30 * DAY;

/// One step of the input.
#[derive(Debug, Clone)]
enum Input {
    /// A validated touchpoint (`Engine::on_touchpoint`).
    Record(Box<Touchpoint>),
    /// An idle partition's watermark moved by the wall clock
    /// (`Engine::advance_watermark`).
    Idle(i64),
}

// --------------------------------------------------------------------------
// Comparison

fn close(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs()) || (a - b).abs() <= 1e-12
}

/// Compares two JSON values: numbers that are not both integers to a
/// relative 1e-9, everything else exactly. Returns the first difference.
fn diff(a: &Value, b: &Value, path: &str) -> Option<String> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let exact = |n: &serde_json::Number| n.is_i64() || n.is_u64();
            if exact(x) && exact(y) {
                (x != y).then(|| format!("{path}: {x} != {y}"))
            } else {
                let fx = x.as_f64().unwrap_or(f64::NAN);
                let fy = y.as_f64().unwrap_or(f64::NAN);
                (!close(fx, fy)).then(|| format!("{path}: {fx} != {fy}"))
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            if x.len() != y.len() {
                return Some(format!("{path}: length {} != {}", x.len(), y.len()));
            }
            x.iter()
                .zip(y)
                .enumerate()
                .find_map(|(i, (p, q))| diff(p, q, &format!("{path}[{i}]")))
        }
        (Value::Object(x), Value::Object(y)) => {
            let kx: Vec<&String> = x.keys().collect();
            let ky: Vec<&String> = y.keys().collect();
            if kx != ky {
                return Some(format!("{path}: keys {kx:?} != {ky:?}"));
            }
            x.iter()
                .find_map(|(k, v)| diff(v, &y[k], &format!("{path}.{k}")))
        }
        _ => (a != b).then(|| format!("{path}: {a} != {b}")),
    }
}

fn diff_lists(engine: &[Value], model: &[Value]) -> Option<String> {
    if engine.len() != model.len() {
        return Some(format!(
            "{} events (engine) != {} events (model)",
            engine.len(),
            model.len()
        ));
    }
    engine
        .iter()
        .zip(model)
        .enumerate()
        .find_map(|(i, (e, m))| diff(e, m, &format!("event[{i}]")))
}

fn same_outcome(e: Outcome, m: ModelOutcome) -> bool {
    match (e, m) {
        (Outcome::Accepted { late: a }, ModelOutcome::Accepted { late: b }) => a == b,
        (Outcome::Duplicate, ModelOutcome::Duplicate) => true,
        (Outcome::TooLate, ModelOutcome::TooLate) => true,
        _ => false,
    }
}

fn show(input: &Input) -> String {
    match input {
        Input::Record(tp) => serde_json::to_string(tp).expect("touchpoint JSON"),
        Input::Idle(to) => format!("<idle: watermark to {to}>"),
    }
}

fn to_json(out: &[touchstream::model::DerivedEvent]) -> Vec<Value> {
    out.iter()
        .map(|e| serde_json::to_value(e).expect("derived event JSON"))
        .collect()
}

/// Feeds `inputs` in order to a fresh engine and a fresh model. `Ok` holds
/// the number of derived events; `Err` describes the first disagreement
/// with the input that led to it and both outputs.
fn differential(cfg: &EngineConfig, inputs: &[Input]) -> Result<usize, String> {
    let mut engine = Engine::new(Arc::new(cfg.clone()));
    let mut model = Model::new(cfg.clone());
    let mut produced = 0;
    for (i, input) in inputs.iter().enumerate() {
        let mut out = Vec::new();
        let (problem, ev, mv) = match input {
            Input::Record(tp) => {
                let eo = engine.on_touchpoint(tp, &mut out);
                let (mo, mv) = model.on_touchpoint(tp);
                stats::outcome(eo);
                let p = (!same_outcome(eo, mo))
                    .then(|| format!("outcome: engine {eo:?}, model {mo:?}"));
                (p, to_json(&out), mv)
            }
            Input::Idle(to) => {
                engine.advance_watermark(*to, &mut out);
                (None, to_json(&out), model.advance_watermark(*to))
            }
        };
        produced += ev.len();
        stats::events(&ev);
        let problem = problem
            .or_else(|| {
                (engine.watermark() != model.watermark()).then(|| {
                    format!(
                        "watermark: engine {:?}, model {:?}",
                        engine.watermark(),
                        model.watermark()
                    )
                })
            })
            .or_else(|| diff_lists(&ev, &mv));
        if let Some(p) = problem {
            let history: String = inputs[..=i]
                .iter()
                .map(|x| format!("  {}\n", show(x)))
                .collect();
            let pretty =
                |vs: &[Value]| -> String { vs.iter().map(|v| format!("  {v}\n")).collect() };
            return Err(format!(
                "disagreement at input {i}: {p}\ninput up to it:\n{history}engine:\n{}model:\n{}",
                pretty(&ev),
                pretty(&mv)
            ));
        }
    }
    stats::bump("customers evicted", engine.stats().evicted);
    stats::bump("timers fired", engine.stats().timers_fired);
    let snap: BTreeMap<String, Value> = engine
        .snapshot()
        .into_iter()
        .map(|r| {
            let v = serde_json::to_value(&r).expect("snapshot JSON");
            (r.customer_id, v)
        })
        .collect();
    let msnap = model.snapshot();
    let ek: Vec<&String> = snap.keys().collect();
    let mk: Vec<&String> = msnap.keys().collect();
    if ek != mk {
        return Err(format!("snapshot customers: engine {ek:?}, model {mk:?}"));
    }
    for (k, row) in &snap {
        if let Some(p) = diff(row, &msnap[k], k) {
            return Err(format!(
                "snapshot: {p}\nengine: {row}\nmodel:  {}",
                msnap[k]
            ));
        }
    }
    Ok(produced)
}

/// Situations where the engine is known to deviate from the SPEC; the
/// random generator leaves exactly these out (`None`: none occurs).
///
/// Finding 1 (fixed): the engine kept only the newest 96 own touches, so
/// a late order after a burst was attributed over fewer touches than SPEC 7
/// requires. It now keeps every touch after the lateness horizon plus the
/// 64 newest at or before it, bounded by `attribution::KEEP` (254) against
/// bursts; only an order reaching past that bound is left out here (the
/// generators never come near it). Detected by running the model alone.
fn known_engine_deviation(cfg: &EngineConfig, inputs: &[Input]) -> Option<&'static str> {
    let mut model = Model::new(cfg.clone());
    for input in inputs {
        match input {
            Input::Record(tp) => {
                model.on_touchpoint(tp);
            }
            Input::Idle(to) => {
                model.advance_watermark(*to);
            }
        }
    }
    (model.orders_beyond_keep > 0)
        .then_some("finding 1: attribution beyond the engine's burst bound")
}

#[track_caller]
fn assert_agree(cfg: &EngineConfig, tps: Vec<Touchpoint>) -> usize {
    let inputs: Vec<Input> = tps
        .into_iter()
        .map(|tp| Input::Record(Box::new(tp)))
        .collect();
    match differential(cfg, &inputs) {
        Ok(n) => n,
        Err(e) => panic!("{e}"),
    }
}

/// Counters of what the inputs exercised (printed by `coverage_stats`).
mod stats {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use serde_json::Value;
    use touchstream::engine::Outcome;

    static COUNTS: Mutex<BTreeMap<String, u64>> = Mutex::new(BTreeMap::new());

    pub fn bump(k: &str, n: u64) {
        if let Ok(mut m) = COUNTS.lock() {
            *m.entry(k.to_string()).or_default() += n;
        }
    }

    pub fn outcome(o: Outcome) {
        bump(&format!("outcome {o:?}"), 1);
    }

    pub fn events(evs: &[Value]) {
        for e in evs {
            let t = e["type"].as_str().unwrap_or("?");
            let k = match t {
                "journey_stage_changed" => format!("{t} {} -> {}", e["from"], e["to"]),
                "churn_risk" => format!("{t} {} {}", e["level"], e["reasons"]),
                _ => t.to_string(),
            };
            bump(&k, 1);
        }
    }

    pub fn dump() {
        let m = COUNTS.lock().map(|mut m| std::mem::take(&mut *m));
        for (k, v) in m.unwrap_or_default() {
            eprintln!("  {v:9} {k}");
        }
    }
}

// --------------------------------------------------------------------------
// Generated traffic

fn generated(cfg: &GenConfig) -> Vec<Touchpoint> {
    stream(cfg).collect()
}

#[test]
fn generated_traffic_default_config() {
    let tps = generated(&GenConfig {
        seed: 11,
        customers: 300,
        days: 60,
        ..GenConfig::default()
    });
    let len = tps.len();
    let n = assert_agree(&EngineConfig::default(), tps);
    assert!(len > 10_000 && n > 5_000, "{len} in, {n} out");
}

#[test]
fn generated_traffic_small_ttl_and_cap() {
    let tps = generated(&GenConfig {
        seed: 12,
        customers: 200,
        days: 60,
        heavy_messaged_fraction: 0.2,
        ..GenConfig::default()
    });
    let cfg = EngineConfig {
        // Finding 3 (fixed): a state_ttl of whole days, so eviction ties
        // with survey timers (24 h after a click) and cart timers.
        state_ttl: 9 * DAY,
        contact_cap: 3,
        ..EngineConfig::default()
    };
    let n = assert_agree(&cfg, tps);
    assert!(n > 1_000);
}

#[test]
fn generated_traffic_no_out_of_orderness() {
    let tps = generated(&GenConfig {
        seed: 13,
        customers: 200,
        days: 45,
        ..GenConfig::default()
    });
    let cfg = EngineConfig {
        max_out_of_orderness: 0,
        ..EngineConfig::default()
    };
    let n = assert_agree(&cfg, tps);
    assert!(n > 1_000);
}

#[test]
fn generated_traffic_heavy_disorder() {
    // Timestamps moved back by up to 2 h: late and too_late records.
    let tps = generated(&GenConfig {
        seed: 14,
        customers: 150,
        days: 40,
        disorder_ms: 2 * HOUR,
        disorder_fraction: 0.2,
        ..GenConfig::default()
    });
    let cfg = EngineConfig {
        allowed_lateness: 40 * MIN,
        ..EngineConfig::default()
    };
    let n = assert_agree(&cfg, tps);
    assert!(n > 1_000);
}

// --------------------------------------------------------------------------
// Random short scenarios

/// One step of a random scenario.
#[derive(Debug, Clone)]
struct Step {
    cust: u8,
    op: u8,
    time: TimeMove,
    channel: u8,
    cart: u8,
    value: u16,
    pick: u8,
    dup: u8,
}

#[derive(Debug, Clone, Copy)]
enum TimeMove {
    /// Forward from the newest time by this much.
    Forward(i64),
    /// Backward from the newest time by this much (out of order, late or
    /// too late).
    Back(i64),
    /// This long after one of the last few records: 0..4 the customer's own
    /// (0 = its latest), 4..8 any customer's, 8..12 the customer's latest
    /// record of the same kind as this step (click after click, order after
    /// order, ...). Lands exactly on the edge of a window that record
    /// opened.
    Anchor(u8, i64),
}

fn time_move() -> impl Strategy<Value = TimeMove> {
    // Exact SPEC periods and their neighbours, so boundaries are hit.
    let exact = prop::sample::select(vec![
        0,
        1,
        SEC,
        5 * SEC,
        5 * SEC + 1,
        HOUR - 5 * SEC,
        HOUR,
        HOUR + 1,
        HOUR + 5 * SEC,
        23 * HOUR,
        24 * HOUR,
        24 * HOUR + 5 * SEC,
        6 * DAY + 23 * HOUR,
        7 * DAY,
        7 * DAY + 5 * SEC,
        29 * DAY,
        30 * DAY,
        30 * DAY + 5 * SEC,
        60 * DAY,
        90 * DAY,
        90 * DAY + 5 * SEC,
    ]);
    let exact_back = prop::sample::select(vec![
        1,
        5 * SEC,
        5 * SEC + 1,
        HOUR,
        HOUR + 1,
        HOUR + 5 * SEC,
        HOUR + 5 * SEC + 1,
    ]);
    // Windows a record opens: cart timeout, cart timeout + recovery window,
    // conversion window, survey cooldown, 7/30/90 d, the state TTLs of the
    // configurations, the short-window configuration's 10 min, 10 min + 2 h,
    // 30 min and 3 h; each also + 5 s (a record there moves the default
    // watermark exactly onto the edge), exactly and 4 ms either side (times
    // stay on each customer's 4 ms grid).
    let edges: Vec<i64> = [
        0,
        HOUR,
        HOUR + 7 * DAY,
        24 * HOUR,
        30 * DAY,
        7 * DAY,
        90 * DAY,
        SHORT_TTL,
        400 * DAY,
        10 * MIN,
        10 * MIN + 2 * HOUR,
        30 * MIN,
        3 * HOUR,
    ]
    .iter()
    .flat_map(|&e| [e, e + 5 * SEC])
    .flat_map(|e| [e - 4, e, e, e + 4])
    .collect();
    let anchored = (0u8..12, prop::sample::select(edges)).prop_map(|(k, d)| TimeMove::Anchor(k, d));
    prop_oneof![
        4 => anchored,
        4 => (0..20 * MIN).prop_map(TimeMove::Forward),
        2 => (0..6 * HOUR).prop_map(TimeMove::Forward),
        2 => exact.prop_map(TimeMove::Forward),
        1 => (DAY..120 * DAY).prop_map(TimeMove::Forward),
        1 => (0..6 * SEC).prop_map(TimeMove::Back),
        1 => (0..2 * HOUR).prop_map(TimeMove::Back),
        1 => exact_back.prop_map(TimeMove::Back),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    (
        0u8..3,
        0u8..27,
        time_move(),
        0u8..7,
        0u8..3,
        0u16..300,
        any::<u8>(),
        0u8..10,
    )
        .prop_map(|(cust, op, time, channel, cart, value, pick, dup)| Step {
            cust,
            op,
            time,
            channel,
            cart,
            value,
            pick,
            dup,
        })
}

const CHANNELS: [Channel; 7] = [
    Channel::Web,
    Channel::MobileApp,
    Channel::Email,
    Channel::Store,
    Channel::Sms,
    Channel::CallCenter,
    Channel::Other,
];

/// Builds the input from steps. Customers use at most `n_cust` ids. With
/// `offsets`, each customer's times carry a distinct millisecond offset
/// (mod 4) so timers of different customers never tie.
///
/// Bounds the generator keeps (findings 4 and 5, engine defences the SPEC
/// does not have): at most 3 cart keys per customer and fewer than 256
/// pending campaign clicks, far below the engine's 64 open carts and 256
/// pending clicks.
fn build(steps: &[Step], n_cust: u8, offsets: bool) -> Vec<Input> {
    let mut inputs: Vec<Input> = Vec::new();
    let mut newest = T0;
    let mut n = 0usize;
    // Each customer's record times, and everyone's, in arrival order.
    let mut times: BTreeMap<u8, Vec<i64>> = BTreeMap::new();
    let mut all: Vec<i64> = Vec::new();
    // The time of each customer's latest record per op.
    let mut same_kind: BTreeMap<(u8, u8), i64> = BTreeMap::new();
    for s in steps {
        let cust = s.cust % n_cust;
        let cid = format!("c{cust}");
        let mine = times.entry(cust).or_default();
        let t = match s.time {
            TimeMove::Forward(d) => newest + d,
            TimeMove::Back(d) => newest - d,
            TimeMove::Anchor(k, d) => {
                let base = match k {
                    0..=3 => mine.iter().rev().nth(usize::from(k)),
                    4..=7 => all.iter().rev().nth(usize::from(k - 4)),
                    _ => same_kind.get(&(cust, op_class(s.op))),
                };
                base.copied().unwrap_or(newest) + d
            }
        };
        let t = if offsets {
            t - t.rem_euclid(4) + i64::from(cust)
        } else {
            t
        };
        newest = newest.max(t);
        same_kind.insert((cust, op_class(s.op)), t);
        let ch = CHANNELS[usize::from(s.channel)];
        let cart = match s.cart {
            0 => None,
            k => Some(format!("k{k}")),
        };
        let value = f64::from(s.value) / 4.0;
        let mut batch: Vec<Touchpoint> = Vec::new();
        let mut mk = |kind: TouchType, t: i64| {
            n += 1;
            Touchpoint::new(format!("e{n}"), cid.clone(), ch, kind, t)
        };
        match s.op {
            0 | 1 => {
                let mut tp = mk(TouchType::AddToCart, t);
                tp.cart_id = cart;
                tp.value = (s.pick % 7 != 0).then_some(value);
                if s.pick % 3 != 0 {
                    tp.currency = Some(if s.pick % 2 == 0 { "EUR" } else { "USD" }.into());
                }
                batch.push(tp);
            }
            2 => {
                let mut tp = mk(TouchType::RemoveFromCart, t);
                tp.cart_id = cart;
                tp.value = Some(value);
                batch.push(tp);
            }
            3 => {
                let mut tp = mk(TouchType::CheckoutStarted, t);
                tp.cart_id = cart;
                // Finding 2 (ambiguous SPEC): no `checkout_started` without
                // a `value`. For "cart_value (the value of the last
                // checkout_started if any, else ...)" the engine takes the
                // last checkout_started carrying a value (else the
                // add/remove sum), the model the last one's value (0
                // without one).
                tp.value = Some(value);
                tp.currency = Some("EUR".into());
                batch.push(tp);
            }
            4..=6 => {
                let mut tp = mk(TouchType::OrderPlaced, t);
                tp.cart_id = cart;
                tp.order_id = Some(format!("o{n}"));
                if s.pick % 4 != 0 {
                    tp.value = Some(value);
                    tp.currency = Some("EUR".into());
                }
                batch.push(tp);
            }
            7 | 8 => {
                let mut tp = mk(TouchType::MessageClicked, t);
                if s.pick % 4 != 0 {
                    tp.campaign_id = Some(format!("camp{}", s.pick % 2));
                }
                batch.push(tp);
            }
            9 | 10 => {
                // A burst of outbound messages, minutes to days apart (some
                // gaps divide 7 d, so a message lands exactly on the edge of
                // an earlier one's window while the count hovers at the cap).
                let count = 1 + usize::from(s.pick % 13);
                let gaps = [
                    MIN,
                    10 * MIN,
                    3 * HOUR,
                    14 * HOUR,
                    DAY,
                    56 * HOUR,
                    84 * HOUR,
                ];
                let gap = gaps[usize::from(s.value) % gaps.len()];
                for j in 0..count {
                    batch.push(mk(TouchType::MessageSent, t + j as i64 * gap));
                }
            }
            11 => batch.push(mk(TouchType::Unsubscribed, t)),
            12 => {
                let mut tp = mk(TouchType::SurveyResponse, t);
                if s.pick % 5 == 0 {
                    tp.survey = Some(Survey::Csat);
                    tp.score = Some(1 + i32::from(s.pick % 5));
                } else {
                    tp.survey = Some(Survey::Nps);
                    tp.score = Some(i32::from(s.pick % 11));
                }
                batch.push(tp);
            }
            13 => batch.push(mk(TouchType::OrderReturned, t)),
            14 => batch.push(mk(TouchType::MessageOpened, t)),
            15 => batch.push(mk(TouchType::PageView, t)),
            16 => batch.push(mk(TouchType::ProductView, t)),
            17 => batch.push(mk(TouchType::Search, t)),
            18 => batch.push(mk(TouchType::StoreVisit, t)),
            19 => batch.push(mk(TouchType::AppOpen, t)),
            20 => batch.push(mk(TouchType::SocialInteraction, t)),
            21 => batch.push(mk(TouchType::SupportContact, t)),
            22 => batch.push(mk(TouchType::LoyaltyRedeemed, t)),
            23 => batch.push(mk(TouchType::Other, t)),
            24 | 25 => {
                // A burst of own touches (more than the 64 attribution
                // uses, sometimes more than 96), seconds to minutes apart,
                // on changing channels.
                let count = 20 + usize::from(s.pick) % 110;
                let gap = [SEC, 7 * SEC, MIN, 5 * MIN][usize::from(s.pick % 4)];
                let kinds = [
                    TouchType::PageView,
                    TouchType::ProductView,
                    TouchType::Search,
                ];
                for j in 0..count {
                    let mut tp = mk(kinds[j % 3], t + j as i64 * gap);
                    tp.channel = CHANNELS[(j / 5 + usize::from(s.channel)) % CHANNELS.len()];
                    batch.push(tp);
                }
            }
            _ => {
                // The partition goes idle: the watermark follows the wall
                // clock to `t` (possibly beyond every event time).
                inputs.push(Input::Idle(t));
            }
        }
        for tp in &batch {
            newest = newest.max(tp.timestamp);
            mine.push(tp.timestamp);
            all.push(tp.timestamp);
        }
        // Duplicates: resend an earlier record of the same customer (recent
        // ones are within the 32-event window, older ones may not be).
        if s.dup == 0 {
            let same: Vec<&Touchpoint> = inputs
                .iter()
                .filter_map(|x| match x {
                    Input::Record(tp) if tp.customer_id == cid => Some(&**tp),
                    _ => None,
                })
                .collect();
            if !same.is_empty() {
                let back = usize::from(s.pick) % same.len().min(40);
                batch.push(same[same.len() - 1 - back].clone());
            }
        }
        inputs.extend(batch.into_iter().map(|tp| Input::Record(Box::new(tp))));
    }
    inputs
}

/// Ops that make the same kind of record share a class.
fn op_class(op: u8) -> u8 {
    match op {
        0..=3 => 0,    // cart activity
        4..=6 => 4,    // order
        7 | 8 => 7,    // click
        9 | 10 => 9,   // messages
        24 | 25 => 24, // browsing burst
        _ => op,
    }
}

#[derive(Debug, Clone)]
struct Scenario {
    cfg_pick: u8,
    n_cust: u8,
    steps: Vec<Step>,
}

fn scenario_config(pick: u8) -> EngineConfig {
    let d = EngineConfig::default();
    match pick {
        0 => EngineConfig {
            max_out_of_orderness: 0,
            ..d
        },
        1 => EngineConfig {
            contact_cap: 2,
            min_delta: 0.5,
            ..d
        },
        // Finding 3: a state_ttl that ties with churn timers.
        2 => EngineConfig {
            state_ttl: SHORT_TTL,
            contact_cap: 3,
            ..d
        },
        3 => EngineConfig {
            // Short windows: a late click's timer can already be due.
            cart_timeout: 10 * MIN,
            conversion_window: 30 * MIN,
            recovery_window: 2 * HOUR,
            survey_cooldown: 3 * HOUR,
            allowed_lateness: 2 * HOUR,
            ..d
        },
        4 => {
            // Engagement parameters moved (attribution's time_decay keeps
            // its fixed 7-day half-life).
            let mut weights = d.weights;
            weights[TouchType::PageView.index()] = 4.0;
            weights[TouchType::MessageSent.index()] = 0.5;
            weights[TouchType::OrderReturned.index()] = -30.0;
            EngineConfig {
                half_life: 3 * DAY + 5 * HOUR,
                scale: 25.0,
                channel_bonus: 0.25,
                weights,
                ..d
            }
        }
        _ => d,
    }
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (0u8..8, 1u8..=3, prop::collection::vec(step(), 1..40)).prop_map(|(cfg_pick, n_cust, steps)| {
        Scenario {
            cfg_pick,
            n_cust,
            steps,
        }
    })
}

fn check(sc: &Scenario, offsets: bool) -> Result<(), TestCaseError> {
    let cfg = scenario_config(sc.cfg_pick);
    let inputs = build(&sc.steps, sc.n_cust, offsets);
    if let Some(why) = known_engine_deviation(&cfg, &inputs) {
        stats::bump(why, 1);
        return Err(TestCaseError::reject(why));
    }
    differential(&cfg, &inputs)
        .map(|_| ())
        .map_err(|e| TestCaseError::fail(format!("config pick {}:\n{e}", sc.cfg_pick)))
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 1_000,
        max_shrink_iters: 4_000,
        // Nothing written into the source tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_scenarios_agree(sc in scenario()) {
        check(&sc, true)?;
    }

    #[test]
    fn random_scenarios_with_cross_customer_ties_agree(sc in scenario()) {
        check(&sc, false)?;
    }
}

/// A step of customer `cust` with plain fields (no duplicate).
fn plain(cust: u8, op: u8, time: TimeMove) -> Step {
    Step {
        cust,
        op,
        time,
        channel: 0,
        cart: 0,
        value: 40,
        pick: 1,
        dup: 1,
    }
}

const OP_ADD_TO_CART: u8 = 0;
const OP_ORDER: u8 = 4;
const OP_CLICK: u8 = 7;
const OP_PAGE_VIEW: u8 = 15;
const OP_IDLE: u8 = 26;

/// The steps of one window-edge template for customer `c`: records placed
/// exactly `delta` (-4, 0 or +4 ms) off the edge of a window the first
/// record opens, under configuration `cfg`. `Anchor(0, d)` is `d` after the
/// customer's latest record (idle advances are not records).
fn edge_template(which: u8, c: u8, delta: i64, cfg: &EngineConfig) -> Vec<Step> {
    use TimeMove::{Anchor, Forward};
    let far = Anchor(0, 200 * DAY);
    match which {
        // cart_recovered: order at abandonment + recovery_window (+delta).
        0 => vec![
            plain(c, OP_ADD_TO_CART, Forward(0)),
            plain(c, OP_IDLE, Anchor(0, cfg.cart_timeout)),
            plain(
                c,
                OP_ORDER,
                Anchor(0, cfg.cart_timeout + cfg.recovery_window + delta),
            ),
        ],
        // cart_recovered: order at the abandonment time itself (+delta).
        1 => vec![
            plain(c, OP_ADD_TO_CART, Forward(0)),
            plain(c, OP_IDLE, Anchor(0, cfg.cart_timeout)),
            plain(c, OP_ORDER, Anchor(0, cfg.cart_timeout + delta)),
        ],
        // cart_abandoned: an order right at the cart timeout (+delta).
        2 => vec![
            plain(c, OP_ADD_TO_CART, Forward(0)),
            plain(c, OP_ORDER, Anchor(0, cfg.cart_timeout + delta)),
            plain(c, OP_IDLE, far),
        ],
        // survey_trigger: order at click + conversion_window (+delta).
        3 => vec![
            plain(c, OP_CLICK, Forward(0)),
            plain(c, OP_ORDER, Anchor(0, cfg.conversion_window + delta)),
            plain(c, OP_IDLE, far),
        ],
        // survey_trigger: order at the click itself (+delta).
        4 => vec![
            plain(c, OP_CLICK, Forward(0)),
            plain(c, OP_ORDER, Anchor(0, delta)),
            plain(c, OP_IDLE, far),
        ],
        // survey_trigger: a second click one cooldown after the first (+delta).
        5 => vec![
            plain(c, OP_CLICK, Forward(0)),
            plain(c, OP_IDLE, Anchor(0, cfg.conversion_window)),
            plain(c, OP_CLICK, Anchor(0, cfg.survey_cooldown + delta)),
            plain(c, OP_IDLE, far),
        ],
        // order_attributed: a touch 30 d (+delta) before the order.
        6 => vec![
            plain(c, OP_PAGE_VIEW, Forward(0)),
            plain(c, OP_ORDER, Anchor(0, 30 * DAY + delta)),
        ],
        // too_late: a record exactly allowed_lateness (+delta) behind the
        // watermark.
        _ => vec![
            plain(c, OP_PAGE_VIEW, Forward(0)),
            plain(
                c,
                OP_PAGE_VIEW,
                TimeMove::Back(cfg.max_out_of_orderness + cfg.allowed_lateness + delta),
            ),
        ],
    }
}

fn edge_scenario() -> impl Strategy<Value = Scenario> {
    (
        0u8..8,
        1u8..=3,
        prop::collection::vec(step(), 0..6),
        (0u8..8, 0u8..3, prop::sample::select(vec![-4i64, 0, 4])),
        prop::collection::vec(step(), 0..6),
    )
        .prop_map(|(cfg_pick, n_cust, before, (which, c, delta), after)| {
            let cfg = scenario_config(cfg_pick);
            let mut steps = before;
            steps.extend(edge_template(which, c % n_cust, delta, &cfg));
            steps.extend(after);
            Scenario {
                cfg_pick,
                n_cust,
                steps,
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 600,
        max_shrink_iters: 4_000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Every window edge, hit exactly and 4 ms either side, amid noise.
    #[test]
    fn window_edges_agree(sc in edge_scenario()) {
        check(&sc, true)?;
    }
}

/// Exploration: many more cases, printing what they exercised.
/// `CASES=20000 cargo test --test reference_model coverage_stats -- --ignored --nocapture`
/// (`TIES=1`: without the per-customer time offsets; `EDGES=1`: the
/// window-edge scenarios).
#[test]
#[ignore]
fn coverage_stats() {
    let cases = std::env::var("CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(400);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases,
        max_global_rejects: cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let ties = std::env::var("TIES").is_ok();
    let result = if std::env::var("EDGES").is_ok() {
        runner.run(&edge_scenario(), |sc| check(&sc, !ties))
    } else {
        runner.run(&scenario(), |sc| check(&sc, !ties))
    };
    stats::dump();
    if let Err(e) = result {
        panic!("{e}");
    }
}
