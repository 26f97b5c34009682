//! journey_stage_changed (SPEC 4 "Journey stage", SPEC 7 "Journey"), plus
//! the order of events within one cause and determinism (SPEC 5, 7 "Output").
mod common;
use common::*;
use serde_json::{json, Value};
use touchstream::config::EngineConfig;
use touchstream::model::{DerivedEvent, Survey};

fn stages(h: &Harness, cust: &str) -> Vec<(Value, Value, Value, Value)> {
    h.of_type_for("journey_stage_changed", cust)
        .into_iter()
        .map(|v| {
            (
                v["from"].clone(),
                v["to"].clone(),
                v["channel"].clone(),
                v["at"].clone(),
            )
        })
        .collect()
}

#[test]
fn forward_only_path() {
    let mut h = Harness::new();
    h.send_ok(tp("e1", "c1", Ch::Web, Ty::PageView, T0));
    h.send_ok(tp("e2", "c1", Ch::Email, Ty::MessageOpened, T0 + 1));
    h.send_ok(tp("e3", "c1", Ch::Web, Ty::Search, T0 + 2));
    h.send_ok(tp("e4", "c1", Ch::Web, Ty::PageView, T0 + 3));
    h.send_ok(tp("e5", "c1", Ch::Store, Ty::OrderPlaced, T0 + 4));
    h.send_ok(tp("e6", "c1", Ch::Web, Ty::ProductView, T0 + 5));
    h.send_ok(tp("e7", "c1", Ch::MobileApp, Ty::OrderPlaced, T0 + 6));
    h.send_ok(tp("e8", "c1", Ch::MobileApp, Ty::OrderPlaced, T0 + 7));
    h.send_ok(tp("e9", "c1", Ch::Web, Ty::PageView, T0 + 8));
    assert_eq!(
        stages(&h, "c1"),
        vec![
            (Value::Null, json!("awareness"), json!("web"), json!(T0)),
            (
                json!("awareness"),
                json!("engagement"),
                json!("web"),
                json!(T0 + 2)
            ),
            (
                json!("engagement"),
                json!("transaction"),
                json!("store"),
                json!(T0 + 4)
            ),
            (
                json!("transaction"),
                json!("retention"),
                json!("mobile_app"),
                json!(T0 + 6)
            ),
        ]
    );
}

#[test]
fn passive_first_touches_are_awareness() {
    let mut h = Harness::new();
    let passive = [
        Ty::PageView,
        Ty::MessageOpened,
        Ty::MessageSent,
        Ty::SocialInteraction,
        Ty::StoreVisit,
    ];
    for (i, k) in passive.iter().enumerate() {
        let c = format!("c{i}");
        h.send_ok(tp(&format!("e{i}"), &c, Ch::Social, *k, T0));
        assert_eq!(
            stages(&h, &c),
            vec![(Value::Null, json!("awareness"), json!("social"), json!(T0))],
            "{k:?}"
        );
    }
    let active = [
        Ty::ProductView,
        Ty::Search,
        Ty::AddToCart,
        Ty::AppOpen,
        Ty::MessageClicked,
        Ty::SupportContact,
        Ty::Other,
    ];
    for (i, k) in active.iter().enumerate() {
        let c = format!("d{i}");
        h.send_ok(tp(&format!("f{i}"), &c, Ch::Chat, *k, T0));
        assert_eq!(
            stages(&h, &c),
            vec![(Value::Null, json!("engagement"), json!("chat"), json!(T0))],
            "{k:?}"
        );
    }
    h.send_ok(tp("g1", "o1", Ch::Store, Ty::OrderPlaced, T0));
    assert_eq!(
        stages(&h, "o1"),
        vec![(Value::Null, json!("transaction"), json!("store"), json!(T0))]
    );
}

#[test]
fn message_sent_then_engagement() {
    let mut h = Harness::new();
    h.send_ok(tp("e1", "c1", Ch::Email, Ty::MessageSent, T0));
    h.send_ok(tp("e2", "c1", Ch::Email, Ty::MessageClicked, T0 + MIN));
    assert_eq!(
        stages(&h, "c1"),
        vec![
            (Value::Null, json!("awareness"), json!("email"), json!(T0)),
            (
                json!("awareness"),
                json!("engagement"),
                json!("email"),
                json!(T0 + MIN)
            ),
        ]
    );
}

