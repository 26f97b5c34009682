//! survey_trigger and contact_fatigue (SPEC 4, SPEC 7 "Survey", "Fatigue").
mod common;
use common::*;
use serde_json::{json, Value};

fn triggers(h: &Harness) -> Vec<Value> {
    h.of_type("survey_trigger")
}

#[test]
fn click_without_order_triggers_at_click_plus_24h() {
    let mut h = Harness::new();
    h.send_ok(tp("k1", "c1", Ch::Email, Ty::MessageClicked, T0).campaign("spring"));
    h.advance(T0 + 24 * HOUR - 1);
    assert!(triggers(&h).is_empty());
    let out = h.advance(T0 + 24 * HOUR);
    let t = of_type(&out, "survey_trigger");
    assert_eq!(
        t,
        vec![json!({
            "type": "survey_trigger", "event_id": t[0]["event_id"], "customer_id": "c1",
            "at": T0 + 24 * HOUR, "survey": "nps", "campaign_id": "spring", "channel": "email",
            "clicked_at": T0
        })]
    );
}

#[test]
fn fired_by_a_later_record_with_due_time_at() {
    let mut h = Harness::new();
    h.send_ok(tp("k1", "c1", Ch::Sms, Ty::MessageClicked, T0).campaign("x"));
    let out = h.send_ok(tp("p1", "c1", Ch::Web, Ty::PageView, T0 + 3 * DAY));
    assert_eq!(out[0].kind.as_str(), "survey_trigger", "{out:?}");
    assert_eq!(out[0].at, T0 + 24 * HOUR);
}

#[test]
fn order_within_window_prevents_including_boundaries() {
    let mut h = Harness::new();
    // An order before the click does not count.
    h.send_ok(tp("o3", "c3", Ch::Web, Ty::OrderPlaced, T0 - 1));
    h.send_ok(tp("k3", "c3", Ch::Email, Ty::MessageClicked, T0).campaign("a"));
    // An order at the click's own instant counts.
    h.send_ok(tp("k2", "c2", Ch::Email, Ty::MessageClicked, T0).campaign("a"));
    h.send_ok(tp("o2", "c2", Ch::Web, Ty::OrderPlaced, T0));
    h.send_ok(tp("k4", "c4", Ch::Email, Ty::MessageClicked, T0).campaign("a"));
    // An order exactly at click + 24 h counts.
    h.send_ok(tp("k1", "c1", Ch::Email, Ty::MessageClicked, T0).campaign("a"));
    h.send_ok(tp("o1", "c1", Ch::Web, Ty::OrderPlaced, T0 + 24 * HOUR));
    // One after the window does not.
    h.advance(T0 + 2 * DAY);
    h.send_ok(tp("o4", "c4", Ch::Web, Ty::OrderPlaced, T0 + 2 * DAY));
    h.advance(T0 + 3 * DAY);
    let who: Vec<Value> = triggers(&h)
        .iter()
        .map(|t| t["customer_id"].clone())
        .collect();
    assert_eq!(who, vec![json!("c3"), json!("c4")]);
}

#[test]
fn clicks_without_campaign_and_other_types_never_trigger() {
    let mut h = Harness::new();
    h.send_ok(tp("k1", "c1", Ch::Email, Ty::MessageClicked, T0));
    h.send_ok(tp("k2", "c1", Ch::Email, Ty::MessageOpened, T0).campaign("a"));
    h.send_ok(tp("k3", "c1", Ch::Email, Ty::MessageSent, T0).campaign("a"));
    h.send_ok(tp("k4", "c1", Ch::Web, Ty::PageView, T0).campaign("a"));
    h.advance(T0 + 5 * DAY);
    assert!(triggers(&h).is_empty());
}

#[test]
fn at_most_one_per_30_days() {
    let mut h = Harness::new();
    h.send_ok(tp("k1", "c1", Ch::Email, Ty::MessageClicked, T0).campaign("a"));
    h.advance(T0 + DAY);
    assert_eq!(triggers(&h).len(), 1);
    // Due at T0 + 3 d: within 30 d of the trigger at T0 + 1 d.
    h.send_ok(tp("k2", "c1", Ch::Push, Ty::MessageClicked, T0 + 2 * DAY).campaign("b"));
    // Due 1 ms before 30 d after the last trigger: suppressed.
    h.send_ok(tp("k3", "c1", Ch::Sms, Ty::MessageClicked, T0 + 30 * DAY - 1).campaign("c"));
    // Due exactly 30 d after it: allowed (age < 30 d is "in the 30 d before").
    h.send_ok(tp("k4", "c1", Ch::Web, Ty::MessageClicked, T0 + 30 * DAY).campaign("d"));
    h.advance(T0 + 40 * DAY);
    let t = triggers(&h);
    let got: Vec<(Value, Value)> = t
        .iter()
        .map(|v| (v["campaign_id"].clone(), v["at"].clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            (json!("a"), json!(T0 + DAY)),
            (json!("d"), json!(T0 + 31 * DAY))
        ]
    );
    assert_eq!(t[1]["channel"], "web");
    assert_eq!(t[1]["clicked_at"], T0 + 30 * DAY);
}

