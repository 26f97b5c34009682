//! churn_risk (SPEC 4 "Churn risk", SPEC 7 "Churn").
mod common;
use common::*;
use serde_json::{json, Value};
use std::sync::Arc;
use touchstream::config::EngineConfig;
use touchstream::engine::Engine;
use touchstream::model::{Channel, DerivedType, Survey, TouchType, Touchpoint, HOUR_MS};

/// 2026-01-01T10:00:00Z, the epoch of the regression tests below.
const W: i64 = 1_767_261_600_000;

fn churn(h: &Harness) -> Vec<Value> {
    h.of_type("churn_risk")
}

#[test]
fn new_customer_starts_low_without_event() {
    let mut h = Harness::new();
    h.send_ok(tp("e1", "c1", Ch::Web, Ty::PageView, T0));
    h.send_ok(tp("e2", "c1", Ch::Web, Ty::OrderPlaced, T0 + HOUR));
    h.send_ok(tp("e3", "c2", Ch::Email, Ty::MessageSent, T0 + HOUR));
    assert!(churn(&h).is_empty(), "{:?}", h.events);
    let snap = h.engine.snapshot();
    assert_eq!(snap[0].churn_level.as_str(), "low");
    assert_eq!(snap[1].churn_level.as_str(), "low");
}

#[test]
fn unsubscribed_high_at_once_then_back_after_30_days() {
    let mut h = Harness::new();
    h.send_ok(tp("e1", "c1", Ch::Web, Ty::PageView, T0));
    let out = h.send_ok(tp("u1", "c1", Ch::Email, Ty::Unsubscribed, T0 + HOUR));
    let c = of_type(&out, "churn_risk");
    assert_eq!(
        c,
        vec![json!({
            "type": "churn_risk", "event_id": c[0]["event_id"], "customer_id": "c1", "at": T0 + HOUR,
            "level": "high", "previous_level": "low", "p_alive": null, "days_inactive": 0,
            "reasons": ["unsubscribed"]
        })]
    );
    h.advance(T0 + HOUR + 30 * DAY - 1);
    assert_eq!(churn(&h).len(), 1);
    // 30 d after the unsubscribe (also 30 d inactive): medium, inactive.
    let out = h.advance(T0 + HOUR + 30 * DAY);
    let c = of_type(&out, "churn_risk");
    assert_eq!(c.len(), 1, "{out:?}");
    assert_eq!(c[0]["at"], T0 + HOUR + 30 * DAY);
    assert_eq!(c[0]["level"], "medium");
    assert_eq!(c[0]["previous_level"], "high");
    assert_eq!(c[0]["p_alive"], Value::Null);
    assert_eq!(c[0]["days_inactive"], 30);
    assert_eq!(c[0]["reasons"], json!(["inactive"]));
}

#[test]
fn unsubscribe_expires_to_low_when_active() {
    let mut h = Harness::new();
    h.send_ok(tp("u1", "c1", Ch::Email, Ty::Unsubscribed, T0));
    let out = h.send_ok(tp("p1", "c1", Ch::Web, Ty::PageView, T0 + 20 * DAY));
    assert!(
        of_type(&out, "churn_risk").is_empty(),
        "still high: unsubscribed 20 d ago"
    );
    let out = h.advance(T0 + 30 * DAY);
    let c = of_type(&out, "churn_risk");
    assert_eq!(c.len(), 1);
    assert_eq!(c[0]["at"], T0 + 30 * DAY);
    assert_eq!(c[0]["level"], "low");
    assert_eq!(c[0]["previous_level"], "high");
    assert_eq!(c[0]["days_inactive"], 10);
    assert_eq!(
        c[0]["reasons"],
        json!([]),
        "a change back to low has no reasons"
    );
}

