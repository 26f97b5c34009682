//! KPI counters move exactly as the touchpoints fed in say they must.

use std::sync::Arc;

use touchstream::config::EngineConfig;
use touchstream::engine::Engine;
use touchstream::metrics::Metrics;
use touchstream::model::{Channel, Survey, TouchType, Touchpoint, HOUR_MS};

const T0: i64 = 1_767_571_200_000;

fn tp(id: &str, c: &str, ch: Channel, k: TouchType, t: i64) -> Touchpoint {
    Touchpoint::new(id, c, ch, k, t)
}

fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("series {series} not found"))
}

#[test]
fn kpi_counters_follow_literal_input() {
    let mut e = Engine::new(Arc::new(EngineConfig::default()));
    e.collect_kpis(true);
    let m = Metrics::new();
    let mut out = Vec::new();
    let mut feed = |e: &mut Engine, t: Touchpoint| {
        e.on_touchpoint(&t, &mut out);
        m.record_kpis(e.kpis());
        e.clear_kpis();
    };
    // Alice: web cart abandoned, email click, recovered by an app order within 24 h of the click.
    let mut a1 = tp("a1", "alice", Channel::Web, TouchType::AddToCart, T0);
    a1.cart_id = Some("k1".into());
    a1.value = Some(40.0);
    feed(&mut e, a1.clone());
    let mut a1b = a1.clone();
    a1b.event_id = "a1b".into(); // second add to the same cart: not a new cart
    feed(&mut e, a1b);
    let mut click = tp(
        "a2",
        "alice",
        Channel::Email,
        TouchType::MessageClicked,
        T0 + 2 * HOUR_MS,
    );
    click.campaign_id = Some("spring".into());
    feed(&mut e, click); // reaches the cart timer (T0 + 1 h): abandoned on web
    let mut order = tp(
        "a3",
        "alice",
        Channel::MobileApp,
        TouchType::OrderPlaced,
        T0 + 3 * HOUR_MS,
    );
    order.value = Some(42.5);
    order.currency = Some("eur".into());
    order.cart_id = Some("k1".into());
    feed(&mut e, order);
    // Bob: support on chat resolved 2 h later, an NPS answer of 9 in the store.
    feed(
        &mut e,
        tp(
            "b1",
            "bob",
            Channel::Chat,
            TouchType::SupportContact,
            T0 + 3 * HOUR_MS,
        ),
    );
    feed(
        &mut e,
        tp(
            "b2",
            "bob",
            Channel::Chat,
            TouchType::SupportResolved,
            T0 + 5 * HOUR_MS,
        ),
    );
    let mut nps = tp(
        "b3",
        "bob",
        Channel::Store,
        TouchType::SurveyResponse,
        T0 + 5 * HOUR_MS,
    );
    nps.survey = Some(Survey::Nps);
    nps.score = Some(9);
    feed(&mut e, nps);
    m.set_population(&e.population());

    let text = m.render();
    assert_eq!(
        value(
            &text,
            r#"touchstream_touchpoints_total{channel="web",type="add_to_cart"}"#
        ),
        2.0
    );
    assert_eq!(
        value(&text, r#"touchstream_carts_started_total{channel="web"}"#),
        1.0
    );
    assert_eq!(
        value(&text, r#"touchstream_carts_abandoned_total{channel="web"}"#),
        1.0
    );
    assert_eq!(
        value(
            &text,
            r#"touchstream_carts_recovered_total{channel="mobile_app"}"#
        ),
        1.0
    );
    assert_eq!(
        value(&text, r#"touchstream_orders_total{channel="mobile_app"}"#),
        1.0
    );
    assert_eq!(
        value(
            &text,
            r#"touchstream_revenue_total{channel="mobile_app",currency="EUR"}"#
        ),
        42.5
    );
    assert_eq!(
        value(
            &text,
            r#"touchstream_campaign_clicks_total{channel="email"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            r#"touchstream_campaign_conversions_total{channel="email"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            r#"touchstream_channel_switches_total{from="web",to="email"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            r#"touchstream_channel_switches_total{from="email",to="mobile_app"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            r#"touchstream_channel_switches_total{from="chat",to="store"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            r#"touchstream_support_resolution_seconds_sum{channel="chat"}"#
        ),
        7200.0
    );
    assert_eq!(
        value(
            &text,
            r#"touchstream_support_resolution_seconds_count{channel="chat"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            r#"touchstream_survey_score_sum{channel="store",survey="nps"}"#
        ),
        9.0
    );
    assert_eq!(
        value(
            &text,
            r#"touchstream_survey_score_bucket{channel="store",survey="nps",le="8"}"#
        ),
        0.0
    );
    assert_eq!(
        value(
            &text,
            r#"touchstream_survey_score_bucket{channel="store",survey="nps",le="9"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            r#"touchstream_customers_by_churn_level{level="low"}"#
        ),
        2.0
    );
    assert_eq!(
        value(
            &text,
            r#"touchstream_customers_by_stage{stage="transaction"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            r#"touchstream_customers_by_stage{stage="engagement"}"#
        ),
        1.0
    );
}
