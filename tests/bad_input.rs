//! Every bad-input reason of SPEC 2, through the real `replay` binary: the
//! bad record is reported on stderr with its line number and reason, the
//! good records around it produce exactly what they produce alone, and the
//! exit status is 0 (1 with `--strict`).

use std::io::Write;
use std::process::{Command, Stdio};

const NOW: &str = "2026-02-01T00:00:00Z";

fn replay(input: &str, extra: &[&str]) -> (String, String, i32) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_touchstream"))
        .args(["replay", "-", "--now", NOW])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn touchstream");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
        out.status.code().unwrap_or(-1),
    )
}

fn good_lines() -> Vec<String> {
    vec![
        r#"{"event_id":"g1","customer_id":"alice","channel":"web","type":"add_to_cart","timestamp":"2026-01-10T10:00:00Z","value":30,"currency":"EUR","cart_id":"k"}"#.into(),
        r#"{"event_id":"g2","customer_id":"bob","channel":"email","type":"message_clicked","campaign_id":"c1","timestamp":"2026-01-10T10:30:00Z"}"#.into(),
        r#"{"event_id":"g3","customer_id":"alice","channel":"web","type":"page_view","timestamp":"2026-01-10T12:00:00Z"}"#.into(),
        r#"{"event_id":"g4","customer_id":"bob","channel":"web","type":"order_placed","timestamp":"2026-01-12T12:00:00Z","value":12.5,"order_id":"o1"}"#.into(),
    ]
}

/// Inserts `bad` after the second good line and checks everything SPEC 2 asks.
fn check(bad: &str, reason: &str) {
    let good = good_lines();
    let (alone, _, code) = replay(&(good.join("\n") + "\n"), &[]);
    assert_eq!(code, 0);
    assert!(!alone.is_empty());
    let mut mixed = good.clone();
    mixed.insert(2, bad.to_string());
    let (out, err, code) = replay(&(mixed.join("\n") + "\n"), &[]);
    assert_eq!(code, 0, "bad input is not fatal: {err}");
    assert_eq!(out, alone, "good records unaffected by {reason}");
    assert!(
        err.contains(&format!("line 3: {reason}: ")),
        "expected `line 3: {reason}` in:\n{err}"
    );
    assert!(
        err.contains(&format!("{reason}=1")),
        "counted in the summary:\n{err}"
    );
    let (_, _, strict) = replay(&(mixed.join("\n") + "\n"), &["--strict"]);
    assert_eq!(strict, 1, "--strict fails on a rejection");
}

#[test]
fn decode_error_not_json() {
    check("{this is not json", "decode_error");
}

#[test]
fn decode_error_wrong_type() {
    check(
        r#"{"event_id":7,"customer_id":"c","channel":"web","type":"page_view","timestamp":1}"#,
        "decode_error",
    );
}

#[test]
fn decode_error_unknown_survey() {
    check(
        r#"{"event_id":"x","customer_id":"c","channel":"web","type":"survey_response","survey":"vibes","score":3,"timestamp":"2026-01-10T11:00:00Z"}"#,
        "decode_error",
    );
}

#[test]
fn decode_error_bad_timestamp() {
    check(
        r#"{"event_id":"x","customer_id":"c","channel":"web","type":"page_view","timestamp":"last tuesday"}"#,
        "decode_error",
    );
}

#[test]
fn decode_error_timestamp_before_the_supported_range() {
    // Event times are kept in 44 bits: from -2^43 ms (1691-04-06).
    for ts in [
        "-8796093022209".to_string(),
        "\"1600-01-01T00:00:00Z\"".to_string(),
    ] {
        check(
            &format!(
                r#"{{"event_id":"x","customer_id":"c","channel":"web","type":"page_view","timestamp":{ts}}}"#
            ),
            "decode_error",
        );
    }
}

#[test]
fn decode_error_invalid_utf8() {
    let good = good_lines();
    let mut bytes = Vec::new();
    for (i, l) in good.iter().enumerate() {
        if i == 2 {
            bytes.extend_from_slice(b"{\"event_id\":\"\xff\xfe\"}\n");
        }
        bytes.extend_from_slice(l.as_bytes());
        bytes.push(b'\n');
    }
    let (alone, _, _) = replay(&(good.join("\n") + "\n"), &[]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_touchstream"))
        .args(["replay", "-", "--now", NOW])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap(), alone);
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 3: decode_error"));
}

