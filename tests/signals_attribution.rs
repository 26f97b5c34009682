//! order_attributed (SPEC 4, SPEC 7 "Attribution").
mod common;
use common::*;
use serde_json::Value;
use std::sync::Arc;
use touchstream::config::EngineConfig;
use touchstream::engine::Engine;
use touchstream::model::{Channel, DerivedType, TouchType, Touchpoint};

/// 2026-01-01T10:00:00Z, the epoch of the regression tests below.
const W: i64 = 1_767_261_600_000;

fn attributed(out: &[touchstream::model::DerivedEvent]) -> Value {
    let a = of_type(out, "order_attributed");
    assert_eq!(a.len(), 1, "{out:?}");
    a[0].clone()
}

fn models(v: &Value) -> &Value {
    &v["models"]
}

#[test]
fn small_journey_exact_weights() {
    let mut h = Harness::new();
    h.send_ok(tp("e1", "c1", Ch::Email, Ty::MessageClicked, T0).campaign("x"));
    h.send_ok(tp("e2", "c1", Ch::Web, Ty::PageView, T0 + DAY));
    h.send_ok(tp("e3", "c1", Ch::MobileApp, Ty::AppOpen, T0 + 2 * DAY));
    h.send_ok(tp(
        "e4",
        "c1",
        Ch::Sms,
        Ty::MessageSent,
        T0 + 2 * DAY + HOUR,
    )); // excluded
    let t = T0 + 3 * DAY;
    let out = h.send_ok(
        tp("o1", "c1", Ch::Web, Ty::OrderPlaced, t)
            .order("ord1")
            .value(100.0)
            .currency("EUR"),
    );
    let a = attributed(&out);
    assert_eq!(a["customer_id"], "c1");
    assert_eq!(a["at"], t);
    assert_eq!(a["order_id"], "ord1");
    assert_eq!(a["order_value"].as_f64(), Some(100.0));
    assert_eq!(a["currency"], "EUR");
    let m = models(&a);
    assert_weights(&m["last_touch"], &[("mobile_app", 1.0)], "last_touch");
    assert_weights(&m["first_touch"], &[("email", 1.0)], "first_touch");
    assert_weights(
        &m["linear"],
        &[
            ("email", 1.0 / 3.0),
            ("web", 1.0 / 3.0),
            ("mobile_app", 1.0 / 3.0),
        ],
        "linear",
    );
    let (de, dw, dm) = (decay7(3 * DAY), decay7(2 * DAY), decay7(DAY));
    let s = de + dw + dm;
    assert_weights(
        &m["time_decay"],
        &[("email", de / s), ("web", dw / s), ("mobile_app", dm / s)],
        "time_decay",
    );
    assert_weights(
        &m["position_based"],
        &[("email", 0.4), ("web", 0.2), ("mobile_app", 0.4)],
        "position_based",
    );

    // A second order 2 d later on store: the first order is a touch now.
    let t2 = T0 + 5 * DAY;
    let out = h.send_ok(tp("o2", "c1", Ch::Store, Ty::OrderPlaced, t2).order("ord2"));
    let a = attributed(&out);
    assert_eq!(a["order_value"], Value::Null);
    assert_eq!(a["currency"], Value::Null);
    let m = models(&a);
    assert_weights(&m["last_touch"], &[("web", 1.0)], "last_touch 2");
    assert_weights(&m["first_touch"], &[("email", 1.0)], "first_touch 2");
    assert_weights(
        &m["linear"],
        &[("email", 0.25), ("web", 0.5), ("mobile_app", 0.25)],
        "linear 2",
    );
    let d = [
        decay7(5 * DAY),
        decay7(4 * DAY),
        decay7(3 * DAY),
        decay7(2 * DAY),
    ];
    let s: f64 = d.iter().sum();
    assert_weights(
        &m["time_decay"],
        &[
            ("email", d[0] / s),
            ("web", (d[1] + d[3]) / s),
            ("mobile_app", d[2] / s),
        ],
        "time_decay 2",
    );
    // Four touches: 0.4 first, 0.4 last, 0.1 each of the two middle ones; summed per channel.
    assert_weights(
        &m["position_based"],
        &[("email", 0.4), ("web", 0.5), ("mobile_app", 0.1)],
        "position_based 2",
    );
}

