//! Shared helpers for the Kafka tests (`tests/kafka_*.rs`), which run the
//! real `touchstream` binary against a real broker.
//!
//! - The broker comes from `KAFKA_BOOTSTRAP`. The tests are `#[ignore]`d
//!   (a plain `cargo test` shows them as ignored); `scripts/test` starts a
//!   broker and runs them with `--include-ignored`. Run without a broker,
//!   one fails saying so.
//! - Every test uses its own topics and group ([`Scenario`]), so the tests
//!   can share one broker and run in parallel.
//! - Outputs are read with a plain assigned consumer ([`Collector`]),
//!   decoded from Confluent-framed Avro into `serde_json` values shaped
//!   like `touchstream replay`'s JSON lines, and compared with the replay
//!   of the same input ([`replay`], [`check_outputs`]).
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use apache_avro::types::Value as Avro;
use apache_avro::Schema;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use serde_json::{json, Value};

use touchstream::codec::avro::{
    frame, touchpoint_schema, touchpoint_value, DerivedSchemas, DERIVED_SCHEMAS,
};
use touchstream::config::Config;
use touchstream::engine::state::Customer;
use touchstream::engine::Engine;
use touchstream::kafka::changelog::{RestoreBuilder, Restored};
use touchstream::model::{DerivedType, Touchpoint};
use touchstream::validate::{validate, Clock};

pub mod inputs;

pub const BIN: &str = env!("CARGO_BIN_EXE_touchstream");
pub const REPO: &str = env!("CARGO_MANIFEST_DIR");

pub const SEC: i64 = 1_000;
pub const MIN: i64 = 60 * SEC;
pub const HOUR: i64 = 60 * MIN;
pub const DAY: i64 = 24 * HOUR;
/// 2026-01-05T00:00:00Z.
pub const T0: i64 = 1_767_571_200_000;

// ---------------------------------------------------------------------------
// Broker, names

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

/// A name no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!(
        "{prefix}-{}-{:x}-{n}",
        std::process::id(),
        (nanos as u64) & 0xffff_ffff_ffff
    )
}

/// A TCP port that was free a moment ago.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

pub fn wall_ms() -> i64 {
    touchstream::cli::wall_clock_ms()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn client(b: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", b).set("log_level", "3");
    c
}

// ---------------------------------------------------------------------------
// Admin

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

// ---------------------------------------------------------------------------
// Producing

/// One record to produce.
#[derive(Debug, Clone)]
pub struct In {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub partition: i32,
}

struct DeliveryCtx {
    errors: Mutex<Vec<String>>,
}
impl ClientContext for DeliveryCtx {}
impl ProducerContext for DeliveryCtx {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = r {
            self.errors.lock().unwrap().push(e.to_string());
        }
    }
}

/// A producer that keeps order (idempotent) and reports delivery failures.
pub struct TestProducer {
    p: ThreadedProducer<DeliveryCtx>,
}

impl TestProducer {
    pub fn new(b: &str) -> Self {
        let p = client(b)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "2")
            // Room for records near the broker's default 1 MiB limit.
            .set("message.max.bytes", "2000000")
            .create_with_context(DeliveryCtx {
                errors: Mutex::new(Vec::new()),
            })
            .expect("producer");
        TestProducer { p }
    }

    pub fn send(&self, topic: &str, r: &In) {
        let mut rec: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).partition(r.partition);
        if let Some(k) = &r.key {
            rec = rec.key(k.as_slice());
        }
        if let Some(v) = &r.value {
            rec = rec.payload(v.as_slice());
        }
        loop {
            match self.p.send(rec) {
                Ok(()) => return,
                Err((
                    KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                    back,
                )) => {
                    rec = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((e, _)) => panic!("produce to {topic}: {e}"),
            }
        }
    }

    /// Waits for every acknowledgement; panics on any delivery failure.
    pub fn flush(&self) {
        self.p
            .flush(Duration::from_secs(60))
            .expect("producer flush");
        let errors = self.p.context().errors.lock().unwrap();
        assert!(errors.is_empty(), "delivery failures: {errors:?}");
    }
}

/// Produces records in order and waits for them.
pub fn produce(b: &str, topic: &str, records: &[In]) {
    let p = TestProducer::new(b);
    for r in records {
        p.send(topic, r);
    }
    p.flush();
}

/// Produces `records` in `chunks` pieces, `pause` apart, on a thread.
pub fn produce_paced(
    b: &str,
    topic: &str,
    records: Vec<In>,
    chunks: usize,
    pause: Duration,
) -> std::thread::JoinHandle<()> {
    let (b, topic) = (b.to_string(), topic.to_string());
    std::thread::spawn(move || {
        let p = TestProducer::new(&b);
        let size = records.len().div_ceil(chunks.max(1)).max(1);
        for (i, chunk) in records.chunks(size).enumerate() {
            if i > 0 {
                std::thread::sleep(pause);
            }
            for r in chunk {
                p.send(&topic, r);
            }
            p.flush();
        }
    })
}

