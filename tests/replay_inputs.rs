//! `touchstream replay A B C` (SPEC 6 and 8): several files are the inputs
//! of one task: one state per customer across them, merged by event time,
//! each input with its own watermark and the task's their minimum.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{json, Value};

const NOW: &str = "2030-01-01T00:00:00Z";
/// 2026-01-05T00:00:00Z.
const T0: i64 = 1_767_571_200_000;
const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;
const DAY: i64 = 24 * HOUR;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_touchstream"))
}

fn write(dir: &Path, name: &str, lines: &[Value]) -> PathBuf {
    let p = dir.join(name);
    let mut f = std::fs::File::create(&p).unwrap();
    for l in lines {
        writeln!(f, "{l}").unwrap();
    }
    p
}

/// Replays the files; the derived events and stderr.
fn replay(files: &[&Path]) -> (Vec<Value>, String) {
    let out = bin()
        .arg("replay")
        .args(files)
        .args(["--now", NOW])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{err}");
    let events = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (events, err)
}

fn tp(id: &str, cust: &str, channel: &str, kind: &str, t: i64) -> Value {
    json!({"event_id": id, "customer_id": cust, "channel": channel, "type": kind, "timestamp": t})
}

fn with(mut v: Value, k: &str, x: Value) -> Value {
    v[k] = x;
    v
}

fn of_type<'a>(evs: &'a [Value], ty: &str) -> Vec<&'a Value> {
    evs.iter().filter(|e| e["type"] == ty).collect()
}

#[test]
fn a_web_cart_is_closed_by_a_store_order_and_attributed_over_every_input() {
    let dir = tempfile::tempdir().unwrap();
    let web = write(
        dir.path(),
        "web.jsonl",
        &[
            tp("w1", "c1", "web", "page_view", T0),
            with(
                tp("w2", "c1", "web", "add_to_cart", T0 + MIN),
                "cart_id",
                json!("k1"),
            ),
            tp("w3", "c9", "web", "page_view", T0 + 5 * HOUR),
        ],
    );
    let messaging = write(
        dir.path(),
        "messaging.jsonl",
        &[
            tp("m1", "c1", "email", "message_sent", T0 - HOUR),
            with(
                tp("m2", "c1", "email", "message_clicked", T0 - 30 * MIN),
                "campaign_id",
                json!("spring"),
            ),
            tp("m3", "c9", "email", "message_opened", T0 + 5 * HOUR),
        ],
    );
    let store = write(
        dir.path(),
        "store.jsonl",
        &[
            tp("s1", "c1", "store", "store_visit", T0 + 20 * MIN),
            with(
                with(
                    tp("s2", "c1", "store", "order_placed", T0 + 30 * MIN),
                    "value",
                    json!(50.0),
                ),
                "order_id",
                json!("o1"),
            ),
            tp("s3", "c9", "store", "store_visit", T0 + 5 * HOUR),
        ],
    );
    let (evs, _) = replay(&[&web, &messaging, &store]);
    // The store order closed the web cart: no abandonment, 5 h later.
    assert!(of_type(&evs, "cart_abandoned").is_empty(), "{evs:#?}");
    // Attribution saw the email click, the web touches and the store visit.
    let attributed = of_type(&evs, "order_attributed");
    assert_eq!(attributed.len(), 1);
    let linear = attributed[0]["models"]["linear"].as_object().unwrap();
    let mut chans: Vec<&String> = linear.keys().collect();
    chans.sort();
    assert_eq!(chans, ["email", "store", "web"]);
    assert_eq!(
        attributed[0]["models"]["first_touch"],
        json!({"email": 1.0})
    );
    // Engagement channels span the three inputs.
    let last = of_type(&evs, "engagement_score")
        .into_iter()
        .rfind(|e| e["customer_id"] == "c1")
        .unwrap();
    assert_eq!(last["channels"], json!(["email", "store", "web"]));
    // One journey per customer: null -> ... once, not once per input.
    let firsts = of_type(&evs, "journey_stage_changed")
        .into_iter()
        .filter(|e| e["customer_id"] == "c1" && e["from"].is_null())
        .count();
    assert_eq!(firsts, 1);
    // The click converted in the store: no survey after 24 h... the data
    // ends before, so check the order is what one merged input gives.
    let merged = write(
        dir.path(),
        "merged.jsonl",
        &sorted_lines(&[&web, &messaging, &store]),
    );
    let (single, _) = replay(&[&merged]);
    let cutoff = T0 + 5 * HOUR - 5_000;
    assert_eq!(upto(&evs, cutoff), upto(&single, cutoff));
}

