//! The Kafka service: a consumer group member that runs one [`Engine`] per
//! assigned input partition and writes derived events, dead letters and
//! changelog records back to Kafka.
//!
//! One thread polls the consumer and drives the engines; librdkafka's own
//! threads do the network I/O. Rebalances run inside `poll`: an assigned
//! partition is restored from the changelog before it is handed to the
//! consumer at the offset its last complete checkpoint covers; a revoked
//! one is checkpointed, then dropped.
//!
//! A checkpoint (every `commit_interval`, on revoke and on shutdown):
//! - `at_least_once`: wait until every derived event and dead letter sent
//!   so far is acknowledged, write the changed customers and a marker per
//!   partition to the changelog and wait for those, then commit the input
//!   offsets to the group (which only feeds lag: restarts resume at the
//!   marker's offset).
//! - `exactly_once`: the same records, plus the input offsets, commit in
//!   one Kafka transaction; a zombie instance with the same transactional
//!   id is fenced and exits.

pub mod changelog;
pub mod registry;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use thiserror::Error;
use tracing::{error, info, warn};

use crate::config::{Config, Delivery, EngineConfig};
use crate::engine::{Engine, Outcome, PartitionMeta, StateChange};
use crate::http::Health;
use crate::metrics::Metrics;
use crate::model::{DerivedEvent, DerivedType};
use crate::validate::{validate, Clock, RejectReason, Rejection};
use changelog::{
    encode_marker, encode_state, marker_key, state_key, Marker, RestoreBuilder, StateRecord,
};
use registry::{output_topic, InputDecoder, OutputEncoder, RegistryError};

/// Why the service stopped.
#[derive(Debug, Error)]
pub enum ServiceError {
    /// A Kafka operation failed.
    #[error("kafka: {op}: {source}")]
    Kafka {
        /// What was being done.
        op: String,
        /// The client error.
        source: KafkaError,
    },
    /// A produced record was not acknowledged.
    #[error("delivery failed: {0}")]
    Delivery(String),
    /// Another instance with the same transactional id took over.
    #[error(
        "fenced by another instance with the same transactional id (a zombie of this \
         instance, or another instance with the same `kafka.instance_id`: each needs its own): {0}"
    )]
    Fenced(String),
    /// Restoring a partition failed.
    #[error("restore of {topic}[{partition}] failed: {message}")]
    Restore {
        /// Input topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// What went wrong.
        message: String,
    },
    /// The schema registry failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// A schema failed.
    #[error(transparent)]
    Schema(#[from] crate::codec::avro::SchemaError),
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// Topics are missing or misconfigured.
    #[error("topics: {0}")]
    Topics(String),
    /// A secret named by `file:PATH` could not be read.
    #[error("{key}: {message}")]
    Secret {
        /// The configuration key.
        key: String,
        /// What went wrong.
        message: String,
    },
}

fn kafka(op: impl Into<String>) -> impl FnOnce(KafkaError) -> ServiceError {
    let op = op.into();
    move |source| ServiceError::Kafka { op, source }
}

const TIMEOUT: Duration = Duration::from_secs(30);

/// Producer callbacks: delivery failures are fatal (the next checkpoint
/// would otherwise commit offsets past a lost record).
struct ProducerCtx {
    metrics: Arc<Metrics>,
    failure: Mutex<Option<String>>,
}

impl ClientContext for ProducerCtx {
    fn error(&self, error: KafkaError, reason: &str) {
        self.metrics
            .kafka_errors
            .with_label_values(&[kind_of(&error)])
            .inc();
        warn!(%error, reason, "Kafka producer error.");
    }

    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        forward_log(level, fac, log_message);
    }
}

impl ProducerContext for ProducerCtx {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, msg)) = result {
            self.metrics
                .kafka_errors
                .with_label_values(&["delivery"])
                .inc();
            let text = format!("{} to {}[{}]: {e}", "record", msg.topic(), msg.partition());
            if let Ok(mut f) = self.failure.lock() {
                f.get_or_insert(text);
            }
        }
    }
}

fn kind_of(e: &KafkaError) -> &'static str {
    match e.rdkafka_error_code() {
        Some(RDKafkaErrorCode::BrokerTransportFailure) | Some(RDKafkaErrorCode::AllBrokersDown) => {
            "transport"
        }
        Some(RDKafkaErrorCode::Authentication)
        | Some(RDKafkaErrorCode::SaslAuthenticationFailed) => "authentication",
        Some(RDKafkaErrorCode::TopicAuthorizationFailed)
        | Some(RDKafkaErrorCode::GroupAuthorizationFailed) => "authorization",
        Some(RDKafkaErrorCode::MessageTimedOut) => "timeout",
        Some(RDKafkaErrorCode::SSL) => "ssl",
        _ => "other",
    }
}

/// One assigned input partition.
struct Task {
    topic: Arc<str>,
    partition: i32,
    engine: Engine,
    /// Next offset to consume (None until something is known).
    next_offset: Option<i64>,
    /// Offset and meta of the last marker written or restored.
    marker: Option<(i64, PartitionMeta)>,
    gen: u64,
    repairs: Vec<Vec<u8>>,
    last_input: Instant,
    /// `touchstream_records_consumed_total` of the task's topic.
    consumed: prometheus::IntCounter,
    /// The partition's log span: entered while its records are processed.
    span: tracing::Span,
    /// Customers evicted in a generation no marker has covered yet.
    evicted_pending: Vec<Arc<str>>,
    /// Customers whose eviction a marker covers: their changelog keys are
    /// tombstoned at the next checkpoint (unless they came back), so that
    /// compaction forgets them.
    evicted_committed: Vec<Arc<str>>,
}

/// Everything the poll loop and the rebalance callback share.
struct Worker {
    cfg: Arc<Config>,
    engine_cfg: Arc<EngineConfig>,
    tasks: BTreeMap<(Arc<str>, i32), Task>,
    producer: ThreadedProducer<ProducerCtx>,
    decoder: InputDecoder,
    encoder: OutputEncoder,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    topics: Vec<String>,
    eos: bool,
    in_txn: bool,
    consumed_at: Vec<Instant>,
    /// Topic of the last record processed.
    last_topic: Option<Arc<str>>,
    last_checkpoint: Instant,
    changelog_partitions: i32,
    /// Bytes a dead letter's key and value may take ([`dlq_limit`]).
    dlq_limit: usize,
    fatal: Option<ServiceError>,
    buf: Vec<DerivedEvent>,
    /// Set by SIGTERM/SIGINT: checked while waiting on a dependency too.
    shutdown: Arc<AtomicBool>,
    /// The loop waits on the schema registry.
    registry_waiting: bool,
    /// Readiness before the registry wait began.
    ready_before_registry: bool,
}

struct ConsumerCtx {
    worker: Arc<Mutex<Worker>>,
    metrics: Arc<Metrics>,
}

