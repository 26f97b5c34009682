//! Which inputs the tasks read as they are and which go through the
//! repartition router (SPEC 8, "Inputs that are not co-partitioned").
//!
//! An input topic is re-keyed when `kafka.repartition_topics` names it,
//! when its partition count differs from the number of tasks, or when a
//! sample of the records the group would read first (up to
//! [`SAMPLE_PER_PARTITION`] per partition) holds one whose key is not its
//! customer id or whose customer id murmur2 puts on another partition.
//! The decision is kept: a topic whose repartition topic exists stays
//! re-keyed, and one the group has already read directly (committed
//! offsets, no repartition topic) stays direct; only a topic met for the
//! first time is sampled.

#[allow(unused_imports)]
use super::*;

/// Records sampled per partition of an input met for the first time.
pub(super) const SAMPLE_PER_PARTITION: usize = 1000;
/// How long sampling may take per topic.
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(10);

/// How the tasks read the configured input topics.
#[derive(Debug, Clone)]
pub(super) struct Layout {
    /// The number of tasks.
    pub(super) tasks: i32,
    /// Per configured input topic, in `input_topics` order: the topic the
    /// tasks read (itself, or its repartition topic).
    pub(super) task_inputs: Vec<Arc<str>>,
    /// The re-keyed input topics.
    pub(super) rekeyed: Vec<Rekeyed>,
}

/// A re-keyed input topic.
#[derive(Debug, Clone)]
pub(super) struct Rekeyed {
    pub(super) source: Arc<str>,
    /// Its repartition topic.
    pub(super) internal: Arc<str>,
    /// The source topic's partition count.
    pub(super) partitions: i32,
}

impl Layout {
    /// Every topic the group consumer subscribes to: the tasks' inputs,
    /// then the re-keyed topics the router reads.
    pub(super) fn subscription(&self) -> Vec<String> {
        self.task_inputs
            .iter()
            .chain(self.rekeyed.iter().map(|r| &r.source))
            .map(|t| t.to_string())
            .collect()
    }
}

/// The repartition topic of an input topic (SPEC 8).
pub(crate) fn repartition_topic(group_id: &str, input: &str) -> String {
    format!("{group_id}.repartition.{input}")
}

/// The topic where router instances tell each other how far each source
/// partition is routed (watermark alignment across instances).
pub(crate) fn progress_topic(group_id: &str) -> String {
    format!("{group_id}.repartition-progress")
}

/// Why a topic is re-keyed or read as it is (logged with the decision).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Decision {
    Direct(&'static str),
    Rekey(String),
}

