//! What a broker run is compared with: `touchstream replay` of the same
//! input, one file or the files of one task's inputs (SPEC 6 and 8).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use super::basics::BIN;
use super::service::clean_env;

/// What `touchstream replay` produced.
#[derive(Debug, Clone)]
pub struct ReplayOut {
    pub events: Vec<Value>,
    /// (1-based line number, reason) of every rejected line.
    pub rejected: Vec<(usize, String)>,
    pub stderr: String,
}

/// Runs `touchstream replay` on `lines` with a config file.
pub fn replay(lines: &[String], config: &Path) -> ReplayOut {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("input.jsonl");
    let mut f = std::fs::File::create(&input).expect("create input");
    for l in lines {
        writeln!(f, "{l}").expect("write input");
    }
    drop(f);
    replay_files(&[input], config)
}

/// Writes `lines` to `dir/name`, one per line; returns the path.
pub fn write_lines(dir: &Path, name: &str, lines: &[String]) -> PathBuf {
    let path = dir.join(name);
    let mut f =
        std::fs::File::create(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    for l in lines {
        writeln!(f, "{l}").unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }
    path
}

/// Runs `touchstream replay A B C --config config`: the files are the
/// inputs of one task, in this order (SPEC 6 and 8). Rejections are
/// reported per file (`<file>: line N: reason: ...`); `rejected` holds
/// their (line, reason) whichever file they came from.
pub fn replay_files(paths: &[PathBuf], config: &Path) -> ReplayOut {
    let out = Command::new(BIN)
        .arg("replay")
        .args(paths)
        .arg("--config")
        .arg(config)
        .envs(clean_env())
        .output()
        .expect("run touchstream replay");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "replay {paths:?} failed: {stderr}");
    let events = String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("replay line {l}: {e}")))
        .collect();
    let rejected = stderr
        .lines()
        .filter_map(|l| {
            let at = if l.starts_with("line ") {
                0
            } else {
                l.find(": line ")? + 2
            };
            let rest = l[at..].strip_prefix("line ")?;
            let (n, rest) = rest.split_once(": ")?;
            let (reason, _) = rest.split_once(": ")?;
            Some((n.parse().ok()?, reason.to_string()))
        })
        .collect();
    ReplayOut {
        events,
        rejected,
        stderr,
    }
}