#[test]
fn nps_detractor_medium_then_promoter_low() {
    let mut h = Harness::new();
    h.send_ok(tp("e1", "c1", Ch::Web, Ty::PageView, T0));
    let out =
        h.send_ok(tp("s1", "c1", Ch::Email, Ty::SurveyResponse, T0 + HOUR).survey(Survey::Nps, 6));
    let c = of_type(&out, "churn_risk");
    assert_eq!(c.len(), 1);
    assert_eq!(c[0]["level"], "medium");
    assert_eq!(c[0]["previous_level"], "low");
    assert_eq!(c[0]["p_alive"], Value::Null);
    assert_eq!(c[0]["days_inactive"], 0);
    assert_eq!(c[0]["reasons"], json!(["nps_detractor"]));
    assert_eq!(c[0]["at"], T0 + HOUR);
    // A late answer older than the detractor one does not count (latest by event time).
    let out = h.send_ok(
        tp("s0", "c1", Ch::Email, Ty::SurveyResponse, T0 + 30 * MIN).survey(Survey::Nps, 10),
    );
    assert!(of_type(&out, "churn_risk").is_empty());
    // Other surveys do not count.
    let out = h.send_ok(
        tp("s2", "c1", Ch::Email, Ty::SurveyResponse, T0 + 2 * HOUR).survey(Survey::Csat, 5),
    );
    assert!(of_type(&out, "churn_risk").is_empty());
    let out = h.send_ok(
        tp("s3", "c1", Ch::Email, Ty::SurveyResponse, T0 + 3 * HOUR).survey(Survey::Nps, 9),
    );
    let c = of_type(&out, "churn_risk");
    assert_eq!(c.len(), 1);
    assert_eq!(c[0]["level"], "low");
    assert_eq!(c[0]["previous_level"], "medium");
    assert_eq!(c[0]["reasons"], json!([]));
}

#[test]
fn nps_passive_seven_is_not_detractor() {
    let mut h = Harness::new();
    let out = h.send_ok(tp("s1", "c1", Ch::Email, Ty::SurveyResponse, T0).survey(Survey::Nps, 7));
    assert!(of_type(&out, "churn_risk").is_empty());
    let out =
        h.send_ok(tp("s2", "c1", Ch::Email, Ty::SurveyResponse, T0 + HOUR).survey(Survey::Nps, 0));
    assert_eq!(of_type(&out, "churn_risk")[0]["level"], "medium");
    let out = h.send_ok(
        tp("s3", "c1", Ch::Email, Ty::SurveyResponse, T0 + 2 * HOUR).survey(Survey::Nps, 7),
    );
    assert_eq!(of_type(&out, "churn_risk")[0]["level"], "low");
}

#[test]
fn two_orders_a_week_apart_p_alive_crossings() {
    let mut h = Harness::new();
    let o1 = tp("o1", "c1", Ch::Web, Ty::OrderPlaced, T0)
        .order("a")
        .value(10.0);
    let o2 = tp("o2", "c1", Ch::Web, Ty::OrderPlaced, T0 + 7 * DAY)
        .order("b")
        .value(10.0);
    h.send_ok(o1);
    let out = h.send_ok(o2);
    // Right after the second order p_alive = 1/(1 + a/b) ≈ 0.754: still low.
    assert!(p_alive(2, 7.0, 7.0) > 0.7);
    assert!(of_type(&out, "churn_risk").is_empty());
    h.advance(T0 + 400 * DAY - 1);
    let c = churn(&h);

    // medium at the 0.7 crossing.
    let t_med = T0 + (p_alive_crossing(2, 7.0, 0.7) * DAY as f64) as i64;
    let at = c[0]["at"].as_i64().unwrap();
    assert!(
        (at - t_med).abs() <= MIN,
        "medium at {at}, expected ≈ {t_med}"
    );
    assert_eq!(c[0]["level"], "medium");
    assert_eq!(c[0]["previous_level"], "low");
    let p = c[0]["p_alive"].as_f64().unwrap();
    assert!(p < 0.7 && p > 0.7 - 1e-6, "p_alive just below 0.7: {p}");
    let exact_p = p_alive(2, 7.0, (at - T0) as f64 / DAY as f64);
    assert!(
        close(p, exact_p, 1e-9),
        "p_alive {p} vs closed form {exact_p}"
    );
    assert_eq!(c[0]["reasons"], json!(["p_alive"]));
    assert_eq!(c[0]["days_inactive"], (at - (T0 + 7 * DAY)) / DAY);

    // high: 90 d after the last activity or p_alive < 0.3, whichever first.
    let t_inactive = T0 + 7 * DAY + 90 * DAY;
    let t_p03 = T0 + (p_alive_crossing(2, 7.0, 0.3) * DAY as f64) as i64;
    assert!(
        t_inactive < t_p03,
        "inactivity comes first with these numbers"
    );
    assert_eq!(c.len(), 2, "{c:?}");
    assert_eq!(c[1]["level"], "high");
    assert_eq!(c[1]["previous_level"], "medium");
    assert_eq!(c[1]["at"], t_inactive);
    assert_eq!(c[1]["days_inactive"], 90);
    assert_eq!(c[1]["reasons"], json!(["p_alive", "inactive"]));
    assert_close(&c[1]["p_alive"], p_alive(2, 7.0, 97.0), "p_alive at 97 d");
}

