//! engagement_score, from SPEC 4 "Engagement score" and SPEC 7 "Engagement".
mod common;
use common::*;
use serde_json::json;
use touchstream::config::EngineConfig;
use touchstream::engine::Outcome;

#[test]
fn first_event_emits_with_previous_null() {
    let mut h = Harness::new();
    let out = h.send_ok(tp("e1", "c1", Ch::Web, Ty::PageView, T0));
    assert_eq!(
        types(&out),
        vec!["engagement_score", "journey_stage_changed"]
    );
    let e = json(&out[0]);
    assert_eq!(e["type"], "engagement_score");
    assert_eq!(e["customer_id"], "c1");
    assert_eq!(e["at"], T0);
    assert_eq!(e["previous"], serde_json::Value::Null);
    assert_eq!(e["channels"], json!(["web"]));
    assert_close(&e["score"], score_of(1.0), "score");
}

#[test]
fn first_event_zero_score_still_emitted() {
    // message_sent weighs 0 and is not an own touch: score 0, no channels.
    let mut h = Harness::new();
    let out = h.send_ok(tp("e1", "c1", Ch::Email, Ty::MessageSent, T0));
    let e = of_type(&out, "engagement_score");
    assert_eq!(e.len(), 1, "{out:?}");
    assert_eq!(e[0]["score"].as_f64(), Some(0.0));
    assert_eq!(e[0]["previous"], serde_json::Value::Null);
    assert_eq!(e[0]["channels"], json!([]));
}

#[test]
fn decay_and_channel_multiplier_exact() {
    let mut h = Harness::new();
    h.send_ok(tp("e1", "c1", Ch::Web, Ty::PageView, T0));
    let out = h.send_ok(tp("e2", "c1", Ch::MobileApp, Ty::AddToCart, T0 + 7 * DAY));
    let e = of_type(&out, "engagement_score");
    assert_eq!(e.len(), 1);
    // raw = 1 × 0.5 + 5 = 5.5, two channels → × 1.1.
    let expect = score_of(5.5 * 1.1);
    assert_close(&e[0]["score"], expect, "score");
    assert_close(&e[0]["previous"], score_of(1.0), "previous");
    assert_eq!(e[0]["channels"], json!(["mobile_app", "web"]));
    assert_eq!(e[0]["at"], T0 + 7 * DAY);
}

#[test]
fn message_sent_is_not_a_channel() {
    let mut h = Harness::new();
    h.send_ok(tp("e1", "c1", Ch::Email, Ty::MessageSent, T0));
    h.send_ok(tp("e2", "c1", Ch::Sms, Ty::MessageSent, T0 + HOUR));
    let out = h.send_ok(tp("e3", "c1", Ch::Web, Ty::Search, T0 + 2 * HOUR));
    let e = of_type(&out, "engagement_score");
    assert_eq!(e.len(), 1);
    // Only web counts: multiplier 1.0; message_sent weighs 0.
    assert_close(&e[0]["score"], score_of(2.0), "score");
    assert_eq!(e[0]["channels"], json!(["web"]));
    // A further message_sent changes nothing: no event.
    let out = h.send_ok(tp("e4", "c1", Ch::Push, Ty::MessageSent, T0 + 3 * HOUR));
    assert!(of_type(&out, "engagement_score").is_empty(), "{out:?}");
}

#[test]
fn min_delta_compares_with_last_emitted() {
    let mut h = Harness::new();
    // All at one instant, one channel: raw is the plain sum of weights.
    let out = h.send_ok(tp("e1", "c1", Ch::Web, Ty::CheckoutStarted, T0));
    let s1 = score_of(8.0);
    assert_close(&of_type(&out, "engagement_score")[0]["score"], s1, "s1");
    // raw 9: 59.34 − 55.07 = 4.27 < 5 → suppressed.
    assert!(score_of(9.0) - s1 < 5.0);
    let out = h.send_ok(tp("e2", "c1", Ch::Web, Ty::PageView, T0));
    assert!(of_type(&out, "engagement_score").is_empty(), "{out:?}");
    // raw 10: 63.21 − 55.07 = 8.14 >= 5 against the last *emitted* → emitted.
    let out = h.send_ok(tp("e3", "c1", Ch::Web, Ty::PageView, T0));
    let e = of_type(&out, "engagement_score");
    assert_eq!(e.len(), 1);
    assert_close(&e[0]["score"], score_of(10.0), "s3");
    assert_close(&e[0]["previous"], s1, "previous is the last emitted");
}

