//! Changelog-backed state on a real broker: restore after the broker has
//! compacted the changelog (with a partial tail after the last marker),
//! rebalance between two instances, and graceful shutdown.

mod kafka_support;

use std::time::{Duration, Instant};

use kafka_support::*;
use serde_json::Value;
use touchstream::engine::next_slot;
use touchstream::kafka::changelog::{
    decode_state, encode_state, marker_key, state_key, Marker, StateRecord,
};

/// Restore after compaction: the changelog compacts within seconds; a
/// partial generation (as a kill -9 mid-checkpoint leaves it) sits after the
/// last marker; after the cleaner has run, a restart still restores exactly
/// the last complete checkpoint and the outputs equal replay of the input.
#[test]
#[ignore = "needs a Kafka broker: scripts/test starts one and runs it"]
fn restore_after_compaction_is_exact() {
    let Some(b) = broker("compaction") else {
        return;
    };
    let s = Scenario::new(&b, "compaction");
    s.create_input_only(1);
    create_topic(
        &b,
        &s.changelog,
        1,
        &[
            ("cleanup.policy", "compact"),
            ("segment.ms", "100"),
            ("min.cleanable.dirty.ratio", "0.01"),
            ("delete.retention.ms", "100"),
        ],
    );
    let lines = generate(&["--seed", "41", "--customers", "40", "--days", "20"]);
    let (first, _) = lines.split_at(lines.len() * 6 / 10);
    let mut cfg = s.config();
    cfg.commit_interval = "300ms".into(); // many generations → superseded records
    let cfg = s.write_config("svc", &cfg);
    let expected_first = replay(first, &cfg);
    let expected = replay(&lines, &cfg);

    // Run 1 over the first 60 %, in pieces, then SIGTERM.
    let mut svc = s.start(&cfg, "c1");
    svc.wait_ready(Duration::from_secs(60));
    let producer = produce_paced(
        &b,
        &s.input,
        json_records(first, 0),
        8,
        Duration::from_millis(350),
    );
    let mut out = s.outputs(false);
    assert!(
        out.wait_distinct(expected_first.events.len(), Duration::from_secs(60)),
        "run 1 incomplete"
    );
    producer.join().unwrap();
    let (st, took) = svc.sigterm(Duration::from_secs(20));
    assert!(
        st.success() && took < Duration::from_secs(10),
        "SIGTERM: {st} after {took:?}"
    );

    // A partial tail: a later generation of one customer, never closed by a
    // marker, in the slot the next checkpoint would use.
    let cl = read_partition(&b, &s.changelog, 0, false);
    let mk = marker_key(&s.input);
    let last: Marker = cl
        .iter()
        .rev()
        .find(|r| r.key.as_deref() == Some(mk.as_slice()))
        .map(|r| serde_json::from_slice(r.value.as_deref().unwrap()).unwrap())
        .expect("a marker after run 1");
    // A customer whose last state is in the last generation and whose other
    // slot holds an older committed state: once compacted, that other slot
    // holds nothing but the partial tail.
    let (victim, victim_slot) = cl
        .iter()
        .rev()
        .filter(|r| r.key.as_deref() != Some(mk.as_slice()))
        .find_map(|r| {
            let rec: StateRecord = decode_state(r.value.as_deref()?, r.offset).ok()?;
            let c = rec.state.filter(|_| rec.gen == last.gen)?;
            let other = state_key(&s.input, c.id(), next_slot(c.slot));
            cl.iter()
                .any(|x| x.key.as_deref() == Some(other.as_slice()))
                .then(|| (c.clone(), c.slot))
        })
        .expect("a customer written in the last generation and in an earlier one");
    let mut bogus = victim.clone();
    bogus.newest += 400 * DAY; // would change every later output of this customer
    bogus.clock += 400 * DAY;
    bogus.slot = next_slot(victim_slot);
    let tail_key = state_key(&s.input, victim.id(), bogus.slot);
    let tail = In {
        key: Some(tail_key.clone()),
        value: Some(encode_state(&StateRecord {
            gen: last.gen + 1,
            state: Some(bogus),
        })),
        partition: 0,
    };
    produce(&b, &s.changelog, &[tail]);

    // The rest of the input arrives while the service is down.
    produce(&b, &s.input, &json_records(&lines[first.len()..], 0));

    // Wait for the cleaner: roll the active segment by appending (keys the
    // restore ignores), until records disappear.
    let before = read_partition(&b, &s.changelog, 0, false).len();
    let mut appended = 0;
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        std::thread::sleep(Duration::from_millis(300));
        produce(
            &b,
            &s.changelog,
            &[In {
                key: Some(format!("zz-roll-{appended}").into_bytes()),
                value: Some(b"x".to_vec()),
                partition: 0,
            }],
        );
        appended += 1;
        let recs = read_partition(&b, &s.changelog, 0, false);
        let now = recs.len();
        let tail_copies = recs
            .iter()
            .filter(|r| r.key.as_deref() == Some(tail_key.as_slice()))
            .count();
        if now < before + appended && tail_copies == 1 {
            eprintln!(
                "compacted: {} records before, {now} after ({appended} appended)",
                before + appended
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the changelog was not compacted within 45 s ({before} + {appended} records, now {now}; partial-tail key copies {tail_copies})"
        );
    }
    let (low, _) = watermarks(&b, &s.changelog, 0);
    eprintln!("changelog low offset after compaction: {low}");

    // Run 2 restores from the compacted changelog and finishes the input.
    let mut svc = s.start(&cfg, "c2");
    svc.wait_ready(Duration::from_secs(60));
    out.settle(
        expected.events.len(),
        Duration::from_secs(60),
        Duration::from_secs(15),
    );
    out.poll_for(Duration::from_secs(2));
    let outs = decode_outputs(&out.records, &s.prefix, &OutputSchemas::defaults());
    check_outputs(&outs, &expected.events, &s.prefix, Copies::Forbidden);
    check_order_per_partition(&outs, &expected.events);
    let (st, _) = svc.sigterm(Duration::from_secs(20));
    assert!(st.success());
    let restored = restore_changelog(&b, &s.changelog, 0, &s.input, false);
    assert_state_equal(&restored, &engine_after(&lines, &cfg), lines.len() as i64);
}