/// The `customer_id` of a JSON line, if it has one (bad lines may not).
pub fn customer_of(line: &str) -> Option<String> {
    serde_json::from_str::<Value>(line)
        .ok()?
        .get("customer_id")?
        .as_str()
        .map(str::to_string)
}

/// JSON lines as records keyed by customer id, all on `partition`.
pub fn json_records(lines: &[String], partition: i32) -> Vec<In> {
    lines
        .iter()
        .map(|l| In {
            key: customer_of(l).map(String::into_bytes),
            value: Some(l.as_bytes().to_vec()),
            partition,
        })
        .collect()
}

/// A good JSON line as a touchpoint (panics on a bad line).
pub fn touchpoint_of(line: &str) -> Touchpoint {
    let raw = touchstream::codec::json::decode(line.as_bytes())
        .unwrap_or_else(|e| panic!("{line}: {e:?}"));
    validate(
        raw,
        Clock {
            now: wall_ms(),
            max_future: HOUR,
        },
    )
    .unwrap_or_else(|e| panic!("{line}: {e:?}"))
}

/// Confluent-framed Avro (shipped schema, id 1) of a good JSON line.
pub fn avro_framed(line: &str, schema_id: u32) -> Vec<u8> {
    let schema = touchpoint_schema().expect("touchpoint schema");
    let datum = apache_avro::to_avro_datum(&schema, touchpoint_value(&touchpoint_of(line)))
        .expect("encode touchpoint");
    frame(schema_id, &datum)
}

/// A touchpoint as one JSON line.
pub fn json_line(tp: &Touchpoint) -> String {
    serde_json::to_string(tp).expect("touchpoint json")
}

/// Stable partition of a customer among `n` (the test decides partitions).
pub fn partition_for(customer: &str, n: i32) -> i32 {
    let h = customer.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    (h % n as u64) as i32
}

