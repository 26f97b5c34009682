//! The Kafka clients' configuration: the shared settings, the role
//! sections (`[kafka.client]`, `.consumer`, `.producer`), secrets read from
//! files, the instance id, and the client contexts that log and count.

#[allow(unused_imports)]
use super::*;

/// The one context of every Kafka client touchstream makes (producer,
/// group consumer, admin, metadata, restore and router consumers): it
/// forwards librdkafka's log lines, counts the client's errors, and per
/// role counts the producer's deliveries or takes the group's rebalances
/// (see `rebalance`).
pub(super) struct Ctx {
    pub(super) metrics: Arc<Metrics>,
    /// What the client is, in its log lines.
    client: &'static str,
    /// The first delivery failure: fatal (the next checkpoint would
    /// otherwise commit offsets past a lost record).
    pub(super) failure: Mutex<Option<String>>,
    /// Records sent and not acknowledged yet, per checkpoint epoch (a
    /// ring: at most two epochs are in flight, see `checkpoint`).
    outstanding: [std::sync::atomic::AtomicU64; 4],
    /// Routed records not acknowledged yet, per router epoch (a ring of
    /// [`ROUTED_EPOCHS`]; see `announce`).
    routed: [std::sync::atomic::AtomicU64; ROUTED_EPOCHS],
    /// Woken when an epoch's last record is acknowledged.
    wake: Option<Arc<Wake>>,
    /// The group consumer's tasks, assigned and revoked by its rebalances.
    pub(super) group: Option<Group>,
}

/// Router epochs in flight at most.
pub(super) const ROUTED_EPOCHS: usize = 64;

impl Ctx {
    fn new(metrics: &Arc<Metrics>, client: &'static str) -> Self {
        Ctx {
            metrics: metrics.clone(),
            client,
            failure: Mutex::new(None),
            outstanding: Default::default(),
            routed: std::array::from_fn(|_| Default::default()),
            wake: None,
            group: None,
        }
    }

    /// A client that only logs and counts its errors (admin, metadata,
    /// restore, router progress).
    pub(super) fn plain(metrics: &Arc<Metrics>) -> Self {
        Ctx::new(metrics, "client")
    }

    /// The producer's: deliveries are counted per epoch, `wake` is woken
    /// when an epoch's last record is acknowledged.
    pub(super) fn producer(metrics: &Arc<Metrics>, wake: Arc<Wake>) -> Self {
        Ctx {
            wake: Some(wake),
            ..Ctx::new(metrics, "producer")
        }
    }

    /// The group consumer's: its rebalances assign and revoke `group`'s tasks.
    pub(super) fn group(metrics: &Arc<Metrics>, group: Group) -> Self {
        Ctx {
            group: Some(group),
            ..Ctx::new(metrics, "consumer")
        }
    }

    pub(super) fn outstanding(&self, epoch: u64) -> &std::sync::atomic::AtomicU64 {
        &self.outstanding[(epoch % 4) as usize]
    }

    pub(super) fn routed(&self, epoch: u64) -> &std::sync::atomic::AtomicU64 {
        &self.routed[(epoch % ROUTED_EPOCHS as u64) as usize]
    }

    fn acknowledged(&self, counter: &std::sync::atomic::AtomicU64) {
        if counter.fetch_sub(1, Ordering::AcqRel) == 1 {
            if let Some(w) = &self.wake {
                w.notify();
            }
        }
    }
}

/// A record's delivery opaque: its checkpoint epoch in the low 32 bits;
/// a routed record's router epoch + 1 above them.
pub(super) fn opaque(epoch: u64, routed: Option<u64>) -> usize {
    let r = routed.map_or(0, |r| r % ROUTED_EPOCHS as u64 + 1);
    ((epoch & 0xffff_ffff) | (r << 32)) as usize
}

impl ClientContext for Ctx {
    fn stats(&self, stats: Statistics) {
        if let Some(group) = &self.group {
            group.stats(&self.metrics, &stats);
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // The end of a partition (`enable.partition.eof`, several inputs)
        // is news for the merge, which reads it from the partition's queue;
        // librdkafka also reports it here. It is no error.
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::PartitionEOF) {
            return;
        }
        self.metrics
            .kafka_errors
            .with_label_values(&[kind_of(&error)])
            .inc();
        warn!(%error, reason, client = self.client, "Kafka client error.");
    }

    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        forward_log(level, fac, log_message);
    }
}

