//! Property tests: determinism, bounds and robustness of the engine and
//! the decoders on random input.

use std::collections::HashMap;
use std::sync::Arc;

use proptest::prelude::*;
use touchstream::config::EngineConfig;
use touchstream::engine::Engine;
use touchstream::model::{Channel, DerivedEvent, Payload, TouchType, Touchpoint, DAY_MS, HOUR_MS};
use touchstream::validate::{validate, Clock};

const BASE: i64 = 1_767_571_200_000;

fn arb_touchpoint(
    allow_orders: bool,
) -> impl Strategy<Value = (u8, u8, u8, i64, Option<u8>, u32, u8)> {
    let max_kind = TouchType::ALL.len() as u8;
    (
        0u8..4,                       // customer
        0u8..max_kind,                // type
        0u8..12,                      // channel
        0i64..(3 * DAY_MS),           // time offset
        proptest::option::of(0u8..3), // cart id
        0u32..100,                    // value
        0u8..11,                      // score
    )
        .prop_filter("orders allowed?", move |t| {
            allow_orders || TouchType::ALL[t.1 as usize] != TouchType::OrderPlaced
        })
}

/// One generated record: customer, type, channel, time step, cart, value,
/// score.
type Spec = (u8, u8, u8, i64, Option<u8>, u32, u8);

fn build(spec: &[Spec]) -> Vec<Touchpoint> {
    spec.iter()
        .enumerate()
        .map(|(i, &(c, k, ch, dt, cart, v, score))| {
            let kind = TouchType::ALL[k as usize];
            let mut tp = Touchpoint::new(
                format!("e{}", i % 40),
                format!("c{c}"),
                Channel::ALL[ch as usize],
                kind,
                BASE + dt,
            );
            tp.cart_id = cart.map(|k| format!("k{k}"));
            tp.value = Some(f64::from(v));
            if kind == TouchType::MessageClicked {
                tp.campaign_id = Some("camp".into());
            }
            if kind == TouchType::SurveyResponse {
                tp.survey = Some(touchstream::model::Survey::Nps);
                tp.score = Some(i32::from(score));
            }
            tp
        })
        .collect()
}

fn run(tps: &[Touchpoint], end: Option<i64>) -> (Vec<DerivedEvent>, Vec<i64>) {
    let mut e = Engine::new(Arc::new(EngineConfig::default()));
    let mut out = Vec::new();
    let mut wms = Vec::new();
    for tp in tps {
        e.on_touchpoint(tp, &mut out);
        wms.push(e.watermark().unwrap_or(i64::MIN));
    }
    if let Some(t) = end {
        e.advance_watermark(t, &mut out);
    }
    (out, wms)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn same_input_same_output(spec in proptest::collection::vec(arb_touchpoint(true), 0..120)) {
        let tps = build(&spec);
        let end = Some(BASE + 200 * DAY_MS);
        let (a, _) = run(&tps, end);
        let (b, _) = run(&tps, end);
        let ja: Vec<String> = a.iter().map(DerivedEvent::to_json).collect();
        let jb: Vec<String> = b.iter().map(DerivedEvent::to_json).collect();
        prop_assert_eq!(ja, jb);
    }

    #[test]
    fn scores_in_range_and_watermark_monotonic(spec in proptest::collection::vec(arb_touchpoint(true), 0..150)) {
        let (events, wms) = run(&build(&spec), Some(BASE + 500 * DAY_MS));
        for w in wms.windows(2) {
            prop_assert!(w[0] <= w[1]);
        }
        for ev in &events {
            if let Payload::EngagementScore { score, .. } = ev.payload {
                prop_assert!((0.0..100.0).contains(&score), "score {}", score);
            }
            if let Payload::OrderAttributed { models, .. } = &ev.payload {
                for w in [&models.last_touch, &models.first_touch, &models.linear, &models.time_decay, &models.position_based] {
                    prop_assert!((w.iter().map(|(_, v)| v).sum::<f64>() - 1.0).abs() < 1e-9);
                }
            }
        }
    }

    #[test]
    fn a_cart_is_abandoned_at_most_once_without_orders(spec in proptest::collection::vec(arb_touchpoint(false), 0..150)) {
        let (events, _) = run(&build(&spec), Some(BASE + 30 * DAY_MS));
        let mut seen: HashMap<(String, Option<String>), i64> = HashMap::new();
        for ev in &events {
            if let Payload::CartAbandoned { cart_id, last_activity_at, .. } = &ev.payload {
                let key = (ev.customer_id.to_string(), cart_id.clone());
                prop_assert!(!seen.contains_key(&key), "abandoned twice: {:?}", key);
                prop_assert_eq!(ev.at, last_activity_at + HOUR_MS);
                seen.insert(key, ev.at);
            }
        }
    }

    #[test]
    fn garbage_never_panics(lines in proptest::collection::vec(
        prop_oneof![
            any::<Vec<u8>>(),
            "\\PC{0,80}".prop_map(String::into_bytes),
            Just(br#"{"event_id":"e","customer_id":"c","channel":"web","type":"page_view","timestamp":1}"#.to_vec()),
            (any::<i64>(), any::<f64>(), any::<i64>()).prop_map(|(t, v, s)| format!(
                r#"{{"event_id":"e{t}","customer_id":"c","channel":"web","type":"survey_response","survey":"nps","score":{s},"value":{v},"timestamp":{t}}}"#
            ).into_bytes()),
        ], 0..40)) {
        let mut e = Engine::new(Arc::new(EngineConfig::default()));
        let mut out = Vec::new();
        let clock = Clock { now: BASE, max_future: HOUR_MS };
        for l in &lines {
            if let Ok(tp) = touchstream::codec::json::decode(l).and_then(|r| validate(r, clock)) {
                e.on_touchpoint(&tp, &mut out);
            }
        }
        e.advance_watermark(i64::MAX / 4, &mut out);
        let _ = e.snapshot();
    }
}
