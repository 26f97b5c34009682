//! cart_abandoned / cart_recovered (SPEC 4, 7 "Carts"), plus lateness and
//! duplicate handling (SPEC 2, 3, 7 "Input"/"Time").
mod common;
use common::*;
use serde_json::{json, Value};
use std::sync::Arc;
use touchstream::config::EngineConfig;
use touchstream::engine::{Engine, Outcome};
use touchstream::model::{Channel, DerivedType, TouchType, Touchpoint, HOUR_MS};

/// 2026-01-01T10:00:00Z, the epoch of the regression tests below.
const W: i64 = 1_767_261_600_000;

fn abandoned(h: &Harness) -> Vec<Value> {
    h.of_type("cart_abandoned")
}

#[test]
fn abandoned_exactly_at_last_activity_plus_one_hour() {
    let mut h = Harness::new();
    h.send_ok(
        tp("a1", "c1", Ch::Web, Ty::AddToCart, T0)
            .cart("k1")
            .value(20.0)
            .currency("EUR"),
    );
    // Watermark T0 + 1h − 1 ms: not yet.
    let out = h.send_ok(tp(
        "p1",
        "c2",
        Ch::Web,
        Ty::PageView,
        T0 + HOUR + 5 * SEC - 1,
    ));
    assert!(of_type(&out, "cart_abandoned").is_empty());
    // Watermark reaches T0 + 1h: fires, before the record itself is applied.
    let out = h.send_ok(tp("p2", "c2", Ch::Web, Ty::PageView, T0 + HOUR + 5 * SEC));
    assert_eq!(out[0].kind.as_str(), "cart_abandoned", "{out:?}");
    let e = json(&out[0]);
    assert_eq!(
        e,
        json!({
            "type": "cart_abandoned",
            "event_id": e["event_id"],
            "customer_id": "c1",
            "at": T0 + HOUR,
            "cart_id": "k1",
            "cart_value": 20.0,
            "currency": "EUR",
            "channel": "web",
            "last_activity_at": T0
        })
    );
    assert_eq!(abandoned(&h).len(), 1);
}

#[test]
fn at_is_due_time_not_the_later_watermark() {
    let mut h = Harness::new();
    h.send_ok(tp("a1", "c1", Ch::MobileApp, Ty::AddToCart, T0).value(5.0));
    let out = h.send_ok(tp("p1", "c1", Ch::Web, Ty::PageView, T0 + 5 * HOUR));
    let e = of_type(&out, "cart_abandoned");
    assert_eq!(e.len(), 1);
    assert_eq!(e[0]["at"], T0 + HOUR);
    assert_eq!(
        e[0]["cart_id"],
        Value::Null,
        "no cart_id → the unnamed cart"
    );
    assert_eq!(e[0]["currency"], Value::Null);
    assert_eq!(e[0]["channel"], "mobile_app");
    // Timer fired before the page_view was applied: it is the first event.
    assert_eq!(out[0].kind.as_str(), "cart_abandoned");
}

#[test]
fn advance_watermark_fires_and_end_of_input_does_not() {
    let mut h = Harness::new();
    h.send_ok(tp("a1", "c1", Ch::Web, Ty::AddToCart, T0).value(5.0));
    // End of input: nothing else; watermark T0 − 5 s; nothing fires.
    assert!(abandoned(&h).is_empty());
    let out = h.advance(T0 + HOUR - 1);
    assert!(out.is_empty());
    let out = h.advance(T0 + HOUR);
    assert_eq!(of_type(&out, "cart_abandoned").len(), 1);
    assert_eq!(of_type(&out, "cart_abandoned")[0]["at"], T0 + HOUR);
}

#[test]
fn cart_activity_extends_the_timer() {
    let mut h = Harness::new();
    h.send_ok(tp("a1", "c1", Ch::Web, Ty::AddToCart, T0).value(10.0));
    h.send_ok(tp("a2", "c1", Ch::Web, Ty::RemoveFromCart, T0 + 50 * MIN).value(3.0));
    h.advance(T0 + HOUR + 50 * MIN - 1);
    assert!(abandoned(&h).is_empty(), "extended by remove_from_cart");
    h.advance(T0 + HOUR + 50 * MIN);
    let e = abandoned(&h);
    assert_eq!(e.len(), 1);
    assert_eq!(e[0]["at"], T0 + HOUR + 50 * MIN);
    assert_eq!(e[0]["last_activity_at"], T0 + 50 * MIN);
    assert_close(&e[0]["cart_value"], 7.0, "adds minus removes");
}