impl ProducerContext for Ctx {
    type DeliveryOpaque = usize;
    fn delivery(&self, result: &DeliveryResult<'_>, opaque: usize) {
        let epoch = opaque as u64 & 0xffff_ffff;
        self.acknowledged(self.outstanding(epoch));
        let routed = opaque as u64 >> 32;
        if routed > 0 {
            self.acknowledged(self.routed(routed - 1));
        }
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

impl ConsumerContext for Ctx {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        match &self.group {
            Some(group) => group.rebalance(consumer, err, tpl),
            // Only the group consumer subscribes; the others assign.
            None => {
                let r = match err {
                    RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => consumer.assign(tpl),
                    _ => consumer.unassign(),
                };
                if let Err(e) = r {
                    warn!(%e, "Rebalance of a client without a group failed.");
                }
            }
        }
    }
}

/// An admin client.
pub(super) fn admin_client(
    cfg: &Config,
    metrics: &Arc<Metrics>,
) -> Result<AdminClient<Ctx>, ServiceError> {
    client_config(cfg)
        .create_with_context(Ctx::plain(metrics))
        .map_err(kafka("create admin client"))
}

pub(super) fn client_config(cfg: &Config) -> ClientConfig {
    let mut c = ClientConfig::new();
    // librdkafka's own warnings (authentication, TLS, unreachable brokers)
    // reach our logs through the contexts' `log`; its debug output (a
    // `debug` setting in `[kafka.*]`) too when this module logs at debug
    // (`RUST_LOG=touchstream::kafka::client=debug`).
    let level = if tracing::enabled!(tracing::Level::DEBUG) {
        RDKafkaLogLevel::Debug
    } else {
        RDKafkaLogLevel::Warning
    };
    c.set_log_level(level);
    c.set("bootstrap.servers", &cfg.kafka.brokers);
    // Named in the broker's logs and quotas (librdkafka's default is
    // "rdkafka" for every client of every application).
    c.set(
        "client.id",
        format!("{}-{}", cfg.kafka.group_id, instance_id(cfg)),
    );
    apply_client(&mut c, cfg, Role::Any);
    c
}

/// Which client a configuration is for: `[kafka.consumer]` and
/// `[kafka.producer]` apply on top of `[kafka.client]` to their own only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    Any,
    Consumer,
    Producer,
}

/// Settings the delivery guarantees depend on: `[kafka.client]` cannot
/// override them.
pub(super) const PROTECTED: [&str; 6] = [
    "enable.auto.commit",
    "enable.auto.offset.store",
    "group.id",
    "transactional.id",
    "enable.idempotence",
    "isolation.level",
];

