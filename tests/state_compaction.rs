//! The parts of a customer's state that come and go are freed once nothing
//! in them can matter any more, and their signals behave the same while
//! they exist: carts, survey clicks and open support contacts. A cart
//! abandoned long ago and an open support contact take a 6-byte lane entry
//! each, not the rare part.

use std::sync::Arc;

use touchstream::config::EngineConfig;
use touchstream::engine::Engine;
use touchstream::model::{Channel, DerivedEvent, TouchType, Touchpoint, DAY_MS, HOUR_MS};
use touchstream::signals::Lane;

const T: i64 = 1_767_261_600_000; // 2026-01-01T10:00:00Z
const MIN: i64 = 60_000;

fn feed(e: &mut Engine, id: &str, customer: &str, kind: TouchType, t: i64) -> Vec<DerivedEvent> {
    let mut out = Vec::new();
    let mut tp = Touchpoint::new(id, customer, Channel::Web, kind, t);
    if kind == TouchType::MessageClicked {
        tp.campaign_id = Some("spring".into());
    }
    e.on_touchpoint(&tp, &mut out);
    out
}

fn has_rare(e: &Engine, customer: &str) -> bool {
    e.customer(customer).is_some_and(|c| c.rare.is_some())
}

fn lane_len(e: &Engine, customer: &str, lane: Lane) -> usize {
    e.customer(customer).map_or(0, |c| c.lists.lane(lane).len())
}

#[test]
fn a_customer_without_carts_clicks_or_contacts_has_no_rare_part() {
    let mut e = Engine::new(Arc::new(EngineConfig::default()));
    feed(&mut e, "1", "c", TouchType::PageView, T);
    feed(&mut e, "2", "c", TouchType::MessageOpened, T + MIN);
    assert!(!has_rare(&e, "c"));
}

#[test]
fn an_ordered_cart_is_freed_once_the_order_is_beyond_the_lateness_horizon() {
    let mut e = Engine::new(Arc::new(EngineConfig::default()));
    feed(&mut e, "1", "c", TouchType::AddToCart, T);
    assert!(has_rare(&e, "c"));
    feed(&mut e, "2", "c", TouchType::OrderPlaced, T + MIN);
    // The order time is kept for late clicks while within the allowed lateness.
    assert!(has_rare(&e, "c"));
    // Another customer moves the watermark; c's next touch tidies it.
    feed(&mut e, "3", "d", TouchType::PageView, T + 3 * HOUR_MS);
    feed(&mut e, "4", "c", TouchType::PageView, T + 3 * HOUR_MS);
    assert!(!has_rare(&e, "c"));
}

#[test]
fn an_abandoned_cart_stays_until_an_order_closes_it() {
    let mut e = Engine::new(Arc::new(EngineConfig::default()));
    feed(&mut e, "1", "c", TouchType::AddToCart, T);
    let out = feed(&mut e, "2", "c", TouchType::PageView, T + 2 * HOUR_MS);
    assert!(out.iter().any(|ev| ev.kind.as_str() == "cart_abandoned"));
    feed(&mut e, "3", "c", TouchType::PageView, T + 20 * DAY_MS);
    // Not abandoned again until an order: the closed cart is remembered,
    // in the lanes; nothing else of the cart is left.
    assert_eq!(lane_len(&e, "c", Lane::Closed), 1);
    assert!(!has_rare(&e, "c"));
    // And it survives the changelog.
    let c = e.customer("c").expect("in state");
    let json = serde_json::to_value(c).unwrap();
    assert_eq!(
        json["rare"]["cart"]["closed"].as_array().map(Vec::len),
        Some(1)
    );
    let back: touchstream::engine::state::Customer = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(back.lists, c.lists);
    assert_eq!(serde_json::to_value(&back).unwrap(), json);
    let out = feed(&mut e, "4", "c", TouchType::AddToCart, T + 21 * DAY_MS);
    let out2 = feed(&mut e, "5", "c", TouchType::PageView, T + 22 * DAY_MS);
    assert!(!out
        .iter()
        .chain(&out2)
        .any(|ev| ev.kind.as_str() == "cart_abandoned"));
    feed(&mut e, "6", "c", TouchType::OrderPlaced, T + 23 * DAY_MS);
    feed(&mut e, "7", "c", TouchType::PageView, T + 24 * DAY_MS);
    assert!(!has_rare(&e, "c"));
    assert_eq!(lane_len(&e, "c", Lane::Closed), 0);
    // The order reopened it: abandoned again.
    feed(&mut e, "8", "c", TouchType::AddToCart, T + 25 * DAY_MS);
    let out = feed(&mut e, "9", "c", TouchType::PageView, T + 26 * DAY_MS);
    assert!(out.iter().any(|ev| ev.kind.as_str() == "cart_abandoned"));
}

#[test]
fn a_survey_trigger_is_remembered_for_the_cooldown_then_freed() {
    let mut e = Engine::new(Arc::new(EngineConfig::default()));
    feed(&mut e, "1", "c", TouchType::MessageClicked, T);
    let out = feed(&mut e, "2", "c", TouchType::PageView, T + 2 * DAY_MS);
    assert!(out.iter().any(|ev| ev.kind.as_str() == "survey_trigger"));
    // The trigger holds back others for 30 d: still remembered.
    feed(&mut e, "3", "c", TouchType::PageView, T + 20 * DAY_MS);
    assert!(has_rare(&e, "c"));
    // A click within the cooldown does not trigger.
    feed(&mut e, "4", "c", TouchType::MessageClicked, T + 21 * DAY_MS);
    let out = feed(&mut e, "5", "c", TouchType::PageView, T + 23 * DAY_MS);
    assert!(!out.iter().any(|ev| ev.kind.as_str() == "survey_trigger"));
    // Beyond the cooldown (and the lateness horizon) nothing is left.
    feed(&mut e, "6", "c", TouchType::PageView, T + 40 * DAY_MS);
    assert!(!has_rare(&e, "c"));
    // And a new click triggers again.
    feed(&mut e, "7", "c", TouchType::MessageClicked, T + 41 * DAY_MS);
    let out = feed(&mut e, "8", "c", TouchType::PageView, T + 43 * DAY_MS);
    assert!(out.iter().any(|ev| ev.kind.as_str() == "survey_trigger"));
}