#[test]
fn an_abandonment_is_recovered_in_the_store_and_fatigue_counts_every_channel() {
    let dir = tempfile::tempdir().unwrap();
    let mut web_lines = vec![with(
        tp("w1", "c1", "web", "add_to_cart", T0),
        "cart_id",
        json!("k1"),
    )];
    // Keep the web input moving so the task watermark passes the cart timer.
    for i in 0..6 {
        web_lines.push(tp(
            &format!("wx{i}"),
            "c2",
            "web",
            "page_view",
            T0 + i * HOUR,
        ));
    }
    let web = write(dir.path(), "web.jsonl", &web_lines);
    let mut mail = Vec::new();
    for i in 0..6 {
        mail.push(tp(
            &format!("e{i}"),
            "c3",
            "email",
            "message_sent",
            T0 + i * MIN,
        ));
        mail.push(tp(
            &format!("d{i}"),
            "c3",
            "direct_mail",
            "message_sent",
            T0 + i * MIN + 1,
        ));
    }
    mail.push(tp("mx", "c2", "email", "message_opened", T0 + 5 * HOUR));
    let messaging = write(dir.path(), "messaging.jsonl", &mail);
    let store = write(
        dir.path(),
        "store.jsonl",
        &[
            with(
                tp("s1", "c1", "store", "order_placed", T0 + 3 * HOUR),
                "cart_id",
                json!("k1"),
            ),
            tp("sx", "c2", "store", "store_visit", T0 + 5 * HOUR),
        ],
    );
    let (evs, _) = replay(&[&web, &messaging, &store]);
    let abandoned = of_type(&evs, "cart_abandoned");
    assert_eq!(abandoned.len(), 1);
    assert_eq!(abandoned[0]["at"], T0 + HOUR);
    let recovered = of_type(&evs, "cart_recovered");
    assert_eq!(recovered.len(), 1, "{evs:#?}");
    assert_eq!(recovered[0]["abandoned_at"], T0 + HOUR);
    // 12 outbound messages over email and direct mail: over the cap of 10.
    let fatigue = of_type(&evs, "contact_fatigue");
    assert_eq!(fatigue.len(), 1);
    assert_eq!(fatigue[0]["messages_7d"], 11);
    assert_eq!(fatigue[0]["channels"], json!(["direct_mail", "email"]));
}

#[test]
fn an_input_that_ended_holds_the_task_watermark_and_an_empty_one_is_left_out() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(
        dir.path(),
        "a.jsonl",
        &[with(
            tp("a1", "c1", "web", "add_to_cart", T0),
            "cart_id",
            json!("k1"),
        )],
    );
    // b goes on for a day: alone, the cart would be abandoned at T0 + 1 h.
    let b = write(
        dir.path(),
        "b.jsonl",
        &[
            tp("b1", "c2", "web", "page_view", T0),
            tp("b2", "c2", "web", "page_view", T0 + DAY),
        ],
    );
    let empty = write(dir.path(), "empty.jsonl", &[]);
    let (evs, err) = replay(&[&a, &b, &empty]);
    assert!(of_type(&evs, "cart_abandoned").is_empty(), "{evs:#?}");
    // The final watermark is a's latest event time − 5 s.
    assert!(err.contains("2026-01-04T23:59:55"), "{err}");
    // The same records in one file: the cart is abandoned.
    let (alone, _) = replay(&[&b, &a]);
    assert!(of_type(&alone, "cart_abandoned").is_empty());
    let merged = write(dir.path(), "m.jsonl", &sorted_lines(&[&a, &b]));
    let (single, _) = replay(&[&merged]);
    assert_eq!(of_type(&single, "cart_abandoned").len(), 1);
}

#[test]
fn bad_records_are_reported_with_their_file_and_line_and_hold_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.jsonl");
    std::fs::write(
        &a,
        format!(
            "{}\nnot json\n{}\n",
            tp("a1", "c1", "web", "page_view", T0),
            tp("a2", "c1", "web", "page_view", T0 + HOUR)
        ),
    )
    .unwrap();
    // A file of bad records only is left out like an empty one.
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{}\n").unwrap();
    let (evs, err) = replay(&[&a, &bad]);
    assert!(err.contains("a.jsonl: line 2: decode_error"), "{err}");
    assert!(err.contains("bad.jsonl: line 1: missing_field"), "{err}");
    assert!(!evs.is_empty());
    assert!(err.contains("final watermark 2026-01-05T00:59:55"), "{err}");
}