fn lock(w: &Mutex<Worker>) -> MutexGuard<'_, Worker> {
    w.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl ClientContext for ConsumerCtx {
    fn stats(&self, stats: Statistics) {
        for (topic, t) in &stats.topics {
            for (p, part) in &t.partitions {
                if let Some(lag) = partition_lag(part) {
                    self.metrics
                        .consumer_lag
                        .with_label_values(&[topic.as_str(), &p.to_string()])
                        .set(lag);
                }
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.metrics
            .kafka_errors
            .with_label_values(&[kind_of(&error)])
            .inc();
        warn!(%error, reason, "Kafka consumer error.");
    }

    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        forward_log(level, fac, log_message);
    }
}

/// Records of an assigned partition not consumed yet. librdkafka's own
/// `consumer_lag` counts from the offset the consumer committed, which with
/// `exactly_once` it never does (the producer commits offsets inside the
/// transaction): then the lag counts from the next offset to hand to the
/// application, up to the last stable offset (read_committed).
fn partition_lag(part: &rdkafka::statistics::Partition) -> Option<i64> {
    if part.partition < 0 {
        return None;
    }
    if part.consumer_lag >= 0 {
        return Some(part.consumer_lag);
    }
    let end = if part.ls_offset >= 0 {
        part.ls_offset
    } else {
        part.hi_offset
    };
    (part.app_offset >= 0 && end >= 0).then(|| (end - part.app_offset).max(0))
}

impl ConsumerContext for ConsumerCtx {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        let mut w = lock(&self.worker);
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                w.health.ready.store(false, Ordering::Relaxed);
                let parts: Vec<(String, i32)> = tpl
                    .elements()
                    .iter()
                    .map(|e| (e.topic().to_string(), e.partition()))
                    .collect();
                for (topic, partition) in parts {
                    match w.restore(&topic, partition) {
                        Ok(Some(offset)) => {
                            let _ =
                                tpl.set_partition_offset(&topic, partition, Offset::Offset(offset));
                        }
                        Ok(None) => {}
                        Err(e) => {
                            error!(%e, topic, partition, "Partition restore failed.");
                            w.fatal.get_or_insert(e);
                        }
                    }
                }
                let r = if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                };
                if let Err(e) = r {
                    w.fatal.get_or_insert(ServiceError::Kafka {
                        op: "assign".into(),
                        source: e,
                    });
                }
                w.metrics.assigned_partitions.set(w.tasks.len() as i64);
                let ok = w.fatal.is_none();
                w.health.ready.store(ok, Ordering::Relaxed);
                w.metrics.ready.set(i64::from(ok));
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                if w.fatal.is_none() {
                    if let Err(e) = w.checkpoint(consumer) {
                        error!(%e, "Checkpoint on revoke failed.");
                        w.fatal.get_or_insert(e);
                    }
                }
                for e in tpl.elements() {
                    let key = (Arc::from(e.topic()), e.partition());
                    let p = e.partition().to_string();
                    let labels = [e.topic(), p.as_str()];
                    let _ = w.metrics.watermark.remove_label_values(&labels);
                    let _ = w.metrics.watermark_lag.remove_label_values(&labels);
                    let _ = w.metrics.consumer_lag.remove_label_values(&labels);
                    if w.tasks.remove(&key).is_some() {
                        info!(
                            topic = e.topic(),
                            partition = e.partition(),
                            "Partition revoked."
                        );
                    }
                }
                let r = if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                };
                if let Err(e) = r {
                    warn!(%e, "Unassign failed.");
                }
                w.metrics.assigned_partitions.set(w.tasks.len() as i64);
                w.update_gauges();
            }
            other => {
                error!(error = ?other, "Rebalance error.");
                let _ = consumer.unassign();
            }
        }
    }
}

fn client_config(cfg: &Config) -> ClientConfig {
    let mut c = ClientConfig::new();
    // librdkafka's own warnings (authentication, TLS, unreachable brokers)
    // reach our logs through the contexts' `log`.
    c.set_log_level(RDKafkaLogLevel::Warning);
    c.set("bootstrap.servers", &cfg.kafka.brokers);
    apply_client(&mut c, cfg, Role::Any);
    c
}

/// Which client a configuration is for: `[kafka.consumer]` and
/// `[kafka.producer]` apply on top of `[kafka.client]` to their own only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Any,
    Consumer,
    Producer,
}

/// Settings the delivery guarantees depend on: `[kafka.client]` cannot
/// override them.
const PROTECTED: [&str; 6] = [
    "enable.auto.commit",
    "enable.auto.offset.store",
    "group.id",
    "transactional.id",
    "enable.idempotence",
    "isolation.level",
];

/// Applies `[kafka.client]` on top of touchstream's defaults (so users can
/// tune e.g. `linger.ms` or `statistics.interval.ms`), except [`PROTECTED`] keys.
fn apply_client(c: &mut ClientConfig, cfg: &Config, role: Role) {
    let (section, extra) = match role {
        Role::Any => ("client", &cfg.kafka.client),
        Role::Consumer => ("consumer", &cfg.kafka.consumer),
        Role::Producer => ("producer", &cfg.kafka.producer),
    };
    let shared = (role != Role::Any).then_some(&cfg.kafka.client);
    for (k, v) in shared.into_iter().flatten().chain(extra) {
        if PROTECTED.contains(&k.as_str()) {
            warn!(
                key = k.as_str(),
                section, "kafka setting ignored: touchstream's delivery guarantees depend on it."
            );
        } else {
            c.set(k, v);
        }
    }
}

/// The group consumer's settings: touchstream's defaults, then
/// `[kafka.client]` and `[kafka.consumer]`.
fn group_consumer_config(cfg: &Config) -> ClientConfig {
    let mut cc = client_config(cfg);
    cc.set("group.id", &cfg.kafka.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", &cfg.kafka.auto_offset_reset)
        .set("isolation.level", "read_committed")
        .set("statistics.interval.ms", "5000");
    let protocol = cfg
        .kafka
        .consumer
        .get("group.protocol")
        .or_else(|| cfg.kafka.client.get("group.protocol"));
    // With the broker-side protocol (`group.protocol = "consumer"`) the
    // broker owns the session timeout and the assignor.
    if !protocol.is_some_and(|p| p.eq_ignore_ascii_case("consumer")) {
        // A member that dies (kill -9, a lost node) holds its partitions
        // until its session expires: 10 s rather than librdkafka's 45 s.
        // Heartbeats come from librdkafka's own thread, so a long batch or
        // restore does not expire it (`max.poll.interval.ms` covers those).
        cc.set("session.timeout.ms", DEFAULT_SESSION_TIMEOUT_MS);
        cc.set("partition.assignment.strategy", "cooperative-sticky");
    }
    apply_client(&mut cc, cfg, Role::Consumer);
    cc
}

/// The group consumer's `session.timeout.ms` unless configured.
const DEFAULT_SESSION_TIMEOUT_MS: &str = "10000";

/// The producer's `message.max.bytes` unless configured, and the
/// `max.message.bytes` of the topics touchstream creates: 8 MiB, well above
/// the broker's default 1 MiB input records, so that a dead letter (the
/// record plus headers), a derived event or a changelog state carrying
/// large ids from a near-limit input record still fits.
const DEFAULT_MESSAGE_MAX_BYTES: usize = 8 * 1024 * 1024;
const MAX_MESSAGE_BYTES_STR: &str = "8396800"; // 8 MiB + 8 KiB of record overhead

/// The broker's default `message.max.bytes`: what a topic takes when its
/// own limit could not be read.
const BROKER_DEFAULT_MESSAGE_MAX_BYTES: usize = 1_048_588;

/// Bytes a dead letter's key and value may take: the smaller of the
/// producer's `message.max.bytes` and the dead-letter topic's
/// `max.message.bytes` (`topic_max`; the broker default when it could not
/// be read), less room for headers and record overhead. A topic created by
/// hand keeps the broker's 1 MiB, and a near-limit input record plus our
/// headers would not fit it: the producer would fail on every restart.
fn dlq_limit(cfg: &Config, topic_max: Option<usize>) -> usize {
    let max = cfg
        .kafka
        .producer
        .get("message.max.bytes")
        .or_else(|| cfg.kafka.client.get("message.max.bytes"))
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(DEFAULT_MESSAGE_MAX_BYTES);
    max.min(topic_max.unwrap_or(BROKER_DEFAULT_MESSAGE_MAX_BYTES))
        .saturating_sub(8 * 1024)
}

/// A dead letter's key and value, cut to fit `limit` bytes together.
struct FittedLetter<'a> {
    key: &'a [u8],
    value: &'a [u8],
    truncated: bool,
}