#[test]
fn p_alive_high_crossing_before_inactivity() {
    // Orders on days 0..=9: p_alive collapses fast after the last one;
    // the 0.3 crossing comes before even 30 d of inactivity.
    let mut h = Harness::new();
    for i in 0..10 {
        h.send_ok(tp(
            &format!("o{i}"),
            "c1",
            Ch::Web,
            Ty::OrderPlaced,
            T0 + i * DAY,
        ));
    }
    let t_med = T0 + (p_alive_crossing(10, 9.0, 0.7) * DAY as f64) as i64;
    let t_high = T0 + (p_alive_crossing(10, 9.0, 0.3) * DAY as f64) as i64;
    assert!(
        t_high < T0 + 9 * DAY + 30 * DAY,
        "crossing {}",
        (t_high - T0) / DAY
    );
    h.advance(T0 + 60 * DAY);
    let c = churn(&h);
    assert_eq!(c.len(), 2, "{c:?}");
    assert_eq!(c[0]["level"], "medium");
    assert!((c[0]["at"].as_i64().unwrap() - t_med).abs() <= MIN);
    assert_eq!(c[0]["reasons"], json!(["p_alive"]));
    assert_eq!(c[1]["level"], "high");
    let at = c[1]["at"].as_i64().unwrap();
    assert!((at - t_high).abs() <= MIN, "high at {at} vs {t_high}");
    let p = c[1]["p_alive"].as_f64().unwrap();
    assert!(p < 0.3 && p > 0.3 - 1e-6, "{p}");
    assert_eq!(c[1]["reasons"], json!(["p_alive"]));
}

#[test]
fn one_order_p_alive_is_one_and_inactivity_levels() {
    let mut h = Harness::new();
    h.send_ok(tp("o1", "c1", Ch::Store, Ty::OrderPlaced, T0));
    h.advance(T0 + 200 * DAY);
    let c = churn(&h);
    assert_eq!(c.len(), 2, "{c:?}");
    assert_eq!(
        c[0],
        json!({"type": "churn_risk", "event_id": c[0]["event_id"], "customer_id": "c1", "at": T0 + 30 * DAY,
               "level": "medium", "previous_level": "low", "p_alive": 1.0, "days_inactive": 30,
               "reasons": ["inactive"]})
    );
    assert_eq!(
        c[1],
        json!({"type": "churn_risk", "event_id": c[1]["event_id"], "customer_id": "c1", "at": T0 + 90 * DAY,
               "level": "high", "previous_level": "medium", "p_alive": 1.0, "days_inactive": 90,
               "reasons": ["inactive"]})
    );
}

#[test]
fn no_orders_inactive_30_days_medium_p_alive_null() {
    let mut h = Harness::new();
    h.send_ok(tp("p1", "c1", Ch::Web, Ty::PageView, T0));
    h.send_ok(tp(
        "p2",
        "c1",
        Ch::Web,
        Ty::PageView,
        T0 + 5 * DAY + 7 * HOUR,
    ));
    h.advance(T0 + 5 * DAY + 7 * HOUR + 30 * DAY);
    let c = churn(&h);
    assert_eq!(c.len(), 1);
    assert_eq!(c[0]["at"], T0 + 35 * DAY + 7 * HOUR);
    assert_eq!(c[0]["level"], "medium");
    assert_eq!(c[0]["p_alive"], Value::Null);
    assert_eq!(c[0]["days_inactive"], 30);
    assert_eq!(c[0]["reasons"], json!(["inactive"]));
}