#[test]
fn generated_traffic_split_by_source_equals_one_merged_input_up_to_the_slowest() {
    let dir = tempfile::tempdir().unwrap();
    let gen = bin()
        .args([
            "generate",
            "--customers",
            "300",
            "--days",
            "20",
            "--seed",
            "11",
        ])
        .output()
        .unwrap();
    assert!(gen.status.success());
    let mut all: Vec<Value> = String::from_utf8(gen.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // In event-time order per input, as SPEC 8's equality needs.
    all.sort_by_key(ts);
    let source = |v: &Value| match v["channel"].as_str().unwrap() {
        "web" | "mobile_app" => 0,
        "email" | "sms" | "push" => 1,
        _ => 2,
    };
    let split: Vec<Vec<Value>> = (0..3)
        .map(|i| all.iter().filter(|v| source(v) == i).cloned().collect())
        .collect();
    let files: Vec<PathBuf> = split
        .iter()
        .enumerate()
        .map(|(i, l)| write(dir.path(), &format!("in{i}.jsonl"), l))
        .collect();
    // Ties in the merged file: the input listed first, then file order.
    let mut merged = all.clone();
    merged.sort_by_key(|v| (ts(v), source(v)));
    let merged = write(dir.path(), "merged.jsonl", &merged);
    let refs: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let (three, _) = replay(&refs);
    let (one, _) = replay(&[&merged]);
    let cutoff = split
        .iter()
        .map(|l| l.iter().map(ts).max().unwrap())
        .min()
        .unwrap()
        - 5_000;
    let (a, b) = (upto(&three, cutoff), upto(&one, cutoff));
    assert!(a.len() > 1000, "{}", a.len());
    assert_eq!(a.len(), b.len());
    assert!(
        a == b,
        "first difference at {:?}",
        a.iter().zip(&b).position(|(x, y)| x != y)
    );
}

#[test]
fn a_piped_stdin_without_dash_is_refused_not_ignored() {
    let mut child = bin()
        .arg("replay")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _ = child
        .stdin
        .take()
        .unwrap()
        .write_all(b"{\"event_id\":\"x\"}\n");
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("pass `-`"), "{err}");
    let twice = bin().args(["replay", "-", "-"]).output().unwrap();
    assert_eq!(twice.status.code(), Some(2));
}

fn ts(v: &Value) -> i64 {
    v["timestamp"]
        .as_i64()
        .expect("generate writes epoch millis")
}

fn upto(evs: &[Value], cutoff: i64) -> Vec<Value> {
    evs.iter()
        .filter(|e| e["at"].as_i64().unwrap() <= cutoff)
        .cloned()
        .collect()
}

/// The lines of the files, in event-time order (ties: file order given).
fn sorted_lines(files: &[&Path]) -> Vec<Value> {
    let mut all: Vec<(i64, usize, usize, Value)> = Vec::new();
    for (i, f) in files.iter().enumerate() {
        for (n, l) in std::fs::read_to_string(f).unwrap().lines().enumerate() {
            let v: Value = serde_json::from_str(l).unwrap();
            all.push((ts(&v), i, n, v));
        }
    }
    all.sort_by_key(|(t, i, n, _)| (*t, *i, *n));
    all.into_iter().map(|(.., v)| v).collect()
}

/// The service's idle advance, played back: the library's `Replay` takes
/// the same input events as a Kafka task (`pipeline::InputEvent`), so a
/// tick of the wall clock while every input is idle abandons a cart in
/// replay exactly as it does in the service (SPEC 3), and an idle advance
/// never starts a watermark.
#[test]
fn replay_plays_back_the_services_idle_tick() {
    use std::sync::Arc;
    use touchstream::cli::replay::{Replay, WallClock};
    use touchstream::config::EngineConfig;
    use touchstream::pipeline::InputEvent;

    let cfg = Arc::new(EngineConfig::default());
    let (ooo, timeout) = (cfg.max_out_of_orderness, cfg.cart_timeout);
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let mut r = Replay::new(
        cfg,
        WallClock::Fixed(T0 + DAY),
        3_600_000,
        &mut out,
        &mut err,
    );
    // No watermark yet: a tick moves nothing.
    r.event("tick", InputEvent::Tick { now: T0 + DAY }).unwrap();
    let add = with(
        tp("a1", "c1", "web", "add_to_cart", T0),
        "cart_id",
        json!("k1"),
    );
    let raw = touchstream::codec::json::decode(add.to_string().as_bytes());
    r.record("line 1", raw).unwrap();
    // The wall clock reaches the cart timer: the tick fires it.
    r.event(
        "tick",
        InputEvent::Tick {
            now: T0 + timeout + ooo,
        },
    )
    .unwrap();
    let (summary, engine) = r.finish().unwrap();
    assert_eq!(summary.accepted, 1);
    assert_eq!(engine.watermark(), Some(T0 + timeout));
    let events: Vec<Value> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let abandoned = of_type(&events, "cart_abandoned");
    assert_eq!(abandoned.len(), 1, "{events:?}");
    assert_eq!(abandoned[0]["at"], json!(T0 + timeout));
    assert_eq!(abandoned[0]["cart_id"], json!("k1"));
}