/// Two instances in one group on a 4-partition topic; one is stopped
/// mid-way; the other takes its partitions over, restores them, and the
/// union of outputs equals replay run per partition.
#[test]
#[ignore = "needs a Kafka broker: scripts/test starts one and runs it"]
fn rebalance_hands_partitions_over() {
    rebalance("rebalance", false);
}

/// The same with `delivery = "exactly_once"`: across both hand-overs a
/// read_committed consumer sees every event exactly once.
#[test]
#[ignore = "needs a Kafka broker: scripts/test starts one and runs it"]
fn rebalance_hands_partitions_over_exactly_once() {
    rebalance("rebalance-eos", true);
}

fn rebalance(name: &str, eos: bool) {
    let Some(b) = broker(name) else { return };
    let s = Scenario::new(&b, name);
    s.create_input(4);
    let lines = generate(&["--seed", "51", "--customers", "60", "--days", "20"]);
    let mut per_part: Vec<Vec<String>> = vec![Vec::new(); 4];
    let mut records = Vec::new();
    for l in &lines {
        let c = customer_of(l).expect("customer id");
        let p = partition_for(&c, 4);
        per_part[p as usize].push(l.clone());
        records.push(In {
            key: Some(c.into_bytes()),
            value: Some(l.as_bytes().to_vec()),
            partition: p,
        });
    }
    assert!(
        per_part.iter().all(|v| !v.is_empty()),
        "every partition has customers"
    );
    let mut cfg = s.config();
    if eos {
        cfg.delivery = "exactly_once".into();
    }
    let cfg = s.write_config("svc", &cfg);
    let expected: Vec<Value> = per_part
        .iter()
        .flat_map(|p| replay(p, &cfg).events)
        .collect();

    // With exactly-once the instances keep the default instance id, as a
    // user who sets none would: two of them on one host must not fence
    // each other (their transactional ids differ by HTTP port).
    let start = |name: &str| {
        if eos {
            s.start_default_id(&cfg, name)
        } else {
            s.start(&cfg, name)
        }
    };
    let mut a = start("ra");
    a.wait_ready(Duration::from_secs(60));
    let mut bb = start("rb");
    bb.wait_ready(Duration::from_secs(60));
    let producer = produce_paced(&b, &s.input, records, 12, Duration::from_millis(400));
    let mut out = s.outputs(eos);
    assert!(
        out.wait_distinct(expected.len() * 4 / 10, Duration::from_secs(60)),
        "no progress before the handover"
    );
    let (st, took) = a.sigterm(Duration::from_secs(20));
    assert!(
        st.success() && took < Duration::from_secs(10),
        "A: {st} after {took:?}\n{}",
        a.log_tail(20)
    );
    producer.join().unwrap();
    out.settle(
        expected.len(),
        Duration::from_secs(60),
        Duration::from_secs(15),
    );
    out.poll_for(Duration::from_secs(2));
    let outs = decode_outputs(&out.records, &s.prefix, &OutputSchemas::defaults());
    // Java-compatible partitioning of the outputs (murmur2 of the key).
    for o in &outs {
        let key = o.rec.key.as_deref().unwrap_or_default();
        assert_eq!(
            o.rec.partition,
            java_partition(key, 4),
            "partition of {} ({})",
            o.rec.key_str().unwrap_or_default(),
            o.rec.topic
        );
    }
    let copies = if eos {
        Copies::Forbidden
    } else {
        Copies::ByteIdentical
    };
    let resent = check_outputs(&outs, &expected, &s.prefix, copies);
    eprintln!("{resent} re-sent copies across the rebalance");
    assert_eq!(
        bb.metric("touchstream_assigned_partitions"),
        4.0,
        "B owns every partition"
    );
    assert!(
        bb.metric("touchstream_restored_customers_total") > 0.0,
        "B restored A's customers"
    );
    // The lag the alerts watch, in both delivery modes (with exactly_once
    // the consumer commits no offsets of its own).
    let lag_seen = (0..40).any(|_| {
        std::thread::sleep(Duration::from_millis(250));
        bb.metrics().contains("touchstream_consumer_lag_records{")
    });
    assert!(lag_seen, "no consumer lag series:\n{}", bb.metrics());
    assert!(
        a.log_text().contains("Task restored"),
        "A restored its partitions"
    );

    let (st, _) = bb.sigterm(Duration::from_secs(20));
    assert!(st.success());
    for (p, part_lines) in per_part.iter().enumerate() {
        let restored = restore_changelog(&b, &s.changelog, p as i32, &s.input, eos);
        assert_state_equal(
            &restored,
            &engine_after(part_lines, &cfg),
            part_lines.len() as i64,
        );
    }
}

