//! Decoded outputs against replay's events: the envelope (topic, key,
//! headers), the same distinct events, their order per partition or per
//! customer, and how re-sent copies are judged ([`Copies`]).

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::{json, Value};

use super::decode::OutEvent;

/// Asserts the outputs' envelope: header `type`/`event_id` match the
/// value, topic = prefix + type, key = customer id.
pub fn check_envelope(outs: &[OutEvent], prefix: &str) {
    for o in outs {
        let t = o.kind.as_str();
        assert_eq!(
            o.json["type"],
            json!(t),
            "value type vs schema at {}:{}",
            o.rec.topic,
            o.rec.offset
        );
        assert_eq!(o.rec.topic, format!("{prefix}{t}"), "topic of a {t}");
        assert_eq!(
            o.rec.header("type").as_deref(),
            Some(t),
            "header `type` at {}:{}",
            o.rec.topic,
            o.rec.offset
        );
        assert_eq!(
            o.rec.header("event_id"),
            Some(o.event_id()),
            "header `event_id` at {}:{}",
            o.rec.topic,
            o.rec.offset
        );
        assert_eq!(
            o.rec.key_str().as_deref(),
            o.json["customer_id"].as_str(),
            "key at {}:{}",
            o.rec.topic,
            o.rec.offset
        );
    }
}

/// How re-sent copies of an event are judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Copies {
    /// No event may appear twice.
    Forbidden,
    /// Copies must be byte-identical to the first (SPEC 5).
    ByteIdentical,
    /// Copies must decode to the same event (weaker than SPEC 5).
    SameEvent,
}

/// Asserts every copy of a re-sent event is identical (key, headers,
/// topic-partition, and value bytes or decoded value) to the first;
/// returns how many extra copies there were.
pub fn check_copies_identical(outs: &[OutEvent], bytes: bool) -> usize {
    let mut first: HashMap<String, &OutEvent> = HashMap::new();
    let mut extra = 0;
    for o in outs {
        match first.get(&o.event_id()) {
            None => {
                first.insert(o.event_id(), o);
            }
            Some(f) => {
                extra += 1;
                if bytes {
                    assert_eq!(
                        f.rec.value,
                        o.rec.value,
                        "re-sent {} is not byte-identical: {} vs {}",
                        o.event_id(),
                        f.json,
                        o.json
                    );
                } else {
                    assert_eq!(f.json, o.json, "re-sent {} is another event", o.event_id());
                }
                assert_eq!(
                    f.rec.key,
                    o.rec.key,
                    "re-sent {} has another key",
                    o.event_id()
                );
                assert_eq!(
                    f.rec.topic,
                    o.rec.topic,
                    "re-sent {} in another topic",
                    o.event_id()
                );
                assert_eq!(
                    f.rec.partition,
                    o.rec.partition,
                    "re-sent {} in another partition",
                    o.event_id()
                );
                assert_eq!(
                    f.rec.headers,
                    o.rec.headers,
                    "re-sent {} has other headers",
                    o.event_id()
                );
            }
        }
    }
    extra
}