#[test]
fn non_cart_activity_does_not_extend() {
    let mut h = Harness::new();
    h.send_ok(tp("a1", "c1", Ch::Web, Ty::AddToCart, T0).value(10.0));
    h.send_ok(tp("p1", "c1", Ch::Web, Ty::PageView, T0 + 30 * MIN));
    h.advance(T0 + HOUR);
    assert_eq!(abandoned(&h).len(), 1);
}

#[test]
fn remove_only_cart_is_not_eligible() {
    let mut h = Harness::new();
    h.send_ok(tp("a1", "c1", Ch::Web, Ty::RemoveFromCart, T0).value(10.0));
    h.advance(T0 + 10 * HOUR);
    assert!(abandoned(&h).is_empty());
}

#[test]
fn order_cancels_the_cart() {
    let mut h = Harness::new();
    h.send_ok(
        tp("a1", "c1", Ch::Web, Ty::AddToCart, T0)
            .cart("k1")
            .value(10.0),
    );
    h.send_ok(
        tp("a2", "c1", Ch::Web, Ty::AddToCart, T0)
            .cart("k2")
            .value(10.0),
    );
    // Any order closes all open carts (even without / with another cart_id).
    h.send_ok(tp("o1", "c1", Ch::Store, Ty::OrderPlaced, T0 + 59 * MIN).order("ord1"));
    h.advance(T0 + 10 * HOUR);
    assert!(abandoned(&h).is_empty(), "{:?}", h.events);
    assert!(h.of_type("cart_recovered").is_empty());
}

#[test]
fn checkout_value_wins_over_sum() {
    let mut h = Harness::new();
    h.send_ok(tp("a1", "c1", Ch::Web, Ty::AddToCart, T0).value(10.0));
    h.send_ok(tp("a2", "c1", Ch::Web, Ty::AddToCart, T0 + MIN).value(20.0));
    h.send_ok(tp("a3", "c1", Ch::Web, Ty::CheckoutStarted, T0 + 2 * MIN).value(40.0));
    h.send_ok(tp("a4", "c1", Ch::Web, Ty::CheckoutStarted, T0 + 3 * MIN).value(55.0));
    h.send_ok(tp("a5", "c1", Ch::Web, Ty::AddToCart, T0 + 4 * MIN).value(5.0));
    h.advance(T0 + 4 * MIN + HOUR);
    let e = abandoned(&h);
    assert_eq!(e.len(), 1);
    assert_close(&e[0]["cart_value"], 55.0, "last checkout_started value");
}

#[test]
fn sum_floored_at_zero() {
    let mut h = Harness::new();
    h.send_ok(tp("a1", "c1", Ch::Web, Ty::AddToCart, T0).value(10.0));
    h.send_ok(tp("a2", "c1", Ch::Web, Ty::AddToCart, T0 + MIN).value(20.0));
    h.send_ok(tp("a3", "c1", Ch::Web, Ty::RemoveFromCart, T0 + 2 * MIN).value(50.0));
    h.advance(T0 + 2 * MIN + HOUR);
    let e = abandoned(&h);
    assert_eq!(e.len(), 1);
    assert_eq!(e[0]["cart_value"].as_f64(), Some(0.0));
}

#[test]
fn currency_of_latest_activity_carrying_one_and_channel_of_last() {
    let mut h = Harness::new();
    h.send_ok(
        tp("a1", "c1", Ch::Web, Ty::AddToCart, T0)
            .value(10.0)
            .currency("EUR"),
    );
    h.send_ok(
        tp("a2", "c1", Ch::Web, Ty::AddToCart, T0 + MIN)
            .value(1.0)
            .currency("USD"),
    );
    h.send_ok(tp("a3", "c1", Ch::MobileApp, Ty::AddToCart, T0 + 2 * MIN).value(2.0));
    h.advance(T0 + 2 * MIN + HOUR);
    let e = abandoned(&h);
    assert_eq!(e.len(), 1);
    assert_eq!(e[0]["currency"], "USD");
    assert_eq!(e[0]["channel"], "mobile_app");
    assert_eq!(e[0]["last_activity_at"], T0 + 2 * MIN);
    assert_close(&e[0]["cart_value"], 13.0, "sum");
}