/// Keeps key and value whole when they fit; else the key up to a quarter
/// of the room, and as much of the value as is left.
fn fit_dead_letter<'a>(key: &'a [u8], value: &'a [u8], limit: usize) -> FittedLetter<'a> {
    if key.len() + value.len() <= limit {
        return FittedLetter {
            key,
            value,
            truncated: false,
        };
    }
    let key = &key[..key.len().min(limit / 4)];
    let value = &value[..value.len().min(limit - key.len())];
    FittedLetter {
        key,
        value,
        truncated: true,
    }
}

/// At most `max` bytes of `s`, cut at a character boundary.
fn cut_str(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Reads a `[kafka.client]` (or `.consumer`, `.producer`) secret from a
/// file when given as `file:PATH` (so secrets can come from mounted
/// Kubernetes Secrets).
fn resolve_secrets(cfg: &mut Config) -> Result<(), ServiceError> {
    let k = &mut cfg.kafka;
    for (section, map) in [
        ("client", &mut k.client),
        ("consumer", &mut k.consumer),
        ("producer", &mut k.producer),
    ] {
        for (k, v) in map.iter_mut() {
            read_secret(&format!("kafka.{section}.{k}"), v)?;
        }
    }
    if let Some(v) = &mut cfg.schema_registry.password {
        read_secret("schema_registry.password", v)?;
    }
    Ok(())
}

/// Replaces a `file:PATH` value by the file's text (trailing newline cut).
fn read_secret(key: &str, v: &mut String) -> Result<(), ServiceError> {
    if let Some(path) = v.strip_prefix("file:") {
        let text = std::fs::read_to_string(path).map_err(|e| ServiceError::Secret {
            key: key.to_string(),
            message: format!("cannot read secret file {path}: {e}"),
        })?;
        *v = text.trim_end_matches(['\n', '\r']).to_string();
    }
    Ok(())
}

/// The instance id: `kafka.instance_id`, else the host name and the HTTP
/// port (`<host>-<port>`): stable across restarts of one instance (whose
/// transactional id then fences its own zombie at once), and different for
/// instances that share a host, which each need their own port. The host
/// name is `HOSTNAME`, else the kernel's, else "touchstream".
pub fn instance_id(cfg: &Config) -> String {
    if let Some(id) = &cfg.kafka.instance_id {
        return id.clone();
    }
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "touchstream".into());
    default_instance_id(&host, &cfg.http.listen, std::process::id())
}

/// `<host>-<port>`; with port 0 (any free port) the process id stands in.
fn default_instance_id(host: &str, listen: &str, pid: u32) -> String {
    match listen.rsplit(':').next().map(str::trim) {
        Some(port) if !port.is_empty() && port != "0" => format!("{host}-{port}"),
        _ => format!("{host}-pid{pid}"),
    }
}

impl Worker {
    fn fail_if_undelivered(&self) -> Result<(), ServiceError> {
        match self.producer.context().failure.lock() {
            Ok(f) => match f.as_ref() {
                Some(msg) => Err(ServiceError::Delivery(msg.clone())),
                None => Ok(()),
            },
            Err(_) => Err(ServiceError::Delivery("delivery state poisoned".into())),
        }
    }

    fn flush(&self) -> Result<(), ServiceError> {
        self.producer.flush(TIMEOUT).map_err(kafka("flush"))?;
        self.fail_if_undelivered()
    }

    fn ensure_txn(&mut self) -> Result<(), ServiceError> {
        if self.eos && !self.in_txn {
            self.producer
                .begin_transaction()
                .map_err(|e| self.classify("begin transaction", e))?;
            self.in_txn = true;
        }
        Ok(())
    }