#[test]
fn an_open_support_contact_lives_until_resolved() {
    let mut e = Engine::new(Arc::new(EngineConfig::default()));
    feed(&mut e, "1", "c", TouchType::SupportContact, T);
    assert_eq!(lane_len(&e, "c", Lane::Support), 1);
    assert!(!has_rare(&e, "c"));
    let c = e.customer("c").expect("in state");
    let json = serde_json::to_value(c).unwrap();
    assert!(json["rare"]["support_open"].is_i64(), "{json}");
    let back: touchstream::engine::state::Customer = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(back.lists, c.lists);
    assert_eq!(serde_json::to_value(&back).unwrap(), json);
    feed(&mut e, "2", "c", TouchType::SupportResolved, T + HOUR_MS);
    assert_eq!(lane_len(&e, "c", Lane::Support), 0);
    assert!(!has_rare(&e, "c"));
}

#[test]
fn clicks_fired_by_one_watermark_jump_still_respect_the_cooldown() {
    // Found in review: the first trigger of a jump was forgotten (as if
    // older than any future due time) before the second click fired.
    let mut e = Engine::new(Arc::new(EngineConfig::default()));
    feed(&mut e, "1", "c", TouchType::MessageClicked, T);
    feed(&mut e, "2", "c", TouchType::MessageClicked, T + HOUR_MS);
    let out = feed(&mut e, "3", "c", TouchType::PageView, T + 40 * DAY_MS);
    let triggers = out
        .iter()
        .filter(|ev| ev.kind.as_str() == "survey_trigger")
        .count();
    assert_eq!(triggers, 1);
}

#[test]
fn a_quiet_customer_keeps_its_snapshot_but_not_its_touches() {
    let mut e = Engine::new(Arc::new(EngineConfig::default()));
    let channels = [Channel::Web, Channel::Email, Channel::Store, Channel::Web];
    let mut out = Vec::new();
    for (i, ch) in channels.iter().enumerate() {
        let tp = Touchpoint::new(
            format!("q{i}"),
            "q",
            *ch,
            TouchType::ProductView,
            T + i as i64 * HOUR_MS,
        );
        e.on_touchpoint(&tp, &mut out);
    }
    let before = e.snapshot();
    assert_eq!(e.customer("q").map(|c| c.lists.touches().len()), Some(4));
    // Others move the watermark 40 d on: q's churn timer fires at 30 d of
    // inactivity and finds it quiet.
    feed(&mut e, "o1", "other", TouchType::PageView, T + 40 * DAY_MS);
    let c = e.customer("q").expect("still in state");
    assert_eq!(c.lists.touches().len(), 0, "touches no order can reach");
    let after = e.snapshot();
    let row = |rows: &[touchstream::engine::SnapshotRow]| {
        rows.iter()
            .find(|r| r.customer_id == "q")
            .map(|r| (r.channels, r.engagement_score))
    };
    assert_eq!(row(&after), row(&before), "snapshot unchanged");
    // Back after the gap: an order is attributed to nothing old, and the
    // channel count starts afresh.
    let mut tp = Touchpoint::new(
        "q9",
        "q",
        Channel::Sms,
        TouchType::OrderPlaced,
        T + 41 * DAY_MS,
    );
    tp.order_id = Some("o".into());
    let mut out = Vec::new();
    e.on_touchpoint(&tp, &mut out);
    let attributed = out
        .iter()
        .find(|ev| ev.kind.as_str() == "order_attributed")
        .expect("attributed");
    let json = serde_json::to_value(attributed).unwrap();
    assert_eq!(json["models"]["linear"], serde_json::json!({"sms": 1.0}));
    let row = e
        .snapshot()
        .into_iter()
        .find(|r| r.customer_id == "q")
        .unwrap();
    assert_eq!(
        row.channels.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
        ["sms"]
    );
}

#[test]
fn each_customer_has_one_pending_timer_however_often_it_moves() {
    // Orders move the churn timer earlier (a p_alive crossing), touches
    // move it later; staging leaves slots behind when it moves earlier,
    // which the pending count does not include.
    let mut e = Engine::new(Arc::new(EngineConfig::default()));
    let kinds = [
        TouchType::OrderPlaced,
        TouchType::PageView,
        TouchType::OrderPlaced,
        TouchType::MessageOpened,
    ];
    for i in 0..200i64 {
        for c in ["a", "b", "c"] {
            let kind = kinds[(i as usize + c.len()) % kinds.len()];
            feed(&mut e, &format!("{c}{i}"), c, kind, T + i * 7 * HOUR_MS);
        }
        assert_eq!(e.pending_timers(), 3, "after step {i}");
    }
    // Evicted customers leave their staged slots behind too.
    let mut out = Vec::new();
    e.advance_watermark(T + 2_000 * DAY_MS, &mut out);
    assert_eq!(e.customers(), 0);
    assert_eq!(e.pending_timers(), 0);
}