/// Decides, per configured input topic, whether the router re-keys it;
/// creates (or checks) the repartition topics. `counts`: every input
/// topic's partition count, in order.
pub(super) fn decide_layout(
    cfg: &Config,
    rt: &tokio::runtime::Handle,
    meta_client: &BaseConsumer<Ctx>,
    decoder: &mut InputDecoder,
    counts: &[(String, i32)],
) -> Result<Layout, ServiceError> {
    let tasks = cfg
        .kafka
        .tasks
        .filter(|n| *n > 0)
        .or_else(|| counts.first().map(|(_, n)| *n))
        .unwrap_or(1);
    if cfg.kafka.repartition == crate::config::Repartition::Never {
        co_partitioned(cfg, counts, tasks)?;
        return Ok(Layout {
            tasks,
            task_inputs: counts.iter().map(|(t, _)| Arc::from(t.as_str())).collect(),
            rekeyed: Vec::new(),
        });
    }
    let group = &cfg.kafka.group_id;
    let mut layout = Layout {
        tasks,
        task_inputs: Vec::new(),
        rekeyed: Vec::new(),
    };
    let mut create = Vec::new();
    for (topic, n) in counts {
        let internal = repartition_topic(group, topic);
        let existing = partitions_of(meta_client, &internal)?;
        let decision = if cfg.kafka.repartition_topics.contains(topic) {
            Decision::Rekey("kafka.repartition_topics names it".into())
        } else if *n != tasks {
            Decision::Rekey(format!("it has {n} partitions and there are {tasks} tasks"))
        } else if existing > 0 {
            Decision::Rekey("it was re-keyed before (its repartition topic exists)".into())
        } else if group_has_read(cfg, &meta_client.context().metrics, topic, *n)? {
            Decision::Direct("the group has read it directly before")
        } else {
            sample(
                cfg,
                &meta_client.context().metrics,
                decoder,
                topic,
                *n,
                tasks,
            )?
        };
        match &decision {
            Decision::Direct(why) => {
                info!(topic, why, "Input read as it is (co-partitioned).");
                layout.task_inputs.push(Arc::from(topic.as_str()));
            }
            Decision::Rekey(why) => {
                info!(
                    topic,
                    repartition_topic = internal,
                    why = why.as_str(),
                    "Input re-keyed through the repartition router."
                );
                if existing == 0 {
                    create.push(internal.clone());
                } else if existing != tasks {
                    return Err(ServiceError::Topics(format!(
                        "repartition topic `{internal}` has {existing} partitions and there are \
                         {tasks} tasks: it needs one per task (delete it while touchstream is \
                         stopped; it is created again)"
                    )));
                }
                decoder.alias(&internal, topic);
                let internal: Arc<str> = Arc::from(internal.as_str());
                layout.task_inputs.push(internal.clone());
                layout.rekeyed.push(Rekeyed {
                    source: Arc::from(topic.as_str()),
                    internal,
                    partitions: *n,
                });
            }
        }
    }
    if !layout.rekeyed.is_empty() {
        let progress = progress_topic(group);
        if partitions_of(meta_client, &progress)? == 0 {
            create.push(progress);
        }
    }
    if !create.is_empty() {
        create_repartition_topics(cfg, rt, meta_client, &create, tasks)?;
    }
    Ok(layout)
}

/// A topic's partition count; 0 when it does not exist.
fn partitions_of(client: &BaseConsumer<Ctx>, topic: &str) -> Result<i32, ServiceError> {
    let md = client
        .fetch_metadata(Some(topic), STARTUP_TIMEOUT)
        .map_err(kafka("fetch metadata"))?;
    Ok(md
        .topics()
        .first()
        .filter(|t| t.error().is_none())
        .map_or(0, |t| t.partitions().len()) as i32)
}

/// Whether the group has committed offsets on any partition of `topic`.
fn group_has_read(
    cfg: &Config,
    metrics: &Arc<Metrics>,
    topic: &str,
    partitions: i32,
) -> Result<bool, ServiceError> {
    // read_uncommitted: the offsets committed so far, without waiting for
    // a transaction still open (librdkafka retries an unstable read until
    // the broker times that transaction out, about a minute after a crash
    // of an instance with another transactional id).
    let c = assigning_consumer(
        cfg,
        metrics,
        cfg.kafka.group_id.clone(),
        &[("isolation.level", "read_uncommitted")],
        "create offsets client",
    )?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let committed = match c.committed_offsets(tpl, STARTUP_TIMEOUT) {
        Ok(committed) => committed,
        // Offsets committed in a transaction a killed instance left open:
        // the group has read the topic (its instance fences that
        // transaction once it starts).
        Err(e) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::UnstableOffsetCommit) => {
            return Ok(true)
        }
        Err(e) => return Err(kafka("fetch committed offsets")(e)),
    };
    Ok(committed
        .elements()
        .iter()
        .any(|e| matches!(e.offset(), Offset::Offset(_))))
}