    fn send(&self, mut record: BaseRecord<'_, [u8], [u8]>) -> Result<(), ServiceError> {
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    // Backpressure: the consumer is not polled while we wait.
                    record = r;
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err((e, _)) => return Err(self.classify("produce", e)),
            }
        }
    }

    /// Names the real cause of a producer failure: a fatal producer error
    /// (e.g. fenced by a newer instance with the same transactional id)
    /// surfaces as a generic error on the call that hit it.
    fn classify(&self, op: &str, e: KafkaError) -> ServiceError {
        if let Some((code, reason)) = self.producer.client().fatal_error() {
            let fenced = matches!(
                code,
                RDKafkaErrorCode::Fenced
                    | RDKafkaErrorCode::ProducerFenced
                    | RDKafkaErrorCode::InvalidProducerEpoch
            ) || reason.to_lowercase().contains("fenced");
            if fenced {
                return ServiceError::Fenced(format!("{op}: {reason}"));
            }
            return ServiceError::Delivery(format!("{op}: fatal producer error {code}: {reason}"));
        }
        txn_error(op, e)
    }

    /// Restores a partition; returns the offset to resume at (None: the
    /// group's committed offset or `auto_offset_reset`).
    fn restore(&mut self, topic: &str, partition: i32) -> Result<Option<i64>, ServiceError> {
        let started = Instant::now();
        let restore_err = |message: String| ServiceError::Restore {
            topic: topic.to_string(),
            partition,
            message,
        };
        let cl_topic = self.cfg.kafka.changelog_topic.clone();
        let cl_partition = partition % self.changelog_partitions.max(1);
        let mut cc = client_config(&self.cfg);
        cc.set("group.id", format!("{}-restore", self.cfg.kafka.group_id))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .set("isolation.level", "read_committed");
        apply_client(&mut cc, &self.cfg, Role::Consumer);
        // The restore consumer reads by assignment and never joins the
        // group: a static member id meant for the group consumer must not
        // reach it.
        cc.remove("group.instance.id");
        let rc: BaseConsumer = cc.create().map_err(kafka("create restore consumer"))?;
        // A changelog created a moment ago may not have a leader yet: retry.
        let deadline = started + self.cfg.kafka.restore_timeout.as_duration();
        let (low, high) = loop {
            match rc.fetch_watermarks(&cl_topic, cl_partition, TIMEOUT) {
                Ok(w) => break w,
                Err(e) if Instant::now() < deadline => {
                    warn!(%e, changelog = %cl_topic, changelog_partition = cl_partition, input_topic = topic, input_partition = partition, "Changelog not available yet; retrying.");
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(e) => {
                    return Err(ServiceError::Kafka {
                        op: "changelog watermarks".into(),
                        source: e,
                    })
                }
            }
        };
        let mut builder = RestoreBuilder::new(topic);
        if high > low {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(&cl_topic, cl_partition, Offset::Beginning)
                .map_err(kafka("restore assignment"))?;
            rc.assign(&tpl).map_err(kafka("assign changelog"))?;
            loop {
                self.health.beat();
                match rc.poll(Duration::from_millis(200)) {
                    Some(Ok(m)) => {
                        builder
                            .push(m.key().unwrap_or_default(), m.payload(), m.offset())
                            .map_err(|e| restore_err(e.to_string()))?;
                        if m.offset() >= high - 1 {
                            break;
                        }
                    }
                    Some(Err(e)) => warn!(%e, "Changelog read error during restore."),
                    None => {
                        let pos = rc.position().ok().and_then(|p| {
                            p.find_partition(&cl_topic, cl_partition)
                                .and_then(|e| e.offset().to_raw())
                        });
                        if pos.is_some_and(|p| p >= high) {
                            break;
                        }
                    }
                }
                if Instant::now() > deadline {
                    return Err(restore_err(format!(
                        "not done after {:?}",
                        self.cfg.kafka.restore_timeout.as_duration()
                    )));
                }
            }
        }
        let restored = builder.finish();
        let customers = restored.customers.len();
        let (mut engine, offset, marker) = match restored.marker {
            Some(m) => (
                Engine::restore(self.engine_cfg.clone(), m.meta, restored.customers),
                Some(m.offset),
                Some((m.offset, m.meta)),
            ),
            None => (Engine::new(self.engine_cfg.clone()), None, None),
        };
        engine.collect_kpis(true);
        let span = tracing::info_span!("partition", topic, partition);
        let task = Task {
            topic: Arc::from(topic),
            partition,
            engine,
            next_offset: offset,
            marker,
            gen: restored.next_gen,
            repairs: restored.repairs,
            last_input: Instant::now(),
            consumed: self.metrics.records_consumed.with_label_values(&[topic]),
            span,
            evicted_pending: Vec::new(),
            evicted_committed: Vec::new(),
        };
        self.metrics
            .restore_duration
            .observe(started.elapsed().as_secs_f64());
        self.metrics.restored_customers.inc_by(customers as u64);
        info!(
            topic,
            partition,
            customers,
            records = restored.records,
            resume_offset = ?offset,
            seconds = started.elapsed().as_secs_f64(),
            "Partition restored."
        );
        self.tasks.insert((Arc::from(topic), partition), task);
        self.update_gauges();
        Ok(offset)
    }

    fn dead_letter(&self, msg: &impl Message, rejection: &Rejection) -> Result<(), ServiceError> {
        let partition = msg.partition().to_string();
        let offset = msg.offset().to_string();
        let error = cut_str(&rejection.message, 1024);
        // A record near the broker's size limit plus our headers would not
        // fit the producer's: the dead letter then keeps what fits, says so
        // in `error.truncated` (the original sizes), and is counted.
        let fit = fit_dead_letter(
            msg.key().unwrap_or_default(),
            msg.payload().unwrap_or_default(),
            self.dlq_limit,
        );
        let mut headers = OwnedHeaders::new()
            .insert(Header {
                key: "error.reason",
                value: Some(rejection.reason.as_str()),
            })
            .insert(Header {
                key: "error.message",
                value: Some(error),
            })
            .insert(Header {
                key: "source.topic",
                value: Some(msg.topic()),
            })
            .insert(Header {
                key: "source.partition",
                value: Some(partition.as_str()),
            })
            .insert(Header {
                key: "source.offset",
                value: Some(offset.as_str()),
            });
        let truncated = fit.truncated.then(|| {
            format!(
                "key {} of {} bytes, value {} of {} bytes",
                fit.key.len(),
                msg.key().map_or(0, <[u8]>::len),
                fit.value.len(),
                msg.payload().map_or(0, <[u8]>::len)
            )
        });
        if let Some(t) = &truncated {
            headers = headers.insert(Header {
                key: "error.truncated",
                value: Some(t.as_str()),
            });
        }
        let mut rec: BaseRecord<'_, [u8], [u8]> =
            BaseRecord::to(&self.cfg.kafka.dlq_topic).headers(headers);
        if msg.key().is_some() {
            rec = rec.key(fit.key);
        }
        if msg.payload().is_some() {
            rec = rec.payload(fit.value);
        }
        self.send(rec)?;
        if let Some(t) = &truncated {
            self.metrics.dlq_truncated.inc();
            warn!(
                topic = msg.topic(),
                partition = msg.partition(),
                offset = msg.offset(),
                kept = t.as_str(),
                "Dead letter cut to fit the message size limit."
            );
        }
        self.metrics
            .records_rejected
            .with_label_values(&[rejection.reason.as_str()])
            .inc();
        self.metrics.dlq_records.inc();
        warn!(
            topic = msg.topic(),
            partition = msg.partition(),
            offset = msg.offset(),
            reason = rejection.reason.as_str(),
            error = rejection.message.as_str(),
            "Touchpoint rejected to the dead-letter topic."
        );
        Ok(())
    }

    fn emit(&mut self) -> Result<(), ServiceError> {
        let events = std::mem::take(&mut self.buf);
        for ev in &events {
            let value = self.encoder.encode(ev)?;
            let event_id = ev.event_id.to_string();
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: "type",
                    value: Some(ev.kind.as_str()),
                })
                .insert(Header {
                    key: "event_id",
                    value: Some(event_id.as_str()),
                });
            let rec: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&self.topics[ev.kind as usize])
                .key(ev.customer_id.as_bytes())
                .payload(value.as_slice())
                .headers(headers);
            self.send(rec)?;
            self.metrics.derived_event(ev.kind);
        }
        self.buf = events;
        self.buf.clear();
        Ok(())
    }

    /// Processes one record, consumed at `now`.
    fn process(&mut self, msg: &impl Message, now: Instant) -> Result<(), ServiceError> {
        self.consumed_at.push(now);
        // The topic name of the previous record, shared: no allocation per
        // record while a batch comes from one topic.
        let topic = match &self.last_topic {
            Some(t) if &**t == msg.topic() => t.clone(),
            _ => {
                let t: Arc<str> = Arc::from(msg.topic());
                self.last_topic = Some(t.clone());
                t
            }
        };
        let key = (topic, msg.partition());
        let Some(span) = self.tasks.get(&key).map(|t| {
            t.consumed.inc();
            t.span.clone()
        }) else {
            self.metrics
                .records_consumed
                .with_label_values(&[msg.topic()])
                .inc();
            warn!(
                topic = msg.topic(),
                partition = msg.partition(),
                "Record for an unassigned partition ignored."
            );
            return Ok(());
        };
        let _entered = span.enter();
        self.ensure_txn()?;
        let decoded = loop {
            match self.decoder.decode(msg.topic(), msg.payload()) {
                Ok(raw) => break Ok(raw),
                Err(Ok(rejection)) => break Err(rejection),
                Err(Err(e)) => {
                    // The registry is unreachable: retry, never reject good
                    // data. Every partition waits (one service loop): not
                    // ready meanwhile, still live, and a stop request is
                    // honoured at once (the record is read again after the
                    // restart: its offset is not committed).
                    self.metrics
                        .kafka_errors
                        .with_label_values(&["schema_registry"])
                        .inc();
                    warn!(%e, "Schema registry unavailable; every partition waits for it (not ready); retrying.");
                    if !self.wait_for_registry() {
                        return Ok(());
                    }
                }
            }
        };
        if self.registry_waiting {
            self.registry_back();
        }
        let clock = Clock {
            now: crate::cli::wall_clock_ms(),
            max_future: self.cfg.time.max_future.0,
        };
        let result = decoded.and_then(|raw| validate(raw, clock));
        let Some(task) = self.tasks.get_mut(&key) else {
            return Ok(());
        };
        task.next_offset = Some(msg.offset() + 1);
        task.last_input = now;
        match result {
            Err(rejection) => self.dead_letter(msg, &rejection)?,
            Ok(tp) => {
                let t = tp.timestamp;
                let wm = task.engine.watermark();
                let before = *task.engine.stats();
                let outcome = task.engine.on_touchpoint(&tp, &mut self.buf);
                let after = *task.engine.stats();
                self.metrics.record_kpis(task.engine.kpis());
                task.engine.clear_kpis();
                self.metrics
                    .timers_fired
                    .inc_by(after.timers_fired - before.timers_fired);
                self.metrics.evicted.inc_by(after.evicted - before.evicted);
                match outcome {
                    Outcome::Accepted { late } => {
                        if late {
                            self.metrics.late_events.inc();
                        }
                    }
                    Outcome::Duplicate => self.metrics.duplicates.inc(),
                    Outcome::TooLate => {
                        let msg_text = format!(
                            "timestamp {t} is older than watermark {} minus allowed lateness {} ms",
                            wm.unwrap_or_default(),
                            self.engine_cfg.allowed_lateness
                        );
                        self.dead_letter(msg, &Rejection::new(RejectReason::TooLate, msg_text))?;
                    }
                }
                self.emit()?;
            }
        }
        Ok(())
    }

    /// Waits a second for the registry to come back, marking the instance
    /// not ready and counting the waiting partitions; false when a stop
    /// was requested meanwhile.
    fn wait_for_registry(&mut self) -> bool {
        if !self.registry_waiting {
            self.registry_waiting = true;
            self.ready_before_registry = self.health.ready.load(Ordering::Relaxed);
        }
        self.health.ready.store(false, Ordering::Relaxed);
        self.metrics.ready.set(0);
        self.metrics
            .partitions_waiting_on_registry
            .set(self.tasks.len() as i64);
        for _ in 0..10 {
            self.health.beat();
            if self.shutdown.load(Ordering::Relaxed) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        !self.shutdown.load(Ordering::Relaxed)
    }

    /// The registry answered again: readiness as it was before the wait.
    fn registry_back(&mut self) {
        self.registry_waiting = false;
        self.metrics.partitions_waiting_on_registry.set(0);
        let ready = self.ready_before_registry && self.fatal.is_none();
        self.health.ready.store(ready, Ordering::Relaxed);
        self.metrics.ready.set(i64::from(ready));
        info!("Schema registry answers again; processing resumed.");
    }

    /// Idle partitions follow the wall clock (SPEC 3).
    fn idle_advance(&mut self) -> Result<(), ServiceError> {
        let idle = self.cfg.time.idle_timeout.as_duration();
        let now_ms = crate::cli::wall_clock_ms();
        let to = now_ms - self.engine_cfg.max_out_of_orderness;
        let mut fired = false;
        let mut buf = std::mem::take(&mut self.buf);
        for task in self.tasks.values_mut() {
            if task.last_input.elapsed() >= idle && task.engine.watermark().is_some_and(|w| w < to)
            {
                let before = buf.len();
                task.engine.advance_watermark(to, &mut buf);
                fired |= buf.len() > before;
                self.metrics.record_kpis(task.engine.kpis());
                task.engine.clear_kpis();
            }
        }
        self.buf = buf;
        if fired {
            self.ensure_txn()?;
        }
        self.emit()
    }

    fn update_gauges(&self) {
        let (mut customers, mut bytes, mut timers) = (0, 0, 0);
        let mut population = crate::engine::kpi::Population::default();
        let now = crate::cli::wall_clock_ms();
        for t in self.tasks.values() {
            customers += t.engine.customers();
            let p = t.engine.population();
            for i in 0..3 {
                population.levels[i] += p.levels[i];
            }
            for i in 0..5 {
                population.stages[i] += p.stages[i];
            }
            bytes += t.engine.approx_state_bytes();
            timers += t.engine.pending_timers();
            if let Some(w) = t.engine.watermark() {
                let p = t.partition.to_string();
                self.metrics
                    .watermark
                    .with_label_values(&[&*t.topic, p.as_str()])
                    .set(w as f64 / 1000.0);
                self.metrics
                    .watermark_lag
                    .with_label_values(&[&*t.topic, p.as_str()])
                    .set((now - w) as f64 / 1000.0);
            }
        }
        self.metrics.customers.set(customers as i64);
        self.metrics.set_population(&population);
        self.metrics.state_bytes.set(bytes as i64);
        self.metrics.pending_timers.set(timers as i64);
    }

    /// Makes everything so far durable; see the module docs.
    fn checkpoint(&mut self, consumer: &BaseConsumer<ConsumerCtx>) -> Result<(), ServiceError> {
        let started = Instant::now();
        if !self.eos {
            self.flush()?;
        }
        let cl_topic = self.cfg.kafka.changelog_topic.clone();
        let mut markers: Vec<((Arc<str>, i32), Marker, i32)> = Vec::new();
        let keys: Vec<(Arc<str>, i32)> = self.tasks.keys().cloned().collect();
        for key in keys {
            let Some(task) = self.tasks.get_mut(&key) else {
                continue;
            };
            let changes = task.engine.drain_changes();
            let meta = task.engine.meta();
            let mut repairs = std::mem::take(&mut task.repairs);
            for id in std::mem::take(&mut task.evicted_committed) {
                if task.engine.customer(&id).is_none() {
                    repairs.push(state_key(&task.topic, &id, 1));
                    repairs.push(state_key(&task.topic, &id, 2));
                }
            }
            let covered = task.marker.map(|(o, m)| (Some(o), m));
            let unchanged = changes.is_empty()
                && repairs.is_empty()
                && covered == Some((task.next_offset, meta));
            if unchanged {
                continue;
            }
            let (topic, partition, gen, next_offset) = (
                task.topic.clone(),
                task.partition,
                task.gen,
                task.next_offset,
            );
            task.gen += 1;
            let cl_partition = partition % self.changelog_partitions.max(1);
            self.ensure_txn()?;
            let n = changes.len() + repairs.len();
            for k in &repairs {
                self.send(
                    BaseRecord::<[u8], [u8]>::to(&cl_topic)
                        .key(k.as_slice())
                        .partition(cl_partition),
                )?;
            }
            for ch in changes {
                let (k, v) = match ch {
                    StateChange::Upsert(c) => {
                        let k = state_key(&topic, c.id(), c.slot);
                        (
                            k,
                            encode_state(&StateRecord {
                                gen,
                                state: Some(c),
                            }),
                        )
                    }
                    StateChange::Delete { id, slot } => {
                        let k = state_key(&topic, &id, slot);
                        if let Some(t) = self.tasks.get_mut(&key) {
                            t.evicted_pending.push(id);
                        }
                        (k, encode_state(&StateRecord { gen, state: None }))
                    }
                };
                self.send(
                    BaseRecord::to(&cl_topic)
                        .key(k.as_slice())
                        .payload(v.as_slice())
                        .partition(cl_partition),
                )?;
            }
            self.metrics
                .checkpoint_records
                .with_label_values(&[&partition.to_string()])
                .observe(n as f64);
            if let Some(offset) = next_offset {
                markers.push((key.clone(), Marker { gen, offset, meta }, cl_partition));
            }
        }
        if !self.eos {
            self.flush()?;
        }
        for (key, m, cl_partition) in &markers {
            let k = marker_key(&key.0);
            let v = encode_marker(m);
            self.send(
                BaseRecord::to(&cl_topic)
                    .key(k.as_slice())
                    .payload(v.as_slice())
                    .partition(*cl_partition),
            )?;
        }
        let mut offsets = TopicPartitionList::new();
        for t in self.tasks.values() {
            if let Some(o) = t.next_offset {
                offsets
                    .add_partition_offset(&t.topic, t.partition, Offset::Offset(o))
                    .map_err(kafka("offset list"))?;
            }
        }
        if self.eos {
            if self.in_txn {
                if offsets.count() > 0 {
                    let gm = consumer
                        .group_metadata()
                        .ok_or_else(|| ServiceError::Fenced("no consumer group metadata".into()))?;
                    self.producer
                        .send_offsets_to_transaction(&offsets, &gm, TIMEOUT)
                        .map_err(|e| self.classify("send offsets to transaction", e))?;
                }
                self.producer
                    .commit_transaction(TIMEOUT)
                    .map_err(|e| self.classify("commit transaction", e))?;
                self.in_txn = false;
            }
        } else {
            self.flush()?;
            if offsets.count() > 0 {
                if let Err(e) = consumer.commit(&offsets, CommitMode::Async) {
                    // Group offsets only feed lag; the changelog marker is authoritative.
                    warn!(%e, "Offset commit failed.");
                }
            }
        }
        for (key, m, _) in markers {
            if let Some(t) = self.tasks.get_mut(&key) {
                t.marker = Some((m.offset, m.meta));
                let covered = std::mem::take(&mut t.evicted_pending);
                t.evicted_committed.extend(covered);
            }
        }
        let done = Instant::now();
        for at in self.consumed_at.drain(..) {
            self.metrics
                .processing_latency
                .observe(done.duration_since(at).as_secs_f64());
        }
        self.metrics
            .commit_duration
            .observe(started.elapsed().as_secs_f64());
        self.last_checkpoint = done;
        self.update_gauges();
        Ok(())
    }
}