/// Asserts the distinct outputs (by event_id) equal `expected` exactly.
pub fn check_same_events(outs: &[OutEvent], expected: &[Value]) {
    let mut want: BTreeMap<String, &Value> = BTreeMap::new();
    for e in expected {
        let id = e["event_id"].as_str().expect("replay event_id").to_string();
        assert!(
            want.insert(id.clone(), e).is_none(),
            "replay itself emitted {id} twice"
        );
    }
    let mut got: BTreeMap<String, &Value> = BTreeMap::new();
    for o in outs {
        got.entry(o.event_id()).or_insert(&o.json);
    }
    let missing: Vec<&&Value> = want
        .iter()
        .filter(|(k, _)| !got.contains_key(*k))
        .map(|(_, v)| v)
        .collect();
    let extra: Vec<&&Value> = got
        .iter()
        .filter(|(k, _)| !want.contains_key(*k))
        .map(|(_, v)| v)
        .collect();
    let differ: Vec<String> = want
        .iter()
        .filter_map(|(k, w)| {
            got.get(k)
                .filter(|g| **g != *w)
                .map(|g| format!("  replay: {w}\n  kafka:  {g}"))
        })
        .collect();
    let show = |v: &[&&Value]| {
        v.iter()
            .take(5)
            .map(|x| format!("  {x}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(
        missing.is_empty() && extra.is_empty() && differ.is_empty(),
        "outputs != replay ({} expected, {} distinct on Kafka): {} missing, {} extra, {} differ\nmissing:\n{}\nextra:\n{}\ndiffer:\n{}",
        want.len(),
        got.len(),
        missing.len(),
        extra.len(),
        differ.len(),
        show(&missing),
        show(&extra),
        differ.iter().take(5).cloned().collect::<Vec<_>>().join("\n")
    );
}

/// Asserts that, per (topic, partition), the first occurrences of the
/// events come in `expected`'s order (the replay order filtered to the
/// events of that topic-partition).
pub fn check_order_per_partition(outs: &[OutEvent], expected: &[Value]) {
    let pos: HashMap<&str, usize> = expected
        .iter()
        .enumerate()
        .map(|(i, e)| (e["event_id"].as_str().unwrap_or_default(), i))
        .collect();
    let mut by_part: BTreeMap<(String, i32), Vec<&OutEvent>> = BTreeMap::new();
    for o in outs {
        by_part
            .entry((o.rec.topic.clone(), o.rec.partition))
            .or_default()
            .push(o);
    }
    for ((t, p), mut v) in by_part {
        v.sort_by_key(|o| o.rec.offset);
        let mut seen = HashSet::new();
        let firsts: Vec<usize> = v
            .iter()
            .filter(|o| seen.insert(o.event_id()))
            .filter_map(|o| pos.get(o.event_id().as_str()).copied())
            .collect();
        if let Some(w) = firsts.windows(2).find(|w| w[0] > w[1]) {
            panic!(
                "{t}[{p}]: events out of replay order: {} came before {}",
                expected[w[0]], expected[w[1]]
            );
        }
    }
}

/// Asserts per (type, customer) order of first occurrences = replay order.
pub fn check_order_per_customer(outs: &[OutEvent], expected: &[Value]) {
    let pos: HashMap<&str, usize> = expected
        .iter()
        .enumerate()
        .map(|(i, e)| (e["event_id"].as_str().unwrap_or_default(), i))
        .collect();
    let mut by_key: BTreeMap<(String, String), Vec<&OutEvent>> = BTreeMap::new();
    for o in outs {
        by_key
            .entry((
                o.rec.topic.clone(),
                o.json["customer_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            ))
            .or_default()
            .push(o);
    }
    for ((t, c), mut v) in by_key {
        v.sort_by_key(|o| (o.rec.partition, o.rec.offset));
        let mut seen = HashSet::new();
        let firsts: Vec<usize> = v
            .iter()
            .filter(|o| seen.insert(o.event_id()))
            .filter_map(|o| pos.get(o.event_id().as_str()).copied())
            .collect();
        if let Some(w) = firsts.windows(2).find(|w| w[0] > w[1]) {
            panic!(
                "{t} / {c}: events out of replay order: {} came before {}",
                expected[w[0]], expected[w[1]]
            );
        }
    }
}

/// Envelope + same distinct events + order + how copies are judged.
/// Returns the number of extra copies.
pub fn check_outputs(outs: &[OutEvent], expected: &[Value], prefix: &str, copies: Copies) -> usize {
    check_envelope(outs, prefix);
    let extra = check_copies_identical(outs, copies != Copies::SameEvent);
    if copies == Copies::Forbidden {
        let mut count: HashMap<String, usize> = HashMap::new();
        for o in outs {
            *count.entry(o.event_id()).or_default() += 1;
        }
        let dups: Vec<_> = count.iter().filter(|(_, n)| **n > 1).take(5).collect();
        assert!(dups.is_empty(), "{extra} duplicate outputs, e.g. {dups:?}");
    }
    check_same_events(outs, expected);
    check_order_per_customer(outs, expected);
    extra
}