/// Reads the first records the group would read of a topic met for the
/// first time: re-keyed when one's key is not its customer id or its
/// customer id hashes to another partition. Records that fail to decode
/// or validate say nothing (they go to the dead-letter topic either way).
fn sample(
    cfg: &Config,
    metrics: &Arc<Metrics>,
    decoder: &mut InputDecoder,
    topic: &str,
    partitions: i32,
    tasks: i32,
) -> Result<Decision, ServiceError> {
    let c = assigning_consumer(
        cfg,
        metrics,
        format!("{}-sample", cfg.kafka.group_id),
        &[("enable.partition.eof", "true")],
        "create sample consumer",
    )?;
    let from_start = matches!(
        cfg.kafka.auto_offset_reset.to_ascii_lowercase().as_str(),
        "earliest" | "smallest" | "beginning"
    );
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(
            topic,
            p,
            if from_start {
                Offset::Beginning
            } else {
                Offset::End
            },
        )
        .map_err(kafka("sample assignment"))?;
    }
    c.assign(&tpl).map_err(kafka("assign sample"))?;
    let mut seen = vec![0usize; partitions.max(0) as usize];
    let mut done = vec![!from_start; partitions.max(0) as usize];
    let deadline = Instant::now() + SAMPLE_TIMEOUT;
    let now = crate::validate::wall_clock_ms();
    let mut checked = 0usize;
    while done.iter().any(|d| !d) && Instant::now() < deadline {
        let msg = match c.poll(Duration::from_millis(200)) {
            None => continue,
            Some(Err(KafkaError::PartitionEOF(p))) => {
                if let Some(d) = done.get_mut(p as usize) {
                    *d = true;
                }
                continue;
            }
            Some(Err(e)) => {
                warn!(%e, topic, "Read error while sampling an input.");
                continue;
            }
            Some(Ok(m)) => m,
        };
        let p = msg.partition() as usize;
        if done.get(p).copied().unwrap_or(true) {
            continue;
        }
        seen[p] += 1;
        if seen[p] >= SAMPLE_PER_PARTITION {
            done[p] = true;
        }
        let raw = match decoder.decode(topic, msg.payload()) {
            Ok(raw) => raw,
            Err(Ok(_)) => continue,
            Err(Err(e)) => return Err(ServiceError::Registry(e)),
        };
        let clock = Clock {
            now,
            max_future: cfg.time.max_future.0,
        };
        let Ok(tp) = pipeline::check(Ok(raw), clock) else {
            continue;
        };
        checked += 1;
        let id = tp.customer_id.as_bytes();
        if msg.key() != Some(id) {
            return Ok(Decision::Rekey(format!(
                "a sampled record ({topic}[{}]@{}) is not keyed by its customer id",
                msg.partition(),
                msg.offset()
            )));
        }
        if kafka_partition(id, tasks) != msg.partition() {
            return Ok(Decision::Rekey(format!(
                "a sampled record ({topic}[{}]@{}) has a customer id that murmur2 puts on \
                 partition {}",
                msg.partition(),
                msg.offset(),
                kafka_partition(id, tasks)
            )));
        }
    }
    Ok(if checked == 0 {
        Decision::Direct("it has the tasks' partition count and no record to sample yet")
    } else {
        Decision::Direct("it has the tasks' partition count and every sampled record is keyed by customer id with murmur2")
    })
}

/// Creates the repartition topics (one partition per task; records are
/// deleted once every task has checkpointed past them, so no time limit).
fn create_repartition_topics(
    cfg: &Config,
    rt: &tokio::runtime::Handle,
    meta_client: &BaseConsumer<Ctx>,
    names: &[String],
    tasks: i32,
) -> Result<(), ServiceError> {
    if !cfg.kafka.create_topics {
        return Err(ServiceError::Topics(format!(
            "repartition topic(s) {} do not exist and kafka.create_topics is false: create each \
             with {tasks} partitions (cleanup.policy=delete, retention.ms=-1)",
            names.join(", ")
        )));
    }
    let admin = admin_client(cfg, &meta_client.context().metrics)?;
    let rf = cfg.kafka.replication_factor;
    let progress = progress_topic(&cfg.kafka.group_id);
    let new: Vec<NewTopic<'_>> = names
        .iter()
        .map(|n| {
            if *n == progress {
                // One record per router instance and topic: compacted.
                return NewTopic::new(n, 1, TopicReplication::Fixed(rf))
                    .set("cleanup.policy", "compact")
                    .set("segment.ms", "600000");
            }
            NewTopic::new(n, tasks, TopicReplication::Fixed(rf))
                .set("cleanup.policy", "delete")
                .set("retention.ms", "-1")
                .set("segment.bytes", "52428800")
                .set("segment.ms", "600000")
                .set("max.message.bytes", MAX_MESSAGE_BYTES_STR)
        })
        .collect();
    create_all(rt, &admin, &new)?;
    for n in names {
        wait_for_leaders(meta_client, n, if *n == progress { 1 } else { tasks });
    }
    Ok(())
}
