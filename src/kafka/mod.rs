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
//!
//! Rooms: this file holds the task and worker types, startup and the run
//! loop; `worker` the rebalance callback and the record path, `restore`,
//! `checkpoint` (sending, flush/commit or the transaction), `dead_letter`,
//! `topics`, `client` (client settings, secrets, instance id) and `error`.

mod announce;
pub mod changelog;
mod checkpoint;
mod client;
mod dead_letter;
mod error;
mod layout;
mod rebalance;
pub mod registry;
mod restore;
mod router;
mod topics;
mod worker;

pub use client::instance_id;
pub use error::ServiceError;
pub(crate) use layout::repartition_topic;
#[allow(unused_imports)]
use {
    announce::*, checkpoint::*, client::*, dead_letter::*, error::*, layout::*, rebalance::*,
    restore::*, router::*, topics::*, worker::*,
};

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{
    base_consumer::PartitionQueue, BaseConsumer, CommitMode, Consumer, ConsumerContext,
    RebalanceProtocol,
};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use thiserror::Error;
use tracing::{error, info, warn};

use crate::config::{Config, Delivery, EngineConfig};
use crate::engine::{Engine, StateChange};
use crate::http::Health;
use crate::metrics::Metrics;
use crate::model::{DerivedEvent, DerivedType, Touchpoint};
use crate::pipeline::{self, InputEvent, Verdict};
use crate::time::merge::Merge;
use crate::validate::{Clock, Rejection};
use changelog::{
    encode_marker, encode_state, marker_key, state_key, InputPosition, Marker, RestoreBuilder,
    StateRecord,
};
use registry::{output_topic, InputDecoder, OutputEncoder, RegistryError};

const TIMEOUT: Duration = Duration::from_secs(30);

/// One input of a task: partition p of one input topic.
struct Input {
    topic: Arc<str>,
    /// Next offset to consume: everything before it is handled (None
    /// until something is known).
    next_offset: Option<i64>,
    last_input: Instant,
    /// `touchstream_records_consumed_total` of its topic.
    consumed: prometheus::IntCounter,
    /// `touchstream_misrouted_records_total` of its topic.
    misrouted: prometheus::IntCounter,
    /// For a repartition topic: what the router announced of its sources.
    upstream: Option<Upstream>,
}

/// An input's next valid record, fetched but not processed yet (a task
/// with several inputs takes the earliest of its inputs' next records).
struct Head {
    msg: OwnedMessage,
    tp: Touchpoint,
    /// For a record of a repartition topic: the partition and offset it
    /// was routed from.
    source: Option<(usize, i64)>,
}

/// A task (SPEC 8): partition p of every input topic, with one engine and
/// one changelog partition; assigned, restored, checkpointed and revoked
/// as one unit.
struct Task {
    partition: i32,
    /// Per input, its own fetch queue (split from the consumer's, so that
    /// the end of a partition is known per input); `None` while that
    /// input's partition is not assigned here (the task then waits).
    queues: Vec<Option<PartitionQueue<Ctx>>>,
    core: TaskCore,
}

/// A task's state, apart from its fetch queues.
struct TaskCore {
    engine: Engine,
    /// In `input_topics` order; the first names the changelog keys.
    inputs: Vec<Input>,
    /// The merge of its inputs: their next records, states and watermarks.
    merge: Merge<Head>,
    /// The last marker written or restored.
    marker: Option<Marker>,
    gen: u64,
    repairs: Vec<Vec<u8>>,
    /// The task's log span: entered while its records are processed.
    span: tracing::Span,
    /// Customers evicted in a generation no marker has covered yet.
    evicted_pending: Vec<Arc<str>>,
    /// Customers whose eviction a marker covers: their changelog keys are
    /// tombstoned at the next checkpoint (unless they came back), so that
    /// compaction forgets them.
    evicted_committed: Vec<Arc<str>>,
}

impl TaskCore {
    /// Where every input stands, for a marker (inputs not started yet are
    /// left out: they start per the group's offset or `auto_offset_reset`).
    fn positions(&self) -> Vec<InputPosition> {
        let single = self.inputs.len() == 1;
        self.inputs
            .iter()
            .enumerate()
            .filter_map(|(i, inp)| {
                Some(InputPosition {
                    topic: inp.topic.to_string(),
                    offset: inp.next_offset?,
                    latest: if single {
                        self.engine.max_event_time()
                    } else {
                        self.merge.marks().latest(i)
                    },
                    routed: inp
                        .upstream
                        .as_ref()
                        .map(|u| u.handled().to_vec())
                        .unwrap_or_default(),
                })
            })
            .collect()
    }
}

/// Where the worker is: running, or stopping (the rebalance that closing
/// the consumer triggers must not checkpoint again).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    Stopping,
}