#[test]
fn min_delta_boundary_is_inclusive() {
    // message_sent first: score exactly 0. Then a page_view at the same
    // instant: score = 100(1 − e^−0.1), delta exactly that.
    let s = score_of(1.0);
    let cfg = EngineConfig {
        min_delta: s,
        ..EngineConfig::default()
    };
    let mut h = Harness::with_config(cfg);
    h.send_ok(tp("e1", "c1", Ch::Email, Ty::MessageSent, T0));
    let out = h.send_ok(tp("e2", "c1", Ch::Web, Ty::PageView, T0));
    assert_eq!(
        of_type(&out, "engagement_score").len(),
        1,
        "delta == min_delta emits"
    );

    let cfg = EngineConfig {
        min_delta: s + 1e-9,
        ..EngineConfig::default()
    };
    let mut h = Harness::with_config(cfg);
    h.send_ok(tp("e1", "c1", Ch::Email, Ty::MessageSent, T0));
    let out = h.send_ok(tp("e2", "c1", Ch::Web, Ty::PageView, T0));
    assert!(
        of_type(&out, "engagement_score").is_empty(),
        "delta < min_delta suppressed"
    );
}

#[test]
fn min_delta_default_five_just_below_and_above() {
    // raw 20 → 86.466; +1 page_view → raw 21 → 87.754 (delta 1.29, suppressed) ...
    // Use a scale where one page_view moves the score by just under / over 5.
    let mut h = Harness::new();
    h.send_ok(tp("e1", "c1", Ch::Web, Ty::SurveyResponse, T0)); // raw 3 → 25.918
    let out = h.send_ok(tp("e2", "c1", Ch::Web, Ty::PageView, T0)); // raw 4 → 32.968 (+7.05)
    assert_eq!(of_type(&out, "engagement_score").len(), 1);
    let out = h.send_ok(tp("e3", "c1", Ch::Web, Ty::PageView, T0)); // raw 5 → 39.347 (+6.38)
    assert_eq!(of_type(&out, "engagement_score").len(), 1);
    let out = h.send_ok(tp("e4", "c1", Ch::Web, Ty::PageView, T0)); // raw 6 → 45.119 (+5.77)
    assert_eq!(of_type(&out, "engagement_score").len(), 1);
    let out = h.send_ok(tp("e5", "c1", Ch::Web, Ty::PageView, T0)); // raw 7 → 50.341 (+5.22)
    assert_eq!(of_type(&out, "engagement_score").len(), 1);
    assert!(score_of(8.0) - score_of(7.0) < 5.0);
    let out = h.send_ok(tp("e6", "c1", Ch::Web, Ty::PageView, T0)); // raw 8 → 55.067 (+4.73)
    assert!(of_type(&out, "engagement_score").is_empty());
    let out = h.send_ok(tp("e7", "c1", Ch::Web, Ty::PageView, T0)); // raw 9 vs last emitted raw 7
    let e = of_type(&out, "engagement_score");
    assert_eq!(e.len(), 1);
    assert_close(&e[0]["previous"], score_of(7.0), "previous");
    assert_close(&e[0]["score"], score_of(9.0), "score");
}

#[test]
fn late_but_allowed_event_counts_decayed_to_newest() {
    let mut h = Harness::new();
    h.send_ok(tp("e1", "c1", Ch::Web, Ty::PageView, T0));
    h.send_ok(tp("e2", "c1", Ch::Web, Ty::PageView, T0 + 10 * HOUR));
    // Watermark = T0 + 10h − 5 s; 30 min older is late but within 1 h.
    let late_t = T0 + 10 * HOUR - 30 * MIN;
    let (o, out) = h.send(tp("e3", "c1", Ch::Store, Ty::CheckoutStarted, late_t));
    assert_eq!(o, Outcome::Accepted { late: true });
    let e = of_type(&out, "engagement_score");
    assert_eq!(e.len(), 1, "{out:?}");
    let newest = T0 + 10 * HOUR;
    let raw = (1.0 * decay7(newest - T0) + 1.0 + 8.0 * decay7(newest - late_t)) * 1.1;
    assert_close(&e[0]["score"], score_of(raw), "score at newest time");
    assert_eq!(e[0]["at"], late_t, "at is the late touchpoint's own time");
    assert_eq!(e[0]["channels"], json!(["store", "web"]));
}

