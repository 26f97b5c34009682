//! The layers import only downward (README, "Layout"): model → time →
//! validate and codec → engine and signals → pipeline → cli and kafka.
//! This reads the sources and fails on a `crate::` path that runs back up.

use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read src") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `crate::` paths of code (comment lines left out) in `files`.
fn crate_paths(files: &[PathBuf]) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f).expect("read source");
        for line in text.lines() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            let mut rest = code;
            while let Some(i) = rest.find("crate::") {
                rest = &rest[i + "crate::".len()..];
                let path: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                    .collect();
                found.push((f.display().to_string(), path));
            }
        }
    }
    found
}

fn files_under(rel: &[&str]) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = Vec::new();
    for r in rel {
        let p = root.join(r);
        if p.is_dir() {
            sources(&p, &mut out);
        } else {
            out.push(p);
        }
    }
    out
}

/// Fails when a file of `layer` uses a `crate::` path starting with one of
/// `forbidden` (and not with one of `allowed`, more specific).
fn check(layer: &[&str], forbidden: &[&str], allowed: &[&str]) {
    let bad: Vec<String> = crate_paths(&files_under(layer))
        .into_iter()
        .filter(|(_, p)| {
            forbidden
                .iter()
                .any(|f| p == f || p.starts_with(&format!("{f}::")))
                && !allowed
                    .iter()
                    .any(|a| p == a || p.starts_with(&format!("{a}::")))
        })
        .map(|(f, p)| format!("{f}: crate::{p}"))
        .collect();
    assert!(
        bad.is_empty(),
        "imports running back up the layers:\n{}",
        bad.join("\n")
    );
}

const EDGES: [&str; 7] = [
    "cli", "kafka", "config", "http", "metrics", "generate", "codec",
];

#[test]
fn model_and_its_math_import_nothing_above_them() {
    let mut above = vec!["time", "engine", "signals", "validate", "pipeline"];
    above.extend(EDGES);
    check(&["model", "bgnbd.rs", "clv.rs"], &above, &[]);
}

#[test]
fn time_imports_only_the_model() {
    let mut above = vec!["engine", "signals", "validate", "pipeline"];
    above.extend(EDGES);
    check(&["time"], &above, &[]);
}

#[test]
fn engine_and_signals_import_no_edge_and_signals_not_the_engine() {
    let mut above = vec!["validate", "pipeline"];
    above.extend(EDGES);
    check(&["engine", "signals"], &above, &[]);
    check(&["signals"], &["engine"], &[]);
}

#[test]
fn the_pipeline_sits_below_every_edge() {
    check(&["pipeline.rs"], &EDGES, &[]);
}

#[test]
fn the_service_does_not_reach_into_the_commands() {
    check(&["kafka"], &["cli"], &[]);
}