#[test]
fn once_per_cart_until_an_order_closes_it() {
    let mut h = Harness::new();
    h.send_ok(
        tp("a1", "c1", Ch::Web, Ty::AddToCart, T0)
            .cart("k1")
            .value(10.0),
    );
    h.advance(T0 + HOUR);
    assert_eq!(abandoned(&h).len(), 1);
    // More activity on the abandoned cart: not abandoned again.
    h.send_ok(
        tp("a2", "c1", Ch::Web, Ty::AddToCart, T0 + 2 * HOUR)
            .cart("k1")
            .value(10.0),
    );
    h.advance(T0 + 5 * HOUR);
    assert_eq!(abandoned(&h).len(), 1);
    // An order closes it; the same cart id starts afresh.
    h.send_ok(tp("o1", "c1", Ch::Web, Ty::OrderPlaced, T0 + 10 * DAY).order("ord1"));
    h.send_ok(
        tp("a3", "c1", Ch::Web, Ty::AddToCart, T0 + 10 * DAY + MIN)
            .cart("k1")
            .value(7.0),
    );
    h.advance(T0 + 10 * DAY + MIN + HOUR);
    let e = abandoned(&h);
    assert_eq!(e.len(), 2, "{e:?}");
    assert_eq!(e[1]["at"], T0 + 10 * DAY + MIN + HOUR);
    assert_close(&e[1]["cart_value"], 7.0, "fresh cart");
}

#[test]
fn named_carts_are_independent() {
    let mut h = Harness::new();
    h.send_ok(
        tp("a1", "c1", Ch::Web, Ty::AddToCart, T0)
            .cart("k1")
            .value(1.0),
    );
    h.send_ok(
        tp("a2", "c1", Ch::Web, Ty::AddToCart, T0 + 10 * MIN)
            .cart("k2")
            .value(2.0),
    );
    h.send_ok(tp("a3", "c1", Ch::Web, Ty::AddToCart, T0 + 20 * MIN).value(3.0));
    h.advance(T0 + 3 * HOUR);
    let e = abandoned(&h);
    let got: Vec<(Value, Value)> = e
        .iter()
        .map(|v| (v["cart_id"].clone(), v["at"].clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            (json!("k1"), json!(T0 + HOUR)),
            (json!("k2"), json!(T0 + HOUR + 10 * MIN)),
            (Value::Null, json!(T0 + HOUR + 20 * MIN)),
        ]
    );
}

// ---------------------------------------------------------------- recovery

fn abandon(h: &mut Harness, cust: &str, cart: &str, t: i64) {
    h.send_ok(
        tp(
            &format!("{cust}-{cart}-{t}"),
            cust,
            Ch::Web,
            Ty::AddToCart,
            t,
        )
        .cart(cart)
        .value(10.0),
    );
    h.advance(t + HOUR);
}

#[test]
fn recovered_within_seven_days() {
    let mut h = Harness::new();
    abandon(&mut h, "c1", "k1", T0);
    let t = T0 + HOUR + 2 * DAY;
    let out = h.send_ok(
        tp("o1", "c1", Ch::Web, Ty::OrderPlaced, t)
            .cart("k1")
            .order("ord1")
            .value(30.0),
    );
    let r = of_type(&out, "cart_recovered");
    assert_eq!(r.len(), 1);
    assert_eq!(
        r[0],
        json!({
            "type": "cart_recovered",
            "event_id": r[0]["event_id"],
            "customer_id": "c1",
            "at": t,
            "cart_id": "k1",
            "order_id": "ord1",
            "order_value": 30.0,
            "abandoned_at": T0 + HOUR
        })
    );
}

#[test]
fn recovered_at_exactly_seven_days_not_after() {
    let mut h = Harness::new();
    abandon(&mut h, "c1", "k1", T0);
    abandon(&mut h, "c2", "k1", T0);
    let out =
        h.send_ok(tp("o1", "c1", Ch::Web, Ty::OrderPlaced, T0 + HOUR + 7 * DAY).order("ord1"));
    assert_eq!(
        of_type(&out, "cart_recovered").len(),
        1,
        "delta == 7 d is within"
    );
    let out = h.send_ok(
        tp(
            "o2",
            "c2",
            Ch::Web,
            Ty::OrderPlaced,
            T0 + HOUR + 7 * DAY + 1,
        )
        .order("ord2"),
    );
    assert!(of_type(&out, "cart_recovered").is_empty(), "after 7 d");
}

