//! The third-party consumer: `examples/consume.py` run with the test
//! Python, and its printed events compared with replay's.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_json::Value;
use touchstream::model::DerivedType;

use super::basics::{unique, REPO};

/// The Python with confluent-kafka and fastavro for third-party checks
/// (`TOUCHSTREAM_TEST_PYTHON`, else the repo's `.venv`, which `scripts/test`
/// makes); a test that needs it fails without it.
pub fn python() -> Option<String> {
    if let Ok(p) = std::env::var("TOUCHSTREAM_TEST_PYTHON") {
        return Some(p);
    }
    let venv = format!("{REPO}/.venv/bin/python");
    if Path::new(&venv).exists() {
        return Some(venv);
    }
    panic!("needs a Python with confluent-kafka and fastavro: run scripts/test, or set TOUCHSTREAM_TEST_PYTHON")
}

/// Runs `examples/consume.py` until the topics are quiet; its events.
pub fn consume_py(python: &str, b: &str, prefix: &str, extra: &[&str]) -> Vec<Value> {
    let run = Command::new(python)
        .arg(format!("{REPO}/examples/consume.py"))
        .args([
            "--bootstrap",
            b,
            "--prefix",
            prefix,
            "--group",
            &unique("consume-py"),
        ])
        .args(["--schemas", &format!("{REPO}/schemas"), "--max-idle", "4"])
        .args(extra)
        .output()
        .expect("run examples/consume.py");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "consume.py failed: {stderr}");
    String::from_utf8(run.stdout)
        .expect("utf-8")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("consume.py printed {l}: {e}")))
        .collect()
}

/// Asserts that consume.py's events equal replay's: the same events (all
/// fields) once each, and per type in replay order (one partition per topic).
pub fn check_printed(printed: &[Value], expected: &[Value]) {
    assert_eq!(
        printed.len(),
        expected.len(),
        "consume.py printed {} events, replay {}",
        printed.len(),
        expected.len()
    );
    let want: BTreeMap<&str, &Value> = expected
        .iter()
        .map(|e| (e["event_id"].as_str().unwrap_or_default(), e))
        .collect();
    let got: BTreeMap<&str, &Value> = printed
        .iter()
        .map(|e| (e["event_id"].as_str().unwrap_or_default(), e))
        .collect();
    assert_eq!(got.len(), printed.len(), "consume.py printed duplicates");
    for (id, w) in &want {
        match got.get(id) {
            None => panic!("consume.py is missing {w}"),
            Some(g) => assert_eq!(g, w, "consume.py decoded {id} differently"),
        }
    }
    for t in DerivedType::ALL {
        let a: Vec<&Value> = expected
            .iter()
            .filter(|e| e["type"] == t.as_str())
            .map(|e| &e["event_id"])
            .collect();
        let b: Vec<&Value> = printed
            .iter()
            .filter(|e| e["type"] == t.as_str())
            .map(|e| &e["event_id"])
            .collect();
        assert_eq!(a, b, "{t}: consume.py order != replay order");
    }
}