#[test]
fn channels_sorted_and_limited_to_last_30_days() {
    let mut h = Harness::new();
    h.send_ok(tp("e1", "c1", Ch::Social, Ty::SocialInteraction, T0));
    h.send_ok(tp("e2", "c1", Ch::Web, Ty::PageView, T0 + DAY));
    h.send_ok(tp("e3", "c1", Ch::MobileApp, Ty::AppOpen, T0 + DAY));
    h.send_ok(tp("e4", "c1", Ch::Email, Ty::MessageOpened, T0 + DAY));
    let out = h.send_ok(tp("e5", "c1", Ch::Store, Ty::SupportContact, T0 + DAY));
    let e = of_type(&out, "engagement_score");
    assert_eq!(e.len(), 1, "{out:?}");
    assert_eq!(
        e[0]["channels"],
        json!(["email", "mobile_app", "social", "store", "web"])
    );
    // Exactly 30 d after the social touch it is no longer "in the last 30 d"
    // (age < 30 d); the others (29 d old) still are.
    let t = T0 + 30 * DAY;
    let out = h.send_ok(tp("e6", "c1", Ch::Web, Ty::OrderPlaced, t).value(10.0));
    let e = of_type(&out, "engagement_score");
    assert_eq!(e.len(), 1, "{out:?}");
    assert_eq!(
        e[0]["channels"],
        json!(["email", "mobile_app", "store", "web"])
    );
    let raw_before = 2.0 * decay7(t - T0) + 4.0 * decay7(t - T0 - DAY);
    let raw = (raw_before + 20.0) * (1.0 + 0.1 * 3.0);
    assert_close(&e[0]["score"], score_of(raw), "score");
}

#[test]
fn weights_half_life_and_scale_configurable() {
    let mut cfg = EngineConfig::default();
    cfg.weights[Ty::PageView.index()] = 10.0;
    cfg.half_life = DAY;
    cfg.scale = 20.0;
    cfg.channel_bonus = 0.5;
    let mut h = Harness::with_config(cfg);
    let out = h.send_ok(tp("e1", "c1", Ch::Web, Ty::PageView, T0));
    let s1 = 100.0 * (1.0 - (-10.0f64 / 20.0).exp());
    assert_close(&of_type(&out, "engagement_score")[0]["score"], s1, "s1");
    let out = h.send_ok(tp("e2", "c1", Ch::Email, Ty::PageView, T0 + 2 * DAY));
    // raw = (10 × 0.25 + 10) × (1 + 0.5 × 1)
    let s2 = 100.0 * (1.0 - (-(12.5f64 * 1.5) / 20.0).exp());
    assert_close(&of_type(&out, "engagement_score")[0]["score"], s2, "s2");
}

#[test]
fn negative_raw_floored_at_zero() {
    let mut h = Harness::new();
    h.send_ok(tp("e1", "c1", Ch::Web, Ty::PageView, T0));
    let out = h.send_ok(tp("e2", "c1", Ch::Email, Ty::Unsubscribed, T0 + HOUR));
    let e = of_type(&out, "engagement_score");
    assert_eq!(e.len(), 1);
    assert_eq!(e[0]["score"].as_f64(), Some(0.0));
}

#[test]
fn decrease_by_min_delta_also_emits() {
    let mut h = Harness::new();
    h.send_ok(tp("e1", "c1", Ch::Web, Ty::CheckoutStarted, T0));
    let out = h.send_ok(tp("e2", "c1", Ch::Web, Ty::PageView, T0 + 14 * DAY));
    let e = of_type(&out, "engagement_score");
    assert_eq!(e.len(), 1);
    assert_close(&e[0]["score"], score_of(8.0 * 0.25 + 1.0), "decayed score");
    assert_close(&e[0]["previous"], score_of(8.0), "previous");
}

#[test]
fn evicted_after_state_ttl_starts_fresh() {
    let mut h = Harness::new();
    h.send_ok(tp("e1", "c1", Ch::Web, Ty::CheckoutStarted, T0));
    h.advance(T0 + 401 * DAY);
    assert!(h.engine.snapshot().is_empty(), "evicted");
    let out = h.send_ok(tp("e2", "c1", Ch::Web, Ty::PageView, T0 + 402 * DAY));
    let e = of_type(&out, "engagement_score");
    assert_eq!(e[0]["previous"], serde_json::Value::Null);
    assert_close(&e[0]["score"], score_of(1.0), "fresh");
    let j = of_type(&out, "journey_stage_changed");
    assert_eq!(j[0]["from"], serde_json::Value::Null);
    assert_eq!(j[0]["to"], "awareness");
    assert!(
        of_type(&out, "churn_risk").is_empty(),
        "fresh customer starts low silently"
    );
}