/// SIGTERM mid-stream commits (changelog marker and group offset agree)
/// and exits 0 promptly; a restart continues with nothing lost and nothing
/// sent twice.
#[test]
#[ignore = "needs a Kafka broker: scripts/test starts one and runs it"]
fn sigterm_commits_and_restart_continues() {
    let Some(b) = broker("shutdown") else { return };
    let s = Scenario::new(&b, "shutdown");
    s.create_input(1);
    let lines = generate(&["--seed", "61", "--customers", "40", "--days", "20"]);
    let cfg = s.write_config("svc", &s.config());
    let expected = replay(&lines, &cfg);

    let mut svc = s.start(&cfg, "s1");
    svc.wait_ready(Duration::from_secs(60));
    // The changelog was made by the test with the broker's 1 GiB segments.
    assert!(
        svc.log_text().contains("segments are larger than 64 MiB"),
        "no word about the changelog's 1 GiB segments:\n{}",
        svc.log_tail(20)
    );
    let producer = produce_paced(
        &b,
        &s.input,
        json_records(&lines, 0),
        10,
        Duration::from_millis(400),
    );
    let mut out = s.outputs(false);
    assert!(
        out.wait_distinct(expected.events.len() * 4 / 10, Duration::from_secs(60)),
        "no progress"
    );
    let (st, took) = svc.sigterm(Duration::from_secs(20));
    assert!(
        st.success(),
        "exit status after SIGTERM: {st}\n{}",
        svc.log_tail(20)
    );
    assert!(took < Duration::from_secs(5), "SIGTERM took {took:?}");
    eprintln!("{} distinct events when SIGTERM was sent", out.ids.len());

    // What it committed: the changelog marker and the group offset agree.
    let marker = restore_changelog(&b, &s.changelog, 0, &s.input, false)
        .marker
        .expect("a marker at shutdown");
    let committed = committed_offset(&b, &s.group, &s.input, 0);
    assert_eq!(
        committed,
        marker.offset(&s.input),
        "group offset vs changelog marker after SIGTERM"
    );
    assert!(marker.offset(&s.input) > Some(0));

    producer.join().unwrap();
    let mut svc = s.start(&cfg, "s2");
    svc.wait_ready(Duration::from_secs(60));
    out.settle(
        expected.events.len(),
        Duration::from_secs(60),
        Duration::from_secs(15),
    );
    out.poll_for(Duration::from_secs(2));
    let outs = decode_outputs(&out.records, &s.prefix, &OutputSchemas::defaults());
    check_outputs(&outs, &expected.events, &s.prefix, Copies::Forbidden);
    check_order_per_partition(&outs, &expected.events);
    let (st, took) = svc.sigterm(Duration::from_secs(20));
    assert!(
        st.success() && took < Duration::from_secs(5),
        "{st} after {took:?}"
    );
    assert_eq!(
        committed_offset(&b, &s.group, &s.input, 0),
        Some(lines.len() as i64)
    );
    let restored = restore_changelog(&b, &s.changelog, 0, &s.input, false);
    assert_state_equal(&restored, &engine_after(&lines, &cfg), lines.len() as i64);
}