#[test]
fn missing_field_absent() {
    check(
        r#"{"event_id":"x","channel":"web","type":"page_view","timestamp":"2026-01-10T11:00:00Z"}"#,
        "missing_field",
    );
}

#[test]
fn missing_field_null_and_empty_event_id() {
    check(
        r#"{"event_id":"x","customer_id":"c","channel":"web","type":null,"timestamp":"2026-01-10T11:00:00Z"}"#,
        "missing_field",
    );
    check(
        r#"{"event_id":"","customer_id":"c","channel":"web","type":"page_view","timestamp":"2026-01-10T11:00:00Z"}"#,
        "missing_field",
    );
}

#[test]
fn invalid_customer_id() {
    let long = "x".repeat(257);
    check(
        &format!(
            r#"{{"event_id":"x","customer_id":"{long}","channel":"web","type":"page_view","timestamp":"2026-01-10T11:00:00Z"}}"#
        ),
        "invalid_customer_id",
    );
    check(
        r#"{"event_id":"x","customer_id":"","channel":"web","type":"page_view","timestamp":"2026-01-10T11:00:00Z"}"#,
        "invalid_customer_id",
    );
}

#[test]
fn invalid_value() {
    check(
        r#"{"event_id":"x","customer_id":"c","channel":"web","type":"order_placed","value":-3,"timestamp":"2026-01-10T11:00:00Z"}"#,
        "invalid_value",
    );
    // Not finite: JSON has no NaN or Infinity, but a number beyond f64's range.
    check(
        r#"{"event_id":"x","customer_id":"c","channel":"web","type":"order_placed","value":1e400,"timestamp":"2026-01-10T11:00:00Z"}"#,
        "invalid_value",
    );
}

#[test]
fn invalid_score() {
    check(
        r#"{"event_id":"x","customer_id":"c","channel":"web","type":"survey_response","survey":"csat","score":6,"timestamp":"2026-01-10T11:00:00Z"}"#,
        "invalid_score",
    );
}

#[test]
fn future_timestamp() {
    // --now is 2026-02-01T00:00Z; more than 1 h ahead is rejected.
    check(
        r#"{"event_id":"x","customer_id":"c","channel":"web","type":"page_view","timestamp":"2026-02-01T01:00:01Z"}"#,
        "future_timestamp",
    );
}

#[test]
fn too_late() {
    // The watermark after line 2 is 10:29:55; lateness 1 h: 09:29:54 is too late.
    check(
        r#"{"event_id":"x","customer_id":"c","channel":"web","type":"page_view","timestamp":"2026-01-10T09:29:54Z"}"#,
        "too_late",
    );
}

#[test]
fn rule_order_first_failure_wins() {
    // Missing customer_id and a negative value: missing_field wins.
    check(
        r#"{"event_id":"x","channel":"web","type":"order_placed","value":-3,"timestamp":"2026-01-10T11:00:00Z"}"#,
        "missing_field",
    );
    // Bad score and a future timestamp: invalid_score wins.
    check(
        r#"{"event_id":"x","customer_id":"c","channel":"web","type":"survey_response","survey":"nps","score":11,"timestamp":"2027-01-01T00:00:00Z"}"#,
        "invalid_score",
    );
}

#[test]
fn duplicates_are_dropped_silently_and_blank_lines_count_for_numbering() {
    let good = good_lines();
    let (alone, _, _) = replay(&(good.join("\n") + "\n"), &[]);
    let input = format!(
        "{}\n\n{}\n{}\n{}\n{}\n",
        good[0], good[1], good[0], good[2], good[3]
    );
    let (out, err, code) = replay(&input, &[]);
    assert_eq!(code, 0);
    assert_eq!(out, alone);
    assert!(
        !err.contains("line 4"),
        "a duplicate is not reported: {err}"
    );
    assert!(err.contains("1 duplicates"), "{err}");
    let input = format!("{}\n\nnope\n{}\n", good[0], good[1]);
    let (_, err, _) = replay(&input, &[]);
    assert!(err.contains("line 3: decode_error"), "{err}");
}

#[test]
fn unknown_channel_and_type_become_other() {
    let input = r#"{"event_id":"x","customer_id":"c","channel":"metaverse","type":"teleport","timestamp":"2026-01-10T11:00:00Z"}"#;
    let (out, err, code) = replay(&format!("{input}\n"), &["--snapshot", "/dev/null"]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("line 1"), "{err}");
    assert!(out.contains(r#""channels":["other"]"#), "{out}");
}

/// regression: extreme timestamps panicked; a JSON array line was not a decode_error.
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