fn txn_error(op: &str, e: KafkaError) -> ServiceError {
    let fenced = matches!(
        e.rdkafka_error_code(),
        Some(RDKafkaErrorCode::Fenced)
            | Some(RDKafkaErrorCode::ProducerFenced)
            | Some(RDKafkaErrorCode::InvalidProducerEpoch)
    ) || e.to_string().to_lowercase().contains("fenced");
    if fenced {
        ServiceError::Fenced(format!("{op}: {e}"))
    } else {
        ServiceError::Kafka {
            op: op.to_string(),
            source: e,
        }
    }
}

/// Startup clients report connection and authentication problems as
/// warnings (librdkafka retries them itself) and count them.
struct StartupCtx {
    metrics: Arc<Metrics>,
}

impl ClientContext for StartupCtx {
    fn error(&self, error: KafkaError, reason: &str) {
        self.metrics
            .kafka_errors
            .with_label_values(&[kind_of(&error)])
            .inc();
        warn!(%error, reason, "Kafka client error during startup.");
    }

    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        forward_log(level, fac, log_message);
    }
}

/// librdkafka's own log lines, at their level, through `tracing`.
fn forward_log(level: RDKafkaLogLevel, fac: &str, log_message: &str) {
    match level {
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error => {
            error!(facility = fac, "librdkafka: {log_message}")
        }
        RDKafkaLogLevel::Warning => warn!(facility = fac, "librdkafka: {log_message}"),
        _ => tracing::debug!(facility = fac, "librdkafka: {log_message}"),
    }
}