#[test]
fn order_cart_id_preferred_else_most_recent_one_per_order_and_abandonment() {
    let mut h = Harness::new();
    abandon(&mut h, "c1", "k1", T0);
    abandon(&mut h, "c1", "k2", T0 + 2 * HOUR);
    abandon(&mut h, "c1", "k3", T0 + 4 * HOUR);
    // Order naming k1 recovers k1 even though k3 is more recent.
    let out = h.send_ok(
        tp("o1", "c1", Ch::Web, Ty::OrderPlaced, T0 + DAY)
            .cart("k1")
            .order("ord1"),
    );
    let r = of_type(&out, "cart_recovered");
    assert_eq!(r.len(), 1);
    assert_eq!(
        (r[0]["cart_id"].clone(), r[0]["abandoned_at"].clone()),
        (json!("k1"), json!(T0 + HOUR))
    );
    // Order without cart_id: the most recent (k3).
    let out = h.send_ok(tp("o2", "c1", Ch::Web, Ty::OrderPlaced, T0 + 2 * DAY).order("ord2"));
    let r = of_type(&out, "cart_recovered");
    assert_eq!(r.len(), 1);
    assert_eq!(r[0]["cart_id"], "k3");
    // Order naming a cart with no abandonment: falls back to the most recent left (k2).
    let out = h.send_ok(
        tp("o3", "c1", Ch::Web, Ty::OrderPlaced, T0 + 3 * DAY)
            .cart("zzz")
            .order("ord3"),
    );
    let r = of_type(&out, "cart_recovered");
    assert_eq!(r.len(), 1);
    assert_eq!(r[0]["cart_id"], "k2");
    assert_eq!(r[0]["abandoned_at"], T0 + 3 * HOUR);
    // Every abandonment used once: nothing more.
    let out = h.send_ok(
        tp("o4", "c1", Ch::Web, Ty::OrderPlaced, T0 + 4 * DAY)
            .cart("k1")
            .order("ord4"),
    );
    assert!(of_type(&out, "cart_recovered").is_empty());
}

#[test]
fn recovery_window_configurable() {
    let cfg = EngineConfig {
        recovery_window: DAY,
        cart_timeout: 30 * MIN,
        ..EngineConfig::default()
    };
    let mut h = Harness::with_config(cfg);
    h.send_ok(tp("a1", "c1", Ch::Web, Ty::AddToCart, T0).value(1.0));
    h.advance(T0 + 30 * MIN);
    assert_eq!(h.of_type("cart_abandoned")[0]["at"], T0 + 30 * MIN);
    let out = h.send_ok(tp(
        "o1",
        "c1",
        Ch::Web,
        Ty::OrderPlaced,
        T0 + 30 * MIN + DAY + 1,
    ));
    assert!(of_type(&out, "cart_recovered").is_empty());
}

// ------------------------------------------------------ lateness, duplicates

#[test]
fn too_late_is_rejected_and_changes_nothing() {
    let mut h = Harness::new();
    h.send_ok(tp("p1", "c1", Ch::Web, Ty::PageView, T0 + 10 * HOUR));
    let wm = T0 + 10 * HOUR - 5 * SEC;
    let before = h.engine.snapshot();
    let n = h.events.len();
    // One ms older than watermark − 1 h: too late.
    let (o, out) = h.send(tp("a1", "c1", Ch::Web, Ty::AddToCart, wm - HOUR - 1).value(5.0));
    assert_eq!(o, Outcome::TooLate);
    assert!(out.is_empty());
    let (o, out) = h.send(tp("o1", "c1", Ch::Web, Ty::OrderPlaced, wm - HOUR - 1).value(5.0));
    assert_eq!(o, Outcome::TooLate);
    assert!(out.is_empty());
    assert_eq!(h.engine.snapshot(), before);
    assert_eq!(h.engine.watermark(), Some(wm));
    // Exactly watermark − 1 h: late but accepted.
    let (o, _) = h.send(tp("a2", "c1", Ch::Web, Ty::AddToCart, wm - HOUR).value(5.0));
    assert_eq!(o, Outcome::Accepted { late: true });
    // The too-late add_to_cart never created a cart: only a2's cart fires.
    h.advance(T0 + 2 * DAY);
    let e = h.of_type("cart_abandoned");
    assert_eq!(e.len(), 1);
    assert_eq!(e[0]["last_activity_at"], wm - HOUR);
    assert_eq!(e[0]["at"], wm);
    assert!(h.events.len() > n);
    // The too-late event id was never accepted: it is not a duplicate later.
    let (o, _) = h.send(tp("a1", "c1", Ch::Web, Ty::PageView, T0 + 3 * DAY));
    assert_eq!(o, Outcome::Accepted { late: false });
}