#[test]
fn no_touch_gives_order_channel_everything() {
    let mut h = Harness::new();
    let out = h.send_ok(
        tp("o1", "c1", Ch::Store, Ty::OrderPlaced, T0)
            .order("a")
            .value(9.5)
            .currency("GBP"),
    );
    let a = attributed(&out);
    for model in [
        "last_touch",
        "first_touch",
        "linear",
        "time_decay",
        "position_based",
    ] {
        assert_weights(&a["models"][model], &[("store", 1.0)], model);
    }
    // Only message_sent before the order: still no touch.
    h.send_ok(tp("m1", "c2", Ch::Email, Ty::MessageSent, T0));
    let out = h.send_ok(tp("o2", "c2", Ch::CallCenter, Ty::OrderPlaced, T0 + HOUR));
    let a = attributed(&out);
    for model in [
        "last_touch",
        "first_touch",
        "linear",
        "time_decay",
        "position_based",
    ] {
        assert_weights(&a["models"][model], &[("call_center", 1.0)], model);
    }
}

#[test]
fn touches_30_days_or_older_excluded() {
    let mut h = Harness::new();
    h.send_ok(tp("e1", "c1", Ch::Email, Ty::MessageClicked, T0));
    h.send_ok(tp("e2", "c1", Ch::Social, Ty::SocialInteraction, T0 + 1));
    // Order exactly 30 d after e1: window (order − 30 d, order] excludes e1.
    let out = h.send_ok(tp("o1", "c1", Ch::Web, Ty::OrderPlaced, T0 + 30 * DAY));
    let m = attributed(&out)["models"].clone();
    assert_weights(&m["first_touch"], &[("social", 1.0)], "first_touch");
    assert_weights(&m["position_based"], &[("social", 1.0)], "one touch → 1.0");
    assert_weights(&m["linear"], &[("social", 1.0)], "linear");
}

#[test]
fn all_touches_old_gives_order_channel() {
    let mut h = Harness::new();
    h.send_ok(tp("e1", "c1", Ch::Email, Ty::MessageClicked, T0));
    let out = h.send_ok(tp("o1", "c1", Ch::Web, Ty::OrderPlaced, T0 + 31 * DAY));
    let m = attributed(&out)["models"].clone();
    for model in [
        "last_touch",
        "first_touch",
        "linear",
        "time_decay",
        "position_based",
    ] {
        assert_weights(&m[model], &[("web", 1.0)], model);
    }
}

#[test]
fn two_touches_position_based_half_each() {
    let mut h = Harness::new();
    h.send_ok(tp("e1", "c1", Ch::Email, Ty::MessageClicked, T0));
    h.send_ok(tp("e2", "c1", Ch::Social, Ty::SocialInteraction, T0 + DAY));
    let out = h.send_ok(tp("o1", "c1", Ch::Web, Ty::OrderPlaced, T0 + 8 * DAY));
    let m = attributed(&out)["models"].clone();
    assert_weights(
        &m["position_based"],
        &[("email", 0.5), ("social", 0.5)],
        "position_based",
    );
    // 8 d and 7 d before the order: weights 0.5^(8/7) and 0.5.
    let (a, b) = (decay7(8 * DAY), 0.5);
    assert_weights(
        &m["time_decay"],
        &[("email", a / (a + b)), ("social", b / (a + b))],
        "time_decay",
    );
}

#[test]
fn same_channel_touches_sum() {
    let mut h = Harness::new();
    h.send_ok(tp("e1", "c1", Ch::Web, Ty::PageView, T0));
    h.send_ok(tp("e2", "c1", Ch::Web, Ty::Search, T0 + HOUR));
    h.send_ok(tp("e3", "c1", Ch::Web, Ty::AddToCart, T0 + 2 * HOUR));
    let out = h.send_ok(tp(
        "o1",
        "c1",
        Ch::MobileApp,
        Ty::OrderPlaced,
        T0 + 3 * HOUR,
    ));
    let m = attributed(&out)["models"].clone();
    for model in [
        "last_touch",
        "first_touch",
        "linear",
        "time_decay",
        "position_based",
    ] {
        assert_weights(&m[model], &[("web", 1.0)], model);
    }
}