/// Wakes the poll loop when a fetch queue gets records.
#[derive(Default)]
pub(super) struct Wake {
    flag: Mutex<bool>,
    cv: std::sync::Condvar,
}

impl Wake {
    pub(super) fn notify(&self) {
        let mut f = self.flag.lock().unwrap_or_else(|p| p.into_inner());
        *f = true;
        self.cv.notify_one();
    }

    /// Waits until notified (or `timeout`).
    pub(super) fn wait(&self, timeout: Duration) {
        let mut f = self.flag.lock().unwrap_or_else(|p| p.into_inner());
        if !*f {
            f = match self.cv.wait_timeout(f, timeout) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
        *f = false;
    }
}

/// Everything the poll loop and the rebalance callback share.
struct Worker {
    cfg: Arc<Config>,
    engine_cfg: Arc<EngineConfig>,
    /// Tasks by partition number.
    tasks: BTreeMap<i32, Task>,
    /// The topics the tasks read, in `input_topics` order (a re-keyed
    /// input's repartition topic in its place).
    inputs: Vec<Arc<str>>,
    /// The topics the group consumer subscribes to.
    subscription: Vec<String>,
    /// The first configured input topic: the prefix of the changelog keys
    /// (whether or not it is re-keyed).
    state_prefix: Arc<str>,
    /// The repartition router (SPEC 8).
    router: Router,
    admin: Arc<AdminClient<Ctx>>,
    rt: tokio::runtime::Handle,
    /// Per repartition partition, the offset its records are deleted up to.
    purged: std::collections::HashMap<(Arc<str>, i32), i64>,
    /// The number of tasks (misrouted records are counted against it).
    task_count: i32,
    producer: Arc<ThreadedProducer<Ctx>>,
    decoder: InputDecoder,
    encoder: OutputEncoder,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    topics: Vec<String>,
    eos: bool,
    in_txn: bool,
    consumed_at: Vec<Instant>,
    last_checkpoint: Instant,
    changelog_partitions: i32,
    /// Bytes a dead letter's key and value may take ([`dlq_limit`]).
    dlq_limit: usize,
    fatal: Option<ServiceError>,
    phase: Phase,
    buf: Vec<DerivedEvent>,
    /// The encoded value of the derived event being sent, reused.
    value_buf: Vec<u8>,
    /// Set by SIGTERM/SIGINT: checked while waiting on a dependency too.
    shutdown: Arc<AtomicBool>,
    /// The loop waits on the schema registry.
    registry_waiting: bool,
    /// Readiness before the registry wait began.
    ready_before_registry: bool,
    /// The epoch records are sent under now (see `checkpoint`).
    epoch: u64,
    /// The `at_least_once` checkpoint in flight.
    pending: Option<Pending>,
}

/// The producer's settings: touchstream's defaults, then `[kafka.client]`
/// and `[kafka.producer]`; under `exactly_once`, the instance's
/// transactional id.
fn producer_config(cfg: &Config, eos: bool) -> ClientConfig {
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
    pc
}

/// The group consumer's and the producer's settings exactly as [`run`]
/// makes them under `at_least_once` (defaults, then the configuration's
/// `[kafka.client]`, `[kafka.consumer]` and `[kafka.producer]`): the
/// client settings of the bare pass-through `scripts/bench-service`
/// measures the service against (`examples/passthrough.rs`).
pub fn baseline_client_configs(cfg: &Config) -> (ClientConfig, ClientConfig) {
    (
        group_consumer_config(cfg, false),
        producer_config(cfg, false),
    )
}

type Started = (
    TopicFacts,
    InputDecoder,
    OutputEncoder,
    ThreadedProducer<Ctx>,
);

/// Everything that needs the brokers (and registry) before consuming.
fn start(
    cfg: &Config,
    rt: &tokio::runtime::Handle,
    metrics: &Arc<Metrics>,
    eos: bool,
    wake: &Arc<Wake>,
) -> Result<Started, ServiceError> {
    let mut decoder = InputDecoder::new(cfg)?;
    // First the producer: under exactly_once its `init_transactions` fences
    // this instance's predecessor and aborts the transaction a crash left
    // open, whose offsets would otherwise stay unstable (and the group's
    // offsets unreadable) until the broker times it out.
    let producer: ThreadedProducer<Ctx> = producer_config(cfg, eos)
        .create_with_context(Ctx::producer(metrics, wake.clone()))
        .map_err(kafka("create producer"))?;
    if eos {
        producer
            .init_transactions(TIMEOUT)
            .map_err(|e| txn_error("init transactions", e))?;
    }
    let topics = ensure_topics(cfg, rt, metrics, &mut decoder)?;
    let encoder = OutputEncoder::new(cfg)?;
    Ok((topics, decoder, encoder, producer))
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
    check_task_assignment(&cfg)?;
    let cfg = Arc::new(cfg);
    let engine_cfg = Arc::new(cfg.engine()?);
    let wake = Arc::new(Wake::default());
    let Some(started) = start_until_up(&cfg, &rt, &metrics, &shutdown, &wake)? else {
        return Ok(());
    };
    let rekeyed = !started.0.layout.rekeyed.is_empty();
    let worker = Worker::new(
        &cfg, engine_cfg, started, &rt, &metrics, &health, &shutdown, &wake,
    )?;
    let worker = Arc::new(Mutex::new(worker));
    let consumer = join_group(&cfg, &metrics, &worker, &wake, rekeyed)?;

    let mut result = Ok(());
    let mut last_tick: Option<Instant> = None;
    while !shutdown.load(Ordering::Relaxed) {
        // Serves the group's callbacks (rebalances, statistics); records
        // come from the tasks' own queues.
        let polled = consumer.poll(Duration::ZERO);
        let now = Instant::now();
        let tick = last_tick.is_none_or(|t| now.duration_since(t) >= TICK);
        if tick {
            health.beat();
            last_tick = Some(now);
        }
        let busy = polled.is_some();
        let turn = lock(&worker).turn(&consumer, polled, now, tick);
        match turn {
            Ok(0) if !busy => wake.wait(TICK),
            Ok(_) => {}
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    let result = lock(&worker).stop(&consumer, result);
    consumer.unsubscribe();
    drop(consumer);
    result
}

/// Liveness and idle inputs are looked at every TICK, not for every
/// record: clock reads per record are a visible share of the CPU.
const TICK: Duration = Duration::from_millis(100);

/// [`start`], retried while brokers, credentials or the registry are
/// unavailable or wrong: the service stays up and not ready, says why, and
/// retries (no crash loop). `None`: a stop was requested meanwhile.
fn start_until_up(
    cfg: &Config,
    rt: &tokio::runtime::Handle,
    metrics: &Arc<Metrics>,
    shutdown: &AtomicBool,
    wake: &Arc<Wake>,
) -> Result<Option<Started>, ServiceError> {
    let eos = cfg.kafka.delivery == Delivery::ExactlyOnce;
    let mut backoff = Duration::from_secs(1);
    loop {
        if shutdown.load(Ordering::Relaxed) {
            return Ok(None);
        }
        match start(cfg, rt, metrics, eos, wake) {
            Ok(parts) => return Ok(Some(parts)),
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
                    ServiceError::NotCoPartitioned(_) => "Check the input topics' partitions.",
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
    }
}

/// The group consumer, subscribed: its rebalances assign and revoke the
/// worker's tasks.
fn join_group(
    cfg: &Config,
    metrics: &Arc<Metrics>,
    worker: &Arc<Mutex<Worker>>,
    wake: &Arc<Wake>,
    rekeyed: bool,
) -> Result<Arc<BaseConsumer<Ctx>>, ServiceError> {
    let group = Group {
        worker: worker.clone(),
        consumer: std::sync::OnceLock::new(),
        wake: wake.clone(),
        repartition_prefix: repartition_topic(&cfg.kafka.group_id, ""),
    };
    let mut consumer: BaseConsumer<Ctx> = group_consumer_config(cfg, rekeyed)
        .create_with_context(Ctx::group(metrics, group))
        .map_err(kafka("create consumer"))?;
    {
        let wake = wake.clone();
        consumer.set_nonempty_callback(move || wake.notify());
    }
    let consumer = Arc::new(consumer);
    if let Some(group) = &consumer.context().group {
        let _ = group.consumer.set(Arc::downgrade(&consumer));
    }
    let (subscription, tasks) = {
        let w = lock(worker);
        (w.subscription.clone(), w.task_count)
    };
    let topics: Vec<&str> = subscription.iter().map(String::as_str).collect();
    consumer.subscribe(&topics).map_err(kafka("subscribe"))?;
    info!(topics = ?topics, tasks, group = cfg.kafka.group_id, delivery = ?cfg.kafka.delivery, "touchstream is running.");
    Ok(consumer)
}

impl Worker {
    /// The worker of a started service, with no task yet.
    // The handles the service shares with its HTTP edge and clients.
    #[allow(clippy::too_many_arguments)]
    fn new(
        cfg: &Arc<Config>,
        engine_cfg: Arc<EngineConfig>,
        (topics, decoder, encoder, producer): Started,
        rt: &tokio::runtime::Handle,
        metrics: &Arc<Metrics>,
        health: &Arc<Health>,
        shutdown: &Arc<AtomicBool>,
        wake: &Arc<Wake>,
    ) -> Result<Worker, ServiceError> {
        let layout = topics.layout.clone();
        let router = Router::new(
            layout.rekeyed.clone(),
            engine_cfg.max_out_of_orderness,
            cfg.kafka
                .router_max_drift
                .map_or(engine_cfg.allowed_lateness / 2, |d| d.0),
            metrics,
            cfg,
            wake,
        )?;
        Ok(Worker {
            cfg: cfg.clone(),
            engine_cfg,
            tasks: BTreeMap::new(),
            inputs: layout.task_inputs.clone(),
            subscription: layout.subscription(),
            state_prefix: Arc::from(cfg.kafka.input_topics.first().map_or("", String::as_str)),
            router,
            admin: Arc::new(admin_client(cfg, metrics)?),
            rt: rt.clone(),
            purged: Default::default(),
            task_count: layout.tasks,
            producer: Arc::new(producer),
            decoder,
            encoder,
            metrics: metrics.clone(),
            health: health.clone(),
            topics: DerivedType::ALL
                .iter()
                .map(|t| output_topic(cfg, *t))
                .collect(),
            eos: cfg.kafka.delivery == Delivery::ExactlyOnce,
            in_txn: false,
            consumed_at: Vec::new(),
            last_checkpoint: Instant::now(),
            changelog_partitions: topics.changelog_partitions,
            dlq_limit: dlq_limit(cfg, topics.dlq_max_bytes),
            fatal: None,
            phase: Phase::Running,
            buf: Vec::new(),
            value_buf: Vec::new(),
            shutdown: shutdown.clone(),
            registry_waiting: false,
            ready_before_registry: false,
            epoch: 0,
            pending: None,
        })
    }

    /// One turn of the run loop: what the group consumer's own poll gave,
    /// the router, every task's records, idle inputs (on a tick), and the
    /// checkpoint when it is due. Returns the records taken.
    fn turn(
        &mut self,
        consumer: &BaseConsumer<Ctx>,
        polled: Option<KafkaResult<BorrowedMessage<'_>>>,
        now: Instant,
        tick: bool,
    ) -> Result<usize, ServiceError> {
        if let Some(e) = self.fatal.take() {
            return Err(e);
        }
        match polled {
            Some(Ok(msg)) => self.stray(&msg)?,
            Some(Err(e)) => self.consumer_error(&e),
            None => {}
        }
        let routed = self.pump_router(now)?;
        self.announce(now)?;
        let n = routed + self.pump(now)?;
        if tick {
            self.idle_advance()?;
        }
        if !self.eos {
            self.advance_checkpoint(consumer, CommitMode::Async)?;
        }
        let interval = self.cfg.kafka.commit_interval.as_duration();
        if now.saturating_duration_since(self.last_checkpoint) >= interval {
            if self.eos {
                self.checkpoint(consumer)?;
            } else if self.pending.is_none() {
                self.begin_checkpoint()?;
            }
        }
        Ok(n)
    }

    /// Ends the run: a final checkpoint after a clean stop; after a
    /// failure, the open transaction aborted and the instance marked
    /// failed. The tasks are dropped (their queues hold the consumer).
    fn stop(
        &mut self,
        consumer: &BaseConsumer<Ctx>,
        mut result: Result<(), ServiceError>,
    ) -> Result<(), ServiceError> {
        if result.is_ok() {
            info!("Shutting down: final checkpoint.");
            result = self.checkpoint(consumer);
        }
        if result.is_err() {
            self.health.failed.store(true, Ordering::Relaxed);
            if self.eos && self.in_txn {
                let _ = self.producer.abort_transaction(Duration::from_secs(5));
                self.in_txn = false;
            }
        }
        // The revoke that closing the consumer triggers must not checkpoint.
        self.phase = Phase::Stopping;
        self.tasks.clear();
        self.router.clear();
        self.health.ready.store(false, Ordering::Relaxed);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pass_through_baseline_gets_the_services_own_client_settings() {
        let text = "[kafka.producer]\n\"linger.ms\" = \"20\"\n[kafka.consumer]\n\"fetch.max.bytes\" = \"1000000\"\n";
        let cfg = Config::from_parts("t", text, &[]).unwrap();
        let (consumer, producer) = baseline_client_configs(&cfg);
        assert_eq!(producer.get("linger.ms"), Some("20"));
        assert_eq!(producer.get("acks"), Some("all"));
        assert_eq!(producer.get("enable.idempotence"), Some("true"));
        assert_eq!(producer.get("transactional.id"), None);
        assert_eq!(consumer.get("fetch.max.bytes"), Some("1000000"));
        assert_eq!(consumer.get("isolation.level"), Some("read_committed"));
        assert_eq!(consumer.get("enable.auto.offset.store"), Some("false"));
        // The service's exactly_once producer is the same plus a transactional id.
        let eos = producer_config(&cfg, true);
        assert!(eos.get("transactional.id").is_some());
        assert_eq!(eos.get("linger.ms"), Some("20"));
    }
}