/// Kafka's Java `Utils.murmur2` (the default partitioner's hash).
pub fn murmur2(data: &[u8]) -> i32 {
    const M: u32 = 0x5bd1_e995;
    let len = data.len();
    let mut h: u32 = 0x9747_b28c ^ len as u32;
    for c in data.chunks_exact(4) {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = &data[len & !3..];
    if tail.len() == 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition Java's default partitioner picks for a key.
pub fn java_partition(key: &[u8], partitions: i32) -> i32 {
    (murmur2(key) & 0x7fff_ffff) % partitions
}

/// `touchstream generate` output as lines.
pub fn generate(args: &[&str]) -> Vec<String> {
    let out = Command::new(BIN)
        .arg("generate")
        .args(args)
        .output()
        .expect("run touchstream generate");
    assert!(
        out.status.success(),
        "generate {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

// ---------------------------------------------------------------------------
// Consuming

/// One consumed record.
#[derive(Debug, Clone)]
pub struct Rec {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl Rec {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.as_ref())
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }
    pub fn key_str(&self) -> Option<String> {
        self.key
            .as_ref()
            .map(|k| String::from_utf8_lossy(k).into_owned())
    }
}

/// Reads every partition of some topics from the beginning, accumulating.
pub struct Collector {
    b: String,
    consumer: BaseConsumer,
    parts: Vec<(String, i32)>,
    pub records: Vec<Rec>,
    /// Distinct `event_id` headers seen.
    pub ids: HashSet<String>,
}

impl Collector {
    /// Waits (up to 30 s) for the topics to exist, then assigns all their
    /// partitions from offset 0.
    pub fn new(b: &str, topics: &[String], read_committed: bool) -> Self {
        let consumer: BaseConsumer = client(b)
            .set("group.id", unique("collector"))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .set(
                "isolation.level",
                if read_committed {
                    "read_committed"
                } else {
                    "read_uncommitted"
                },
            )
            .create()
            .expect("collector consumer");
        let mut tpl = TopicPartitionList::new();
        let mut parts = Vec::new();
        for t in topics {
            let n = wait_topic(b, t, Duration::from_secs(30));
            for p in 0..n {
                tpl.add_partition_offset(t, p, Offset::Beginning)
                    .expect("tpl");
                parts.push((t.clone(), p));
            }
        }
        consumer.assign(&tpl).expect("assign");
        Collector {
            b: b.to_string(),
            consumer,
            parts,
            records: Vec::new(),
            ids: HashSet::new(),
        }
    }

    fn take(&mut self, r: Rec) {
        if let Some(id) = r.header("event_id") {
            self.ids.insert(id);
        }
        self.records.push(r);
    }
}

fn to_rec(m: &rdkafka::message::BorrowedMessage<'_>) -> Rec {
    let headers = m
        .headers()
        .map(|h| {
            h.iter()
                .map(|x| (x.key.to_string(), x.value.map(<[u8]>::to_vec)))
                .collect()
        })
        .unwrap_or_default();
    let r = Rec {
        topic: m.topic().to_string(),
        partition: m.partition(),
        offset: m.offset(),
        key: m.key().map(<[u8]>::to_vec),
        value: m.payload().map(<[u8]>::to_vec),
        headers,
    };
    r
}

impl Collector {
    /// Polls for `dur`; returns how many records arrived.
    pub fn poll_for(&mut self, dur: Duration) -> usize {
        let before = self.records.len();
        let end = Instant::now() + dur;
        while Instant::now() < end {
            match self.consumer.poll(Duration::from_millis(50)) {
                Some(Ok(m)) => {
                    let r = to_rec(&m);
                    drop(m);
                    self.take(r)
                }
                Some(Err(e)) => eprintln!("collector: {e}"),
                None => {}
            }
        }
        self.records.len() - before
    }

    /// Polls until `done(self)` holds; false on timeout.
    pub fn wait_until(
        &mut self,
        timeout: Duration,
        mut done: impl FnMut(&Collector) -> bool,
    ) -> bool {
        let end = Instant::now() + timeout;
        loop {
            if done(self) {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            self.poll_for(Duration::from_millis(200));
        }
    }

    /// Polls until `n` distinct event ids have arrived; false on timeout.
    pub fn wait_distinct(&mut self, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, |c| c.ids.len() >= n)
    }

    /// Polls until `n` distinct event ids have arrived, or nothing new has
    /// arrived for `quiet` (the service has settled short of `n`: the
    /// caller's comparison then says what is missing), or `timeout`.
    /// Returns whether `n` was reached.
    pub fn settle(&mut self, n: usize, timeout: Duration, quiet: Duration) -> bool {
        let end = Instant::now() + timeout;
        let mut last_change = Instant::now();
        let mut last_len = self.records.len();
        loop {
            if self.ids.len() >= n {
                return true;
            }
            if Instant::now() >= end || last_change.elapsed() >= quiet {
                eprintln!(
                    "collector settled at {} of {n} distinct events",
                    self.ids.len()
                );
                return false;
            }
            self.poll_for(Duration::from_millis(200));
            if self.records.len() != last_len {
                last_len = self.records.len();
                last_change = Instant::now();
            }
        }
    }

    /// Reads until every partition's position has reached its current high
    /// watermark (for read_committed: until the stable offset passes it).
    pub fn drain(&mut self, timeout: Duration) {
        let highs: Vec<(String, i32, i64)> = self
            .parts
            .iter()
            .map(|(t, p)| {
                let (_, h) = self
                    .consumer
                    .fetch_watermarks(t, *p, Duration::from_secs(10))
                    .expect("watermarks");
                (t.clone(), *p, h)
            })
            .collect();
        let end = Instant::now() + timeout;
        loop {
            self.poll_for(Duration::from_millis(100));
            let pos = self.consumer.position().expect("position");
            let behind: Vec<_> = highs
                .iter()
                .filter(|(t, p, h)| {
                    let at = pos
                        .find_partition(t, *p)
                        .and_then(|e| e.offset().to_raw())
                        .unwrap_or(-1);
                    *h > 0 && at < *h
                })
                .collect();
            if behind.is_empty() {
                return;
            }
            assert!(
                Instant::now() < end,
                "collector did not reach the end of {behind:?} within {timeout:?}"
            );
        }
    }

    pub fn in_topic(&self, topic: &str) -> Vec<&Rec> {
        self.records.iter().filter(|r| r.topic == topic).collect()
    }

    pub fn broker(&self) -> &str {
        &self.b
    }
}

/// Every record of one partition (read to its end).
pub fn read_partition(b: &str, topic: &str, partition: i32, read_committed: bool) -> Vec<Rec> {
    let consumer: BaseConsumer = client(b)
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .set(
            "isolation.level",
            if read_committed {
                "read_committed"
            } else {
                "read_uncommitted"
            },
        )
        .create()
        .expect("reader");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Beginning)
        .expect("tpl");
    consumer.assign(&tpl).expect("assign");
    let (_, high) = consumer
        .fetch_watermarks(topic, partition, Duration::from_secs(10))
        .expect("watermarks");
    let mut c = Collector {
        b: b.to_string(),
        consumer,
        parts: vec![(topic.to_string(), partition)],
        records: Vec::new(),
        ids: HashSet::new(),
    };
    if high > 0 {
        c.drain(Duration::from_secs(30));
    }
    c.records
}

// ---------------------------------------------------------------------------
// Avro → JSON

/// An Avro value as the JSON `touchstream replay` would print: unions as
/// their value, enums as symbols, maps as objects, timestamps as millis.
pub fn avro_to_json(v: &Avro) -> Value {
    match v {
        Avro::Null => Value::Null,
        Avro::Boolean(b) => json!(b),
        Avro::Int(i) => json!(i),
        Avro::Long(i) => json!(i),
        Avro::Float(f) => json!(f64::from(*f)),
        Avro::Double(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
        Avro::String(s) => json!(s),
        Avro::Enum(_, s) => json!(s),
        Avro::Union(_, inner) => avro_to_json(inner),
        Avro::Array(items) => Value::Array(items.iter().map(avro_to_json).collect()),
        Avro::Map(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), avro_to_json(v)))
                .collect(),
        ),
        Avro::Record(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, v)| (k.clone(), avro_to_json(v)))
                .collect(),
        ),
        Avro::TimestampMillis(t) | Avro::TimestampMicros(t) | Avro::LocalTimestampMillis(t) => {
            json!(t)
        }
        Avro::Date(d) => json!(d),
        other => panic!("unexpected Avro value in an output: {other:?}"),
    }
}

