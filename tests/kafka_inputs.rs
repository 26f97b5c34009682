//! Several input topics on a real broker (SPEC 8, the Kafka side): one
//! customer, one state, whichever topic a touchpoint came on.
//!
//! The touchpoints are split by source system into three co-partitioned
//! topics, in `input_topics` order: `web` (web, mobile_app), `messaging`
//! (email, sms, push) and `offline` (store, call_center, chat, direct_mail,
//! loyalty, social, ...), each keyed by customer id on the partition Java's
//! partitioner (murmur2) gives it. A task is partition p of every input, so
//! for every p the service's derived events equal `touchstream replay
//! web_p messaging_p offline_p` (the files in `input_topics` order, each
//! that input's partition-p records in produce order) when the service
//! finds its input already written (a backlog) and no input goes idle
//! (`idle_timeout = "1h"`).
//!
//! - a backlog over three topics equals replay task by task, and it is a
//!   meaningful one: customers touch several topics, attributions and
//!   engagement span channels of several topics;
//! - literal touchpoints: a web cart closed by a store order, an
//!   abandonment recovered in the store, attribution over three topics;
//!   contact fatigue counting email and direct mail together; an email
//!   campaign click converted by a store order (no survey);
//! - kill -9 (at-least-once): nothing lost, re-sent copies byte-identical;
//! - kill -9 (exactly-once) inside transactions: read_committed outputs
//!   and dead letters exactly once, equal to replay;
//! - two instances: each holds whole tasks (partition p of every input) at
//!   every scrape of its metrics, also during the rebalance, and together
//!   they hold every task once; so does every member in every description
//!   of the group by its coordinator (Python admin client) meanwhile;
//! - a record on the wrong partition of a co-partitioned input is counted
//!   in `touchstream_misrouted_records_total{topic}` and still processed;
//! - inputs with different partition counts are refused
//!   (`kafka.repartition = "never"`): not ready, and an error naming every
//!   input with its partition count and the number of tasks;
//! - live input: an input that lags in event time but still receives holds
//!   the task's watermark (cart timers wait for it); one that goes quiet
//!   holds it only until `idle_timeout`; and with a single input, an idle
//!   partition abandons a cart on the wall clock (SPEC 3);
//! - a changelog of the previous, single-input format (2) is restored and
//!   migrated: the run goes on as an uninterrupted one and writes format 4;
//! - an input topic added to a one-topic deployment: the state is kept,
//!   the new topic is read from its beginning, and both runs together
//!   equal replay of the two topics.
//!
//! Every run that is compared with replay finds its records already
//! written: records produced while the service is caught up on some inputs
//! may legitimately be merged differently (SPEC 8, "State and delivery"),
//! so more input is only ever added while no instance runs. (The live test
//! asserts literal events instead; the single-input changelog test has no
//! merge.)

mod kafka_support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kafka_support::inputs::*;
use kafka_support::*;
use serde_json::{json, Value};
use touchstream::config::Config;
use touchstream::engine::Engine;
use touchstream::kafka::changelog::{decode_state, encode_state_json};
use touchstream::kafka::changelog::{marker_key, Marker};
use touchstream::model::{Channel, TouchType, Touchpoint};

// ---------------------------------------------------------------------------
// Inputs split by source

/// Ends every input partition with a touchpoint at `at` (one customer per
/// partition, on the partition its id hashes to). With every input's last
/// record at the same instant, an input that reaches its end first never
/// holds the task's watermark below what replay of the longer files gives
/// (replay sees that input's next record; the service, caught up, does
/// not), and the task's final watermark is `at` − 5 s, so timers fire up
/// to the end of the data.
fn close_inputs(split: &mut Split, at: i64, tag: &str) {
    let n = split[0].len() as i32;
    let kinds = [
        ("web", "page_view"),
        ("email", "message_opened"),
        ("store", "store_visit"),
    ];
    for p in 0..n {
        let customer = customer_on("closer", p, n);
        for (s, (channel, kind)) in kinds.iter().enumerate() {
            assert_eq!(source_of(channel), s);
            split[s][p as usize].push(tpl(
                &format!("close-{tag}-{p}-{s}"),
                &customer,
                channel,
                kind,
                at,
            ));
        }
    }
}

/// Creates the three input topics (and the changelog, compacted, as the
/// service would) with `partitions` partitions; returns the topic names in
/// `input_topics` order.
fn create_inputs(s: &Scenario, partitions: i32) -> Vec<String> {
    let topics: Vec<String> = SOURCES.iter().map(|n| format!("{}.{n}", s.id)).collect();
    for t in &topics {
        create_topic(&s.b, t, partitions, &[]);
        s.track(t);
    }
    create_topic(
        &s.b,
        &s.changelog,
        partitions,
        &[("cleanup.policy", "compact")],
    );
    topics
}

/// Produces every input partition's lines (keyed by customer id, on that
/// partition, in order) and waits for them.
fn produce_split(b: &str, topics: &[String], split: &Split) {
    let producer = TestProducer::new(b);
    for (s, parts) in split.iter().enumerate() {
        for (p, lines) in parts.iter().enumerate() {
            for r in json_records(lines, p as i32) {
                producer.send(&topics[s], &r);
            }
        }
    }
    producer.flush();
}

fn config_for(s: &Scenario, topics: &[String]) -> ServiceConfig {
    let mut c = s.config();
    c.input_topics = topics.to_vec();
    c.idle_timeout = "1h".into();
    c.delivery = "at_least_once".into();
    c
}

/// The inputs whose channels a list of channels names.
fn sources_named<'a>(channels: impl Iterator<Item = &'a str>) -> BTreeSet<usize> {
    channels.map(source_of).collect()
}

// ---------------------------------------------------------------------------
// 1. A backlog over three topics