impl ConsumerContext for StartupCtx {}

const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// What startup learns of the topics.
struct TopicFacts {
    changelog_partitions: i32,
    /// The dead-letter topic's `max.message.bytes`, when it could be read.
    dlq_max_bytes: Option<usize>,
}

fn ensure_topics(
    cfg: &Config,
    rt: &tokio::runtime::Handle,
    metrics: &Arc<Metrics>,
) -> Result<TopicFacts, ServiceError> {
    let ctx = StartupCtx {
        metrics: metrics.clone(),
    };
    let meta_client: BaseConsumer<StartupCtx> = client_config(cfg)
        .create_with_context(ctx)
        .map_err(kafka("create metadata client"))?;
    let mut partitions = 0;
    for t in &cfg.kafka.input_topics {
        let md = match meta_client.fetch_metadata(Some(t), STARTUP_TIMEOUT) {
            Ok(md) => md,
            Err(e) => {
                // Serve queued client events so that the reason (e.g. an
                // authentication failure) is logged by the context.
                let _ = meta_client.poll(Duration::from_millis(200));
                return Err(ServiceError::Kafka {
                    op: "fetch metadata".into(),
                    source: e,
                });
            }
        };
        let n = md.topics().first().map_or(0, |t| t.partitions().len()) as i32;
        if n == 0 {
            return Err(ServiceError::Topics(format!(
                "input topic `{t}` does not exist"
            )));
        }
        partitions = partitions.max(n);
    }
    let cl = meta_client
        .fetch_metadata(Some(&cfg.kafka.changelog_topic), STARTUP_TIMEOUT)
        .map_err(kafka("fetch metadata"))?;
    let cl_partitions = cl.topics().first().map_or(0, |t| t.partitions().len()) as i32;
    let admin: AdminClient<DefaultClientContext> = client_config(cfg)
        .create()
        .map_err(kafka("create admin client"))?;
    if !cfg.kafka.create_topics {
        if cl_partitions == 0 {
            return Err(ServiceError::Topics(format!(
                "changelog topic `{}` does not exist",
                cfg.kafka.changelog_topic
            )));
        }
        return check_topics(cfg, rt, &admin, partitions, cl_partitions);
    }
    let rf = cfg.kafka.replication_factor;
    let mut names: Vec<String> = DerivedType::ALL
        .iter()
        .map(|t| output_topic(cfg, *t))
        .collect();
    names.push(cfg.kafka.dlq_topic.clone());
    let mut new: Vec<NewTopic<'_>> = names
        .iter()
        .map(|n| {
            NewTopic::new(n, partitions, TopicReplication::Fixed(rf))
                .set("max.message.bytes", MAX_MESSAGE_BYTES_STR)
        })
        .collect();
    if cl_partitions == 0 {
        new.push(
            NewTopic::new(
                &cfg.kafka.changelog_topic,
                partitions,
                TopicReplication::Fixed(rf),
            )
            .set("cleanup.policy", "compact")
            .set("max.message.bytes", MAX_MESSAGE_BYTES_STR),
        );
    }
    let results = rt
        .block_on(admin.create_topics(&new, &AdminOptions::new().operation_timeout(Some(TIMEOUT))))
        .map_err(kafka("create topics"))?;
    for r in results {
        if let Err((name, code)) = r {
            if code != RDKafkaErrorCode::TopicAlreadyExists {
                return Err(ServiceError::Topics(format!(
                    "cannot create `{name}`: {code}"
                )));
            }
        }
    }
    let n = if cl_partitions == 0 {
        partitions
    } else {
        cl_partitions
    };
    wait_for_leaders(&meta_client, &cfg.kafka.changelog_topic, n);
    check_topics(cfg, rt, &admin, partitions, n)
}

