//! Shared helpers for the literal-event signal tests (written from SPEC.md).
#![allow(dead_code)]

use std::sync::Arc;

use serde_json::Value;
use touchstream::config::EngineConfig;
use touchstream::engine::{Engine, Outcome};
use touchstream::model::{Channel, DerivedEvent, Survey, TouchType, Touchpoint};

pub use touchstream::model::Channel as Ch;
pub use touchstream::model::TouchType as Ty;

/// 2026-01-05T00:00:00Z.
pub const T0: i64 = 1_767_571_200_000;
pub const SEC: i64 = 1_000;
pub const MIN: i64 = 60 * SEC;
pub const HOUR: i64 = 60 * MIN;
pub const DAY: i64 = 24 * HOUR;

/// A touchpoint with the required fields.
pub fn tp(id: &str, cust: &str, channel: Channel, kind: TouchType, t: i64) -> Touchpoint {
    Touchpoint::new(id, cust, channel, kind, t)
}

/// Terse setters for optional fields.
pub trait TpExt: Sized {
    fn value(self, v: f64) -> Self;
    fn currency(self, c: &str) -> Self;
    fn cart(self, c: &str) -> Self;
    fn order(self, o: &str) -> Self;
    fn campaign(self, c: &str) -> Self;
    fn survey(self, s: Survey, score: i32) -> Self;
}

impl TpExt for Touchpoint {
    fn value(mut self, v: f64) -> Self {
        self.value = Some(v);
        self
    }
    fn currency(mut self, c: &str) -> Self {
        self.currency = Some(c.into());
        self
    }
    fn cart(mut self, c: &str) -> Self {
        self.cart_id = Some(c.into());
        self
    }
    fn order(mut self, o: &str) -> Self {
        self.order_id = Some(o.into());
        self
    }
    fn campaign(mut self, c: &str) -> Self {
        self.campaign_id = Some(c.into());
        self
    }
    fn survey(mut self, s: Survey, score: i32) -> Self {
        self.survey = Some(s);
        self.score = Some(score);
        self
    }
}

/// An engine plus everything it emitted so far.
pub struct Harness {
    pub engine: Engine,
    pub events: Vec<DerivedEvent>,
    seq: u64,
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

impl Harness {
    pub fn new() -> Self {
        Self::with_config(EngineConfig::default())
    }

    pub fn with_config(cfg: EngineConfig) -> Self {
        Harness {
            engine: Engine::new(Arc::new(cfg)),
            events: Vec::new(),
            seq: 0,
        }
    }

    /// Offers a touchpoint; returns its outcome and the events this call produced.
    pub fn send(&mut self, tp: Touchpoint) -> (Outcome, Vec<DerivedEvent>) {
        let mut out = Vec::new();
        let o = self.engine.on_touchpoint(&tp, &mut out);
        self.events.extend(out.iter().cloned());
        (o, out)
    }

    /// Sends a touchpoint with an auto-generated event id; returns the events.
    pub fn touch(
        &mut self,
        cust: &str,
        channel: Channel,
        kind: TouchType,
        t: i64,
    ) -> Vec<DerivedEvent> {
        let tp = self.auto(cust, channel, kind, t);
        self.send_ok(tp)
    }

    /// A touchpoint with an auto-generated event id.
    pub fn auto(&mut self, cust: &str, channel: Channel, kind: TouchType, t: i64) -> Touchpoint {
        self.seq += 1;
        tp(&format!("auto-{}", self.seq), cust, channel, kind, t)
    }

    /// Sends and asserts it was accepted (possibly late).
    pub fn send_ok(&mut self, tp: Touchpoint) -> Vec<DerivedEvent> {
        let (o, out) = self.send(tp.clone());
        assert!(
            matches!(o, Outcome::Accepted { .. }),
            "expected {tp:?} accepted, got {o:?}"
        );
        out
    }

    /// Advances the watermark; returns the events fired.
    pub fn advance(&mut self, to: i64) -> Vec<DerivedEvent> {
        let mut out = Vec::new();
        self.engine.advance_watermark(to, &mut out);
        self.events.extend(out.iter().cloned());
        out
    }