/// Generated traffic split by source into three 3-partition topics,
/// produced before the service starts: the outputs equal, event for event
/// and in order per customer and per output partition, replay of the three
/// per-partition files task by task.
#[test]
#[ignore = "needs a Kafka broker: scripts/test starts one and runs it"]
fn several_topics_backlog_equals_replay_per_partition() {
    let Some(b) = broker("inputs-backlog") else {
        return;
    };
    let s = Scenario::new(&b, "inputs-backlog");
    let topics = create_inputs(&s, 3);
    let lines = generate(&["--seed", "81", "--customers", "200", "--days", "5"]);
    assert!(lines.len() > 1_000, "generator gave {} lines", lines.len());
    let mut split = split_by_source(&lines, 3);
    let end = max_ts(&lines) + HOUR;
    close_inputs(&mut split, end, "end");

    // The test is meaningful: customers touch several topics...
    let mut touched: HashMap<String, BTreeSet<usize>> = HashMap::new();
    for l in &lines {
        let v: Value = serde_json::from_str(l).expect("generated JSON");
        touched
            .entry(str_field(&v, "customer_id").to_string())
            .or_default()
            .insert(source_of(str_field(&v, "channel")));
    }
    let across = touched.values().filter(|t| t.len() >= 2).count();
    assert!(
        across >= 10,
        "only {across} customers touch two topics or more"
    );

    produce_split(&b, &topics, &split);
    let cfg = s.write_config("svc", &config_for(&s, &topics));
    let expected = expected_per_task(&s, "backlog", &split, &cfg);
    assert!(
        expected.len() > 500,
        "replay gave only {} events",
        expected.len()
    );
    // ... and one state per customer shows in the expectation: attributions
    // and engagement channels span channels of several topics.
    let attributed_across = expected
        .iter()
        .filter(|e| e["type"] == "order_attributed")
        .filter(|e| {
            let linear = e["models"]["linear"]
                .as_object()
                .unwrap_or_else(|| panic!("no linear model in {e}"));
            sources_named(linear.keys().map(String::as_str)).len() >= 2
        })
        .count();
    let engaged_across = expected
        .iter()
        .filter(|e| e["type"] == "engagement_score")
        .filter(|e| {
            let channels = e["channels"]
                .as_array()
                .unwrap_or_else(|| panic!("no channels in {e}"));
            sources_named(channels.iter().filter_map(Value::as_str)).len() >= 2
        })
        .count();
    eprintln!(
        "{} expected events; {attributed_across} attributions and {engaged_across} engagement scores span several topics",
        expected.len()
    );
    assert!(
        attributed_across > 0,
        "no order_attributed spans channels of two topics"
    );
    assert!(
        engaged_across > 0,
        "no engagement_score spans channels of two topics"
    );

    let mut svc = s.start(&cfg, "inputs");
    svc.wait_ready(Duration::from_secs(60));
    let outs = collect_outputs(&s, expected.len());
    check_outputs(&outs, &expected, &s.prefix, Copies::Forbidden);
    // The outputs are keyed (murmur2) like the inputs, with as many
    // partitions: output partition p holds task p's events, in its order.
    check_order_per_partition(&outs, &expected);

    // Metrics: every input partition held, none idle, nothing misrouted;
    // each task's watermark ends at the inputs' last event time − 5 s.
    let want_tasks: BTreeSet<i32> = (0..3).collect();
    let want_wm = (end - 5 * SEC) as f64 / 1000.0;
    let deadline = Instant::now() + Duration::from_secs(20);
    let metrics = loop {
        let m = svc.metrics();
        let done = metric_samples(&m, "touchstream_task_watermark_seconds")
            .iter()
            .filter(|(_, v)| (v - want_wm).abs() < 0.5)
            .count()
            == 3;
        if done || Instant::now() >= deadline {
            break m;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(held_tasks(&metrics), want_tasks, "tasks held:\n{metrics}");
    for (labels, v) in metric_samples(&metrics, "touchstream_task_watermark_seconds") {
        assert!(
            (v - want_wm).abs() < 0.5,
            "task {:?}: watermark {v}, the inputs' last event time − 5 s is {want_wm}",
            labels.get("task")
        );
    }
    let held = held_partitions(&metrics, "touchstream_input_idle", &topics);
    let all: BTreeSet<String> = topics.iter().cloned().collect();
    assert_eq!(
        held.keys().copied().collect::<BTreeSet<i32>>(),
        want_tasks,
        "input partitions in touchstream_input_idle"
    );
    assert!(
        held.values().all(|t| *t == all),
        "touchstream_input_idle does not show every input of every task: {held:?}"
    );
    assert_eq!(
        held_partitions(&metrics, "touchstream_watermark_seconds", &topics),
        held,
        "touchstream_watermark_seconds vs touchstream_input_idle"
    );
    for (i, t) in topics.iter().enumerate() {
        assert_eq!(
            metric_sum(&metrics, "touchstream_input_idle", &[("topic", t.as_str())]),
            0.0,
            "an input of {t} went idle with idle_timeout = 1h"
        );
        assert_eq!(
            misrouted(&metrics, t),
            0.0,
            "misrouted records counted in {t}"
        );
        let produced: usize = split[i].iter().map(Vec::len).sum();
        assert_eq!(
            metric_sum(
                &metrics,
                "touchstream_records_consumed_total",
                &[("topic", t.as_str())]
            ),
            produced as f64,
            "records consumed from {t}"
        );
    }

    let (status, _) = svc.sigterm(Duration::from_secs(20));
    assert!(
        status.success(),
        "exit after SIGTERM: {status}\n{}",
        svc.log_tail(20)
    );
}

// ---------------------------------------------------------------------------
// 2. One state across topics, literally

/// Task 0: a web cart, an email click and a store visit, then a store
/// order 10 minutes after the cart: no abandonment (the data goes on for
/// 5 h on every input), and the attribution names the email, web and store
/// touches. Task 1: a web cart abandoned after 1 h, recovered by a store
/// order at 3 h. The outputs also equal replay task by task.
#[test]
#[ignore = "needs a Kafka broker: scripts/test starts one and runs it"]
fn cross_topic_cart_closed_by_store_order() {
    let Some(b) = broker("inputs-cart") else {
        return;
    };
    let s = Scenario::new(&b, "inputs-cart");
    let topics = create_inputs(&s, 2);
    let (ca, fa) = (customer_on("ca", 0, 2), customer_on("fa", 0, 2));
    let (cb, fb) = (customer_on("cb", 1, 2), customer_on("fb", 1, 2));
    let mut split = empty_split(2);

    // Task 0: the cart is closed by the store order.
    split[0][0] = vec![
        tpl("w1", &ca, "web", "page_view", T0),
        with(
            tp("w2", &ca, "web", "add_to_cart", T0 + MIN),
            &[("cart_id", json!("k1")), ("value", json!(40.0))],
        )
        .to_string(),
        tpl("w3", &fa, "web", "page_view", T0 + 5 * HOUR),
    ];
    split[1][0] = vec![
        tpl("m1", &ca, "email", "message_sent", T0 - HOUR),
        with(
            tp("m2", &ca, "email", "message_clicked", T0 - 30 * MIN),
            &[("campaign_id", json!("spring"))],
        )
        .to_string(),
        tpl("m3", &fa, "email", "message_opened", T0 + 5 * HOUR),
    ];
    split[2][0] = vec![
        tpl("s1", &ca, "store", "store_visit", T0 + 5 * MIN),
        with(
            tp("s2", &ca, "store", "order_placed", T0 + 11 * MIN),
            &[("order_id", json!("o1")), ("value", json!(50.0))],
        )
        .to_string(),
        tpl("s3", &fa, "store", "store_visit", T0 + 5 * HOUR),
    ];

    // Task 1: abandoned on the web, recovered in the store.
    let mut web1 = vec![with(
        tp("w4", &cb, "web", "add_to_cart", T0),
        &[("cart_id", json!("k2")), ("value", json!(30.0))],
    )
    .to_string()];
    for i in 0..=6 {
        web1.push(tpl(
            &format!("wf{i}"),
            &fb,
            "web",
            "page_view",
            T0 + i * HOUR,
        ));
    }
    split[0][1] = web1;
    split[1][1] = vec![
        tpl("m4", &fb, "email", "message_opened", T0),
        tpl("m5", &fb, "email", "message_opened", T0 + 6 * HOUR),
    ];
    split[2][1] = vec![
        with(
            tp("s4", &cb, "store", "order_placed", T0 + 3 * HOUR),
            &[
                ("cart_id", json!("k2")),
                ("order_id", json!("o2")),
                ("value", json!(30.0)),
            ],
        )
        .to_string(),
        tpl("s5", &fb, "store", "store_visit", T0 + 6 * HOUR),
    ];

    produce_split(&b, &topics, &split);
    let cfg = s.write_config("svc", &config_for(&s, &topics));
    let expected = expected_per_task(&s, "cart", &split, &cfg);

    let mut svc = s.start(&cfg, "cart");
    svc.wait_ready(Duration::from_secs(60));
    let outs = collect_outputs(&s, expected.len());
    check_outputs(&outs, &expected, &s.prefix, Copies::Forbidden);

    let got = distinct(&outs);
    let of = |ty: &str, c: &str| {
        got.iter()
            .copied()
            .filter(|e| e["type"] == ty && e["customer_id"] == c)
            .collect::<Vec<&Value>>()
    };
    let (ca, cb) = (ca.as_str(), cb.as_str());
    // The store order closed the web cart.
    assert!(
        of("cart_abandoned", ca).is_empty(),
        "the web cart closed by a store order was abandoned: {:?}",
        of("cart_abandoned", ca)
    );
    let attributed = of("order_attributed", ca);
    assert_eq!(attributed.len(), 1, "{attributed:?}");
    let models = &attributed[0]["models"];
    let mut channels: Vec<&str> = models["linear"]
        .as_object()
        .unwrap_or_else(|| panic!("no linear model in {}", attributed[0]))
        .keys()
        .map(String::as_str)
        .collect();
    channels.sort_unstable();
    assert_eq!(
        channels,
        ["email", "store", "web"],
        "attribution over the three topics: {}",
        attributed[0]
    );
    assert_eq!(models["first_touch"], json!({"email": 1.0}), "{models}");
    assert_eq!(models["last_touch"], json!({"store": 1.0}), "{models}");
    let last_engagement = of("engagement_score", ca)
        .into_iter()
        .max_by_key(|e| e["at"].as_i64())
        .expect("engagement scores for the first customer");
    assert_eq!(
        last_engagement["channels"],
        json!(["email", "store", "web"]),
        "{last_engagement}"
    );

    // The abandonment on the web, recovered by the store order.
    let abandoned = of("cart_abandoned", cb);
    assert_eq!(abandoned.len(), 1, "{abandoned:?}");
    assert_eq!(abandoned[0]["at"], json!(T0 + HOUR), "{}", abandoned[0]);
    assert_eq!(abandoned[0]["channel"], json!("web"), "{}", abandoned[0]);
    assert_eq!(abandoned[0]["cart_id"], json!("k2"), "{}", abandoned[0]);
    let recovered = of("cart_recovered", cb);
    assert_eq!(recovered.len(), 1, "{recovered:?}");
    assert_eq!(
        recovered[0]["abandoned_at"],
        json!(T0 + HOUR),
        "{}",
        recovered[0]
    );
    assert_eq!(recovered[0]["order_id"], json!("o2"), "{}", recovered[0]);
    assert_eq!(recovered[0]["at"], json!(T0 + 3 * HOUR), "{}", recovered[0]);

    let (status, _) = svc.sigterm(Duration::from_secs(20));
    assert!(status.success(), "{status}\n{}", svc.log_tail(20));
}

/// Two more cases of one state across topics, literally; the outputs also
/// equal replay task by task.
///
/// Task 0, contact fatigue counts every outbound message wherever it came
/// from: a customer is sent 6 direct mails (the `offline` input) and 5
/// emails (the `messaging` input), one an hour, alternating, the last a
/// direct mail. Neither topic alone comes near `contact_cap` (10); together
/// the 11th message takes the 7-day count above it: one `contact_fatigue`,
/// caused by the last direct mail, counting 11 messages of both channels.
///
/// Task 1, a campaign click converted in the store: customer C clicks an
/// email campaign (`messaging`) and orders in the store 5 h later
/// (`offline`), within `conversion_window` (24 h): no `survey_trigger` for
/// C once the click's timer has fired. Customer D clicks the same campaign
/// and never orders: D's `survey_trigger` is due at click + 24 h, which
/// shows the data carries the task's watermark past C's timer too (every
/// input ends at T0 + 31 h). C's order counts as the campaign's one
/// conversion and is attributed to the email click.
#[test]
#[ignore = "needs a Kafka broker: scripts/test starts one and runs it"]
fn cross_topic_contact_fatigue_and_campaign_conversion() {
    let Some(b) = broker("inputs-fatigue") else {
        return;
    };
    let s = Scenario::new(&b, "inputs-fatigue");
    let topics = create_inputs(&s, 2);
    let f = customer_on("fatigued", 0, 2);
    let (c, d) = (customer_on("converted", 1, 2), customer_on("clicked", 1, 2));
    let (f, c, d) = (f.as_str(), c.as_str(), d.as_str());
    let mut split = empty_split(2);

    // Task 0: 11 messages in 10 h, direct mail at even hours, email at odd.
    for i in 0..=10i64 {
        let channel = if i % 2 == 0 { "direct_mail" } else { "email" };
        split[source_of(channel)][0].push(tpl(
            &format!("sent{i}"),
            f,
            channel,
            "message_sent",
            T0 + i * HOUR,
        ));
    }
    assert_eq!(
        (split[1][0].len(), split[2][0].len()),
        (5, 6),
        "5 emails on the messaging input, 6 direct mails on the offline input"
    );

    // Task 1: two clicks on one campaign; only C orders, in the store.
    let click = |id: &str, customer: &str| {
        with(
            tp(id, customer, "email", "message_clicked", T0 + HOUR),
            &[("campaign_id", json!("autumn"))],
        )
        .to_string()
    };
    split[1][1] = vec![click("click-c", c), click("click-d", d)];
    split[2][1] = vec![with(
        tp("order-c", c, "store", "order_placed", T0 + 6 * HOUR),
        &[("order_id", json!("oc")), ("value", json!(70.0))],
    )
    .to_string()];

    // Every input partition ends at T0 + 31 h: the clicks' timers (T0 + 25 h)
    // are reached.
    close_inputs(&mut split, T0 + 31 * HOUR, "end");

    produce_split(&b, &topics, &split);
    let cfg = s.write_config("svc", &config_for(&s, &topics));
    let expected = expected_per_task(&s, "fatigue", &split, &cfg);

    let mut svc = s.start(&cfg, "fatigue");
    svc.wait_ready(Duration::from_secs(60));
    let outs = collect_outputs(&s, expected.len());
    check_outputs(&outs, &expected, &s.prefix, Copies::Forbidden);

    let got = distinct(&outs);
    let of = |ty: &str, who: &str| {
        got.iter()
            .copied()
            .filter(|e| e["type"] == ty && e["customer_id"] == who)
            .collect::<Vec<&Value>>()
    };

    // Fatigue: 11 messages of both topics, from the 11th (a direct mail).
    let fatigue = of("contact_fatigue", f);
    assert_eq!(
        fatigue.len(),
        1,
        "contact_fatigue of a customer sent 5 emails and 6 direct mails: {fatigue:?}"
    );
    assert_eq!(fatigue[0]["messages_7d"], json!(11), "{}", fatigue[0]);
    assert_eq!(
        fatigue[0]["channels"],
        json!(["direct_mail", "email"]),
        "{}",
        fatigue[0]
    );
    assert_eq!(fatigue[0]["at"], json!(T0 + 10 * HOUR), "{}", fatigue[0]);

    // The survey: none for C, whose store order converted the click; D's
    // at the click's due time.
    assert!(
        of("survey_trigger", c).is_empty(),
        "a survey for a click converted by a store order 5 h later: {:?}",
        of("survey_trigger", c)
    );
    let survey = of("survey_trigger", d);
    assert_eq!(survey.len(), 1, "{survey:?}");
    assert_eq!(
        survey[0]["at"],
        json!(T0 + HOUR + 24 * HOUR),
        "{}",
        survey[0]
    );
    assert_eq!(survey[0]["clicked_at"], json!(T0 + HOUR), "{}", survey[0]);
    assert_eq!(survey[0]["campaign_id"], json!("autumn"), "{}", survey[0]);
    assert_eq!(survey[0]["channel"], json!("email"), "{}", survey[0]);
    assert_eq!(survey[0]["survey"], json!("nps"), "{}", survey[0]);
    let attributed = of("order_attributed", c);
    assert_eq!(attributed.len(), 1, "{attributed:?}");
    assert_eq!(
        attributed[0]["models"]["last_touch"],
        json!({"email": 1.0}),
        "the store order is attributed to the email click: {}",
        attributed[0]
    );

    let metrics = svc.metrics();
    let email = [("channel", "email")];
    assert_eq!(
        metric_sum(&metrics, "touchstream_campaign_clicks_total", &email),
        2.0,
        "campaign clicks:\n{metrics}"
    );
    assert_eq!(
        metric_sum(&metrics, "touchstream_campaign_conversions_total", &email),
        1.0,
        "campaign conversions (C's store order):\n{metrics}"
    );

    let (status, _) = svc.sigterm(Duration::from_secs(20));
    assert!(status.success(), "{status}\n{}", svc.log_tail(20));
}

// ---------------------------------------------------------------------------
// 3. kill -9

/// At-least-once over three topics: a backlog, kill -9 mid-way, more input
/// written while the service is down, restart, kill -9 again, restart.
/// Nothing is lost and every re-sent copy is byte-identical (each run finds
/// a backlog, processed again in the same order). The first batch ends on
/// every input at one instant before the second batch starts, so that the
/// first run, caught up at its end, merges exactly as replay of the whole
/// does.
#[test]
#[ignore = "needs a Kafka broker: scripts/test starts one and runs it"]
fn several_topics_survive_kill_9() {
    let name = "inputs-kill9";
    let Some(b) = broker(name) else { return };
    let s = Scenario::new(&b, name);
    let topics = create_inputs(&s, 3);

    let first_lines = generate(&["--seed", "91", "--customers", "150", "--days", "4"]);
    let mut first = split_by_source(&first_lines, 3);
    let cut = max_ts(&first_lines) + HOUR;
    close_inputs(&mut first, cut, "cut");
    let second_start = (cut + HOUR).to_string();
    let second_lines = generate(&[
        "--seed",
        "92",
        "--customers",
        "150",
        "--days",
        "3",
        "--start",
        &second_start,
    ]);
    assert!(
        min_ts(&second_lines) > cut,
        "the second batch starts after the first one's end"
    );
    let mut second = split_by_source(&second_lines, 3);
    close_inputs(&mut second, max_ts(&second_lines) + HOUR, "end");
    let mut all = first.clone();
    append(&mut all, &second);

    let cfg = s.write_config("svc", &config_for(&s, &topics));
    let expected = expected_per_task(&s, "all", &all, &cfg);
    let before_cut = expected
        .iter()
        .filter(|e| e["at"].as_i64().expect("at") < cut - 5 * SEC)
        .count();
    assert!(
        before_cut > 200 && expected.len() - before_cut > 200,
        "{before_cut} of {} expected events before the cut",
        expected.len()
    );

    produce_split(&b, &topics, &first);
    // Static membership (as in kafka_crash): the restarted instance takes
    // its tasks back at once.
    let start = || {
        s.start_with_env(
            &cfg,
            "crash",
            &[(
                "TOUCHSTREAM_KAFKA__CONSUMER__GROUP_INSTANCE_ID",
                "inputs-crash-0",
            )],
        )
    };
    let mut svc = start();
    svc.wait_ready(Duration::from_secs(60));
    let mut out = s.outputs(false);

    let target = before_cut / 3;
    assert!(
        out.wait_distinct(target, Duration::from_secs(60)),
        "only {} of {target} distinct outputs before the first kill:\n{}",
        out.ids.len(),
        svc.log_tail(30)
    );
    assert!(
        svc.exited().is_none(),
        "the service died by itself:\n{}",
        svc.log_tail(30)
    );
    svc.kill9();
    eprintln!(
        "kill -9 at {} distinct outputs ({before_cut} before the cut, {} in all)",
        out.ids.len(),
        expected.len()
    );

    // More input while no instance runs: the next run finds a backlog.
    produce_split(&b, &topics, &second);
    svc = start();
    svc.wait_ready(Duration::from_secs(60));
    let target = before_cut + (expected.len() - before_cut) / 2;
    assert!(
        out.wait_distinct(target, Duration::from_secs(60)),
        "only {} of {target} distinct outputs before the second kill:\n{}",
        out.ids.len(),
        svc.log_tail(30)
    );
    assert!(
        svc.exited().is_none(),
        "the service died by itself:\n{}",
        svc.log_tail(30)
    );
    svc.kill9();
    eprintln!(
        "kill -9 at {} of {} distinct outputs",
        out.ids.len(),
        expected.len()
    );

    svc = start();
    svc.wait_ready(Duration::from_secs(60));
    out.settle(
        expected.len(),
        Duration::from_secs(60),
        Duration::from_secs(15),
    );
    out.poll_for(Duration::from_secs(2));
    let outs = decode_outputs(&out.records, &s.prefix, &OutputSchemas::defaults());
    let resent = check_outputs(&outs, &expected, &s.prefix, Copies::ByteIdentical);
    eprintln!(
        "{} output records, {} distinct, {resent} re-sent copies",
        outs.len(),
        expected.len()
    );
    let (status, _) = svc.sigterm(Duration::from_secs(20));
    assert!(status.success(), "{status}\n{}", svc.log_tail(20));
}

/// [`split_by_source`] for lines that may be bad: a line goes to the input
/// of its `channel` (the first input when it has none) and to the
/// partition its `customer_id` hashes to (0 when it has none).
fn split_any(lines: &[String], partitions: i32) -> Split {
    let mut out = empty_split(partitions);
    for l in lines {
        let v: Value = serde_json::from_str(l).unwrap_or(Value::Null);
        let s = v["channel"].as_str().map_or(0, source_of);
        let p = customer_of(l).map_or(0, |c| java_partition(c.as_bytes(), partitions));
        out[s][p as usize].push(l.clone());
    }
    out
}

fn max_good_ts(lines: &[String]) -> i64 {
    lines
        .iter()
        .filter_map(|l| good_ts(l))
        .max()
        .expect("good lines")
}

fn min_good_ts(lines: &[String]) -> i64 {
    lines
        .iter()
        .filter_map(|l| good_ts(l))
        .min()
        .expect("good lines")
}

/// The dead letters a read_committed consumer sees, by the place of their
/// source record (headers `source.topic`, `source.partition`,
/// `source.offset`), with their `error.reason`s; each carries its source
/// record's key and bytes.
fn committed_dead_letters(
    b: &str,
    dlq: &str,
    topics: &[String],
    split: &Split,
) -> BTreeMap<Place, Vec<String>> {
    let mut by_place: BTreeMap<Place, Vec<String>> = BTreeMap::new();
    for q in 0..partitions_of(b, dlq) {
        for r in read_partition(b, dlq, q, true) {
            let topic = r.header("source.topic").expect("header source.topic");
            let i = topics
                .iter()
                .position(|t| *t == topic)
                .unwrap_or_else(|| panic!("a dead letter from {topic}, not an input"));
            let num = |h: &str| -> i64 {
                r.header(h)
                    .unwrap_or_else(|| panic!("dead letter without {h}"))
                    .parse()
                    .unwrap_or_else(|e| panic!("header {h}: {e}"))
            };
            let (p, off) = (num("source.partition") as i32, num("source.offset"));
            let line = split[i]
                .get(p as usize)
                .and_then(|l| l.get(off as usize))
                .unwrap_or_else(|| panic!("a dead letter from {topic}[{p}]@{off}: no such record"));
            assert_eq!(
                r.value.as_deref(),
                Some(line.as_bytes()),
                "dead letter bytes of {topic}[{p}]@{off}"
            );
            assert_eq!(
                r.key_str(),
                customer_of(line),
                "dead letter key of {topic}[{p}]@{off}"
            );
            by_place
                .entry((i, p, off))
                .or_default()
                .push(r.header("error.reason").expect("header error.reason"));
        }
    }
    by_place
}

/// Exactly-once over three topics, with bad records among the good ones:
/// a backlog, kill -9 while the service works through it, more input
/// written while it is down, restart, kill -9 again while it works,
/// restart (static membership, one transactional id), as in
/// [`several_topics_survive_kill_9`]. `commit_interval = "200ms"`: the
/// backlog takes many transactions, so the kills land inside one and the
/// restarts resume from markers in the middle of the backlog. A
/// read_committed consumer sees every derived event of replay task by task
/// exactly once (no copy at all), in replay order per output partition,
/// and every dead letter exactly once; a read_uncommitted one shows that a
/// kill did abort derived events. The committed markers of every task go
/// forward one generation at a time, and the last names every input with
/// its whole partition.
#[test]
#[ignore = "needs a Kafka broker: scripts/test starts one and runs it"]
fn several_topics_exactly_once_survive_kill_9() {
    let name = "inputs-eos-kill9";
    let Some(b) = broker(name) else { return };
    let s = Scenario::new(&b, name);
    let topics = create_inputs(&s, 3);

    // A first batch that takes the service some seconds: the kills come
    // while it works.
    let bad = ["--bad-fraction", "0.004"];
    let first_lines = generate(
        &[
            &["--seed", "93", "--customers", "1000", "--days", "4"][..],
            &bad[..],
        ]
        .concat(),
    );
    let mut first = split_any(&first_lines, 3);
    let cut = max_good_ts(&first_lines) + HOUR;
    close_inputs(&mut first, cut, "cut");
    let second_start = (cut + HOUR).to_string();
    let second_lines = generate(
        &[
            &[
                "--seed",
                "94",
                "--customers",
                "150",
                "--days",
                "3",
                "--start",
                &second_start,
            ][..],
            &bad[..],
        ]
        .concat(),
    );
    assert!(
        min_good_ts(&second_lines) > cut,
        "the second batch starts after the first one's end"
    );
    let mut second = split_any(&second_lines, 3);
    close_inputs(&mut second, max_good_ts(&second_lines) + HOUR, "end");
    let mut all = first.clone();
    append(&mut all, &second);

    let mut config = config_for(&s, &topics);
    config.delivery = "exactly_once".into();
    config.commit_interval = "200ms".into();
    let cfg = s.write_config("svc", &config);
    let (expected, rejected) = replay_per_task(&s, "all", &all, &cfg);
    let bad_inputs: BTreeSet<usize> = rejected.keys().map(|(i, _, _)| *i).collect();
    assert!(
        rejected.len() >= 10 && bad_inputs.len() == 3,
        "bad records on every input: {rejected:?}"
    );
    let before_cut = expected
        .iter()
        .filter(|e| e["at"].as_i64().expect("at") < cut - 5 * SEC)
        .count();
    assert!(
        before_cut > 2_000 && expected.len() - before_cut > 200,
        "{before_cut} of {} expected events before the cut",
        expected.len()
    );
    eprintln!(
        "{} expected events ({before_cut} before the cut), {} dead letters",
        expected.len(),
        rejected.len()
    );

    produce_split(&b, &topics, &first);
    // The output topics as the service would create them (a partition per
    // task), so that both consumers read them before the service starts:
    // what it commits is seen at once, and the kill comes while it works.
    for t in s.output_topics() {
        create_topic(&b, &t, 3, &[]);
    }
    let mut out = s.outputs(true);
    let mut raw = s.outputs(false);
    // Static membership and one instance id (so one transactional id: the
    // restarted instance fences the killed one's open transaction).
    let start = || {
        s.start_with_env(
            &cfg,
            "eos-crash",
            &[(
                "TOUCHSTREAM_KAFKA__CONSUMER__GROUP_INSTANCE_ID",
                "inputs-eos-crash-0",
            )],
        )
    };
    let mut svc = start();
    svc.wait_ready(Duration::from_secs(60));

    let target = before_cut / 3;
    assert!(
        out.wait_distinct(target, Duration::from_secs(60)),
        "only {} of {target} committed distinct outputs before the first kill:\n{}",
        out.ids.len(),
        svc.log_tail(30)
    );
    assert!(
        svc.exited().is_none(),
        "the service died by itself:\n{}",
        svc.log_tail(30)
    );
    svc.kill9();
    eprintln!(
        "kill -9 at {} committed distinct outputs ({before_cut} before the cut, {} in all)",
        out.ids.len(),
        expected.len()
    );

    // More input while no instance runs: the next run finds a backlog.
    produce_split(&b, &topics, &second);
    svc = start();
    svc.wait_ready(Duration::from_secs(60));
    let target = (out.ids.len() + expected.len()) / 2;
    assert!(
        out.wait_distinct(target, Duration::from_secs(60)),
        "only {} of {target} committed distinct outputs before the second kill:\n{}",
        out.ids.len(),
        svc.log_tail(30)
    );
    assert!(
        svc.exited().is_none(),
        "the service died by itself:\n{}",
        svc.log_tail(30)
    );
    svc.kill9();
    eprintln!(
        "kill -9 at {} of {} committed distinct outputs",
        out.ids.len(),
        expected.len()
    );

    svc = start();
    svc.wait_ready(Duration::from_secs(60));
    out.settle(
        expected.len(),
        Duration::from_secs(60),
        Duration::from_secs(15),
    );
    assert!(
        svc.exited().is_none(),
        "the service died by itself:\n{}",
        svc.log_tail(30)
    );
    let (status, _) = svc.sigterm(Duration::from_secs(20));
    assert!(status.success(), "{status}\n{}", svc.log_tail(20));
    // Every transaction is committed or aborted now.
    out.poll_for(Duration::from_secs(3));
    raw.poll_for(Duration::from_secs(3));
    let outs = decode_outputs(&out.records, &s.prefix, &OutputSchemas::defaults());
    check_outputs(&outs, &expected, &s.prefix, Copies::Forbidden);
    assert_eq!(
        outs.len(),
        expected.len(),
        "read_committed output records vs replay's events"
    );
    check_order_per_partition(&outs, &expected);
    // What the kills aborted: written, never committed.
    let aborted = raw.records.len().saturating_sub(out.records.len());
    eprintln!(
        "{} output records written, {} committed: {aborted} aborted by the kills",
        raw.records.len(),
        out.records.len()
    );
    // Whether a kill landed inside a transaction depends on timing (on a
    // loaded machine every transaction may be committed before the kill):
    // said, not asserted. The restarts replay from the markers either way,
    // so the exactly-once checks above hold the product to its word.
    if aborted == 0 {
        eprintln!("note: no kill landed inside a transaction with derived events in it this time");
    }

    // Dead letters: each bad record once, with replay's reason.
    let want: BTreeMap<Place, Vec<String>> = rejected
        .iter()
        .map(|(place, reason)| (*place, vec![reason.clone()]))
        .collect();
    assert_eq!(
        committed_dead_letters(&b, &s.dlq, &topics, &all),
        want,
        "read_committed dead letters ((input, partition, offset) → reasons)"
    );

    // The committed changelog of every task: marker generations strictly
    // increase, and the last (the SIGTERM checkpoint) covers every input
    // partition to its end.
    let mk = marker_key(&topics[0]);
    for p in 0..3 {
        let markers: Vec<Marker> = read_partition(&b, &s.changelog, p, true)
            .iter()
            .filter(|r| r.key.as_deref() == Some(mk.as_slice()))
            .filter_map(|r| {
                r.value.as_deref().map(|v| {
                    Marker::decode(&topics[0], v, r.offset)
                        .unwrap_or_else(|e| panic!("task {p}: {e}"))
                })
            })
            .collect();
        let gens: Vec<u64> = markers.iter().map(|m| m.gen).collect();
        assert!(
            gens.len() > 1 && gens.windows(2).all(|w| w[0] < w[1]),
            "task {p}: committed marker generations {gens:?}"
        );
        let last = markers.last().expect("a marker");
        let covered: Vec<(String, i64)> = last
            .inputs
            .iter()
            .map(|i| (i.topic.clone(), i.offset))
            .collect();
        let ends: Vec<(String, i64)> = topics
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), all[i][p as usize].len() as i64))
            .collect();
        assert_eq!(covered, ends, "task {p}: the last committed marker");
    }
}