#[test]
fn two_clicks_same_instant_one_trigger_first_set() {
    let mut h = Harness::new();
    h.send_ok(tp("k1", "c1", Ch::Email, Ty::MessageClicked, T0).campaign("first"));
    h.send_ok(tp("k2", "c1", Ch::Sms, Ty::MessageClicked, T0).campaign("second"));
    h.advance(T0 + 2 * DAY);
    let t = triggers(&h);
    assert_eq!(t.len(), 1);
    assert_eq!(t[0]["campaign_id"], "first");
}

// ------------------------------------------------------------ fatigue

fn sent(h: &mut Harness, cust: &str, ch: Ch, t: i64) -> Vec<touchstream::model::DerivedEvent> {
    h.touch(cust, ch, Ty::MessageSent, t)
}

#[test]
fn eleventh_message_in_7_days_fires() {
    let mut h = Harness::new();
    let chans = [Ch::Sms, Ch::Email, Ch::Push];
    for k in 0..10 {
        let out = sent(&mut h, "c1", chans[k % 3], T0 + k as i64 * HOUR);
        assert!(
            of_type(&out, "contact_fatigue").is_empty(),
            "message {}",
            k + 1
        );
    }
    let out = sent(&mut h, "c1", Ch::DirectMail, T0 + 10 * HOUR);
    let f = of_type(&out, "contact_fatigue");
    assert_eq!(
        f,
        vec![json!({
            "type": "contact_fatigue", "event_id": f[0]["event_id"], "customer_id": "c1",
            "at": T0 + 10 * HOUR, "messages_7d": 11,
            "channels": ["direct_mail", "email", "push", "sms"]
        })]
    );
    // 12th: still above the cap and disarmed.
    let out = sent(&mut h, "c1", Ch::Email, T0 + 11 * HOUR);
    assert!(of_type(&out, "contact_fatigue").is_empty());
}

#[test]
fn rearms_only_when_count_before_is_at_most_cap() {
    let mut h = Harness::new();
    for k in 0..12 {
        sent(&mut h, "c1", Ch::Email, T0 + k * HOUR);
    }
    assert_eq!(h.of_type("contact_fatigue").len(), 1);
    // At T0 + 7 d + 30 min, messages at T0 + 1h..11h count: 11 before → not re-armed.
    let out = sent(&mut h, "c1", Ch::Sms, T0 + 7 * DAY + 30 * MIN);
    assert!(of_type(&out, "contact_fatigue").is_empty(), "{out:?}");
    // At T0 + 7 d + 2 h, count before = messages at 3h..11h + the 7d30m one = 10 → re-armed,
    // and this one makes 11 → fires again.
    let out = sent(&mut h, "c1", Ch::Push, T0 + 7 * DAY + 2 * HOUR);
    let f = of_type(&out, "contact_fatigue");
    assert_eq!(f.len(), 1, "{out:?}");
    assert_eq!(f[0]["messages_7d"], 11);
    assert_eq!(f[0]["channels"], json!(["email", "push", "sms"]));
}

#[test]
fn window_excludes_exactly_seven_days_old() {
    let mut h = Harness::new();
    // c1: 10 messages, the first at T0; the 11th exactly 7 d later: T0 drops out.
    for k in 0..10 {
        sent(&mut h, "c1", Ch::Email, T0 + k * MIN);
        sent(&mut h, "c2", Ch::Email, T0 + k * MIN);
    }
    let out = sent(&mut h, "c1", Ch::Email, T0 + 7 * DAY);
    assert!(of_type(&out, "contact_fatigue").is_empty(), "{out:?}");
    let mut h2 = Harness::new();
    for k in 0..10 {
        sent(&mut h2, "c2", Ch::Email, T0 + k * MIN);
    }
    let out = sent(&mut h2, "c2", Ch::Email, T0 + 7 * DAY - 1);
    assert_eq!(of_type(&out, "contact_fatigue").len(), 1);
    assert_eq!(of_type(&out, "contact_fatigue")[0]["messages_7d"], 11);
}

