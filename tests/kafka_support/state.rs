//! State: a changelog partition restored as the service would, compared
//! with the engine after the same input run uninterrupted.

use std::path::Path;
use std::sync::Arc;

use serde_json::Value;
use touchstream::config::Config;
use touchstream::engine::state::Customer;
use touchstream::engine::Engine;
use touchstream::kafka::changelog::{RestoreBuilder, Restored};

use super::collect::read_partition;

/// The engine after running `lines` uninterrupted (the same code as replay).
pub fn engine_after(lines: &[String], config: &Path) -> Engine {
    let text = std::fs::read_to_string(config).expect("config");
    let cfg = Config::from_parts("test", &text, &[]).expect("config parses");
    let engine_cfg = Arc::new(cfg.engine().expect("engine config"));
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let mut r = touchstream::cli::replay::Replay::new(
        engine_cfg,
        touchstream::cli::replay::WallClock::System,
        cfg.time.max_future.0,
        &mut out,
        &mut err,
    );
    let joined = lines.join("\n");
    r.json_lines(joined.as_bytes()).expect("replay in-process");
    r.finish().expect("finish").1
}

/// Restores a changelog partition as the service would.
pub fn restore_changelog(
    b: &str,
    changelog: &str,
    partition: i32,
    input_topic: &str,
    read_committed: bool,
) -> Restored {
    let mut builder = RestoreBuilder::new(input_topic);
    for r in read_partition(b, changelog, partition, read_committed) {
        builder
            .push(
                r.key.as_deref().unwrap_or_default(),
                r.value.as_deref(),
                r.offset,
            )
            .unwrap_or_else(|e| panic!("changelog record at {} does not decode: {e}", r.offset));
    }
    builder.finish()
}

/// A customer as the changelog persists it (serde form), without the
/// changelog slot; runtime-only fields (`dirty`, queued timer entries) are
/// not part of it.
fn persisted(c: &Customer) -> Value {
    let mut c = c.clone();
    c.slot = 0;
    c.dirty = false;
    serde_json::to_value(&c).expect("customer serialises")
}

/// The top-level fields in which two persisted customers differ.
fn diff_fields(a: &Value, b: &Value) -> String {
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return format!("{a} vs {b}");
    };
    a.iter()
        .filter(|(k, v)| b.get(*k) != Some(*v))
        .map(|(k, v)| {
            format!(
                "    {k}: restored {v} / uninterrupted {}",
                b.get(k).unwrap_or(&Value::Null)
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Asserts that the restored customers equal the engine's as persisted
/// (ignoring the changelog slot, the dirty flag and queued timer entries),
/// and that the last marker covers `expected_offset` with the engine's meta.
pub fn assert_state_equal(restored: &Restored, engine: &Engine, expected_offset: i64) {
    let marker = restored
        .marker
        .as_ref()
        .expect("the changelog has a complete marker");
    let offset = marker.inputs.first().map(|i| i.offset);
    assert_eq!(
        offset,
        Some(expected_offset),
        "the last marker covers input offsets up to {offset:?}"
    );
    assert_eq!(
        marker.meta,
        engine.meta(),
        "partition meta (watermark, timer seq) restored != uninterrupted"
    );
    assert_eq!(
        restored.saved.len(),
        engine.customers(),
        "restored {} customers, the uninterrupted engine has {}",
        restored.saved.len(),
        engine.customers()
    );
    let mut diffs = Vec::new();
    let customers = restored
        .customers()
        .unwrap_or_else(|e| panic!("a restored customer does not decode: {e}"));
    for c in &customers {
        match engine.customer(c.id()) {
            None => diffs.push(format!(
                "{}: restored but not in the uninterrupted engine",
                c.id()
            )),
            Some(e) => {
                let (r, u) = (persisted(c), persisted(e));
                if r != u {
                    diffs.push(format!("{}:\n{}", c.id(), diff_fields(&r, &u)));
                }
            }
        }
    }
    assert!(
        diffs.is_empty(),
        "{} restored customers differ:\n{}",
        diffs.len(),
        diffs.iter().take(3).cloned().collect::<Vec<_>>().join("\n")
    );
}