/// Refuses a changelog that cannot hold the state (fewer partitions than
/// the input: each input partition's state and checkpoint markers need a
/// changelog partition of their own; not compacted: quiet customers'
/// state would expire) and reads the dead-letter topic's size limit.
fn check_topics(
    cfg: &Config,
    rt: &tokio::runtime::Handle,
    admin: &AdminClient<DefaultClientContext>,
    input_partitions: i32,
    changelog_partitions: i32,
) -> Result<TopicFacts, ServiceError> {
    let changelog = cfg.kafka.changelog_topic.as_str();
    if changelog_partitions < input_partitions {
        return Err(ServiceError::Topics(format!(
            "changelog topic `{changelog}` has {changelog_partitions} partitions and the input \
             {input_partitions}: each input partition needs its own (add partitions to the \
             changelog, e.g. `kafka-topics --alter --partitions {input_partitions}`)"
        )));
    }
    let resources = [
        ResourceSpecifier::Topic(changelog),
        ResourceSpecifier::Topic(&cfg.kafka.dlq_topic),
    ];
    let described = rt.block_on(admin.describe_configs(
        &resources,
        &AdminOptions::new().request_timeout(Some(TIMEOUT)),
    ));
    let configs = match described {
        Ok(results) => results.into_iter().map(Result::ok).collect::<Vec<_>>(),
        Err(e) => {
            warn!(%e, "Cannot read the changelog's and dead-letter topic's configuration (DescribeConfigs); dead letters are cut to the broker's default 1 MiB.");
            vec![None, None]
        }
    };
    let value = |i: usize, key: &str| -> Option<String> {
        configs
            .get(i)
            .and_then(Option::as_ref)
            .and_then(|c| c.get(key))
            .and_then(|e| e.value.clone())
    };
    if let Some(policy) = value(0, "cleanup.policy") {
        if !policy.split(',').any(|p| p.trim() == "compact") {
            return Err(ServiceError::Topics(format!(
                "changelog topic `{changelog}` has cleanup.policy={policy}: it must be compacted \
                 (`cleanup.policy=compact`), or state of customers quiet longer than its \
                 retention is lost at the next restore"
            )));
        }
    }
    let dlq_max_bytes = value(1, "max.message.bytes").and_then(|v| v.parse().ok());
    Ok(TopicFacts {
        changelog_partitions,
        dlq_max_bytes,
    })
}

type Started = (
    TopicFacts,
    InputDecoder,
    OutputEncoder,
    ThreadedProducer<ProducerCtx>,
);

/// Everything that needs the brokers (and registry) before consuming.
fn start(
    cfg: &Config,
    rt: &tokio::runtime::Handle,
    metrics: &Arc<Metrics>,
    eos: bool,
) -> Result<Started, ServiceError> {
    let topics = ensure_topics(cfg, rt, metrics)?;
    let decoder = InputDecoder::new(cfg)?;
    let encoder = OutputEncoder::new(cfg)?;
    let mut pc = client_config(cfg);
    pc.set("enable.idempotence", "true")
        .set("message.max.bytes", DEFAULT_MESSAGE_MAX_BYTES.to_string())
        .set("acks", "all")
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "60000");
    if eos {
        // librdkafka requires message.timeout.ms <= transaction.timeout.ms.
        pc.set("transaction.timeout.ms", "60000");
    }
    apply_client(&mut pc, cfg, Role::Producer);
    if eos {
        let prefix = cfg
            .kafka
            .transactional_id
            .clone()
            .unwrap_or_else(|| cfg.kafka.group_id.clone());
        pc.set("transactional.id", format!("{prefix}-{}", instance_id(cfg)));
    }
    let producer: ThreadedProducer<ProducerCtx> = pc
        .create_with_context(ProducerCtx {
            metrics: metrics.clone(),
            failure: Mutex::new(None),
        })
        .map_err(kafka("create producer"))?;
    if eos {
        producer
            .init_transactions(TIMEOUT)
            .map_err(|e| txn_error("init transactions", e))?;
    }
    Ok((topics, decoder, encoder, producer))
}