#[test]
fn at_risk_by_timer_and_back_with_order() {
    let mut h = Harness::new();
    h.send_ok(tp("o1", "c1", Ch::Web, Ty::OrderPlaced, T0));
    // 90 d inactive → high → at_risk, by timer: channel null, at = due.
    let out = h.advance(T0 + 100 * DAY);
    assert_eq!(
        types(&out),
        vec!["churn_risk", "churn_risk", "journey_stage_changed"],
        "{out:?}"
    );
    assert_eq!(
        stages(&h, "c1")[1],
        (
            json!("transaction"),
            json!("at_risk"),
            Value::Null,
            json!(T0 + 90 * DAY)
        )
    );
    // Non-order touches do not leave at_risk.
    let out = h.send_ok(tp("s1", "c1", Ch::Web, Ty::Search, T0 + 100 * DAY + 1));
    assert!(of_type(&out, "journey_stage_changed").is_empty(), "{out:?}");
    assert_eq!(of_type(&out, "churn_risk")[0]["level"], "low");
    // An order leaves it: second order → retention.
    let out = h.send_ok(tp(
        "o2",
        "c1",
        Ch::MobileApp,
        Ty::OrderPlaced,
        T0 + 100 * DAY + 2,
    ));
    let j = of_type(&out, "journey_stage_changed");
    assert_eq!(j.len(), 1);
    assert_eq!(
        (
            j[0]["from"].clone(),
            j[0]["to"].clone(),
            j[0]["channel"].clone()
        ),
        (json!("at_risk"), json!("retention"), json!("mobile_app"))
    );
}

#[test]
fn at_risk_without_orders_leaves_to_transaction() {
    let mut h = Harness::new();
    h.send_ok(tp("p1", "c1", Ch::Web, Ty::PageView, T0));
    h.advance(T0 + 90 * DAY);
    assert_eq!(
        stages(&h, "c1")[1],
        (
            json!("awareness"),
            json!("at_risk"),
            Value::Null,
            json!(T0 + 90 * DAY)
        )
    );
    h.send_ok(tp("o1", "c1", Ch::Store, Ty::OrderPlaced, T0 + 91 * DAY));
    assert_eq!(
        stages(&h, "c1")[2],
        (
            json!("at_risk"),
            json!("transaction"),
            json!("store"),
            json!(T0 + 91 * DAY)
        )
    );
}

#[test]
fn first_touch_unsubscribed_one_journey_event() {
    let mut h = Harness::new();
    let out = h.send_ok(tp("u1", "c1", Ch::Email, Ty::Unsubscribed, T0));
    assert_eq!(
        types(&out),
        vec!["engagement_score", "churn_risk", "journey_stage_changed"]
    );
    let v = jsons(&out);
    assert_eq!(v[1]["level"], "high");
    assert_eq!(v[1]["reasons"], json!(["unsubscribed"]));
    assert_eq!(v[2]["from"], Value::Null);
    assert_eq!(v[2]["to"], "at_risk");
    assert_eq!(v[2]["channel"], "email");
    assert_eq!(v[2]["at"], T0);
}

#[test]
fn unsubscribe_later_moves_to_at_risk_with_channel() {
    let mut h = Harness::new();
    h.send_ok(tp("o1", "c1", Ch::Web, Ty::OrderPlaced, T0));
    let out = h.send_ok(tp("u1", "c1", Ch::Sms, Ty::Unsubscribed, T0 + DAY));
    let j = of_type(&out, "journey_stage_changed");
    assert_eq!(j.len(), 1);
    assert_eq!(
        (
            j[0]["from"].clone(),
            j[0]["to"].clone(),
            j[0]["channel"].clone()
        ),
        (json!("transaction"), json!("at_risk"), json!("sms"))
    );
    // Order while still unsubscribed (still high): an order leaves at_risk.
    let out = h.send_ok(tp("o2", "c1", Ch::Web, Ty::OrderPlaced, T0 + 2 * DAY));
    let j = of_type(&out, "journey_stage_changed");
    assert_eq!(j.len(), 1, "{out:?}");
    assert_eq!(j[0]["to"], "retention");
}

#[test]
fn medium_does_not_move_journey() {
    let mut h = Harness::new();
    h.send_ok(tp("p1", "c1", Ch::Web, Ty::Search, T0));
    h.send_ok(tp("s1", "c1", Ch::Web, Ty::SurveyResponse, T0 + 1).survey(Survey::Nps, 2));
    h.advance(T0 + 31 * DAY);
    assert_eq!(stages(&h, "c1").len(), 1);
}

// ------------------------------------------------------------ event order