#[test]
fn other_message_types_do_not_count() {
    let mut h = Harness::new();
    for k in 0..10 {
        sent(&mut h, "c1", Ch::Email, T0 + k * MIN);
    }
    h.touch("c1", Ch::Email, Ty::MessageOpened, T0 + 20 * MIN);
    h.touch("c1", Ch::Email, Ty::MessageClicked, T0 + 21 * MIN);
    h.touch("c1", Ch::Web, Ty::PageView, T0 + 22 * MIN);
    assert!(h.of_type("contact_fatigue").is_empty());
    let out = sent(&mut h, "c1", Ch::Email, T0 + 30 * MIN);
    assert_eq!(of_type(&out, "contact_fatigue")[0]["messages_7d"], 11);
}

#[test]
fn cap_configurable() {
    let cfg = touchstream::config::EngineConfig {
        contact_cap: 2,
        ..Default::default()
    };
    let mut h = Harness::with_config(cfg);
    sent(&mut h, "c1", Ch::Email, T0);
    sent(&mut h, "c1", Ch::Email, T0 + 1);
    let out = sent(&mut h, "c1", Ch::Sms, T0 + 2);
    let f = of_type(&out, "contact_fatigue");
    assert_eq!(f.len(), 1);
    assert_eq!(f[0]["messages_7d"], 3);
    assert_eq!(f[0]["channels"], json!(["email", "sms"]));
}

#[test]
fn late_click_after_an_order_in_its_window_does_not_trigger() {
    let mut h = Harness::new();
    h.send_ok(tp("o1", "c1", Ch::Web, Ty::OrderPlaced, T0 + 30 * MIN));
    let (o, _) = h.send(tp("k1", "c1", Ch::Email, Ty::MessageClicked, T0).campaign("a"));
    assert_eq!(o, touchstream::engine::Outcome::Accepted { late: true });
    h.advance(T0 + 2 * DAY);
    assert!(triggers(&h).is_empty());
}

#[test]
fn every_click_arms_its_own_timer_even_many() {
    // SPEC 7: every message_clicked with a campaign_id arms its own timer.
    // 40 clicks in one hour, no order: the first one triggers at click + 24 h;
    // the rest are within 30 d of it.
    let mut h = Harness::new();
    for i in 0..40 {
        h.send_ok(
            tp(
                &format!("k{i}"),
                "c1",
                Ch::Email,
                Ty::MessageClicked,
                T0 + i * MIN,
            )
            .campaign(&format!("camp{i}")),
        );
    }
    h.advance(T0 + 3 * DAY);
    let t = triggers(&h);
    assert_eq!(t.len(), 1);
    assert_eq!(t[0]["campaign_id"], "camp0");
    assert_eq!(t[0]["clicked_at"], T0);
    assert_eq!(t[0]["at"], T0 + DAY);
}

/// A customer messaged every second for three days: the fatigue events are
/// the same as with every message kept, and the customer keeps only
/// `max(contact_cap + 1, 64)` messages, so each new one costs the same however many
/// came before. After a quiet week the count is back under the cap and the
/// 11th message fires again.
#[test]
fn a_flood_of_messages_stays_bounded_and_fires_like_the_full_count() {
    use touchstream::signals::Lane;
    let mut h = Harness::new();
    let kept = |h: &Harness| {
        h.engine
            .customer("c1")
            .unwrap()
            .lists
            .lane(Lane::Messages)
            .len()
    };
    let n = 3 * 24 * 3600;
    for i in 0..n {
        h.send_ok(tp(
            &format!("m{i}"),
            "c1",
            Ch::Email,
            Ty::MessageSent,
            T0 + i * 1000,
        ));
        assert!(
            kept(&h) <= 64,
            "{} messages kept after message {i}",
            kept(&h)
        );
    }
    let later = T0 + n * 1000 + 8 * DAY;
    for i in 0..11 {
        let ch = if i % 2 == 0 { Ch::Sms } else { Ch::Push };
        h.send_ok(tp(&format!("n{i}"), "c1", ch, Ty::MessageSent, later + i));
    }
    let fired = h.of_type("contact_fatigue");
    assert_eq!(fired.len(), 2, "{fired:?}");
    assert_eq!(
        (&fired[0]["messages_7d"], &fired[0]["at"]),
        (&json!(11), &json!(T0 + 10_000))
    );
    assert_eq!(
        (
            &fired[1]["messages_7d"],
            &fired[1]["at"],
            &fired[1]["channels"]
        ),
        (&json!(11), &json!(later + 10), &json!(["push", "sms"]))
    );
}