/// A changelog record this build cannot read (written by a newer
/// touchstream: state format 9) followed by 600 records the restore reads
/// past: the restart stops, within the test's minute, with an error that
/// names the record's offset and the formats this build reads; it emits
/// nothing and commits nothing.
#[test]
#[ignore = "needs a Kafka broker: scripts/test starts one and runs it"]
fn an_unreadable_changelog_record_stops_the_restore_and_names_it() {
    let Some(b) = broker("unreadable") else {
        return;
    };
    let s = Scenario::new(&b, "unreadable");
    s.create_input(1);
    let lines = generate(&["--seed", "67", "--customers", "400", "--days", "10"]);
    let (first, rest) = lines.split_at(lines.len() / 2);
    let cfg = s.write_config("svc", &s.config());
    let expected_first = replay(first, &cfg);

    let mut svc = s.start(&cfg, "u1");
    svc.wait_ready(Duration::from_secs(60));
    produce(&b, &s.input, &json_records(first, 0));
    let mut out = s.outputs(false);
    assert!(
        out.wait_distinct(expected_first.events.len(), Duration::from_secs(60)),
        "run 1 incomplete"
    );
    let (st, _) = svc.sigterm(Duration::from_secs(20));
    assert!(st.success(), "run 1 exited {st}:\n{}", svc.log_tail(20));

    let key = state_key(&s.input, "cust-newer", 1);
    let mut newer = vec![0u8, 9];
    newer.extend_from_slice(&1u64.to_le_bytes());
    newer.extend_from_slice(b"a newer layout");
    let (_, bad_offset) = watermarks(&b, &s.changelog, 0);
    let record = |key: Vec<u8>, value: Option<Vec<u8>>| In {
        key: Some(key),
        value,
        partition: 0,
    };
    produce(&b, &s.changelog, &[record(key, Some(newer))]);
    let others: Vec<In> = (0..600)
        .map(|i| record(format!("zz-other-{i}").into_bytes(), Some(b"x".to_vec())))
        .collect();
    produce(&b, &s.changelog, &others);
    produce(&b, &s.input, &json_records(rest, 0));
    let committed = committed_offset(&b, &s.group, &s.input, 0);
    out.poll_for(Duration::from_secs(1));
    let emitted = out.records.len();

    let mut svc = s.start(&cfg, "u2");
    let st = svc.wait_exit(Duration::from_secs(60)).unwrap_or_else(|| {
        panic!(
            "the restart runs on past the unreadable record:\n{}",
            svc.log_tail(20)
        )
    });
    assert!(!st.success(), "run 2 exited {st}");
    let log = svc.log_text();
    assert!(
        log.contains(&format!(
            "changelog record at offset {bad_offset} has state format 9"
        )) && log.contains("reads formats 2 to 4")
            && !log.contains("panicked"),
        "run 2's error does not name the record:\n{}",
        svc.log_tail(20)
    );
    out.poll_for(Duration::from_secs(2));
    assert_eq!(out.records.len(), emitted, "run 2 emitted events");
    assert_eq!(
        committed_offset(&b, &s.group, &s.input, 0),
        committed,
        "run 2 committed"
    );
}