#[test]
fn touch_at_order_instant_included_and_last_64_only() {
    let mut h = Harness::new();
    // 70 touches: 6 on email first, then 64 on web. Only the last 64 count.
    for i in 0..70 {
        let ch = if i < 6 { Ch::Email } else { Ch::Web };
        h.send_ok(tp(&format!("e{i}"), "c1", ch, Ty::PageView, T0 + i * MIN));
    }
    let out = h.send_ok(tp("o1", "c1", Ch::Store, Ty::OrderPlaced, T0 + 69 * MIN));
    let m = attributed(&out)["models"].clone();
    assert_weights(&m["first_touch"], &[("web", 1.0)], "only the last 64");
    assert_weights(
        &m["last_touch"],
        &[("web", 1.0)],
        "touch at the order instant counts",
    );

    let mut h = Harness::new();
    for i in 0..64 {
        let ch = if i == 0 { Ch::Email } else { Ch::Web };
        h.send_ok(tp(&format!("e{i}"), "c1", ch, Ty::PageView, T0 + i * MIN));
    }
    let out = h.send_ok(tp("o1", "c1", Ch::Store, Ty::OrderPlaced, T0 + 64 * MIN));
    let m = attributed(&out)["models"].clone();
    assert_weights(&m["first_touch"], &[("email", 1.0)], "64 touches all count");
    assert_weights(
        &m["linear"],
        &[("email", 1.0 / 64.0), ("web", 63.0 / 64.0)],
        "linear 64",
    );
    assert_weights(
        &m["position_based"],
        &[("email", 0.4), ("web", 0.6)],
        "position 64",
    );
}

#[test]
fn every_order_attributed_including_late_one() {
    let mut h = Harness::new();
    h.send_ok(tp("e1", "c1", Ch::Email, Ty::MessageClicked, T0));
    h.send_ok(tp("e2", "c1", Ch::Web, Ty::PageView, T0 + 2 * HOUR));
    // Late order (before e2): its touches are those before it: only e1.
    let out =
        h.send_ok(tp("o1", "c1", Ch::Store, Ty::OrderPlaced, T0 + HOUR + 30 * MIN).order("late"));
    let a = attributed(&out);
    assert_eq!(a["order_id"], "late");
    assert_eq!(a["at"], T0 + HOUR + 30 * MIN);
    assert_weights(
        &a["models"]["last_touch"],
        &[("email", 1.0)],
        "last_touch of a late order",
    );
}

/// regression: a late order after a burst of over 96 touches lost part of its own last 64.
///
/// Found by the reference model: after a burst of more than 96 own touches
/// a late order lost the oldest touches of its last 64 (the engine kept the
/// newest 96 touches, not what an order that is not too late can reach).
#[test]
fn a_late_order_after_a_burst_is_attributed_over_its_own_last_64() {
    let mut e = Engine::new(Arc::new(EngineConfig::default()));
    let mut out = Vec::new();
    let t0 = W;
    let first = Touchpoint::new("p0", "c", Channel::Email, TouchType::PageView, t0);
    e.on_touchpoint(&first, &mut out);
    for i in 1..=96 {
        let tp = Touchpoint::new(
            format!("p{i}"),
            "c",
            Channel::Web,
            TouchType::PageView,
            t0 + i * 1_000,
        );
        e.on_touchpoint(&tp, &mut out);
    }
    out.clear();
    let mut order = Touchpoint::new("o1", "c", Channel::Web, TouchType::OrderPlaced, t0 + 63_500);
    order.order_id = Some("o1".into());
    e.on_touchpoint(&order, &mut out);
    let attributed = out
        .iter()
        .find(|ev| ev.kind == DerivedType::OrderAttributed)
        .expect("attributed");
    let v = serde_json::to_value(attributed).unwrap();
    // Its last 64 touches: p0 (email) and p1..p63 (web).
    assert_eq!(
        v["models"]["first_touch"],
        serde_json::json!({"email": 1.0})
    );
    assert_eq!(
        v["models"]["linear"]["email"],
        serde_json::json!(1.0 / 64.0)
    );
    assert_eq!(
        v["models"]["position_based"]["email"],
        serde_json::json!(0.4)
    );
}