#[test]
fn exactly_at_watermark_is_not_late() {
    let mut h = Harness::new();
    h.send_ok(tp("p1", "c1", Ch::Web, Ty::PageView, T0 + HOUR));
    let (o, _) = h.send(tp("p2", "c1", Ch::Web, Ty::PageView, T0 + HOUR - 5 * SEC));
    assert_eq!(o, Outcome::Accepted { late: false });
    let (o, _) = h.send(tp(
        "p3",
        "c1",
        Ch::Web,
        Ty::PageView,
        T0 + HOUR - 5 * SEC - 1,
    ));
    assert_eq!(o, Outcome::Accepted { late: true });
}

#[test]
fn duplicates_dropped_silently() {
    let mut h = Harness::new();
    h.send_ok(tp("e1", "c1", Ch::Web, Ty::AddToCart, T0).value(5.0));
    let snap = h.engine.snapshot();
    let (o, out) = h.send(tp("e1", "c1", Ch::Web, Ty::OrderPlaced, T0 + MIN).value(5.0));
    assert_eq!(o, Outcome::Duplicate);
    assert!(out.is_empty());
    assert_eq!(h.engine.snapshot(), snap);
    assert_eq!(
        h.engine.watermark(),
        Some(T0 - 5 * SEC),
        "a duplicate does not advance the watermark"
    );
    // The same id for another customer is not a duplicate.
    let (o, _) = h.send(tp("e1", "c2", Ch::Web, Ty::PageView, T0));
    assert_eq!(o, Outcome::Accepted { late: false });
    // The cart still fires (the duplicate order did not close it).
    h.advance(T0 + HOUR);
    assert_eq!(h.of_type("cart_abandoned").len(), 1);
}

#[test]
fn duplicate_check_comes_before_too_late() {
    let mut h = Harness::new();
    h.send_ok(tp("e1", "c1", Ch::Web, Ty::PageView, T0));
    h.send_ok(tp("e2", "c1", Ch::Web, Ty::PageView, T0 + 10 * HOUR));
    let (o, _) = h.send(tp("e1", "c1", Ch::Web, Ty::PageView, T0));
    assert_eq!(o, Outcome::Duplicate);
}

#[test]
fn duplicate_window_is_last_32_accepted() {
    let mut h = Harness::new();
    for i in 0..33 {
        h.send_ok(tp(
            &format!("e{i}"),
            "c1",
            Ch::Web,
            Ty::PageView,
            T0 + i * SEC,
        ));
    }
    // e1..e32 are the last 32: e1 is a duplicate, e0 is not.
    let (o, _) = h.send(tp("e1", "c1", Ch::Web, Ty::PageView, T0 + 40 * SEC));
    assert_eq!(o, Outcome::Duplicate);
    let (o, _) = h.send(tp("e0", "c1", Ch::Web, Ty::PageView, T0 + 40 * SEC));
    assert_eq!(o, Outcome::Accepted { late: false });
    // Duplicates are not "accepted": after e0 the window is e2..e32, e0.
    let (o, _) = h.send(tp("e2", "c1", Ch::Web, Ty::PageView, T0 + 41 * SEC));
    assert_eq!(o, Outcome::Duplicate);
    let (o, _) = h.send(tp("e1", "c1", Ch::Web, Ty::PageView, T0 + 41 * SEC));
    assert_eq!(o, Outcome::Accepted { late: false });
}

#[test]
fn seventeen_open_carts_all_abandoned() {
    // SPEC 4: every cart that saw add_to_cart and then 1 h of nothing is
    // abandoned, once per cart. No cap on open carts is in the contract.
    let mut h = Harness::new();
    for i in 0..17 {
        h.send_ok(
            tp(&format!("a{i}"), "c1", Ch::Web, Ty::AddToCart, T0 + i * SEC)
                .cart(&format!("k{i}"))
                .value(1.0),
        );
    }
    h.advance(T0 + 2 * HOUR);
    let e = abandoned(&h);
    let ids: Vec<String> = e
        .iter()
        .map(|v| v["cart_id"].as_str().unwrap().to_string())
        .collect();
    let want: Vec<String> = (0..17).map(|i| format!("k{i}")).collect();
    assert_eq!(ids, want);
}