#[test]
fn activity_resets_inactivity_and_message_sent_is_not_activity() {
    let mut h = Harness::new();
    h.send_ok(tp("p1", "c1", Ch::Web, Ty::PageView, T0));
    h.send_ok(tp("m1", "c1", Ch::Email, Ty::MessageSent, T0 + 20 * DAY));
    h.advance(T0 + 30 * DAY);
    let c = churn(&h);
    assert_eq!(c.len(), 1, "message_sent is not activity");
    assert_eq!(c[0]["at"], T0 + 30 * DAY);
    // An own touch brings the customer back to low at once.
    let out = h.send_ok(tp("p2", "c1", Ch::Web, Ty::Search, T0 + 31 * DAY));
    let c = of_type(&out, "churn_risk");
    assert_eq!(c.len(), 1);
    assert_eq!(c[0]["level"], "low");
    assert_eq!(c[0]["days_inactive"], 0);
    assert_eq!(c[0]["reasons"], json!([]));
}

#[test]
fn only_message_sent_never_inactive() {
    let mut h = Harness::new();
    h.send_ok(tp("m1", "c1", Ch::Email, Ty::MessageSent, T0));
    h.advance(T0 + 200 * DAY);
    assert!(churn(&h).is_empty());
}

#[test]
fn detractor_then_inactive_reasons_in_spec_order() {
    // A detractor answer (itself an own touch), then 90 d of nothing:
    // high with reasons in SPEC order: inactive before nps_detractor.
    let mut h = Harness::new();
    h.send_ok(tp("s1", "c1", Ch::Web, Ty::SurveyResponse, T0).survey(Survey::Nps, 3));
    h.advance(T0 + 90 * DAY + 12 * HOUR);
    let c = churn(&h);
    assert_eq!(c.len(), 2, "{c:?}");
    assert_eq!(c[0]["reasons"], json!(["nps_detractor"]));
    assert_eq!(c[1]["level"], "high");
    assert_eq!(c[1]["at"], T0 + 90 * DAY);
    assert_eq!(c[1]["reasons"], json!(["inactive", "nps_detractor"]));
}

#[test]
fn late_touch_evaluates_at_customer_clock() {
    let mut h = Harness::new();
    h.send_ok(tp("p1", "c1", Ch::Web, Ty::PageView, T0));
    h.advance(T0 + 30 * DAY);
    assert_eq!(churn(&h).len(), 1);
    // Late (but allowed) outbound message 30 min before the clock: the
    // evaluation uses the clock (T0 + 30 d), so still 30 d inactive: no change.
    let out = h.send_ok(tp(
        "m1",
        "c1",
        Ch::Email,
        Ty::MessageSent,
        T0 + 30 * DAY - 30 * MIN,
    ));
    assert!(of_type(&out, "churn_risk").is_empty(), "{out:?}");
    // A late own touch is activity: 30 min inactive → low, at = its own time.
    let out = h.send_ok(tp(
        "p2",
        "c1",
        Ch::Web,
        Ty::PageView,
        T0 + 30 * DAY - 30 * MIN,
    ));
    let c = of_type(&out, "churn_risk");
    assert_eq!(c.len(), 1);
    assert_eq!(c[0]["level"], "low");
    assert_eq!(c[0]["at"], T0 + 30 * DAY - 30 * MIN);
    assert_eq!(c[0]["days_inactive"], 0);
}