/// First start on fresh topics: the service creates the changelog (compacted,
/// with the input's partition count), the outputs and the DLQ, and becomes
/// ready — several instances at once, each on its own new topics, so that
/// assignment follows topic creation closely. No instance may die on a
/// transient "no leader yet" while restoring a just-created changelog.
#[test]
#[ignore = "needs a Kafka broker: scripts/test starts one and runs it"]
fn first_start_creates_topics_and_becomes_ready() {
    let Some(b) = broker("first-start") else {
        return;
    };
    let scenarios: Vec<Scenario> = (0..6)
        .map(|i| Scenario::new(&b, &format!("first-start{i}")))
        .collect();
    let mut services = Vec::new();
    for s in &scenarios {
        s.create_input_only(8);
        let cfg = s.write_config("svc", &s.config());
        services.push(s.start(&cfg, "fs"));
    }
    for svc in &mut services {
        svc.wait_ready(Duration::from_secs(60));
    }
    for s in &scenarios {
        assert_eq!(partitions_of(&b, &s.changelog), 8, "changelog partitions");
        assert_eq!(
            topic_config(&b, &s.changelog, "cleanup.policy").as_deref(),
            Some("compact")
        );
        assert_eq!(
            topic_config(&b, &s.changelog, "segment.bytes").as_deref(),
            Some("67108864"),
            "changelog segments"
        );
        assert_eq!(partitions_of(&b, &s.dlq), 8, "DLQ partitions");
        for t in s.output_topics() {
            assert_eq!(partitions_of(&b, &t), 8, "{t} partitions");
        }
    }
    for svc in &mut services {
        assert!(
            !svc.log_text().contains("segments are larger than 64 MiB"),
            "a changelog it created is reported as too coarse:\n{}",
            svc.log_tail(20)
        );
        let (st, _) = svc.sigterm(Duration::from_secs(20));
        assert!(st.success(), "{st}");
    }
}

/// The test's murmur2 matches Kafka's own test vectors.
#[test]
fn murmur2_matches_kafka() {
    for (s, h) in [
        ("21", -973932308),
        ("foobar", -790332482),
        ("a-little-bit-long-string", -985981536),
        ("a-little-bit-longer-string", -1486304829),
        (
            "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
            -58897971,
        ),
        ("abc", 479470107),
    ] {
        assert_eq!(murmur2(s.as_bytes()), h, "{s}");
    }
}

/// Customers evicted by `state_ttl` stay evicted across a restart, the
/// outputs equal replay's (which evicts the same customers), and their
/// changelog keys are tombstoned so that compaction forgets them.
#[test]
#[ignore = "needs a Kafka broker: scripts/test starts one and runs it"]
fn state_ttl_evictions_survive_restart_and_are_tombstoned() {
    let Some(b) = broker("state_ttl") else { return };
    let s = Scenario::new(&b, "ttl");
    s.create_input(1);
    let lines = generate(&["--seed", "67", "--customers", "60", "--days", "6"]);
    let mut c = s.config();
    c.commit_interval = "200ms".into();
    c.extra = "[signals]\nstate_ttl = \"1d\"\n".into();
    let cfg = s.write_config("svc", &c);
    let expected = replay(&lines, &cfg);
    assert!(expected.events.len() > 100);

    let mut svc = s.start(&cfg, "t1");
    svc.wait_ready(Duration::from_secs(60));
    let producer = produce_paced(
        &b,
        &s.input,
        json_records(&lines, 0),
        10,
        Duration::from_millis(300),
    );
    let mut out = s.outputs(false);
    assert!(
        out.wait_distinct(expected.events.len() / 2, Duration::from_secs(60)),
        "no progress"
    );
    let (st, _) = svc.sigterm(Duration::from_secs(20));
    assert!(st.success(), "{st}\n{}", svc.log_tail(20));
    producer.join().unwrap();

    let mut svc = s.start(&cfg, "t2");
    svc.wait_ready(Duration::from_secs(60));
    out.settle(
        expected.events.len(),
        Duration::from_secs(60),
        Duration::from_secs(10),
    );
    let outs = decode_outputs(&out.records, &s.prefix, &OutputSchemas::defaults());
    check_outputs(&outs, &expected.events, &s.prefix, Copies::Forbidden);
    let (st, _) = svc.sigterm(Duration::from_secs(20));
    assert!(st.success());

    let restored = restore_changelog(&b, &s.changelog, 0, &s.input, false);
    let engine = engine_after(&lines, &cfg);
    assert!(engine.stats().evicted > 0, "the input must evict customers");
    assert_state_equal(&restored, &engine, lines.len() as i64);
    let tombstones = read_partition(&b, &s.changelog, 0, false)
        .iter()
        .filter(|r| r.value.is_none())
        .count();
    assert!(
        tombstones > 0,
        "evicted customers' changelog keys are tombstoned"
    );
}