/// Waits (up to 30 s) until every partition of a topic has a leader, so
/// that a topic created a moment ago can be read at once.
fn wait_for_leaders(client: &BaseConsumer<StartupCtx>, topic: &str, partitions: i32) {
    let until = Instant::now() + Duration::from_secs(30);
    while Instant::now() < until {
        let ready = client
            .fetch_metadata(Some(topic), STARTUP_TIMEOUT)
            .ok()
            .is_some_and(|md| {
                md.topics().first().is_some_and(|t| {
                    t.error().is_none()
                        && t.partitions().len() as i32 >= partitions
                        && t.partitions()
                            .iter()
                            .all(|p| p.leader() >= 0 && p.error().is_none())
                })
            });
        if ready {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    warn!(topic, "Partitions still without a leader after 30 s.");
}

/// Runs the service until `shutdown` is set or a fatal error happens.
pub fn run(
    mut cfg: Config,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    shutdown: Arc<AtomicBool>,
    rt: tokio::runtime::Handle,
) -> Result<(), ServiceError> {
    resolve_secrets(&mut cfg)?;
    let cfg = Arc::new(cfg);
    let engine_cfg = Arc::new(cfg.engine()?);
    let eos = cfg.kafka.delivery == Delivery::ExactlyOnce;
    // Brokers, credentials and the registry may be unavailable or wrong for
    // a while: stay up and not ready, say why, and retry (no crash loop).
    let mut backoff = Duration::from_secs(1);
    let (topics, decoder, encoder, producer) = loop {
        if shutdown.load(Ordering::Relaxed) {
            return Ok(());
        }
        match start(&cfg, &rt, &metrics, eos) {
            Ok(parts) => break parts,
            Err(e @ (ServiceError::Config(_) | ServiceError::Schema(_))) => return Err(e),
            // A client that cannot even be created is misconfigured: retrying cannot help.
            Err(
                e @ ServiceError::Kafka {
                    source: KafkaError::ClientCreation(_),
                    ..
                },
            ) => return Err(e),
            Err(e) => {
                let check = match e {
                    ServiceError::Registry(_) => {
                        "Check schema_registry (URL, credentials) and the registry's answer above."
                    }
                    _ => "Check kafka.brokers, credentials and topics.",
                };
                error!(error = %e, retry_in_s = backoff.as_secs(), "Cannot start; not ready. {check}");
                let until = Instant::now() + backoff;
                while Instant::now() < until && !shutdown.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(100));
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    };

    let worker = Arc::new(Mutex::new(Worker {
        cfg: cfg.clone(),
        engine_cfg,
        tasks: BTreeMap::new(),
        producer,
        decoder,
        encoder,
        metrics: metrics.clone(),
        health: health.clone(),
        topics: DerivedType::ALL
            .iter()
            .map(|t| output_topic(&cfg, *t))
            .collect(),
        eos,
        in_txn: false,
        consumed_at: Vec::new(),
        last_topic: None,
        last_checkpoint: Instant::now(),
        changelog_partitions: topics.changelog_partitions,
        dlq_limit: dlq_limit(&cfg, topics.dlq_max_bytes),
        fatal: None,
        buf: Vec::new(),
        shutdown: shutdown.clone(),
        registry_waiting: false,
        ready_before_registry: false,
    }));

    let cc = group_consumer_config(&cfg);
    let consumer: BaseConsumer<ConsumerCtx> = cc
        .create_with_context(ConsumerCtx {
            worker: worker.clone(),
            metrics: metrics.clone(),
        })
        .map_err(kafka("create consumer"))?;
    let topics: Vec<&str> = cfg.kafka.input_topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics).map_err(kafka("subscribe"))?;
    info!(topics = ?topics, group = cfg.kafka.group_id, delivery = ?cfg.kafka.delivery, "touchstream is running.");

    let interval = cfg.kafka.commit_interval.as_duration();
    let mut result = Ok(());
    // Liveness and idle partitions are looked at every TICK, not for every
    // record: clock reads per record are a visible share of the CPU.
    const TICK: Duration = Duration::from_millis(100);
    let mut last_tick: Option<Instant> = None;
    while !shutdown.load(Ordering::Relaxed) {
        let polled = consumer.poll(Duration::from_millis(100));
        let now = Instant::now();
        let tick = polled.is_none() || last_tick.is_none_or(|t| now.duration_since(t) >= TICK);
        if tick {
            health.beat();
            last_tick = Some(now);
        }
        let mut w = lock(&worker);
        if let Some(e) = w.fatal.take() {
            result = Err(e);
            break;
        }
        let step = match polled {
            Some(Ok(msg)) => w.process(&msg, now),
            Some(Err(e)) => {
                metrics.kafka_errors.with_label_values(&[kind_of(&e)]).inc();
                warn!(%e, "Consumer error.");
                Ok(())
            }
            None => Ok(()),
        };
        let step = step
            .and_then(|_| if tick { w.idle_advance() } else { Ok(()) })
            .and_then(|_| {
                if now.saturating_duration_since(w.last_checkpoint) >= interval {
                    w.checkpoint(&consumer)
                } else {
                    Ok(())
                }
            });
        if let Err(e) = step {
            result = Err(e);
            break;
        }
    }
    {
        let mut w = lock(&worker);
        if result.is_ok() {
            info!("Shutting down: final checkpoint.");
            result = w.checkpoint(&consumer);
        }
        if result.is_err() {
            health.failed.store(true, Ordering::Relaxed);
            if w.eos && w.in_txn {
                let _ = w.producer.abort_transaction(Duration::from_secs(5));
                w.in_txn = false;
            }
            // Prevent the revoke callback of close() from checkpointing.
            w.fatal
                .get_or_insert(ServiceError::Delivery("stopping after an error".into()));
        }
        health.ready.store(false, Ordering::Relaxed);
    }
    consumer.unsubscribe();
    drop(consumer);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letters_are_cut_to_fit() {
        let key = vec![b'k'; 10];
        let value = vec![b'v'; 1000];
        let f = fit_dead_letter(&key, &value, 2000);
        assert!(!f.truncated && f.key.len() == 10 && f.value.len() == 1000);
        let f = fit_dead_letter(&key, &value, 500);
        assert!(f.truncated && f.key.len() == 10 && f.value.len() == 490);
        let big_key = vec![b'k'; 1000];
        let f = fit_dead_letter(&big_key, &value, 500);
        assert!(f.truncated && f.key.len() == 125 && f.value.len() == 375);
        assert_eq!(cut_str("héllo", 2), "h");
        assert_eq!(cut_str("héllo", 3), "hé");
        let cfg = Config::from_parts(
            "t",
            "[kafka.producer]\n\"message.max.bytes\" = \"2000000\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(dlq_limit(&cfg, Some(8 << 20)), 2_000_000 - 8192);
        let cfg = Config::from_parts("t", "", &[]).unwrap();
        assert_eq!(dlq_limit(&cfg, Some(8_396_800)), 8 * 1024 * 1024 - 8192);
        // A topic created by hand keeps the broker's 1 MiB; unknown: the same.
        assert_eq!(dlq_limit(&cfg, Some(1_048_588)), 1_048_588 - 8192);
        assert_eq!(dlq_limit(&cfg, None), 1_048_588 - 8192);
        assert_eq!(
            MAX_MESSAGE_BYTES_STR.parse::<usize>().ok(),
            Some(DEFAULT_MESSAGE_MAX_BYTES + 8192)
        );
    }

    #[test]
    fn consumer_and_producer_sections_reach_only_their_client() {
        let text = r#"
[kafka.client]
"client.id" = "ts"
"enable.auto.commit" = "true"

[kafka.consumer]
"fetch.max.bytes" = "1000000"

[kafka.producer]
"linger.ms" = "20"
"transactional.id" = "stolen"
"#;
        let cfg = Config::from_parts("t", text, &[]).unwrap();
        let mut consumer = ClientConfig::new();
        apply_client(&mut consumer, &cfg, Role::Consumer);
        let mut producer = ClientConfig::new();
        apply_client(&mut producer, &cfg, Role::Producer);
        let admin = client_config(&cfg);
        for c in [&consumer, &producer, &admin] {
            assert_eq!(c.get("client.id"), Some("ts"));
            // Protected keys never pass, from any section.
            assert_eq!(c.get("enable.auto.commit"), None);
            assert_eq!(c.get("transactional.id"), None);
        }
        assert_eq!(consumer.get("fetch.max.bytes"), Some("1000000"));
        assert_eq!(producer.get("fetch.max.bytes"), None);
        assert_eq!(producer.get("linger.ms"), Some("20"));
        assert_eq!(consumer.get("linger.ms"), None);
        assert_eq!(admin.get("linger.ms"), None);
    }

    #[test]
    fn group_consumer_defaults_yield_to_either_section() {
        let plain = Config::from_parts("t", "", &[]).unwrap();
        let c = group_consumer_config(&plain);
        assert_eq!(
            c.get("session.timeout.ms"),
            Some(DEFAULT_SESSION_TIMEOUT_MS)
        );
        assert_eq!(
            c.get("partition.assignment.strategy"),
            Some("cooperative-sticky")
        );
        assert_eq!(c.get("group.instance.id"), None);
        let text = r#"
[kafka.client]
"session.timeout.ms" = "30000"
[kafka.consumer]
"partition.assignment.strategy" = "range"
"group.instance.id" = "touchstream-0"
"#;
        let tuned = Config::from_parts("t", text, &[]).unwrap();
        let c = group_consumer_config(&tuned);
        assert_eq!(c.get("session.timeout.ms"), Some("30000"));
        assert_eq!(c.get("partition.assignment.strategy"), Some("range"));
        assert_eq!(c.get("group.instance.id"), Some("touchstream-0"));
        // An explicit classic protocol keeps the defaults.
        let text = "[kafka.client]\n\"group.protocol\" = \"classic\"\n";
        let classic = Config::from_parts("t", text, &[]).unwrap();
        let c = group_consumer_config(&classic);
        assert_eq!(
            c.get("session.timeout.ms"),
            Some(DEFAULT_SESSION_TIMEOUT_MS)
        );
        // The broker-side protocol owns the session and the assignor.
        let text = "[kafka.consumer]\n\"group.protocol\" = \"consumer\"\n";
        let kip848 = Config::from_parts("t", text, &[]).unwrap();
        let c = group_consumer_config(&kip848);
        assert_eq!(c.get("session.timeout.ms"), None);
        assert_eq!(c.get("partition.assignment.strategy"), None);
        assert_eq!(c.get("group.protocol"), Some("consumer"));
    }

    #[test]
    fn default_instance_ids_differ_per_port_and_stay_per_instance() {
        assert_eq!(default_instance_id("vm", "0.0.0.0:9464", 7), "vm-9464");
        assert_eq!(default_instance_id("vm", "127.0.0.1:9465", 7), "vm-9465");
        assert_eq!(default_instance_id("vm", "[::]:9464", 7), "vm-9464");
        assert_eq!(default_instance_id("vm", "0.0.0.0:0", 7), "vm-pid7");
        let explicit = Config::from_parts("t", "[kafka]\ninstance_id = \"pod-3\"\n", &[]).unwrap();
        assert_eq!(instance_id(&explicit), "pod-3");
    }
}
