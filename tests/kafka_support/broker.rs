//! The broker: its address (`KAFKA_BOOTSTRAP`), client configs, and the
//! admin side (create, wait for, describe and delete topics; offsets and
//! committed offsets). Producing and consuming live in `produce.rs` and
//! `collect.rs`.

use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::TopicPartitionList;

/// The broker address. The broker tests are `#[ignore]`d, so that a plain
/// `cargo test` counts them as ignored, never as passed; `scripts/test`
/// starts a broker and runs them. Run by hand without `KAFKA_BOOTSTRAP`,
/// a test fails saying so. (Always `Some`: the `Option` keeps the call
/// sites' `let Some(b) = broker(..) else { return }` shape.)
pub fn broker(test: &str) -> Option<String> {
    match std::env::var("KAFKA_BOOTSTRAP") {
        Ok(b) if !b.trim().is_empty() => Some(b.trim().to_string()),
        _ => panic!(
            "{test}: needs a Kafka broker: run scripts/test (it starts one), or set KAFKA_BOOTSTRAP"
        ),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

pub(super) fn client(b: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", b).set("log_level", "3");
    c
}

/// Creates a topic (with topic configs) and waits until it has leaders.
pub fn create_topic(b: &str, name: &str, partitions: i32, configs: &[(&str, &str)]) {
    let admin: AdminClient<DefaultClientContext> = client(b).create().expect("admin client");
    let mut t = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    for (k, v) in configs {
        t = t.set(k, v);
    }
    let res = runtime()
        .block_on(admin.create_topics(
            [&t],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        ))
        .expect("create_topics");
    for r in res {
        if let Err((n, code)) = r {
            panic!("cannot create topic {n}: {code}");
        }
    }
    wait_topic(b, name, Duration::from_secs(30));
}

/// Waits until the topic exists with a leader for every partition; returns
/// its partition count.
pub fn wait_topic(b: &str, name: &str, timeout: Duration) -> i32 {
    let c: BaseConsumer = client(b).create().expect("metadata client");
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(md) = c.fetch_metadata(Some(name), Duration::from_secs(5)) {
            if let Some(t) = md.topics().first() {
                if t.error().is_none()
                    && !t.partitions().is_empty()
                    && t.partitions().iter().all(|p| p.leader() >= 0)
                {
                    return t.partitions().len() as i32;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "topic {name} not available after {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Partition count of a topic (0 when it does not exist).
pub fn partitions_of(b: &str, name: &str) -> i32 {
    let c: BaseConsumer = client(b).create().expect("metadata client");
    c.fetch_metadata(Some(name), Duration::from_secs(10))
        .ok()
        .and_then(|md| {
            md.topics().first().map(|t| {
                if t.error().is_some() {
                    0
                } else {
                    t.partitions().len() as i32
                }
            })
        })
        .unwrap_or(0)
}

/// Best-effort deletion (keeps a long-lived broker tidy).
pub fn delete_topics(b: &str, names: &[String]) {
    let Ok(admin) = client(b).create::<AdminClient<DefaultClientContext>>() else {
        return;
    };
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let _ = runtime().block_on(admin.delete_topics(
        &refs,
        &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
    ));
}

/// One config value of a topic (as the broker reports it).
pub fn topic_config(b: &str, topic: &str, name: &str) -> Option<String> {
    let admin: AdminClient<DefaultClientContext> = client(b).create().expect("admin client");
    let res = runtime()
        .block_on(admin.describe_configs(
            [&rdkafka::admin::ResourceSpecifier::Topic(topic)],
            &AdminOptions::new(),
        ))
        .expect("describe_configs");
    let r = res.into_iter().next()?.ok()?;
    r.get(name).and_then(|e| e.value.clone())
}

/// Sets a topic's dynamic configs, replacing every dynamic config it had
/// (the admin API's non-incremental alter): pass them all.
pub fn set_topic_configs(b: &str, topic: &str, configs: &[(&str, &str)]) {
    let admin: AdminClient<DefaultClientContext> = client(b).create().expect("admin client");
    let mut alter =
        rdkafka::admin::AlterConfig::new(rdkafka::admin::ResourceSpecifier::Topic(topic));
    for (k, v) in configs {
        alter = alter.set(k, v);
    }
    let res = runtime()
        .block_on(admin.alter_configs([&alter], &AdminOptions::new()))
        .expect("alter_configs");
    for r in res {
        if let Err((_, code)) = r {
            panic!("cannot alter the configs of topic {topic}: {code}");
        }
    }
}

/// (low, high) offsets of a partition.
pub fn watermarks(b: &str, topic: &str, partition: i32) -> (i64, i64) {
    let c: BaseConsumer = client(b).create().expect("client");
    c.fetch_watermarks(topic, partition, Duration::from_secs(10))
        .expect("fetch_watermarks")
}

/// The committed offset of a consumer group on a partition (None: none).
pub fn committed_offset(b: &str, group: &str, topic: &str, partition: i32) -> Option<i64> {
    let c: BaseConsumer = client(b)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("client");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, partition);
    let got = c
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("committed_offsets");
    got.find_partition(topic, partition)
        .and_then(|e| e.offset().to_raw())
        .filter(|o| *o >= 0)
}