/// Output schemas by the id in the frame.
pub struct OutputSchemas {
    pub by_id: HashMap<u32, (DerivedType, Schema)>,
}

impl OutputSchemas {
    /// Ids 101..=108 in SPEC table order (no registry).
    pub fn defaults() -> Self {
        Self::with_ids(|i, _| 101 + i as u32)
    }

    pub fn with_ids(id: impl Fn(usize, DerivedType) -> u32) -> Self {
        let schemas = DerivedSchemas::load().expect("derived schemas");
        let by_id = DERIVED_SCHEMAS
            .iter()
            .enumerate()
            .map(|(i, (t, _))| (id(i, *t), (*t, schemas.get(*t).clone())))
            .collect();
        OutputSchemas { by_id }
    }

    /// Schemas given as text under ids (e.g. as a registry holds them).
    pub fn from_texts(texts: &[(u32, DerivedType, String)]) -> Self {
        let by_id = texts
            .iter()
            .map(|(id, t, text)| {
                (
                    *id,
                    (
                        *t,
                        Schema::parse_str(text)
                            .unwrap_or_else(|e| panic!("schema {id} ({t}): {e}")),
                    ),
                )
            })
            .collect();
        OutputSchemas { by_id }
    }

    /// Unframes and decodes one output value: (schema id, type, JSON).
    pub fn decode(&self, bytes: &[u8]) -> (u32, DerivedType, Value) {
        assert!(
            bytes.len() >= 5 && bytes[0] == 0,
            "output value is not Confluent-framed: {bytes:?}"
        );
        let id = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
        let (t, schema) = self
            .by_id
            .get(&id)
            .unwrap_or_else(|| panic!("output frame has unknown schema id {id}"));
        let mut datum = &bytes[5..];
        let v = apache_avro::from_avro_datum(schema, &mut datum, None)
            .unwrap_or_else(|e| panic!("output of schema id {id} ({t}) does not decode: {e}"));
        assert!(
            datum.is_empty(),
            "{} trailing bytes after a {t} datum",
            datum.len()
        );
        (id, *t, avro_to_json(&v))
    }
}

/// A decoded output record.
#[derive(Debug, Clone)]
pub struct OutEvent {
    pub rec: Rec,
    pub schema_id: u32,
    pub kind: DerivedType,
    pub json: Value,
}