// ---------------------------------------------------------------------------
// 4. Two instances: whole tasks

/// The input partitions one instance's metrics show, as partition →
/// topics; asserts they form whole tasks (partition p of every input).
fn whole_tasks(who: &str, metrics: &str, topics: &[String]) -> BTreeSet<i32> {
    let all: BTreeSet<String> = topics.iter().cloned().collect();
    let held = held_partitions(metrics, "touchstream_input_idle", topics);
    for (p, t) in &held {
        assert_eq!(
            t, &all,
            "{who} holds partition {p} of {t:?} only: a task is partition {p} of every input\n{metrics}"
        );
    }
    held.keys().copied().collect()
}

/// Describes a consumer group every 50 ms with confluent-kafka's
/// `AdminClient.describe_consumer_groups` (the coordinator's view: each
/// member and the partitions it is assigned), one JSON line per answer
/// (`{"at", "state", "members": [{"member_id", "client_id", "partitions":
/// [[topic, partition], ...]}]}`, or `{"at", "error"}`), until its stdin
/// closes or `max_seconds` pass. Arguments: bootstrap, group, max_seconds.
const GROUP_WATCH_PY: &str = r#"
import json, sys, threading, time
from confluent_kafka.admin import AdminClient

bootstrap, group, max_seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
admin = AdminClient({"bootstrap.servers": bootstrap})
stop = threading.Event()