    /// All events of a type so far, as JSON.
    pub fn of_type(&self, ty: &str) -> Vec<Value> {
        of_type(&self.events, ty)
    }

    /// All events of a type for a customer so far, as JSON.
    pub fn of_type_for(&self, ty: &str, cust: &str) -> Vec<Value> {
        of_type(&self.events, ty)
            .into_iter()
            .filter(|v| v["customer_id"] == cust)
            .collect()
    }
}

/// Runs a sequence of touchpoints through a fresh default engine.
pub fn run(tps: Vec<Touchpoint>) -> Vec<DerivedEvent> {
    let mut h = Harness::new();
    for t in tps {
        h.send(t);
    }
    h.events
}

pub fn json(ev: &DerivedEvent) -> Value {
    serde_json::from_str(&ev.to_json()).expect("derived event JSON")
}

pub fn jsons(evs: &[DerivedEvent]) -> Vec<Value> {
    evs.iter().map(json).collect()
}

pub fn of_type(evs: &[DerivedEvent], ty: &str) -> Vec<Value> {
    evs.iter()
        .filter(|e| e.kind.as_str() == ty)
        .map(json)
        .collect()
}

pub fn types(evs: &[DerivedEvent]) -> Vec<&'static str> {
    evs.iter().map(|e| e.kind.as_str()).collect()
}

/// Relative float comparison (absolute near zero).
pub fn close(a: f64, b: f64, rel: f64) -> bool {
    let scale = a.abs().max(b.abs()).max(1.0);
    (a - b).abs() <= rel * scale
}

#[track_caller]
pub fn assert_close(actual: &Value, expected: f64, what: &str) {
    let a = actual
        .as_f64()
        .unwrap_or_else(|| panic!("{what}: expected number {expected}, got {actual}"));
    assert!(
        close(a, expected, 1e-9),
        "{what}: got {a}, expected {expected}"
    );
}

/// Asserts a JSON map of channel → weight equals the expected (keys exact, values 1e-9).
#[track_caller]
pub fn assert_weights(actual: &Value, expected: &[(&str, f64)], what: &str) {
    let m = actual
        .as_object()
        .unwrap_or_else(|| panic!("{what}: not a map: {actual}"));
    let mut keys: Vec<&str> = m.keys().map(String::as_str).collect();
    keys.sort();
    let mut want: Vec<&str> = expected.iter().map(|(k, _)| *k).collect();
    want.sort();
    assert_eq!(keys, want, "{what}: channels of {actual}");
    for (k, w) in expected {
        assert_close(&m[*k], *w, &format!("{what}[{k}]"));
    }
    let sum: f64 = m.values().map(|v| v.as_f64().unwrap()).sum();
    assert!((sum - 1.0).abs() < 1e-9, "{what}: weights sum to {sum}");
}

/// 100 × (1 − e^(−raw/10)) (SPEC engagement score, default scale).
pub fn score_of(raw: f64) -> f64 {
    100.0 * (1.0 - (-raw.max(0.0) / 10.0).exp())
}

/// 0.5^(dt / 7 d).
pub fn decay7(dt: i64) -> f64 {
    0.5f64.powf(dt as f64 / (7 * DAY) as f64)
}

/// BG/NBD defaults from SPEC.
pub const R: f64 = 0.243;
pub const ALPHA: f64 = 30.898;
pub const A: f64 = 0.793;
pub const B: f64 = 2.426;

/// SPEC p_alive with default parameters (days).
pub fn p_alive(orders: u32, t_x: f64, big_t: f64) -> f64 {
    if orders <= 1 {
        return 1.0;
    }
    let x = f64::from(orders - 1);
    1.0 / (1.0 + A / (B + x - 1.0) * ((ALPHA + big_t) / (ALPHA + t_x)).powf(R + x))
}

/// T (days since first order) at which p_alive equals `p` (closed form).
pub fn p_alive_crossing(orders: u32, t_x: f64, p: f64) -> f64 {
    let x = f64::from(orders - 1);
    let need = (1.0 / p - 1.0) * (B + x - 1.0) / A;
    (ALPHA + t_x) * need.powf(1.0 / (R + x)) - ALPHA
}

/// Strings of a JSON list.
pub fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}