impl OutEvent {
    pub fn event_id(&self) -> String {
        self.json["event_id"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

/// Decodes every record of the output topics (panics on anything that
/// is not a well-formed output).
pub fn decode_outputs(recs: &[Rec], prefix: &str, schemas: &OutputSchemas) -> Vec<OutEvent> {
    recs.iter()
        .filter(|r| r.topic.starts_with(prefix))
        .map(|r| {
            let value = r
                .value
                .as_ref()
                .unwrap_or_else(|| panic!("output record without value: {r:?}"));
            let (schema_id, kind, json) = schemas.decode(value);
            OutEvent {
                rec: r.clone(),
                schema_id,
                kind,
                json,
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Replay and the uninterrupted engine

/// What `touchstream replay` produced.
#[derive(Debug, Clone)]
pub struct ReplayOut {
    pub events: Vec<Value>,
    /// (1-based line number, reason) of every rejected line.
    pub rejected: Vec<(usize, String)>,
    pub stderr: String,
}

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

/// The engine after running `lines` uninterrupted (the same code as replay).
pub fn engine_after(lines: &[String], config: &Path) -> Engine {
    let text = std::fs::read_to_string(config).expect("config");
    let cfg = Config::from_parts("test", &text, &[]).expect("config parses");
    let engine_cfg = Arc::new(cfg.engine().expect("engine config"));
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let mut r = touchstream::cli::replay::Replay::new(
        engine_cfg,
        touchstream::cli::replay::WallClock::System,
        cfg.time.max_future.0,
        &mut out,
        &mut err,
    );
    let joined = lines.join("\n");
    r.json_lines(joined.as_bytes()).expect("replay in-process");
    r.finish().expect("finish").1
}

/// Restores a changelog partition as the service would.
pub fn restore_changelog(
    b: &str,
    changelog: &str,
    partition: i32,
    input_topic: &str,
    read_committed: bool,
) -> Restored {
    let mut builder = RestoreBuilder::new(input_topic);
    for r in read_partition(b, changelog, partition, read_committed) {
        builder
            .push(
                r.key.as_deref().unwrap_or_default(),
                r.value.as_deref(),
                r.offset,
            )
            .unwrap_or_else(|e| panic!("changelog record at {} does not decode: {e}", r.offset));
    }
    builder.finish()
}

/// A customer as the changelog persists it (serde form), without the
/// changelog slot; runtime-only fields (`dirty`, queued timer entries) are
/// not part of it.
fn persisted(c: &Customer) -> Value {
    let mut c = c.clone();
    c.slot = 0;
    c.dirty = false;
    serde_json::to_value(&c).expect("customer serialises")
}

/// The top-level fields in which two persisted customers differ.
fn diff_fields(a: &Value, b: &Value) -> String {
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return format!("{a} vs {b}");
    };
    a.iter()
        .filter(|(k, v)| b.get(*k) != Some(*v))
        .map(|(k, v)| {
            format!(
                "    {k}: restored {v} / uninterrupted {}",
                b.get(k).unwrap_or(&Value::Null)
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Asserts that the restored customers equal the engine's as persisted
/// (ignoring the changelog slot, the dirty flag and queued timer entries),
/// and that the last marker covers `expected_offset` with the engine's meta.
pub fn assert_state_equal(restored: &Restored, engine: &Engine, expected_offset: i64) {
    let marker = restored
        .marker
        .as_ref()
        .expect("the changelog has a complete marker");
    let offset = marker.inputs.first().map(|i| i.offset);
    assert_eq!(
        offset,
        Some(expected_offset),
        "the last marker covers input offsets up to {offset:?}"
    );
    assert_eq!(
        marker.meta,
        engine.meta(),
        "partition meta (watermark, timer seq) restored != uninterrupted"
    );
    assert_eq!(
        restored.customers.len(),
        engine.customers(),
        "restored {} customers, the uninterrupted engine has {}",
        restored.customers.len(),
        engine.customers()
    );
    let mut diffs = Vec::new();
    for c in &restored.customers {
        match engine.customer(c.id()) {
            None => diffs.push(format!(
                "{}: restored but not in the uninterrupted engine",
                c.id()
            )),
            Some(e) => {
                let (r, u) = (persisted(c), persisted(e));
                if r != u {
                    diffs.push(format!("{}:\n{}", c.id(), diff_fields(&r, &u)));
                }
            }
        }
    }
    assert!(
        diffs.is_empty(),
        "{} restored customers differ:\n{}",
        diffs.len(),
        diffs.iter().take(3).cloned().collect::<Vec<_>>().join("\n")
    );
}

// ---------------------------------------------------------------------------
// Comparing outputs with replay

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

// ---------------------------------------------------------------------------
// The service

/// Settings of one service config file.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub brokers: String,
    pub group: String,
    pub input_topics: Vec<String>,
    pub input_format: String,
    pub prefix: String,
    pub dlq: String,
    pub changelog: String,
    pub delivery: String,
    pub commit_interval: String,
    pub idle_timeout: String,
    pub registry: Option<String>,
    /// Extra TOML appended verbatim (e.g. a `[signals]` section).
    pub extra: String,
}

impl ServiceConfig {
    pub fn toml(&self) -> String {
        let topics: Vec<String> = self.input_topics.iter().map(|t| format!("{t:?}")).collect();
        let mut s = format!(
            r#"[kafka]
brokers = {brokers:?}
group_id = {group:?}
input_topics = [{topics}]
input_format = {format:?}
output_topic_prefix = {prefix:?}
dlq_topic = {dlq:?}
changelog_topic = {changelog:?}
delivery = {delivery:?}
commit_interval = {ci:?}

[kafka.consumer]
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "1000"

[time]
idle_timeout = {idle:?}
"#,
            brokers = self.brokers,
            group = self.group,
            topics = topics.join(", "),
            format = self.input_format,
            prefix = self.prefix,
            dlq = self.dlq,
            changelog = self.changelog,
            delivery = self.delivery,
            ci = self.commit_interval,
            idle = self.idle_timeout,
        );
        if let Some(url) = &self.registry {
            s.push_str(&format!("\n[schema_registry]\nurl = {url:?}\n"));
        }
        s.push('\n');
        s.push_str(&self.extra);
        s
    }
}

/// Environment without `TOUCHSTREAM_<SECTION>__<KEY>` overrides from the
/// caller (they would change the config under test).
fn clean_env() -> Vec<(String, String)> {
    std::env::vars()
        .filter(|(k, _)| !(k.starts_with("TOUCHSTREAM_") && k.contains("__")))
        .collect()
}

/// A running `touchstream run`.
pub struct Service {
    pub name: String,
    child: Child,
    pub http: SocketAddr,
    pub log: PathBuf,
    status: Option<ExitStatus>,
}

impl Service {
    /// Starts `touchstream run --config cfg` with its own HTTP port; the
    /// instance id (transactional id suffix) is `instance`.
    pub fn start(cfg: &Path, instance: &str, log: &Path) -> Service {
        Self::start_with_env(cfg, instance, log, &[])
    }

    /// Like [`Service::start`], with extra environment variables (e.g.
    /// `TOUCHSTREAM_KAFKA__CONSUMER__GROUP_INSTANCE_ID` for static membership).
    pub fn start_with_env(cfg: &Path, instance: &str, log: &Path, env: &[(&str, &str)]) -> Service {
        Self::spawn(cfg, Some(instance), log, env)
    }

    /// Like [`Service::start`], leaving the instance id to the product's
    /// default (host name and HTTP port), as a user who sets none would.
    pub fn start_default_id(cfg: &Path, log: &Path) -> Service {
        Self::spawn(cfg, None, log, &[])
    }

    fn spawn(cfg: &Path, instance: Option<&str>, log: &Path, env: &[(&str, &str)]) -> Service {
        let port = free_port();
        let http: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let logf = std::fs::File::create(log).expect("create service log");
        let child = Command::new(BIN)
            .arg("run")
            .arg("--config")
            .arg(cfg)
            .arg("--log-format")
            .arg("text")
            .env_clear()
            .envs(clean_env())
            .env("TOUCHSTREAM_HTTP__LISTEN", http.to_string())
            .envs(instance.map(|i| ("TOUCHSTREAM_KAFKA__INSTANCE_ID", i)))
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .envs(env.iter().map(|(k, v)| (k.to_string(), v.to_string())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(logf)
            .spawn()
            .expect("spawn touchstream run");
        Service {
            name: instance.unwrap_or("(default id)").to_string(),
            child,
            http,
            log: log.to_path_buf(),
            status: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_tail(&self, n: usize) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Exit status, if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
        }
        self.status
    }

    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        let url = format!("http://{}{path}", self.http);
        match ureq::get(&url).timeout(Duration::from_secs(2)).call() {
            Ok(r) => {
                let code = r.status();
                Some((code, r.into_string().unwrap_or_default()))
            }
            Err(ureq::Error::Status(code, r)) => Some((code, r.into_string().unwrap_or_default())),
            Err(_) => None,
        }
    }

    /// Waits until `/readyz` answers 200; panics (with the log) if the
    /// process exits or the timeout passes.
    pub fn wait_ready(&mut self, timeout: Duration) {
        let end = Instant::now() + timeout;
        loop {
            if let Some(s) = self.exited() {
                panic!(
                    "service {} exited ({s}) before it was ready:\n{}",
                    self.name,
                    self.log_tail(40)
                );
            }
            if matches!(self.get("/readyz"), Some((200, _))) {
                return;
            }
            assert!(
                Instant::now() < end,
                "service {} not ready after {timeout:?}:\n{}",
                self.name,
                self.log_tail(40)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the log contains `needle`.
    pub fn wait_log(&mut self, needle: &str, timeout: Duration) {
        let end = Instant::now() + timeout;
        loop {
            if self.log_text().contains(needle) {
                return;
            }
            if let Some(s) = self.exited() {
                panic!(
                    "service {} exited ({s}) before logging {needle:?}:\n{}",
                    self.name,
                    self.log_tail(40)
                );
            }
            assert!(
                Instant::now() < end,
                "service {} did not log {needle:?} within {timeout:?}:\n{}",
                self.name,
                self.log_tail(40)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// HTTP status of a path (None: no answer).
    pub fn status(&self, path: &str) -> Option<u16> {
        self.get(path).map(|(code, _)| code)
    }

    /// `/metrics` text.
    pub fn metrics(&self) -> String {
        match self.get("/metrics") {
            Some((200, body)) => body,
            other => panic!("GET /metrics of {}: {other:?}", self.name),
        }
    }

    /// Value of one sample line of `/metrics` (`name{labels}`), 0 if absent.
    pub fn metric(&self, series: &str) -> f64 {
        metric_value(&self.metrics(), series)
    }

    /// kill -9.
    pub fn kill9(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            self.status = Some(self.child.wait().expect("wait after kill"));
        }
    }

    /// SIGTERM; waits up to `timeout` for the exit and returns its status
    /// and how long it took (panics on timeout).
    pub fn sigterm(&mut self, timeout: Duration) -> (ExitStatus, Duration) {
        let started = Instant::now();
        let ok = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(ok.success(), "kill -TERM {} failed", self.pid());
        self.wait_exit(timeout)
            .map(|s| (s, started.elapsed()))
            .unwrap_or_else(|| {
                let tail = self.log_tail(40);
                self.kill9();
                panic!(
                    "service {} did not exit within {timeout:?} of SIGTERM:\n{tail}",
                    self.name
                )
            })
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(s) = self.exited() {
                return Some(s);
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!(
                "---- last lines of service {} ({}) ----\n{}",
                self.name,
                self.log.display(),
                self.log_tail(30)
            );
        }
    }
}

/// The value of `series` (exact text before the value) in a Prometheus
/// exposition; 0 when absent.
pub fn metric_value(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (name, v) = l.rsplit_once(' ')?;
            (name == series).then(|| v.parse().ok()).flatten()
        })
        .unwrap_or(0.0)
}

// ---------------------------------------------------------------------------
// A test's topics, group and files

/// One test's names and scratch directory.
pub struct Scenario {
    pub b: String,
    pub id: String,
    pub input: String,
    pub group: String,
    pub prefix: String,
    pub dlq: String,
    pub changelog: String,
    pub dir: tempfile::TempDir,
    starts: AtomicU64,
    extra_topics: Mutex<Vec<String>>,
}

impl Scenario {
    pub fn new(b: &str, name: &str) -> Scenario {
        let id = unique(name);
        Scenario {
            b: b.to_string(),
            input: format!("{id}.touchpoints"),
            group: format!("{id}.group"),
            prefix: format!("{id}.cx."),
            dlq: format!("{id}.dlq"),
            changelog: format!("{id}.changelog"),
            dir: tempfile::Builder::new()
                .prefix(&format!("{name}-"))
                .tempdir()
                .expect("tempdir"),
            id,
            starts: AtomicU64::new(0),
            extra_topics: Mutex::new(Vec::new()),
        }
    }

    /// The per-type output topics.
    pub fn output_topics(&self) -> Vec<String> {
        DerivedType::ALL
            .iter()
            .map(|t| format!("{}{}", self.prefix, t.as_str()))
            .collect()
    }

    pub fn output_topic(&self, t: DerivedType) -> String {
        format!("{}{}", self.prefix, t.as_str())
    }

    /// A config with this scenario's names; JSON input, at-least-once,
    /// `idle_timeout = "1h"`.
    pub fn config(&self) -> ServiceConfig {
        ServiceConfig {
            brokers: self.b.clone(),
            group: self.group.clone(),
            input_topics: vec![self.input.clone()],
            input_format: "json".into(),
            prefix: self.prefix.clone(),
            dlq: self.dlq.clone(),
            changelog: self.changelog.clone(),
            delivery: "at_least_once".into(),
            commit_interval: "1s".into(),
            idle_timeout: "1h".into(),
            registry: None,
            extra: String::new(),
        }
    }

    /// Writes a config file; returns its path.
    pub fn write_config(&self, name: &str, cfg: &ServiceConfig) -> PathBuf {
        let p = self.dir.path().join(format!("{name}.toml"));
        std::fs::write(&p, cfg.toml()).expect("write config");
        p
    }

    /// Creates the input topic, and the changelog the way the service would
    /// (compacted, same partition count), so that a first start does not
    /// hit the changelog-leader race that
    /// `kafka_state::first_start_creates_topics_and_becomes_ready` exposes.
    /// Output and dead-letter topics are still created by the service.
    pub fn create_input(&self, partitions: i32) {
        create_topic(&self.b, &self.input, partitions, &[]);
        create_topic(
            &self.b,
            &self.changelog,
            partitions,
            &[("cleanup.policy", "compact")],
        );
    }

    /// Creates only the input topic (the service creates the changelog).
    pub fn create_input_only(&self, partitions: i32) {
        create_topic(&self.b, &self.input, partitions, &[]);
    }

    /// Starts an instance; its log goes to the scratch directory.
    pub fn start(&self, cfg: &Path, instance: &str) -> Service {
        self.start_with_env(cfg, instance, &[])
    }

    /// Starts an instance with extra environment variables.
    pub fn start_with_env(&self, cfg: &Path, instance: &str, env: &[(&str, &str)]) -> Service {
        let n = self.starts.fetch_add(1, Ordering::Relaxed);
        let log = self.dir.path().join(format!("{instance}-{n}.log"));
        Service::start_with_env(cfg, instance, &log, env)
    }

    /// Starts an instance with the default instance id; `name` names its log.
    pub fn start_default_id(&self, cfg: &Path, name: &str) -> Service {
        let n = self.starts.fetch_add(1, Ordering::Relaxed);
        let log = self.dir.path().join(format!("{name}-{n}.log"));
        Service::start_default_id(cfg, &log)
    }

    /// A collector over every output topic (waits until they exist).
    pub fn outputs(&self, read_committed: bool) -> Collector {
        Collector::new(&self.b, &self.output_topics(), read_committed)
    }

    /// Remembers another topic to delete at the end.
    pub fn track(&self, topic: &str) {
        self.extra_topics.lock().unwrap().push(topic.to_string());
    }
}

impl Drop for Scenario {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Keep everything for a post-mortem.
            let kept =
                std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir")).keep();
            eprintln!(
                "scenario {}: logs and configs kept in {}",
                self.id,
                kept.display()
            );
            return;
        }
        let mut topics = self.output_topics();
        topics.extend([self.input.clone(), self.dlq.clone(), self.changelog.clone()]);
        topics.extend(self.extra_topics.lock().unwrap().iter().cloned());
        delete_topics(&self.b, &topics);
    }
}

// ---------------------------------------------------------------------------
// Several input topics (SPEC 8): one task = partition p of every input

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

/// The first customer id `"{prefix}-{k}"` (k = 0, 1, ...) that Java's
/// default partitioner (murmur2) puts on `partition` of `partitions`.
pub fn customer_on(prefix: &str, partition: i32, partitions: i32) -> String {
    (0..1_000_000)
        .map(|k| format!("{prefix}-{k}"))
        .find(|c| java_partition(c.as_bytes(), partitions) == partition)
        .unwrap_or_else(|| panic!("no {prefix}-k on partition {partition} of {partitions}"))
}

/// Every sample of one metric family in a Prometheus exposition, as
/// (labels, value); the labels in any order.
pub fn metric_samples(text: &str, name: &str) -> Vec<(BTreeMap<String, String>, f64)> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (labels, value) = if let Some(r) = rest.strip_prefix('{') {
            let Some(end) = r.rfind('}') else { continue };
            (&r[..end], &r[end + 1..])
        } else if rest.starts_with(' ') {
            ("", rest)
        } else {
            continue; // another family whose name starts with `name`
        };
        let Some(value) = value
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        else {
            continue;
        };
        out.push((parse_labels(labels), value));
    }
    out
}

fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut chars = text.chars().peekable();
    loop {
        while matches!(chars.peek(), Some(',') | Some(' ')) {
            chars.next();
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' {
                break;
            }
            key.push(c);
            chars.next();
        }
        if key.is_empty() || chars.next() != Some('=') || chars.next() != Some('"') {
            break;
        }
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(x) => value.push(x),
                    None => break,
                },
                '"' => break,
                c => value.push(c),
            }
        }
        labels.insert(key.trim().to_string(), value);
    }
    labels
}

/// The sum of the samples of `name` whose labels include every `(k, v)`
/// of `labels` (0 when there is none).
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    metric_samples(text, name)
        .iter()
        .filter(|(l, _)| {
            labels
                .iter()
                .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, v)| v)
        .sum()
}

/// The input partitions a `{topic, partition}` metric family shows, as
/// partition → topics, counting only the topics in `topics`.
pub fn held_partitions(
    text: &str,
    family: &str,
    topics: &[String],
) -> BTreeMap<i32, std::collections::BTreeSet<String>> {
    let mut held: BTreeMap<i32, std::collections::BTreeSet<String>> = BTreeMap::new();
    for (labels, _) in metric_samples(text, family) {
        let (Some(t), Some(p)) = (labels.get("topic"), labels.get("partition")) else {
            continue;
        };
        if !topics.contains(t) {
            continue;
        }
        let p = p
            .parse::<i32>()
            .unwrap_or_else(|e| panic!("{family}: partition label {p:?}: {e}"));
        held.entry(p).or_default().insert(t.clone());
    }
    held
}

/// The tasks `touchstream_task_watermark_seconds{task}` shows.
pub fn held_tasks(text: &str) -> std::collections::BTreeSet<i32> {
    metric_samples(text, "touchstream_task_watermark_seconds")
        .iter()
        .filter_map(|(l, _)| l.get("task"))
        .map(|t| {
            t.parse::<i32>()
                .unwrap_or_else(|e| panic!("task label {t:?}: {e}"))
        })
        .collect()
}
