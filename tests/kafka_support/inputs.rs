//! Helpers for the tests of several input topics (SPEC 8), shared by
//! `tests/kafka_inputs.rs` and `tests/kafka_repartition.rs`: touchpoints
//! split by source system into input topics, and the replay of each task's
//! files that a Kafka run is compared with.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use touchstream::validate::{validate, Clock};

use super::*;

/// The input topics' suffixes, in `input_topics` order.
pub const SOURCES: [&str; 3] = ["web", "messaging", "offline"];

/// Which input carries a channel.
pub fn source_of(channel: &str) -> usize {
    match channel {
        "web" | "mobile_app" => 0,
        "email" | "sms" | "push" => 1,
        _ => 2,
    }
}

/// JSON lines per input and partition, `[source][partition]`, each list in
/// produce (and replay file) order.
pub type Split = Vec<Vec<Vec<String>>>;

pub fn empty_split(partitions: i32) -> Split {
    vec![vec![Vec::new(); partitions as usize]; SOURCES.len()]
}

pub fn str_field<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str()
        .unwrap_or_else(|| panic!("no string `{k}` in {v}"))
}

/// Generated lines by source (channel) and partition (murmur2 of the
/// customer id, as Java's partitioner puts a record keyed by it).
pub fn split_by_source(lines: &[String], partitions: i32) -> Split {
    let mut out = empty_split(partitions);
    for l in lines {
        let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"));
        let p = java_partition(str_field(&v, "customer_id").as_bytes(), partitions);
        out[source_of(str_field(&v, "channel"))][p as usize].push(l.clone());
    }
    out
}

/// Appends `more` to `split`, input partition by input partition.
pub fn append(split: &mut Split, more: &Split) {
    for (s, parts) in more.iter().enumerate() {
        for (p, lines) in parts.iter().enumerate() {
            split[s][p].extend(lines.iter().cloned());
        }
    }
}

pub fn ts_of(line: &str) -> i64 {
    serde_json::from_str::<Value>(line)
        .ok()
        .and_then(|v| v["timestamp"].as_i64())
        .unwrap_or_else(|| panic!("no epoch-millis timestamp in {line}"))
}

pub fn max_ts(lines: &[String]) -> i64 {
    lines.iter().map(|l| ts_of(l)).max().expect("some lines")
}

pub fn min_ts(lines: &[String]) -> i64 {
    lines.iter().map(|l| ts_of(l)).min().expect("some lines")
}

pub fn tp(id: &str, customer: &str, channel: &str, kind: &str, at: i64) -> Value {
    json!({
        "event_id": id,
        "customer_id": customer,
        "channel": channel,
        "type": kind,
        "timestamp": at,
    })
}

pub fn with(mut v: Value, fields: &[(&str, Value)]) -> Value {
    for (k, x) in fields {
        v[*k] = x.clone();
    }
    v
}

/// One touchpoint as a JSON line.
pub fn tpl(id: &str, customer: &str, channel: &str, kind: &str, at: i64) -> String {
    tp(id, customer, channel, kind, at).to_string()
}

/// The union over the tasks p of `touchstream replay` of the inputs'
/// partition-p files, in `input_topics` order. Every input partition must
/// have records: on Kafka an input that never delivers holds its task's
/// watermark until `idle_timeout`, while replay leaves an empty file out.
pub fn expected_per_task(s: &Scenario, name: &str, split: &Split, cfg: &Path) -> Vec<Value> {
    let (events, rejected) = replay_per_task(s, name, split, cfg);
    assert!(rejected.is_empty(), "replay rejected {rejected:?}");
    events
}

/// Where an input record sits: (input index, partition, offset). In a
/// fresh topic a line's offset is its index in its `Split` list.
pub type Place = (usize, i32, i64);

/// [`expected_per_task`] for inputs that may hold bad lines: the derived
/// events, and every rejection replay reports, by the place of the line.
pub fn replay_per_task(
    s: &Scenario,
    name: &str,
    split: &Split,
    cfg: &Path,
) -> (Vec<Value>, BTreeMap<Place, String>) {
    replay_tasks(s, name, &SOURCES, split, cfg)
}