#[test]
fn message_sent_evaluates_at_touch_clock_days_inactive_whole_days() {
    // The timer at T0 + 30 d has not fired (watermark behind); a
    // message_sent at T0 + 30 d 12 h is evaluated at its own clock:
    // 30.5 d inactive → medium, days_inactive 30 (whole days), at = touch time.
    let mut h = Harness::new();
    h.send_ok(tp("p1", "c1", Ch::Web, Ty::PageView, T0));
    let t = T0 + 30 * DAY + 12 * HOUR;
    let out = h.send_ok(tp("m1", "c1", Ch::Email, Ty::MessageSent, t));
    // This record's watermark (t − 5 s) passes the timer: it fires first.
    let c = of_type(&out, "churn_risk");
    assert_eq!(c.len(), 1, "{out:?}");
    assert_eq!(c[0]["at"], T0 + 30 * DAY);
    assert_eq!(c[0]["days_inactive"], 30);
    // Now with the timer not yet reached (watermark t − 5 s is before its due time).
    let mut h = Harness::new();
    h.send_ok(tp("p1", "c1", Ch::Web, Ty::PageView, T0));
    let t = T0 + 30 * DAY + 2 * SEC; // watermark t − 5 s < T0 + 30 d
    let out = h.send_ok(tp("m1", "c1", Ch::Email, Ty::MessageSent, t));
    let c = of_type(&out, "churn_risk");
    assert_eq!(c.len(), 1, "{out:?}");
    assert_eq!(c[0]["at"], t);
    assert_eq!(c[0]["level"], "medium");
    assert_eq!(c[0]["days_inactive"], 30);
    // The timer then finds nothing to change.
    let out = h.advance(T0 + 31 * DAY);
    assert!(of_type(&out, "churn_risk").is_empty(), "{out:?}");
}

/// regression: eviction at `state_ttl` swallowed the churn change due at that instant.
///
/// Found by the reference model: with `state_ttl` equal to a churn period,
/// the eviction swallowed the level change due at the same instant, and a
/// survey timer due then too.
#[test]
fn a_churn_change_at_the_state_ttl_instant_is_emitted_before_eviction() {
    let day = 86_400_000;
    let cfg = EngineConfig {
        state_ttl: 30 * day,
        ..EngineConfig::default()
    };
    let mut e = Engine::new(Arc::new(cfg));
    let mut out = Vec::new();
    let tp = Touchpoint::new("a", "c", Channel::Email, TouchType::PageView, W);
    e.on_touchpoint(&tp, &mut out);
    out.clear();
    let other = Touchpoint::new("b", "d", Channel::Web, TouchType::PageView, W + 31 * day);
    e.on_touchpoint(&other, &mut out);
    let churn: Vec<_> = out
        .iter()
        .filter(|ev| ev.kind == DerivedType::ChurnRisk && &*ev.customer_id == "c")
        .map(|ev| serde_json::to_value(ev).unwrap())
        .collect();
    assert_eq!(churn.len(), 1, "{out:?}");
    assert_eq!(churn[0]["at"], serde_json::json!(W + 30 * day));
    assert_eq!(churn[0]["level"], "medium");
    assert_eq!(churn[0]["reasons"], serde_json::json!(["inactive"]));
    assert!(e.customer("c").is_none(), "then evicted");
    assert_eq!(e.stats().evicted, 1);
}

/// regression: the earliest accepted time fell out of the churn facts and the changelog.
#[test]
fn the_earliest_event_time_is_kept_in_churn_facts_and_the_changelog() {
    // An order at -2^43 ms (the earliest time accepted) was dropped from
    // the churn facts, and a customer touched then could not be read back
    // from the changelog.
    let min = touchstream::validate::MAX_ABS_TIMESTAMP;
    let day = 24 * HOUR_MS;
    let mut e = Engine::new(Arc::new(EngineConfig::default()));
    let mut out = Vec::new();
    for (i, t) in [-min, -min + 7 * day].into_iter().enumerate() {
        let tp = Touchpoint::new(
            format!("o{i}"),
            "c",
            Channel::Web,
            TouchType::OrderPlaced,
            t,
        );
        e.on_touchpoint(&tp, &mut out);
    }
    let row = e
        .snapshot()
        .into_iter()
        .find(|r| r.customer_id == "c")
        .expect("in state");
    assert_eq!(row.first_order_at, Some(-min));
    assert_eq!(row.orders, 2);
    let c = e.customer("c").expect("in state");
    let json = serde_json::to_string(c).unwrap();
    let back: touchstream::engine::state::Customer = serde_json::from_str(&json).unwrap();
    assert_eq!(back.lists, c.lists);
    assert_eq!(back.full_churn().first_order, -min);
}
