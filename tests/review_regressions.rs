//! Regressions found in review: each case once went wrong.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;

use touchstream::config::EngineConfig;
use touchstream::engine::Engine;
use touchstream::model::{Channel, DerivedType, TouchType, Touchpoint, HOUR_MS};

const W: i64 = 1_767_261_600_000; // 2026-01-01T10:00:00Z

fn replay(input: &str, extra: &[&str]) -> (String, String, i32) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_touchstream"))
        .args(["replay", "-", "--now", "2026-02-01T00:00:00Z"])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
        out.status.code().unwrap_or(-1),
    )
}

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

#[test]
fn extreme_timestamps_never_crash_and_get_the_right_reason() {
    let lines = [
        r#"{"event_id":"a","customer_id":"c","channel":"web","type":"page_view","timestamp":-9223372036854775808}"#,
        r#"{"event_id":"b","customer_id":"c","channel":"web","type":"page_view","timestamp":9223372036854775807}"#,
        r#"{"event_id":"c","customer_id":"c","channel":"web","type":"page_view","timestamp":9999999999999999}"#,
        r#"["e1","c1","web","page_view",1767225600000]"#,
        r#"{"event_id":"d","customer_id":"c","channel":"web","type":"page_view","timestamp":1767225600000}"#,
    ];
    let (out, err, code) = replay(&(lines.join("\n") + "\n"), &[]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("line 1: decode_error"), "{err}");
    assert!(err.contains("line 2: future_timestamp"), "{err}");
    assert!(err.contains("line 3: future_timestamp"), "{err}");
    assert!(
        err.contains("line 4: decode_error"),
        "a JSON array is not a touchpoint: {err}"
    );
    assert_eq!(
        out.lines().count(),
        2,
        "the good record still produces its events: {out}"
    );
}

#[test]
fn fit_churn_output_always_pastes_into_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.jsonl");
    let lines: Vec<String> = (0..2)
        .map(|i| format!(r#"{{"event_id":"o{i}","customer_id":"c","channel":"web","type":"order_placed","timestamp":{}}}"#, W + i * 86_400_000 * 3))
        .collect();
    std::fs::write(&path, lines.join("\n")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_touchstream"))
        .args(["fit-churn"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let section = &text[text.find("[churn]").unwrap()..];
    touchstream::config::Config::from_parts("fit", section, &[]).expect("pastes into the config");
}

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