def watch_stdin():
    sys.stdin.read()
    stop.set()

threading.Thread(target=watch_stdin, daemon=True).start()
deadline = time.monotonic() + max_seconds
while not stop.is_set() and time.monotonic() < deadline:
    at = time.time()
    try:
        d = admin.describe_consumer_groups([group], request_timeout=5)[group].result()
        snap = {
            "at": at,
            "state": getattr(d.state, "name", str(d.state)),
            "members": [
                {
                    "member_id": m.member_id,
                    "client_id": m.client_id,
                    "partitions": [
                        [tp.topic, tp.partition]
                        for tp in (m.assignment.topic_partitions if m.assignment else [])
                    ],
                }
                for m in d.members
            ],
        }
    except Exception as e:
        snap = {"at": at, "error": repr(e)}
    print(json.dumps(snap), flush=True)
    stop.wait(0.05)
"#;

/// A Python process running [`GROUP_WATCH_PY`] on one group; its
/// snapshots as they come.
struct GroupWatch {
    child: Child,
    snaps: Arc<Mutex<Vec<Value>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl GroupWatch {
    fn start(b: &str, group: &str) -> GroupWatch {
        let python = python().expect("a Python with confluent-kafka");
        let mut child = Command::new(&python)
            .arg("-c")
            .arg(GROUP_WATCH_PY)
            .args([b, group, "120"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("run {python}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let snaps = Arc::new(Mutex::new(Vec::<Value>::new()));
        let reader = {
            let snaps = snaps.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    let v: Value = serde_json::from_str(&line)
                        .unwrap_or_else(|e| json!({ "error": format!("not JSON ({e}): {line}") }));
                    snaps.lock().unwrap().push(v);
                }
            })
        };
        GroupWatch {
            child,
            snaps,
            reader: Some(reader),
        }
    }

    fn snapshots(&self) -> Vec<Value> {
        self.snaps.lock().unwrap().clone()
    }

    /// Waits until `done` holds for the snapshots so far; panics after
    /// `timeout` saying `what`, or when the watcher has exited.
    fn wait_for(&mut self, timeout: Duration, what: &str, done: impl Fn(&[Value]) -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            let snaps = self.snapshots();
            if done(&snaps) {
                return;
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("the group watcher exited ({st}) before {what}");
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not within {timeout:?}; the last snapshots: {:?}",
                &snaps[snaps.len().saturating_sub(3)..]
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Closes the watcher's stdin (it stops), waits for it; every snapshot.
    fn stop(mut self) -> Vec<Value> {
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                break st;
            }
            assert!(
                Instant::now() < deadline,
                "the group watcher did not stop within 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        if let Some(r) = self.reader.take() {
            r.join().expect("the watcher's reader thread");
        }
        assert!(status.success(), "the group watcher failed: {status}");
        self.snapshots()
    }
}

impl Drop for GroupWatch {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The members of a group snapshot (None: the describe failed), each as
/// member id → (partition → input topics it is assigned); asserts that
/// every member is assigned input topics only and whole tasks, and that
/// no partition is assigned twice.
fn coordinator_tasks(
    snap: &Value,
    topics: &[String],
) -> Option<BTreeMap<String, BTreeMap<i32, BTreeSet<String>>>> {
    let members = snap["members"].as_array()?;
    let all: BTreeSet<String> = topics.iter().cloned().collect();
    let mut out = BTreeMap::new();
    let mut owner: BTreeMap<(String, i64), String> = BTreeMap::new();
    for m in members {
        let id = str_field(m, "member_id").to_string();
        let mut held: BTreeMap<i32, BTreeSet<String>> = BTreeMap::new();
        for tp in m["partitions"]
            .as_array()
            .unwrap_or_else(|| panic!("no partitions in {m}"))
        {
            let (t, p) = (tp[0].as_str(), tp[1].as_i64());
            let (Some(t), Some(p)) = (t, p) else {
                panic!("a topic-partition {tp} in {snap}");
            };
            assert!(
                all.contains(t),
                "the coordinator assigns {t}[{p}], not an input, to {id}: {snap}"
            );
            if let Some(other) = owner.insert((t.to_string(), p), id.clone()) {
                panic!("the coordinator assigns {t}[{p}] to {other} and {id}: {snap}");
            }
            held.entry(p as i32).or_default().insert(t.to_string());
        }
        for (p, t) in &held {
            assert_eq!(
                t, &all,
                "the coordinator reports member {id} ({}) holding partition {p} of {t:?} only, in state {}: a task is partition {p} of every input\n{snap}",
                m["client_id"], snap["state"]
            );
        }
        out.insert(id, held);
    }
    Some(out)
}

/// Two instances in one group over three 3-partition topics (an odd
/// count: `roundrobin` would then split tasks, `range` keeps them whole). From the
/// moment the second starts, every scrape of either instance's metrics
/// shows whole tasks; once the group has settled they hold disjoint sets of
/// tasks that cover all three; the outputs equal replay task by task
/// (at-least-once: re-sent copies byte-identical). The group coordinator
/// agrees: described every 50 ms from before the second instance joins
/// until the group has settled (A alone with every task first, then two
/// members with disjoint whole tasks covering all three), every member in
/// every description is assigned whole tasks, also in the descriptions
/// taken while the rebalance is in progress (the coordinator then still
/// reports the previous generation's assignments: A with every task, B
/// with none).
#[test]
#[ignore = "needs a Kafka broker: scripts/test starts one and runs it"]
fn rebalance_keeps_tasks_whole() {
    let name = "inputs-rebalance";
    let Some(b) = broker(name) else { return };
    let s = Scenario::new(&b, name);
    let topics = create_inputs(&s, 3);
    let lines = generate(&["--seed", "101", "--customers", "240", "--days", "5"]);
    let mut split = split_by_source(&lines, 3);
    close_inputs(&mut split, max_ts(&lines) + HOUR, "end");
    produce_split(&b, &topics, &split);
    let cfg = s.write_config("svc", &config_for(&s, &topics));
    let expected = expected_per_task(&s, "rebalance", &split, &cfg);

    let mut a = s.start(&cfg, "ra");
    a.wait_ready(Duration::from_secs(60));

    // The coordinator's view, described every 50 ms from before B joins
    // until the group has settled: every answer is checked to show whole
    // tasks, disjoint ([`coordinator_tasks`]).
    let every: BTreeSet<i32> = (0..3).collect();
    let tasks_of = |snap: &Value| coordinator_tasks(snap, &topics);
    let held_by = |m: &BTreeMap<String, BTreeMap<i32, BTreeSet<String>>>| {
        m.values()
            .map(|h| h.keys().copied().collect::<BTreeSet<i32>>())
            .collect::<Vec<_>>()
    };
    let mut watch = GroupWatch::start(&b, &s.group);
    watch.wait_for(
        Duration::from_secs(30),
        "the coordinator reports A alone, holding every task",
        |snaps| {
            snaps
                .iter()
                .filter_map(&tasks_of)
                .any(|m| held_by(&m) == [every.clone()])
        },
    );
    let mut bb = s.start(&cfg, "rb");

    // Scrape both until the group has settled: A and B hold disjoint,
    // non-empty sets of tasks covering all three.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut scrapes = 0;
    let (mut last_a, mut last_b) = (None, None);
    loop {
        let ha = a
            .get("/metrics")
            .filter(|(code, _)| *code == 200)
            .map(|(_, text)| whole_tasks("A", &text, &topics));
        let hb = bb
            .get("/metrics")
            .filter(|(code, _)| *code == 200)
            .map(|(_, text)| whole_tasks("B", &text, &topics));
        scrapes += usize::from(ha.is_some()) + usize::from(hb.is_some());
        if let (Some(pa), Some(pb)) = (&ha, &hb) {
            let union: BTreeSet<i32> = pa.union(pb).copied().collect();
            if !pa.is_empty() && !pb.is_empty() && pa.is_disjoint(pb) && union == every {
                eprintln!("settled after {scrapes} scrapes: A holds {pa:?}, B holds {pb:?}");
                break;
            }
        }
        if ha.is_some() {
            last_a = ha;
        }
        if hb.is_some() {
            last_b = hb;
        }
        assert!(a.exited().is_none(), "A exited:\n{}", a.log_tail(30));
        assert!(bb.exited().is_none(), "B exited:\n{}", bb.log_tail(30));
        assert!(
            Instant::now() < deadline,
            "the group did not settle on whole, disjoint tasks covering 0..3 within 60 s: A {last_a:?}, B {last_b:?}\nA:\n{}\nB:\n{}",
            a.log_tail(20),
            bb.log_tail(20)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    bb.wait_ready(Duration::from_secs(60));

    // The coordinator agrees once it has settled too; up to then, every
    // answer showed whole tasks.
    watch.wait_for(
        Duration::from_secs(30),
        "the coordinator reports two members holding disjoint whole tasks covering 0..3",
        |snaps| {
            snaps.iter().filter_map(&tasks_of).any(|m| {
                let held = held_by(&m);
                held.len() == 2
                    && held.iter().all(|h| !h.is_empty())
                    && held.iter().flatten().copied().collect::<BTreeSet<i32>>() == every
            })
        },
    );
    let snaps = watch.stop();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut failed = 0;
    for x in &snaps {
        match tasks_of(x) {
            Some(m) => {
                let key = format!(
                    "{} with {} member(s) holding {:?}",
                    x["state"].as_str().unwrap_or("?"),
                    m.len(),
                    held_by(&m)
                );
                *seen.entry(key).or_default() += 1;
            }
            None => failed += 1,
        }
    }
    eprintln!(
        "the coordinator described the group {} times ({failed} failed): {seen:#?}",
        snaps.len()
    );
    assert!(
        failed * 2 < snaps.len(),
        "{failed} of {} descriptions of the group failed, e.g. {:?}",
        snaps.len(),
        snaps.iter().find(|x| x.get("error").is_some())
    );

    let outs = collect_outputs(&s, expected.len());
    let resent = check_outputs(&outs, &expected, &s.prefix, Copies::ByteIdentical);
    eprintln!("{resent} re-sent copies across the rebalance");

    // Still whole and disjoint at the end; the per-input series and the
    // task series agree on each instance.
    let (ma, mb) = (a.metrics(), bb.metrics());
    let (pa, pb) = (
        whole_tasks("A", &ma, &topics),
        whole_tasks("B", &mb, &topics),
    );
    assert!(pa.is_disjoint(&pb), "A {pa:?} and B {pb:?} overlap");
    assert_eq!(
        pa.union(&pb).copied().collect::<BTreeSet<i32>>(),
        every,
        "A {pa:?} and B {pb:?} do not cover every task"
    );
    for (who, m, held) in [("A", &ma, &pa), ("B", &mb, &pb)] {
        assert_eq!(
            &held_tasks(m),
            held,
            "{who}: touchstream_task_watermark_seconds tasks"
        );
        assert_eq!(
            held_partitions(m, "touchstream_watermark_seconds", &topics),
            held_partitions(m, "touchstream_input_idle", &topics),
            "{who}: touchstream_watermark_seconds vs touchstream_input_idle"
        );
    }

    let (st, _) = bb.sigterm(Duration::from_secs(20));
    assert!(st.success(), "B: {st}\n{}", bb.log_tail(20));
    let (st, _) = a.sigterm(Duration::from_secs(20));
    assert!(st.success(), "A: {st}\n{}", a.log_tail(20));
}

// ---------------------------------------------------------------------------
// 5. Misrouted records

/// On a co-partitioned input, a record whose customer id hashes to
/// partition 0 is written on partition 1 (after 1,000 well-routed records,
/// so that a sample of the partition's first records still shows a
/// co-partitioned topic): task 1 processes it, and
/// `touchstream_misrouted_records_total{topic}` counts it, once.
#[test]
#[ignore = "needs a Kafka broker: scripts/test starts one and runs it"]
fn misrouted_records_are_counted_and_processed() {
    let name = "inputs-misrouted";
    let Some(b) = broker(name) else { return };
    let s = Scenario::new(&b, name);
    let topics = create_inputs(&s, 2);
    let mut split = empty_split(2);

    let good: Vec<String> = (0..20)
        .map(|k| customer_on(&format!("good{k}"), 1, 2))
        .collect();
    for i in 0..1_000i64 {
        split[0][1].push(tpl(
            &format!("g{i}"),
            &good[i as usize % good.len()],
            "web",
            "page_view",
            T0 + i * MIN,
        ));
    }
    let stray = customer_on("stray", 0, 2);
    let stray_at = T0 + 1_001 * MIN;
    split[0][1].push(tpl("stray-1", &stray, "web", "product_view", stray_at));
    split[1][1].push(tpl(
        "pm1",
        &good[0],
        "email",
        "message_opened",
        T0 + 500 * MIN,
    ));
    split[2][1].push(tpl("ps1", &good[1], "store", "store_visit", T0 + 600 * MIN));
    let quiet = customer_on("quiet", 0, 2);
    split[0][0].push(tpl("q1", &quiet, "web", "page_view", T0));
    split[1][0].push(tpl("q2", &quiet, "email", "message_opened", T0 + MIN));
    split[2][0].push(tpl("q3", &quiet, "store", "store_visit", T0 + 2 * MIN));

    produce_split(&b, &topics, &split);
    let (_, high) = watermarks(&b, &topics[0], 1);
    assert_eq!(
        high, 1_001,
        "web partition 1 holds the 1,000 records and the stray one"
    );
    let cfg = s.write_config("svc", &config_for(&s, &topics));
    let expected = expected_per_task(&s, "misrouted", &split, &cfg);
    assert!(
        expected
            .iter()
            .any(|e| e["customer_id"] == stray.as_str() && e["type"] == "engagement_score"),
        "replay of task 1 scores the stray customer"
    );

    let mut svc = s.start(&cfg, "misrouted");
    svc.wait_ready(Duration::from_secs(60));
    let deadline = Instant::now() + Duration::from_secs(60);
    while misrouted(&svc.metrics(), &topics[0]) < 1.0 {
        assert!(
            Instant::now() < deadline,
            "touchstream_misrouted_records_total{{topic=\"{}\"}} did not reach 1 within 60 s:\n{}",
            topics[0],
            svc.metrics()
        );
        std::thread::sleep(Duration::from_millis(250));
    }

    let outs = collect_outputs(&s, expected.len());
    check_outputs(&outs, &expected, &s.prefix, Copies::Forbidden);
    let got = distinct(&outs);
    let stray_events: Vec<&&Value> = got
        .iter()
        .filter(|e| e["customer_id"] == stray.as_str())
        .collect();
    assert!(
        stray_events
            .iter()
            .any(|e| e["type"] == "engagement_score" && e["at"] == json!(stray_at)),
        "the misrouted record was not processed: {stray_events:?}"
    );

    let metrics = svc.metrics();
    assert_eq!(
        misrouted(&metrics, &topics[0]),
        1.0,
        "misrouted records of {}",
        topics[0]
    );
    for t in &topics[1..] {
        assert_eq!(misrouted(&metrics, t), 0.0, "misrouted records of {t}");
    }
    let (status, _) = svc.sigterm(Duration::from_secs(20));
    assert!(status.success(), "{status}\n{}", svc.log_tail(20));
}

// ---------------------------------------------------------------------------
// 6. Inputs that are not co-partitioned

/// The first number in `line` after an occurrence of `name` and before
/// any of `others` (for each occurrence).
fn numbers_after(line: &str, name: &str, others: &[&str]) -> Vec<u64> {
    line.match_indices(name)
        .filter_map(|(i, _)| {
            let mut rest = &line[i + name.len()..];
            for o in others {
                if let Some(j) = rest.find(o) {
                    rest = &rest[..j];
                }
            }
            let digits: String = rest
                .chars()
                .skip_while(|c| !c.is_ascii_digit())
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse().ok()
        })
        .collect()
}

/// Inputs with 3 and 2 partitions under `kafka.repartition = "never"`:
/// the instance stays up and not ready, and logs an error saying the
/// inputs are not co-partitioned, naming each input with its partition
/// count, and the number of tasks.
#[test]
#[ignore = "needs a Kafka broker: scripts/test starts one and runs it"]
fn inputs_with_different_partition_counts_are_refused() {
    let name = "inputs-refused";
    let Some(b) = broker(name) else { return };
    let s = Scenario::new(&b, name);
    let web = format!("{}.web", s.id);
    let messaging = format!("{}.messaging", s.id);
    create_topic(&b, &web, 3, &[]);
    s.track(&web);
    create_topic(&b, &messaging, 2, &[]);
    s.track(&messaging);
    create_topic(&b, &s.changelog, 3, &[("cleanup.policy", "compact")]);
    let toml = config_for(&s, &[web.clone(), messaging.clone()])
        .toml()
        .replacen("[kafka]\n", "[kafka]\nrepartition = \"never\"\n", 1);
    assert!(toml.contains("repartition = \"never\""), "{toml}");
    let cfg = s.dir.path().join("svc.toml");
    std::fs::write(&cfg, toml).expect("write config");

    let mut svc = s.start(&cfg, "refused");
    svc.wait_log("not co-partitioned", Duration::from_secs(60));

    // Not ready, still up, for some seconds.
    let until = Instant::now() + Duration::from_secs(8);
    let mut answers = 0;
    while Instant::now() < until {
        assert!(
            svc.exited().is_none(),
            "the refusing instance exited:\n{}",
            svc.log_tail(30)
        );
        match svc.status("/readyz") {
            Some(200) => panic!(
                "ready with inputs that are not co-partitioned:\n{}",
                svc.log_tail(30)
            ),
            Some(_) => answers += 1,
            None => {}
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(answers > 0, "/readyz never answered:\n{}", svc.log_tail(30));

    let log = svc.log_text();
    let said: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("not co-partitioned"))
        .collect();
    let names_all = |l: &str| {
        l.contains("ERROR")
            && numbers_after(l, &web, &[messaging.as_str()]).contains(&3)
            && numbers_after(l, &messaging, &[web.as_str()]).contains(&2)
            && l.to_lowercase().contains("task")
    };
    assert!(
        said.iter().any(|l| names_all(l)),
        "no ERROR line says the inputs are not co-partitioned, naming `{web}` with 3 partitions, `{messaging}` with 2 and the number of tasks:\n{}",
        said.join("\n")
    );
}

// ---------------------------------------------------------------------------
// 7. Live: a lagging input holds the task, a quiet one only until idle

/// A thread that produces, every `period`, the JSON lines `make(k)` gives
/// for its k-th turn (keyed by customer id, partition 0 of one topic),
/// until stopped: live input, paced by the wall clock.
struct Ticker {
    stop: Arc<AtomicBool>,
    turns: Arc<AtomicUsize>,
    last_ack: Arc<Mutex<Option<Instant>>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Ticker {
    fn start(
        b: &str,
        topic: &str,
        period: Duration,
        mut make: impl FnMut(usize) -> Vec<String> + Send + 'static,
    ) -> Ticker {
        let stop = Arc::new(AtomicBool::new(false));
        let turns = Arc::new(AtomicUsize::new(0));
        let last_ack = Arc::new(Mutex::new(None));
        let handle = {
            let (b, topic) = (b.to_string(), topic.to_string());
            let (stop, turns, last_ack) = (stop.clone(), turns.clone(), last_ack.clone());
            std::thread::spawn(move || {
                let producer = TestProducer::new(&b);
                let mut k = 0;
                while !stop.load(Ordering::SeqCst) {
                    for r in json_records(&make(k), 0) {
                        producer.send(&topic, &r);
                    }
                    producer.flush();
                    *last_ack.lock().unwrap() = Some(Instant::now());
                    k += 1;
                    turns.store(k, Ordering::SeqCst);
                    std::thread::sleep(period);
                }
            })
        };
        Ticker {
            stop,
            turns,
            last_ack,
            handle: Some(handle),
        }
    }

    /// Turns produced and acknowledged so far.
    fn turns(&self) -> usize {
        self.turns.load(Ordering::SeqCst)
    }

    /// Stops the thread; returns when its last record was acknowledged.
    fn stop(&mut self) -> Instant {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            h.join().expect("the producing thread failed");
        }
        let last = *self.last_ack.lock().unwrap();
        last.expect("the producing thread produced nothing")
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// The value of the one sample of `name` whose labels include `labels`.
fn sample(metrics: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let found: Vec<f64> = metric_samples(metrics, name)
        .into_iter()
        .filter(|(l, _)| {
            labels
                .iter()
                .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, v)| v)
        .collect();
    assert!(found.len() <= 1, "{name} {labels:?}: {found:?}");
    found.first().copied()
}

/// The distinct derived events collected so far, decoded.
fn events_so_far(out: &mut Collector, prefix: &str) -> Vec<Value> {
    out.poll_for(Duration::from_millis(300));
    let outs = decode_outputs(&out.records, prefix, &OutputSchemas::defaults());
    distinct(&outs).into_iter().cloned().collect()
}

fn events_of<'a>(events: &'a [Value], kind: &str, customer: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["type"] == kind && e["customer_id"] == customer)
        .collect()
}

/// Live traffic on two inputs of one task (`web`, `offline`; one partition
/// each), `idle_timeout = "3s"`, `cart_timeout = "30m"`, event times two
/// days back.
///
/// Part A, a lagging input: customer A puts a cart on the web at T, then
/// the web runs its event time forward 15 min per turn (every 500 ms) to
/// T+5h and on, while the offline input keeps receiving records (every
/// 500 ms: never idle) whose event times stay around T. The task's
/// watermark stays with the offline input (below T+30min), so A's cart is
/// not abandoned; then A's order arrives on the offline input at T+10min:
/// it closes the web cart and is attributed to the web touch. A's cart is
/// never abandoned, also later when the task's watermark has moved hours on.
///
/// Part B, a quiet input: nothing more is produced to the offline input,
/// while the web goes on; customer B puts a cart on the web, and within
/// `idle_timeout` + some seconds of the offline input's last record B's
/// cart is abandoned (at its last activity + 30 min), not before that
/// input could be idle; `touchstream_input_idle` shows the offline input
/// idle and the web not.
#[test]
#[ignore = "needs a Kafka broker: scripts/test starts one and runs it"]
fn a_lagging_input_holds_cart_timers_and_a_quiet_one_does_not_hold_beyond_idle_timeout() {
    let name = "inputs-live";
    let Some(b) = broker(name) else { return };
    let s = Scenario::new(&b, name);
    let (web, offline) = (format!("{}.web", s.id), format!("{}.offline", s.id));
    for t in [&web, &offline] {
        create_topic(&b, t, 1, &[]);
        s.track(t);
    }
    create_topic(&b, &s.changelog, 1, &[("cleanup.policy", "compact")]);
    let topics = [web.clone(), offline.clone()];
    let mut config = config_for(&s, &topics);
    config.idle_timeout = "3s".into();
    config.extra = "[signals]\ncart_timeout = \"30m\"\n".into();
    let cfg = s.write_config("svc", &config);
    let idle_timeout = Duration::from_secs(3);
    let cart_timeout = 30 * MIN;

    // Well within `max_future` and `state_ttl`; every record of an input
    // no older than the task's watermark − `allowed_lateness` (1 h).
    let t = (wall_ms() - 2 * DAY) / MIN * MIN;
    let (a, cb) = ("cust-a", "cust-b");

    let mut svc = s.start(&cfg, "live");
    svc.wait_ready(Duration::from_secs(60));
    let mut out = s.outputs(false);
    let labels = |topic: &str| [("topic", topic.to_string()), ("partition", "0".into())];
    let input_sample = |m: &str, family: &str, topic: &str| {
        let l = labels(topic);
        sample(m, family, &[(l[0].0, &l[0].1), (l[1].0, &l[1].1)])
    };

    // The offline input: a store visit per turn at T − 10 min + 2 s·k;
    // A's order at T+10min once asked for, the visits then from T+10min on.
    let order_now = Arc::new(AtomicBool::new(false));
    let order_sent = Arc::new(AtomicBool::new(false));
    let mut store = {
        let (order_now, order_sent) = (order_now.clone(), order_sent.clone());
        Ticker::start(&b, &offline, Duration::from_millis(500), move |k| {
            let k64 = k as i64;
            let mut lines = Vec::new();
            if order_now.load(Ordering::SeqCst) && !order_sent.load(Ordering::SeqCst) {
                lines.push(
                    with(
                        tp("order-a", a, "store", "order_placed", t + 10 * MIN),
                        &[("order_id", json!("oa")), ("value", json!(40.0))],
                    )
                    .to_string(),
                );
                order_sent.store(true, Ordering::SeqCst);
            }
            let at = if order_sent.load(Ordering::SeqCst) {
                t + 10 * MIN + k64 * SEC
            } else {
                t - 10 * MIN + 2 * k64 * SEC
            };
            lines.push(tpl(
                &format!("s{k}"),
                &format!("store-{}", k % 4),
                "store",
                "store_visit",
                at,
            ));
            lines
        })
    };
    // The task has taken a record of the offline input.
    scrape_until(
        &mut svc,
        Duration::from_secs(30),
        "a watermark for the offline input",
        |m| input_sample(m, "touchstream_watermark_seconds", &offline).is_some(),
    );

    // The web input: A's cart at T first, then a page view per turn at
    // T + 15 min·(k+1); B's cart once asked for, 1 min after the web's
    // latest event time then.
    let cart_b_now = Arc::new(AtomicBool::new(false));
    let cart_b_at = Arc::new(AtomicI64::new(0));
    let mut site = {
        let (cart_b_now, cart_b_at) = (cart_b_now.clone(), cart_b_at.clone());
        Ticker::start(&b, &web, Duration::from_millis(500), move |k| {
            let w = t + (k as i64 + 1) * 15 * MIN;
            let mut lines = Vec::new();
            if k == 0 {
                lines.push(
                    with(
                        tp("cart-a", a, "web", "add_to_cart", t),
                        &[("cart_id", json!("ka")), ("value", json!(40.0))],
                    )
                    .to_string(),
                );
            }
            if cart_b_now.load(Ordering::SeqCst) && cart_b_at.load(Ordering::SeqCst) == 0 {
                let x = w - 14 * MIN;
                lines.push(
                    with(
                        tp("cart-b", cb, "web", "add_to_cart", x),
                        &[("cart_id", json!("kb")), ("value", json!(25.0))],
                    )
                    .to_string(),
                );
                cart_b_at.store(x, Ordering::SeqCst);
            }
            lines.push(tpl(
                &format!("w{k}"),
                &format!("web-{}", k % 4),
                "web",
                "page_view",
                w,
            ));
            lines
        })
    };

    // Part A. The web's watermark passes T+5h; the task's stays with the
    // lagging offline input, short of A's cart timer at T+30min.
    let five_hours = (t + 5 * HOUR - 5 * SEC) as f64 / 1000.0;
    let m = scrape_until(
        &mut svc,
        Duration::from_secs(40),
        "the web input's watermark at T+5h",
        |m| input_sample(m, "touchstream_watermark_seconds", &web).is_some_and(|w| w >= five_hours),
    );
    let task_wm = sample(&m, "touchstream_task_watermark_seconds", &[("task", "0")])
        .unwrap_or_else(|| panic!("no task watermark:\n{m}"));
    let offline_wm = input_sample(&m, "touchstream_watermark_seconds", &offline);
    eprintln!(
        "web at T+5h (turn {}): task watermark T{:+.0}s, offline input T{:+.0}s",
        site.turns(),
        task_wm - t as f64 / 1000.0,
        offline_wm.unwrap_or(f64::NAN) - t as f64 / 1000.0
    );
    assert!(
        task_wm < (t + cart_timeout) as f64 / 1000.0,
        "the web ran the task's watermark to {task_wm} past A's cart timer at T+30min ({}) while the offline input, not idle, lagged at {offline_wm:?}:\n{m}",
        (t + cart_timeout) as f64 / 1000.0
    );
    assert_eq!(
        input_sample(&m, "touchstream_input_idle", &offline),
        Some(0.0),
        "the offline input, receiving every 500 ms, is idle:\n{m}"
    );
    let so_far = events_so_far(&mut out, &s.prefix);
    assert!(
        events_of(&so_far, "cart_abandoned", a).is_empty(),
        "A's cart was abandoned while the offline input lagged at T: {:?}",
        events_of(&so_far, "cart_abandoned", a)
    );

    // A's order in the store, 10 min after the web cart.
    order_now.store(true, Ordering::SeqCst);
    assert!(
        out.wait_until(Duration::from_secs(30), |c| {
            let outs = decode_outputs(&c.records, &s.prefix, &OutputSchemas::defaults());
            outs.iter()
                .any(|o| o.json["type"] == "order_attributed" && o.json["customer_id"] == a)
        }),
        "no order_attributed for A's store order within 30 s:\n{}",
        svc.log_tail(20)
    );

    // Part B. The offline input goes quiet; the web goes on, with B's cart.
    cart_b_now.store(true, Ordering::SeqCst);
    let quiet_since = store.stop();
    let deadline = quiet_since + idle_timeout + Duration::from_secs(20);
    let abandoned_b = loop {
        let events = events_so_far(&mut out, &s.prefix);
        let found: Vec<Value> = events_of(&events, "cart_abandoned", cb)
            .into_iter()
            .cloned()
            .collect();
        if !found.is_empty() {
            break found;
        }
        assert!(
            Instant::now() < deadline,
            "B's web cart (at T{:+}min) was not abandoned within idle_timeout + 20 s of the offline input's last record, the web at turn {}:\n{}\n{}",
            (cart_b_at.load(Ordering::SeqCst) - t) / MIN,
            site.turns(),
            svc.metrics(),
            svc.log_tail(20)
        );
    };
    let waited = quiet_since.elapsed();
    eprintln!(
        "B's cart abandoned {waited:?} after the offline input's last record (idle_timeout {idle_timeout:?})"
    );
    // Not before the quiet input could be idle: until then it holds the
    // task's watermark where its last record put it (T+10min and a few s).
    assert!(
        waited + Duration::from_secs(1) >= idle_timeout,
        "B's cart was abandoned {waited:?} after the offline input's last record, before it could be idle ({idle_timeout:?})"
    );
    let x = cart_b_at.load(Ordering::SeqCst);
    assert!(x > 0, "B's cart was produced");
    assert_eq!(abandoned_b.len(), 1, "{abandoned_b:?}");
    let ab = &abandoned_b[0];
    assert_eq!(ab["at"], json!(x + cart_timeout), "{ab}");
    assert_eq!(ab["last_activity_at"], json!(x), "{ab}");
    assert_eq!(ab["cart_id"], json!("kb"), "{ab}");
    assert_eq!(ab["channel"], json!("web"), "{ab}");

    let m = scrape_until(
        &mut svc,
        Duration::from_secs(20),
        "touchstream_input_idle of the offline input at 1",
        |m| input_sample(m, "touchstream_input_idle", &offline) == Some(1.0),
    );
    assert_eq!(
        input_sample(&m, "touchstream_input_idle", &web),
        Some(0.0),
        "the web input, still receiving, is idle:\n{m}"
    );
    let task_wm = sample(&m, "touchstream_task_watermark_seconds", &[("task", "0")])
        .unwrap_or_else(|| panic!("no task watermark:\n{m}"));
    assert!(
        task_wm >= (x + cart_timeout) as f64 / 1000.0,
        "task watermark {task_wm} with the offline input idle:\n{m}"
    );
    assert_eq!(
        metric_sum(&m, "touchstream_records_rejected_total", &[]),
        0.0,
        "records rejected:\n{m}"
    );

    // A: the store order closed the web cart for good (the task's
    // watermark is now hours past T+30min) and is attributed to the web.
    let events = events_so_far(&mut out, &s.prefix);
    assert!(
        events_of(&events, "cart_abandoned", a).is_empty(),
        "A's web cart, closed by the store order, was abandoned: {:?}",
        events_of(&events, "cart_abandoned", a)
    );
    assert!(
        events_of(&events, "cart_recovered", a).is_empty(),
        "{:?}",
        events_of(&events, "cart_recovered", a)
    );
    let attributed = events_of(&events, "order_attributed", a);
    assert_eq!(attributed.len(), 1, "{attributed:?}");
    let oa = attributed[0];
    assert_eq!(oa["at"], json!(t + 10 * MIN), "{oa}");
    assert_eq!(oa["order_id"], json!("oa"), "{oa}");
    assert_eq!(oa["models"]["last_touch"], json!({"web": 1.0}), "{oa}");

    let (status, _) = svc.sigterm(Duration::from_secs(20));
    assert!(status.success(), "{status}\n{}", svc.log_tail(20));
    site.stop();
}

/// SPEC 3: a partition that receives nothing for `idle_timeout` advances
/// its watermark with the wall clock, so a cart is abandoned without new
/// input — with `at` the due time, as the engine computes it.
#[test]
#[ignore = "needs a Kafka broker: scripts/test starts one and runs it"]
fn idle_partition_abandons_cart_on_wall_clock() {
    let Some(b) = broker("idle") else { return };
    let s = Scenario::new(&b, "idle");
    s.create_input(1);
    let now = wall_ms();
    let view = Touchpoint::new(
        "i1",
        "idle-c",
        Channel::Web,
        TouchType::ProductView,
        now - 3 * HOUR,
    );
    let mut add = Touchpoint::new(
        "i2",
        "idle-c",
        Channel::Web,
        TouchType::AddToCart,
        now - 2 * HOUR,
    );
    add.value = Some(42.0);
    add.currency = Some("USD".into());
    add.cart_id = Some("cart-idle".into());
    let lines = vec![json_line(&view), json_line(&add)];

    let mut cfg = s.config();
    cfg.idle_timeout = "2s".into();
    cfg.extra = "[signals]\ncart_timeout = \"1h\"\n".into();
    let cfg = s.write_config("svc", &cfg);
    let expected = replay(&lines, &cfg);
    assert!(
        expected
            .events
            .iter()
            .all(|e| e["type"] != "cart_abandoned"),
        "replay alone must not abandon the cart"
    );

    // What the engine emits once the watermark follows the wall clock.
    let text = std::fs::read_to_string(&cfg).unwrap();
    let ecfg = Arc::new(
        Config::from_parts("t", &text, &[])
            .unwrap()
            .engine()
            .unwrap(),
    );
    let mut engine = Engine::new(ecfg);
    let mut evs = Vec::new();
    engine.on_touchpoint(&view, &mut evs);
    engine.on_touchpoint(&add, &mut evs);
    let before = evs.len();
    engine.advance_watermark(now - 5 * SEC, &mut evs);
    let fired: Vec<Value> = evs[before..]
        .iter()
        .map(|e| serde_json::to_value(e).unwrap())
        .collect();
    assert_eq!(fired.len(), 1, "{fired:?}");
    let abandoned = fired[0].clone();
    assert_eq!(abandoned["type"], "cart_abandoned");
    assert_eq!(abandoned["at"], json!(add.timestamp + HOUR));
    assert_eq!(abandoned["last_activity_at"], json!(add.timestamp));
    assert_eq!(abandoned["cart_value"], json!(42.0));

    let mut svc = s.start(&cfg, "idle");
    svc.wait_ready(Duration::from_secs(60));
    let started = std::time::Instant::now();
    produce(&b, &s.input, &json_records(&lines, 0));
    let mut out = s.outputs(true);
    let mut all = expected.events.clone();
    all.push(abandoned.clone());
    if !out.settle(all.len(), Duration::from_secs(30), Duration::from_secs(15)) {
        eprintln!(
            "no cart_abandoned on an idle partition ({} of {} events):\n{}",
            out.ids.len(),
            all.len(),
            svc.log_tail(20)
        );
    }
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "fired before idle_timeout"
    );
    out.poll_for(Duration::from_secs(1));
    let outs = decode_outputs(&out.records, &s.prefix, &OutputSchemas::defaults());
    check_outputs(&outs, &all, &s.prefix, Copies::Forbidden);
    let (st, _) = svc.sigterm(Duration::from_secs(20));
    assert!(st.success());
}

// ---------------------------------------------------------------------------
// 8. State of the previous changelog format

/// A changelog value of this build (format 4) as the previous,
/// single-input build wrote it (format 2): a state record is the
/// customer's JSON with `"format": 2`; a marker `{format: 4, gen, meta,
/// inputs: [{topic, offset, latest}]}` becomes `{format: 2, gen, offset,
/// meta}` with the offset of its one input.
fn to_format_2(input: &str, is_marker: bool, value: &[u8]) -> Vec<u8> {
    if !is_marker {
        let r = decode_state(value, 0).expect("a state record of this build");
        assert_eq!(value[..2], [0, 4], "written by this build in binary");
        return encode_state_json(&r, 2);
    }
    let v: Value = serde_json::from_slice(value).expect("a marker is JSON");
    assert_eq!(v["format"], json!(4), "written by this build: {v}");
    let old = {
        let inputs = v["inputs"]
            .as_array()
            .unwrap_or_else(|| panic!("a marker without inputs: {v}"));
        assert_eq!(inputs.len(), 1, "a single-input marker: {v}");
        assert_eq!(inputs[0]["topic"], json!(input), "{v}");
        assert!(inputs[0]["offset"].is_i64(), "{v}");
        json!({
            "format": 2,
            "gen": v["gen"],
            "offset": inputs[0]["offset"],
            "meta": v["meta"],
        })
    };
    old.to_string().into_bytes()
}

/// The `customers=` of the service's "Task restored." log lines.
fn restored_customers(log: &str) -> Vec<u64> {
    log.lines()
        .filter(|l| l.contains("Task restored."))
        .flat_map(|l| numbers_after(l, "customers=", &[]))
        .collect()
}

/// A single-input deployment (one partition, at-least-once) runs the first
/// half of the input and stops (SIGTERM: a clean checkpoint). Its changelog
/// is copied, record by record (same keys, same order, tombstones kept),
/// into a new compacted topic in the previous layout (format 2: markers
/// with the one input's `offset`). The second half is produced, and the
/// service starts on the copy, same group and input: it restores the old
/// state (customers > 0, resuming after the marker's offset), and the
/// derived events of both runs together are replay's of the whole input,
/// each once; the second run's own events are replay's of the second half
/// given the first. Its checkpoint then writes format-4 markers, and the
/// migrated changelog restores the uninterrupted engine's state.
#[test]
#[ignore = "needs a Kafka broker: scripts/test starts one and runs it"]
fn a_changelog_of_the_previous_format_restores_and_the_run_goes_on_equal() {
    let name = "inputs-format2";
    let Some(b) = broker(name) else { return };
    let s = Scenario::new(&b, name);
    s.create_input(1);
    let lines = generate(&["--seed", "71", "--customers", "40", "--days", "20"]);
    let (first, second) = lines.split_at(lines.len() / 2);
    let mut config = s.config();
    // Several generations in run 1: both slots of customers, superseded
    // records, in the copy.
    config.commit_interval = "300ms".into();
    let cfg = s.write_config("svc", &config);
    let expected_first = replay(first, &cfg);
    let expected = replay(&lines, &cfg);
    assert!(
        expected.rejected.is_empty(),
        "replay rejected {:?}",
        expected.rejected
    );

    // Run 1: the first half, produced in pieces while it runs, then
    // SIGTERM.
    let mut svc = s.start(&cfg, "v3");
    svc.wait_ready(Duration::from_secs(60));
    let producer = produce_paced(
        &b,
        &s.input,
        json_records(first, 0),
        6,
        Duration::from_millis(400),
    );
    let mut out = s.outputs(false);
    assert!(
        out.wait_distinct(expected_first.events.len(), Duration::from_secs(60)),
        "run 1: {} of {} distinct outputs",
        out.ids.len(),
        expected_first.events.len()
    );
    let consumed = |m: &str| {
        metric_sum(
            m,
            "touchstream_records_consumed_total",
            &[("topic", s.input.as_str())],
        )
    };
    scrape_until(
        &mut svc,
        Duration::from_secs(30),
        "run 1 consumed the first half",
        |m| consumed(m) >= first.len() as f64,
    );
    producer.join().expect("producer");
    let (st, _) = svc.sigterm(Duration::from_secs(20));
    assert!(st.success(), "{st}\n{}", svc.log_tail(20));
    out.poll_for(Duration::from_secs(2));
    let run1 = out.records.len();
    let run1_ids = out.ids.clone();

    // Its changelog, in format 4 (the marker covers the first half) ...
    let cl = read_partition(&b, &s.changelog, 0, false);
    let mk = marker_key(&s.input);
    let markers = cl
        .iter()
        .filter(|r| r.key.as_deref() == Some(mk.as_slice()) && r.value.is_some())
        .count();
    assert!(markers > 1, "{markers} marker(s) after run 1");
    let old_state = restore_changelog(&b, &s.changelog, 0, &s.input, false);
    assert_eq!(
        old_state.marker.as_ref().and_then(|m| m.offset(&s.input)),
        Some(first.len() as i64),
        "run 1's last marker"
    );
    assert!(!old_state.saved.is_empty(), "run 1 persisted no customer");

    // ... copied into a new changelog in format 2.
    let old_changelog = format!("{}.changelog-format2", s.id);
    create_topic(&b, &old_changelog, 1, &[("cleanup.policy", "compact")]);
    s.track(&old_changelog);
    let copy: Vec<In> = cl
        .iter()
        .map(|r| In {
            key: r.key.clone(),
            value: r
                .value
                .as_deref()
                .map(|v| to_format_2(&s.input, r.key.as_deref() == Some(mk.as_slice()), v)),
            partition: 0,
        })
        .collect();
    produce(&b, &old_changelog, &copy);
    let copied = read_partition(&b, &old_changelog, 0, false);
    assert_eq!(copied.len(), cl.len(), "records copied");
    assert!(
        copied
            .iter()
            .filter_map(|r| r.value.as_deref())
            .all(|v| String::from_utf8_lossy(v).contains("\"format\":2")),
        "the copy is all format 2"
    );
    eprintln!(
        "changelog of run 1: {} records, {markers} markers, {} customers; copied in format 2",
        cl.len(),
        old_state.saved.len()
    );

    // Run 2: the second half, on the format-2 changelog.
    produce(&b, &s.input, &json_records(second, 0));
    config.changelog = old_changelog.clone();
    let cfg2 = s.write_config("svc-format2", &config);
    let mut svc = s.start(&cfg2, "v2");
    svc.wait_ready(Duration::from_secs(60));
    let log = svc.log_text();
    let restored = restored_customers(&log);
    assert_eq!(
        restored,
        vec![old_state.saved.len() as u64],
        "customers= of \"Task restored.\" (run 1 persisted {}):\n{}",
        old_state.saved.len(),
        svc.log_tail(20)
    );
    let resume = format!("Some({})", first.len());
    assert!(
        log.lines()
            .any(|l| l.contains("Task restored.") && l.contains(&resume)),
        "the task does not resume the input at {resume}:\n{}",
        svc.log_tail(20)
    );
    out.settle(
        expected.events.len(),
        Duration::from_secs(60),
        Duration::from_secs(15),
    );
    out.poll_for(Duration::from_secs(2));
    let (st, _) = svc.sigterm(Duration::from_secs(20));
    assert!(st.success(), "{st}\n{}", svc.log_tail(20));

    // Both runs together: replay of everything, each event once (the clean
    // checkpoint leaves nothing to send again), in order.
    let outs = decode_outputs(&out.records, &s.prefix, &OutputSchemas::defaults());
    check_outputs(&outs, &expected.events, &s.prefix, Copies::Forbidden);
    check_order_per_partition(&outs, &expected.events);
    // Run 2's own events: replay's of the second half given the first.
    let run2_ids: BTreeSet<String> = out.records[run1..]
        .iter()
        .filter_map(|r| r.header("event_id"))
        .collect();
    let want2: BTreeSet<String> = expected
        .events
        .iter()
        .map(|e| e["event_id"].as_str().expect("event_id").to_string())
        .filter(|id| !run1_ids.contains(id))
        .collect();
    assert!(want2.len() > 100, "only {} events after run 1", want2.len());
    assert_eq!(
        run2_ids, want2,
        "run 2's events vs replay of the whole minus run 1's"
    );

    // Run 2 checkpointed in the current format: its markers are format 4
    // and name the input; the migrated changelog restores the state of an
    // uninterrupted run over the whole input.
    let after = read_partition(&b, &old_changelog, 0, false);
    let new_markers: Vec<Value> = after[copied.len()..]
        .iter()
        .filter(|r| r.key.as_deref() == Some(mk.as_slice()))
        .filter_map(|r| r.value.as_deref())
        .map(|v| serde_json::from_slice(v).expect("marker JSON"))
        .collect();
    let last = new_markers
        .last()
        .unwrap_or_else(|| panic!("run 2 wrote no marker"));
    assert_eq!(last["format"], json!(4), "{last}");
    assert_eq!(
        last["inputs"][0]["topic"],
        json!(s.input),
        "the last marker of run 2: {last}"
    );
    assert_eq!(
        last["inputs"][0]["offset"],
        json!(lines.len()),
        "the last marker of run 2: {last}"
    );
    let restored = restore_changelog(&b, &old_changelog, 0, &s.input, false);
    assert_state_equal(&restored, &engine_after(&lines, &cfg), lines.len() as i64);
}

// ---------------------------------------------------------------------------
// 9. An input topic added to a deployment

/// The lines of `source` whose event time `keep` accepts, in their order.
fn lines_of(lines: &[String], source: usize, keep: impl Fn(i64) -> bool) -> Vec<String> {
    lines
        .iter()
        .filter(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"));
            source_of(str_field(&v, "channel")) == source && keep(ts_of(l))
        })
        .cloned()
        .collect()
}

/// A deployment with one input topic, `web` (one partition), runs the
/// first part of generated web/app traffic and stops (SIGTERM: a clean
/// checkpoint whose marker names `web` only). Then a topic `offline` is
/// created and filled with the same customers' store, call-centre, ...
/// records, all after the first part, more web records are produced, and
/// the service restarts with `input_topics = [web, offline]` (web first:
/// the changelog is keyed by it), same group and changelog. It restores
/// the state (customers > 0), resumes `web` after the marker and reads
/// `offline`, which the marker does not name, from its beginning (no
/// committed offset; `auto_offset_reset` earliest).
///
/// Both runs together emit exactly `touchstream replay web offline` (each
/// file in produce order), each event once, and the first run exactly
/// replay of its part of `web`. Exact, by SPEC 8: every offline record is
/// later than every first-part web record, so in the replay the offline
/// file's first record, its input's next record, keeps that input's
/// watermark above the web's throughout the first part: the task's
/// watermark there is the web's alone, as in the single-input run, and no
/// record is taken from `offline` before the first part has ended. After
/// it, the replay fires the timers up to the next record's time before
/// taking it, as the restarted task does after restoring the first run's
/// watermark; from there both merge the same two backlogs by the same
/// rules, and both inputs end at one instant. (Were an offline record
/// older than the first part's end, the replay would merge it before web
/// records the first run had already processed, while the service takes
/// it late, after them: then only the events up to its time would agree.)
///
/// Listed the other way round (`[offline, web]`), or without `web`, the
/// inputs are refused: the state is keyed by `web`.
///
/// Literal cases across the restart and the topics: Y's web cart is
/// abandoned in the first run, and recovered by an order at the call
/// centre in the second; X's app cart, at the first run's end, is closed
/// by a store order 20 minutes later (never abandoned, while the data goes
/// on for days), which is attributed to the app touch the restored state
/// remembers (a lost state would attribute it to the store).
#[test]
#[ignore = "needs a Kafka broker: scripts/test starts one and runs it"]
fn adding_an_input_topic_keeps_the_state_and_starts_the_new_topic() {
    let name = "inputs-added";
    let Some(b) = broker(name) else { return };
    let s = Scenario::new(&b, name);
    let (web, offline) = (format!("{}.web", s.id), format!("{}.offline", s.id));
    create_topic(&b, &web, 1, &[]);
    s.track(&web);
    s.track(&offline);
    create_topic(&b, &s.changelog, 1, &[("cleanup.policy", "compact")]);

    let lines = generate(&[
        "--seed",
        "111",
        "--customers",
        "400",
        "--days",
        "8",
        "--start",
        &T0.to_string(),
    ]);
    let a = (min_ts(&lines) + max_ts(&lines)) / 2 / MIN * MIN;
    let end = max_ts(&lines) + HOUR;
    let (x, y) = ("added-x", "added-y");
    let (cart_y, cart_x) = (a + MIN, a + 2 * HOUR);
    let (order_x, order_y) = (cart_x + 20 * MIN, cart_x + 30 * MIN);

    // The first part: web records before A, then Y's cart (abandoned at
    // A + 1h1min, once X's cart at A + 2h carries the watermark past it).
    let mut web_first = lines_of(&lines, 0, |t| t < a);
    web_first.push(
        with(
            tp("cart-y", y, "web", "add_to_cart", cart_y),
            &[("cart_id", json!("ky")), ("value", json!(35.0))],
        )
        .to_string(),
    );
    web_first.push(
        with(
            tp("cart-x", x, "mobile_app", "add_to_cart", cart_x),
            &[("cart_id", json!("kx")), ("value", json!(60.0))],
        )
        .to_string(),
    );
    // The second part: later web records; the offline input opens with X's
    // and Y's orders, then the generated records after them; both inputs
    // end at one instant.
    let mut web_second = lines_of(&lines, 0, |t| t > cart_x);
    web_second.push(tpl("close-web", "added-closer", "web", "page_view", end));
    let mut offline_lines = vec![
        with(
            tp("order-x", x, "store", "order_placed", order_x),
            &[("order_id", json!("ox")), ("value", json!(60.0))],
        )
        .to_string(),
        with(
            tp("order-y", y, "call_center", "order_placed", order_y),
            &[("order_id", json!("oy")), ("value", json!(35.0))],
        )
        .to_string(),
    ];
    offline_lines.extend(lines_of(&lines, 2, |t| t > order_y));
    offline_lines.push(tpl(
        "close-offline",
        "added-closer",
        "store",
        "store_visit",
        end,
    ));
    assert!(
        max_ts(&web_first) < min_ts(&offline_lines),
        "every offline record is later than the first part"
    );
    let web_all: Vec<String> = web_first.iter().chain(&web_second).cloned().collect();
    // The same customers: most of the offline input's customers touched
    // the web in the first part.
    fn customers(ls: &[String]) -> BTreeSet<String> {
        ls.iter().filter_map(|l| customer_of(l)).collect()
    }
    let (first_customers, offline_customers) = (customers(&web_first), customers(&offline_lines));
    let shared = offline_customers.intersection(&first_customers).count();
    eprintln!(
        "web: {} + {} records; offline: {} records, {} customers, {shared} of them in the first part",
        web_first.len(),
        web_second.len(),
        offline_lines.len(),
        offline_customers.len()
    );
    assert!(
        shared >= 20 && web_second.len() > 100 && offline_lines.len() > 50,
        "too little data: {shared} shared customers, {} web records in the second part, {} offline records",
        web_second.len(),
        offline_lines.len()
    );

    let cfg1 = s.write_config("svc-web", &config_for(&s, std::slice::from_ref(&web)));
    let topics = [web.clone(), offline.clone()];
    let cfg2 = s.write_config("svc-web-offline", &config_for(&s, &topics));
    let expected_first = replay(&web_first, &cfg1);
    let files = [
        write_lines(s.dir.path(), "web.jsonl", &web_all),
        write_lines(s.dir.path(), "offline.jsonl", &offline_lines),
    ];
    let expected = replay_files(&files, &cfg2);
    assert!(
        expected_first.rejected.is_empty() && expected.rejected.is_empty(),
        "replay rejected {:?} / {:?}",
        expected_first.rejected,
        expected.rejected
    );
    let want_first: BTreeSet<String> = expected_first
        .events
        .iter()
        .map(|e| str_field(e, "event_id").to_string())
        .collect();

    // Run 1: `web` only.
    produce(&b, &web, &json_records(&web_first, 0));
    let mut svc = s.start(&cfg1, "web-only");
    svc.wait_ready(Duration::from_secs(60));
    let mut out = s.outputs(false);
    out.settle(
        want_first.len(),
        Duration::from_secs(60),
        Duration::from_secs(15),
    );
    let consumed = |m: &str, topic: &str| {
        metric_sum(m, "touchstream_records_consumed_total", &[("topic", topic)])
    };
    scrape_until(
        &mut svc,
        Duration::from_secs(30),
        "run 1 consumed the first part",
        |m| consumed(m, &web) >= web_first.len() as f64,
    );
    let (st, _) = svc.sigterm(Duration::from_secs(20));
    assert!(st.success(), "{st}\n{}", svc.log_tail(20));
    out.poll_for(Duration::from_secs(2));
    let run1 = out.records.len();
    let run1_ids = out.ids.clone();
    assert_eq!(
        run1_ids.iter().cloned().collect::<BTreeSet<String>>(),
        want_first,
        "run 1's events vs replay of the first part"
    );
    let after_run1 = restore_changelog(&b, &s.changelog, 0, &web, false);
    let marker = after_run1
        .marker
        .as_ref()
        .unwrap_or_else(|| panic!("run 1 wrote no marker"));
    let named: Vec<(&str, i64)> = marker
        .inputs
        .iter()
        .map(|i| (i.topic.as_str(), i.offset))
        .collect();
    assert_eq!(
        named,
        [(web.as_str(), web_first.len() as i64)],
        "run 1's last marker"
    );
    assert!(!after_run1.saved.is_empty(), "run 1 persisted no customer");

    // The new topic, and more web records, while no instance runs.
    create_topic(&b, &offline, 1, &[]);
    produce(&b, &offline, &json_records(&offline_lines, 0));
    produce(&b, &web, &json_records(&web_second, 0));

    // Run 2: `web` and `offline`.
    let mut svc = s.start(&cfg2, "web-offline");
    svc.wait_ready(Duration::from_secs(60));
    let log = svc.log_text();
    assert_eq!(
        restored_customers(&log),
        vec![after_run1.saved.len() as u64],
        "customers= of \"Task restored.\" (run 1 persisted {}):\n{}",
        after_run1.saved.len(),
        svc.log_tail(20)
    );
    let (resume_web, resume_offline) = (
        format!("({web:?}, Some({}))", web_first.len()),
        format!("({offline:?}, None)"),
    );
    assert!(
        log.lines().any(|l| l.contains("Task restored.")
            && l.contains(&resume_web)
            && l.contains(&resume_offline)),
        "the task does not resume {resume_web} and {resume_offline}:\n{}",
        svc.log_tail(20)
    );
    out.settle(
        expected.events.len(),
        Duration::from_secs(60),
        Duration::from_secs(15),
    );
    out.poll_for(Duration::from_secs(2));
    // Run 2 read the offline topic from its beginning, and web from the
    // marker on.
    let m = scrape_until(
        &mut svc,
        Duration::from_secs(30),
        "run 2 consumed both inputs",
        |m| {
            consumed(m, &offline) >= offline_lines.len() as f64
                && consumed(m, &web) >= web_second.len() as f64
        },
    );
    assert_eq!(
        consumed(&m, &offline),
        offline_lines.len() as f64,
        "records consumed from the added topic {offline}"
    );
    assert_eq!(
        consumed(&m, &web),
        web_second.len() as f64,
        "records consumed from {web} in run 2 (it resumes after run 1's marker)"
    );
    let (st, _) = svc.sigterm(Duration::from_secs(20));
    assert!(st.success(), "{st}\n{}", svc.log_tail(20));
    out.poll_for(Duration::from_secs(2));

    // Both runs together: the replay of both files, each event once.
    let outs = decode_outputs(&out.records, &s.prefix, &OutputSchemas::defaults());
    check_outputs(&outs, &expected.events, &s.prefix, Copies::Forbidden);
    check_order_per_partition(&outs, &expected.events);
    let run2_ids: BTreeSet<String> = out.records[run1..]
        .iter()
        .filter_map(|r| r.header("event_id"))
        .collect();
    assert!(
        run2_ids.len() > 100,
        "only {} events in run 2",
        run2_ids.len()
    );
    eprintln!(
        "run 1: {} events; run 2 restored {} customers and emitted {} events; replay: {}",
        run1_ids.len(),
        after_run1.saved.len(),
        run2_ids.len(),
        expected.events.len()
    );

    // The last marker names both inputs at their ends; the group committed
    // the added topic's offsets.
    let marker = restore_changelog(&b, &s.changelog, 0, &web, false)
        .marker
        .unwrap_or_else(|| panic!("no marker after run 2"));
    let named: Vec<(&str, i64)> = marker
        .inputs
        .iter()
        .map(|i| (i.topic.as_str(), i.offset))
        .collect();
    assert_eq!(
        named,
        [
            (web.as_str(), web_all.len() as i64),
            (offline.as_str(), offline_lines.len() as i64)
        ],
        "run 2's last marker"
    );
    assert_eq!(
        committed_offset(&b, &s.group, &offline, 0),
        Some(offline_lines.len() as i64),
        "the group's committed offset of {offline}"
    );

    // The literal cases.
    let got = distinct(&outs);
    let of = |ty: &str, who: &str| {
        got.iter()
            .copied()
            .filter(|e| e["type"] == ty && e["customer_id"] == who)
            .collect::<Vec<&Value>>()
    };
    let in_run = |e: &Value| {
        if run1_ids.contains(str_field(e, "event_id")) {
            1
        } else {
            2
        }
    };
    // Y: abandoned in run 1, recovered by the call centre in run 2.
    let abandoned = of("cart_abandoned", y);
    assert_eq!(abandoned.len(), 1, "{abandoned:?}");
    assert_eq!(abandoned[0]["at"], json!(cart_y + HOUR), "{}", abandoned[0]);
    assert_eq!(abandoned[0]["cart_id"], json!("ky"), "{}", abandoned[0]);
    assert_eq!(in_run(abandoned[0]), 1, "Y's abandonment: {}", abandoned[0]);
    let recovered = of("cart_recovered", y);
    assert_eq!(recovered.len(), 1, "{recovered:?}");
    assert_eq!(recovered[0]["at"], json!(order_y), "{}", recovered[0]);
    assert_eq!(recovered[0]["order_id"], json!("oy"), "{}", recovered[0]);
    assert_eq!(recovered[0]["cart_id"], json!("ky"), "{}", recovered[0]);
    assert_eq!(
        recovered[0]["abandoned_at"],
        json!(cart_y + HOUR),
        "{}",
        recovered[0]
    );
    assert_eq!(in_run(recovered[0]), 2, "Y's recovery: {}", recovered[0]);
    // X: the store order closed the app cart of run 1 (the data goes on
    // for days), and is attributed to it.
    assert!(
        of("cart_abandoned", x).is_empty(),
        "X's cart, closed by a store order 20 min later, was abandoned: {:?}",
        of("cart_abandoned", x)
    );
    let attributed = of("order_attributed", x);
    assert_eq!(attributed.len(), 1, "{attributed:?}");
    assert_eq!(in_run(attributed[0]), 2, "{}", attributed[0]);
    assert_eq!(
        attributed[0]["models"]["linear"],
        json!({"mobile_app": 1.0}),
        "X's store order, attributed to the app cart run 1 saw: {}",
        attributed[0]
    );

    // Runs 3 and 4: the same inputs listed the other way round, then
    // without `web`. The state is keyed by `web` (and the last marker
    // covers `offline`): each instance stops with an error naming `web`
    // instead of starting over from an empty state, and writes nothing.
    let (_, changelog_end) = watermarks(&b, &s.changelog, 0);
    let emitted = out.records.len();
    let runs = [
        (
            "run 3 (inputs reordered)",
            vec![offline.clone(), web.clone()],
        ),
        ("run 4 (first topic dropped)", vec![offline.clone()]),
    ];
    for (n, (run, inputs)) in runs.iter().enumerate() {
        let cfg = s.write_config(&format!("svc-refused-{n}"), &config_for(&s, inputs));
        let mut svc = s.start(&cfg, &format!("refused-{n}"));
        let st = svc
            .wait_exit(Duration::from_secs(60))
            .unwrap_or_else(|| panic!("{run} runs:\n{}", svc.log_tail(20)));
        assert!(!st.success(), "{run} exited {st}");
        let log = svc.log_text();
        assert!(
            log.contains(&format!("under input topic `{web}`")) && log.contains("list `"),
            "{run}: the error does not name {web}:\n{}",
            svc.log_tail(20)
        );
        out.poll_for(Duration::from_secs(2));
        assert_eq!(out.records.len(), emitted, "{run} emitted events");
        assert_eq!(
            watermarks(&b, &s.changelog, 0).1,
            changelog_end,
            "{run} wrote to the changelog"
        );
    }
}