/// [`replay_per_task`] for any inputs: `sources` names the inputs of
/// `split` (`[input][task]`), in `input_topics` order.
pub fn replay_tasks(
    s: &Scenario,
    name: &str,
    sources: &[&str],
    split: &Split,
    cfg: &Path,
) -> (Vec<Value>, BTreeMap<Place, String>) {
    assert_eq!(split.len(), sources.len(), "one list of tasks per input");
    let tasks = split[0].len();
    let mut events = Vec::new();
    let mut rejected = BTreeMap::new();
    #[allow(clippy::needless_range_loop)] // p is the partition number, not only an index
    for p in 0..tasks {
        let files: Vec<PathBuf> = sources
            .iter()
            .enumerate()
            .map(|(i, src)| {
                let lines = &split[i][p];
                assert!(
                    !lines.is_empty(),
                    "input {src} has no records on partition {p}: the test needs every input partition non-empty"
                );
                write_lines(s.dir.path(), &format!("{name}-{src}-{p}.jsonl"), lines)
            })
            .collect();
        let r = replay_files(&files, cfg);
        // `<file>: line N: reason: message`, per file.
        for l in r.stderr.lines() {
            for (i, f) in files.iter().enumerate() {
                let Some(rest) = l.strip_prefix(&format!("{}: line ", f.display())) else {
                    continue;
                };
                let (n, rest) = rest.split_once(": ").expect("`line N: reason: ...`");
                let (reason, _) = rest.split_once(": ").expect("`reason: message`");
                let n: i64 = n.parse().unwrap_or_else(|e| panic!("{l}: {e}"));
                rejected.insert((i, p as i32, n - 1), reason.to_string());
            }
        }
        assert_eq!(
            rejected.keys().filter(|(_, q, _)| *q == p as i32).count(),
            r.rejected.len(),
            "task {p}: every rejection replay reports is placed:\n{}",
            r.stderr
        );
        events.extend(r.events);
    }
    (events, rejected)
}

/// Waits for `expected` distinct outputs (or quiet), then decodes them.
pub fn collect_outputs(s: &Scenario, expected: usize) -> Vec<OutEvent> {
    let mut out = s.outputs(false);
    out.settle(expected, Duration::from_secs(60), Duration::from_secs(10));
    out.poll_for(Duration::from_secs(2)); // anything extra shows up now
    decode_outputs(&out.records, &s.prefix, &OutputSchemas::defaults())
}

/// The first copy of every distinct output event.
pub fn distinct(outs: &[OutEvent]) -> Vec<&Value> {
    let mut seen = std::collections::HashSet::new();
    outs.iter()
        .filter(|o| seen.insert(o.event_id()))
        .map(|o| &o.json)
        .collect()
}

/// `touchstream_misrouted_records_total{topic}` (0 when absent).
pub fn misrouted(metrics: &str, topic: &str) -> f64 {
    metric_sum(
        metrics,
        "touchstream_misrouted_records_total",
        &[("topic", topic)],
    )
}

/// The event time of a line that passes the stateless rules of SPEC 2
/// (`None`: a bad line).
pub fn good_ts(line: &str) -> Option<i64> {
    let raw = touchstream::codec::json::decode(line.as_bytes()).ok()?;
    let clock = Clock {
        now: wall_ms(),
        max_future: HOUR,
    };
    validate(raw, clock).ok().map(|tp| tp.timestamp)
}

/// Scrapes `/metrics` until `done` holds for a scrape (returned), or
/// panics after `timeout` saying `what`.
pub fn scrape_until(
    svc: &mut Service,
    timeout: Duration,
    what: &str,
    done: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let m = svc.metrics();
        if done(&m) {
            return m;
        }
        assert!(
            svc.exited().is_none(),
            "the service exited:\n{}",
            svc.log_tail(30)
        );
        assert!(
            Instant::now() < deadline,
            "{what}: not within {timeout:?}\n{m}\n{}",
            svc.log_tail(20)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
