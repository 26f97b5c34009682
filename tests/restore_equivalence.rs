//! Restore equivalence: cutting a run every N records, passing the state
//! through its changelog encoding (only what changed since the last cut,
//! in the record format the service writes: binary customers, state
//! format 4), restoring a fresh engine from it and continuing, must emit
//! byte-for-byte what an uninterrupted run emits. And every customer a
//! checkpoint writes over a generated month reads back equal.

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;
use touchstream::config::EngineConfig;
use touchstream::engine::state::Customer;
use touchstream::engine::{Engine, PartitionMeta, StateChange};
use touchstream::kafka::changelog::{decode_state, encode_state, StateRecord};
use touchstream::model::{Channel, TouchType, Touchpoint, DAY_MS, HOUR_MS};

const BASE: i64 = 1_767_571_200_000;

/// A changelog topic in miniature: latest encoded state per customer, and
/// the partition meta of the last checkpoint.
#[derive(Default)]
struct Changelog {
    customers: BTreeMap<String, Vec<u8>>,
    meta: Option<String>,
}

impl Changelog {
    fn checkpoint(&mut self, e: &mut Engine) {
        for ch in e.drain_changes() {
            match ch {
                StateChange::Upsert(c) => {
                    let id = c.id().to_string();
                    let record = StateRecord {
                        gen: 1,
                        state: Some(c),
                    };
                    self.customers.insert(id, encode_state(&record));
                }
                StateChange::Delete { id, .. } => {
                    self.customers.remove(&*id);
                }
            }
        }
        self.meta = Some(serde_json::to_string(&e.meta()).unwrap());
    }

    fn restore(&self, cfg: Arc<EngineConfig>) -> Engine {
        let meta: PartitionMeta = serde_json::from_str(self.meta.as_ref().unwrap()).unwrap();
        let customers = self
            .customers
            .values()
            .map(|v| decode_state(v, 0).unwrap().state.unwrap());
        Engine::restore(cfg, meta, customers)
    }
}

fn run(
    tps: &[Touchpoint],
    cut_every: Option<usize>,
    end: i64,
    cfg: &Arc<EngineConfig>,
) -> (Vec<String>, String) {
    let mut engine = Engine::new(cfg.clone());
    let mut log = Changelog::default();
    let mut out = Vec::new();
    for (i, tp) in tps.iter().enumerate() {
        if let Some(n) = cut_every {
            if i > 0 && i % n == 0 {
                log.checkpoint(&mut engine);
                engine = log.restore(cfg.clone());
            }
        }
        engine.on_touchpoint(tp, &mut out);
    }
    engine.advance_watermark(end, &mut out);
    let snapshot = serde_json::to_string(&engine.snapshot()).unwrap();
    (out.iter().map(|e| e.to_json()).collect(), snapshot)
}

fn build(spec: &[(u8, u8, u8, i64, Option<u8>)]) -> Vec<Touchpoint> {
    let mut t = BASE;
    spec.iter()
        .enumerate()
        .map(|(i, &(c, k, ch, dt, cart))| {
            // Mostly forward in time with some disorder and long gaps.
            t += dt - 2_000;
            let kind = TouchType::ALL[k as usize % TouchType::ALL.len()];
            let mut tp = Touchpoint::new(
                format!("e{}", i % 50),
                format!("c{c}"),
                Channel::ALL[ch as usize % 12],
                kind,
                t,
            );
            tp.cart_id = cart.map(|k| format!("k{k}"));
            tp.value = Some(f64::from(k) * 3.5);
            tp.campaign_id = (kind == TouchType::MessageClicked).then(|| format!("camp{}", ch % 3));
            if kind == TouchType::SurveyResponse {
                tp.survey = Some(touchstream::model::Survey::Nps);
                tp.score = Some(i32::from(ch % 11));
            }
            tp
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn cut_restore_continue_equals_straight_run(
        spec in proptest::collection::vec((0u8..5, any::<u8>(), any::<u8>(),
            prop_oneof![0i64..(2 * HOUR_MS), 0i64..(40 * DAY_MS)], proptest::option::of(0u8..2)), 1..150),
        cut in 1usize..20,
    ) {
        let cfg = Arc::new(EngineConfig { state_ttl: 60 * DAY_MS, ..EngineConfig::default() });
        let tps = build(&spec);
        let end = tps.iter().map(|t| t.timestamp).max().unwrap_or(BASE) + 200 * DAY_MS;
        let straight = run(&tps, None, end, &cfg);
        let cut_run = run(&tps, Some(cut), end, &cfg);
        prop_assert_eq!(straight.0, cut_run.0);
        prop_assert_eq!(straight.1, cut_run.1);
    }
}

/// Every state a checkpoint writes over a generated month (carts open
/// and abandoned, clicks waiting for surveys, orders with money and
/// currencies, support contacts, messages, churn facts) reads back equal
/// from its binary form, which is far smaller than its JSON form.
#[test]
fn every_checkpointed_customer_reads_back_equal_and_smaller_than_json() {
    let gen = touchstream::generate::GenConfig {
        customers: 300,
        days: 40,
        ..Default::default()
    };
    let mut e = Engine::new(Arc::new(EngineConfig::default()));
    let mut out = Vec::new();
    let (mut states, mut binary, mut json) = (0usize, 0usize, 0usize);
    let (mut rare, mut valued) = (0usize, 0usize);
    for (i, tp) in touchstream::generate::generate(&gen).iter().enumerate() {
        e.on_touchpoint(tp, &mut out);
        out.clear();
        if i % 3_000 != 2_999 {
            continue;
        }
        for ch in e.drain_changes() {
            let StateChange::Upsert(mut c) = ch else {
                continue;
            };
            let mut bytes = vec![7];
            c.encode_binary(&mut bytes);
            assert_eq!(bytes[0], 7, "appended");
            let back = Customer::decode_binary(&bytes[1..]).expect("reads back");
            c.dirty = false;
            // Equal but for the timers' queue entries (not persisted):
            // every persisted field is in the JSON form.
            let as_json = |c: &Customer| serde_json::to_vec(c).expect("JSON");
            assert_eq!(as_json(&back), as_json(&c), "{c:?}");
            assert_eq!(back.lists, c.lists);
            assert!(!back.dirty);
            states += 1;
            binary += bytes.len() - 1;
            json += as_json(&c).len();
            rare += usize::from(c.rare.is_some());
            valued += usize::from(c.value.is_some());
        }
    }
    assert!(
        states > 1_000 && rare > 50 && valued > 100,
        "{states} {rare} {valued}"
    );
    assert!(binary * 3 < json, "binary {binary} bytes, JSON {json}");
}