#[test]
fn moved_timers_tie_in_the_order_last_set() {
    let mut h = Harness::new();
    h.send_ok(tp("a1", "c1", Ch::Web, Ty::AddToCart, T0).value(1.0)); // due T0+1h
    h.send_ok(tp("a2", "c2", Ch::Web, Ty::AddToCart, T0 + 10 * MIN).value(1.0)); // due T0+1h10m
    h.send_ok(tp("a3", "c1", Ch::Web, Ty::AddToCart, T0 + 10 * MIN).value(1.0)); // c1 moved to T0+1h10m, set after c2
    let out = h.advance(T0 + 2 * HOUR);
    let got: Vec<(String, i64)> = out
        .iter()
        .map(|e| (e.customer_id.to_string(), e.at))
        .collect();
    assert_eq!(
        got,
        vec![
            ("c2".into(), T0 + HOUR + 10 * MIN),
            ("c1".into(), T0 + HOUR + 10 * MIN)
        ]
    );
}

/// regression: a timer a late record set already due did not fire right after that record.
#[test]
fn a_timer_set_already_due_fires_after_the_record() {
    let mut e = Engine::new(Arc::new(EngineConfig::default()));
    let mut out = Vec::new();
    e.on_touchpoint(
        &Touchpoint::new("c1", "c", Channel::Web, TouchType::PageView, W + 5_000),
        &mut out,
    );
    // Late but allowed: its cart is due at W, which the watermark already reached.
    e.on_touchpoint(
        &Touchpoint::new("d1", "d", Channel::Web, TouchType::AddToCart, W - HOUR_MS),
        &mut out,
    );
    let abandoned: Vec<_> = out
        .iter()
        .filter(|e| e.kind == DerivedType::CartAbandoned)
        .collect();
    assert_eq!(abandoned.len(), 1);
    assert_eq!(abandoned[0].at, W);
    assert_eq!(&*abandoned[0].customer_id, "d");
    // It comes after the record's own events.
    let last = out.last().unwrap();
    assert_eq!(last.kind, DerivedType::CartAbandoned);
}

/// regression: an overflowing cart sum became infinity, which the changelog cannot hold.
///
/// Cart values are finite doubles, but their sum can overflow: the cart
/// must still be abandoned with a number, and its state must still go
/// through the changelog (JSON has no infinity; a state that cannot be
/// read back would stall its partition's restore).
#[test]
fn an_overflowing_cart_sum_stays_a_number_and_restores() {
    use touchstream::engine::StateChange;
    use touchstream::kafka::changelog::{encode_state, state_key, RestoreBuilder, StateRecord};
    let mut e = Engine::new(Arc::new(EngineConfig::default()));
    let mut out = Vec::new();
    for i in 0..2 {
        let mut tp = Touchpoint::new(
            format!("a{i}"),
            "c",
            Channel::Web,
            TouchType::AddToCart,
            W + i,
        );
        tp.value = Some(f64::MAX);
        e.on_touchpoint(&tp, &mut out);
    }
    let mut restore = RestoreBuilder::new("t");
    for (n, ch) in e.drain_changes().into_iter().enumerate() {
        let StateChange::Upsert(c) = ch else {
            panic!("no eviction here")
        };
        let v = encode_state(&StateRecord {
            gen: 0,
            state: Some(c),
        });
        restore
            .push(&state_key("t", "c", 1), Some(&v), n as i64)
            .expect("the state reads back");
    }
    // The negative side: removes beyond any add floor the value at 0.
    for (i, kind) in [
        TouchType::RemoveFromCart,
        TouchType::RemoveFromCart,
        TouchType::AddToCart,
    ]
    .into_iter()
    .enumerate()
    {
        let mut tp = Touchpoint::new(format!("b{i}"), "d", Channel::Web, kind, W + i as i64);
        tp.value = Some(if kind == TouchType::AddToCart {
            1.0
        } else {
            f64::MAX
        });
        e.on_touchpoint(&tp, &mut out);
    }
    out.clear();
    e.on_touchpoint(
        &Touchpoint::new("z", "z", Channel::Web, TouchType::PageView, W + 2 * HOUR_MS),
        &mut out,
    );
    let values: Vec<_> = out
        .iter()
        .filter(|d| d.kind == DerivedType::CartAbandoned)
        .map(|d| {
            (
                d.customer_id.to_string(),
                serde_json::to_value(d).unwrap()["cart_value"].clone(),
            )
        })
        .collect();
    assert_eq!(
        values,
        vec![
            ("c".to_string(), serde_json::json!(f64::MAX)),
            ("d".to_string(), serde_json::json!(0.0))
        ]
    );
}