/// Applies `[kafka.client]` on top of touchstream's defaults (so users can
/// tune e.g. `linger.ms` or `statistics.interval.ms`), except [`PROTECTED`] keys.
pub(super) fn apply_client(c: &mut ClientConfig, cfg: &Config, role: Role) {
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

/// How long a consumer waits to fetch again when its queue is full.
pub(super) const FETCH_QUEUE_BACKOFF_MS: &str = "10";

/// The group consumer's settings: touchstream's defaults, then
/// `[kafka.client]` and `[kafka.consumer]`.
/// `routed`: some input is re-keyed (the router merges its partitions).
pub(super) fn group_consumer_config(cfg: &Config, routed: bool) -> ClientConfig {
    let mut cc = client_config(cfg);
    cc.set("group.id", &cfg.kafka.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", &cfg.kafka.auto_offset_reset)
        .set("isolation.level", "read_committed")
        .set("statistics.interval.ms", "5000")
        // librdkafka pauses a partition's fetching for this long whenever
        // its local queue is full (`queued.min.messages`); its default, a
        // second, let the queue run dry behind a busy task: the service
        // waited on its own client about half of the time.
        .set("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS);
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
        // One input: cooperative rebalances move only the partitions that
        // change hands. Several: a task is partition p of every input and
        // must never be split between members (SPEC 8); the classic `range`
        // assignor gives each member the same partition numbers of every
        // topic with as many partitions ([`check_task_assignment`]).
        let strategy = if cfg.kafka.input_topics.len() > 1 {
            "range"
        } else {
            "cooperative-sticky"
        };
        cc.set("partition.assignment.strategy", strategy);
    }
    if cfg.kafka.input_topics.len() > 1 || routed {
        // The end of each input's partition is what the merge must know:
        // it does not wait for an input that is caught up.
        cc.set("enable.partition.eof", "true");
    }
    apply_client(&mut cc, cfg, Role::Consumer);
    cc
}

/// A consumer that reads by assignment (restore, sampling, the progress
/// topic): its own `group.id`, no commits, `settings`, then the user's
/// consumer settings; it never joins the group, so a static member id
/// meant for the group consumer must not reach it.
pub(super) fn assigning_consumer(
    cfg: &Config,
    metrics: &Arc<Metrics>,
    group: String,
    settings: &[(&str, &str)],
    what: &'static str,
) -> Result<BaseConsumer<Ctx>, ServiceError> {
    let mut cc = client_config(cfg);
    cc.set("group.id", group).set("enable.auto.commit", "false");
    for (k, v) in settings {
        cc.set(*k, *v);
    }
    apply_client(&mut cc, cfg, Role::Consumer);
    cc.remove("group.instance.id");
    cc.create_with_context(Ctx::plain(metrics))
        .map_err(kafka(what))
}

/// With several input topics, refuses group settings that cannot keep a
/// task's partitions together on one member (SPEC 8): the classic protocol
/// with the `range` assignor does (each member gets the same partition
/// numbers of every co-partitioned topic, and an eager rebalance revokes
/// everything before anything is assigned). `roundrobin` and
/// `cooperative-sticky` spread a task's partitions over members; with the
/// broker-side `consumer` protocol (KIP-848) partitions move one by one, so
/// a member may hold part of a task during a rebalance.
pub(super) fn check_task_assignment(cfg: &Config) -> Result<(), ServiceError> {
    if cfg.kafka.input_topics.len() < 2 {
        return Ok(());
    }
    let setting = |key: &str| {
        cfg.kafka
            .consumer
            .get(key)
            .or_else(|| cfg.kafka.client.get(key))
            .map(|v| v.trim().to_ascii_lowercase())
    };
    let refuse = |key: &str, value: &str, why: &str| {
        Err(ServiceError::Config(crate::config::ConfigError::Key {
            key: format!("kafka.consumer.{key}"),
            message: format!(
                "`{value}` cannot be used with several input topics: {why}. A task is partition p \
                 of every input topic and must stay on one group member (SPEC 8); leave it unset \
                 (touchstream uses the classic protocol with the `range` assignor)"
            ),
        }))
    };
    if let Some(p) = setting("group.protocol").filter(|p| p != "classic") {
        return refuse(
            "group.protocol",
            &p,
            "with the broker-side protocol partitions are handed over one by one, so a member can \
             hold part of a task while a rebalance is in progress",
        );
    }
    if let Some(s) = setting("partition.assignment.strategy").filter(|s| s != "range") {
        return refuse(
            "partition.assignment.strategy",
            &s,
            "only `range` gives a member the same partitions of every input topic",
        );
    }
    Ok(())
}

/// The group consumer's `session.timeout.ms` unless configured.
pub(super) const DEFAULT_SESSION_TIMEOUT_MS: &str = "10000";

/// The producer's `message.max.bytes` unless configured, and the
/// `max.message.bytes` of the topics touchstream creates: 8 MiB, well above
/// the broker's default 1 MiB input records, so that a dead letter (the
/// record plus headers), a derived event or a changelog state carrying
/// large ids from a near-limit input record still fits.
pub(super) const DEFAULT_MESSAGE_MAX_BYTES: usize = 8 * 1024 * 1024;

pub(super) const MAX_MESSAGE_BYTES_STR: &str = "8396800"; // 8 MiB + 8 KiB of record overhead

/// Reads a `[kafka.client]` (or `.consumer`, `.producer`) secret from a
/// file when given as `file:PATH` (so secrets can come from mounted
/// Kubernetes Secrets).
pub(super) fn resolve_secrets(cfg: &mut Config) -> Result<(), ServiceError> {
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
pub(super) fn read_secret(key: &str, v: &mut String) -> Result<(), ServiceError> {
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
pub(super) fn default_instance_id(host: &str, listen: &str, pid: u32) -> String {
    match listen.rsplit(':').next().map(str::trim) {
        Some(port) if !port.is_empty() && port != "0" => format!("{host}-{port}"),
        _ => format!("{host}-pid{pid}"),
    }
}

/// librdkafka's own log lines, at their level, through `tracing`.
pub(super) fn forward_log(level: RDKafkaLogLevel, fac: &str, log_message: &str) {
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

#[cfg(test)]
mod tests {
    use super::*;

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
        let c = group_consumer_config(&plain, false);
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
        let c = group_consumer_config(&tuned, false);
        assert_eq!(c.get("session.timeout.ms"), Some("30000"));
        assert_eq!(c.get("partition.assignment.strategy"), Some("range"));
        assert_eq!(c.get("group.instance.id"), Some("touchstream-0"));
        // An explicit classic protocol keeps the defaults.
        let text = "[kafka.client]\n\"group.protocol\" = \"classic\"\n";
        let classic = Config::from_parts("t", text, &[]).unwrap();
        let c = group_consumer_config(&classic, false);
        assert_eq!(
            c.get("session.timeout.ms"),
            Some(DEFAULT_SESSION_TIMEOUT_MS)
        );
        // The broker-side protocol owns the session and the assignor.
        let text = "[kafka.consumer]\n\"group.protocol\" = \"consumer\"\n";
        let kip848 = Config::from_parts("t", text, &[]).unwrap();
        let c = group_consumer_config(&kip848, false);
        assert_eq!(c.get("session.timeout.ms"), None);
        assert_eq!(c.get("partition.assignment.strategy"), None);
        assert_eq!(c.get("group.protocol"), Some("consumer"));
    }

    #[test]
    fn client_id_names_the_group_and_the_instance_unless_set() {
        let text = "[kafka]\ngroup_id = \"cx\"\ninstance_id = \"pod-3\"\n";
        let cfg = Config::from_parts("t", text, &[]).unwrap();
        assert_eq!(client_config(&cfg).get("client.id"), Some("cx-pod-3"));
        let set = format!("{text}[kafka.client]\n\"client.id\" = \"mine\"\n");
        let cfg = Config::from_parts("t", &set, &[]).unwrap();
        assert_eq!(client_config(&cfg).get("client.id"), Some("mine"));
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