#[test]
fn one_cause_follows_spec_table_order_and_timers_fire_first() {
    let cfg = EngineConfig {
        recovery_window: 40 * DAY,
        ..EngineConfig::default()
    };
    let mut h = Harness::with_config(cfg);
    h.send_ok(tp("p1", "c1", Ch::Web, Ty::PageView, T0));
    h.send_ok(
        tp("a1", "c1", Ch::Web, Ty::AddToCart, T0)
            .cart("k1")
            .value(10.0),
    );
    // Nothing else until the order 31 d later: its watermark reaches the
    // cart timer (T0 + 1 h) and the churn timer (T0 + 30 d), which fire
    // first, in due order; then the order's own events in table order.
    let t = T0 + 31 * DAY;
    let out = h.send_ok(
        tp("o1", "c1", Ch::Store, Ty::OrderPlaced, t)
            .cart("k1")
            .order("ord1")
            .value(12.0),
    );
    assert_eq!(
        types(&out),
        vec![
            "cart_abandoned",
            "churn_risk",
            "engagement_score",
            "cart_recovered",
            "churn_risk",
            "journey_stage_changed",
            "order_attributed",
            "customer_value"
        ],
        "{out:#?}"
    );
    let v = jsons(&out);
    let ats: Vec<i64> = v.iter().map(|e| e["at"].as_i64().unwrap()).collect();
    assert_eq!(ats, vec![T0 + HOUR, T0 + 30 * DAY, t, t, t, t, t, t]);
    assert_eq!(v[1]["level"], "medium");
    assert_eq!(v[4]["level"], "low");
    assert_eq!(v[4]["previous_level"], "medium");
    assert_eq!(v[3]["abandoned_at"], T0 + HOUR);
    assert_eq!(v[5]["to"], "transaction");
}

#[test]
fn timers_fire_in_due_order_across_customers() {
    let mut h = Harness::new();
    h.send_ok(tp("a1", "c1", Ch::Web, Ty::AddToCart, T0 + 20 * MIN).value(1.0));
    h.send_ok(tp("a2", "c2", Ch::Web, Ty::AddToCart, T0).value(1.0));
    h.send_ok(tp("a3", "c3", Ch::Web, Ty::AddToCart, T0 + 10 * MIN).value(1.0));
    let out = h.advance(T0 + 2 * HOUR);
    let got: Vec<(String, i64)> = out
        .iter()
        .map(|e| (e.customer_id.to_string(), e.at))
        .collect();
    assert_eq!(
        got,
        vec![
            ("c2".into(), T0 + HOUR),
            ("c3".into(), T0 + HOUR + 10 * MIN),
            ("c1".into(), T0 + HOUR + 20 * MIN)
        ]
    );
}

// ------------------------------------------------------------ determinism

fn mixed_input() -> Vec<touchstream::model::Touchpoint> {
    vec![
        tp("e1", "c1", Ch::Web, Ty::PageView, T0),
        tp("e2", "c1", Ch::Web, Ty::AddToCart, T0 + MIN)
            .cart("k")
            .value(3.0),
        tp("e3", "c2", Ch::Email, Ty::MessageClicked, T0 + MIN).campaign("camp"),
        tp("e4", "c2", Ch::Email, Ty::Unsubscribed, T0 + 2 * MIN),
        tp("e5", "c1", Ch::Web, Ty::OrderPlaced, T0 + 3 * HOUR)
            .order("o1")
            .value(3.0),
        tp("e6", "c3", Ch::Store, Ty::OrderPlaced, T0 + 2 * DAY),
        tp("e7", "c3", Ch::Store, Ty::OrderPlaced, T0 + 9 * DAY),
        tp("e8", "c9", Ch::Web, Ty::PageView, T0 + 200 * DAY),
    ]
}

fn run_ids(input: Vec<touchstream::model::Touchpoint>) -> Vec<DerivedEvent> {
    let mut h = Harness::new();
    for t in input {
        h.send(t);
    }
    h.advance(T0 + 300 * DAY);
    h.events
}

#[test]
fn same_input_same_events_and_ids() {
    let a = run_ids(mixed_input());
    let b = run_ids(mixed_input());
    assert!(a.len() > 10, "{a:?}");
    let ja: Vec<String> = a.iter().map(|e| e.to_json()).collect();
    let jb: Vec<String> = b.iter().map(|e| e.to_json()).collect();
    assert_eq!(ja, jb);
    let mut ids: Vec<String> = a.iter().map(|e| e.event_id.to_string()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), a.len(), "derived event ids are distinct");
    // Timer-caused events exist (cart, churn, survey) and have ids too.
    for ty in ["cart_abandoned", "survey_trigger", "churn_risk"] {
        assert!(a.iter().any(|e| e.kind.as_str() == ty), "{ty} missing");
    }
}
