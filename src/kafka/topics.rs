//! The topics the service needs: created when missing (outputs, dead
//! letters, changelog), checked when made by hand, and waited for until
//! their partitions have leaders.

#[allow(unused_imports)]
use super::*;

pub(super) const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// What startup learns of the topics.
pub(super) struct TopicFacts {
    /// The tasks and what they read (SPEC 8).
    pub(super) layout: Layout,
    pub(super) changelog_partitions: i32,
    /// The dead-letter topic's `max.message.bytes`, when it could be read.
    pub(super) dlq_max_bytes: Option<usize>,
}

pub(super) fn ensure_topics(
    cfg: &Config,
    rt: &tokio::runtime::Handle,
    metrics: &Arc<Metrics>,
    decoder: &mut InputDecoder,
) -> Result<TopicFacts, ServiceError> {
    let meta_client: BaseConsumer<Ctx> = client_config(cfg)
        .create_with_context(Ctx::plain(metrics))
        .map_err(kafka("create metadata client"))?;
    let mut counts: Vec<(String, i32)> = Vec::new();
    for t in &cfg.kafka.input_topics {
        let md = match meta_client.fetch_metadata(Some(t), STARTUP_TIMEOUT) {
            Ok(md) => md,
            Err(e) => {
                // Serve queued client events so that the reason (e.g. an
                // authentication failure) is logged by the context.
                let _ = meta_client.poll(Duration::from_millis(200));
                return Err(ServiceError::Kafka {
                    op: "fetch metadata",
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
        counts.push((t.clone(), n));
    }
    let layout = decide_layout(cfg, rt, &meta_client, decoder, &counts)?;
    let partitions = layout.tasks;
    let cl = meta_client
        .fetch_metadata(Some(&cfg.kafka.changelog_topic), STARTUP_TIMEOUT)
        .map_err(kafka("fetch metadata"))?;
    let cl_partitions = cl.topics().first().map_or(0, |t| t.partitions().len()) as i32;
    let admin = admin_client(cfg, metrics)?;
    if !cfg.kafka.create_topics {
        if cl_partitions == 0 {
            return Err(ServiceError::Topics(format!(
                "changelog topic `{}` does not exist",
                cfg.kafka.changelog_topic
            )));
        }
        return check_topics(cfg, rt, &admin, layout, cl_partitions);
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
            .set("segment.bytes", CHANGELOG_SEGMENT_BYTES)
            .set("max.message.bytes", MAX_MESSAGE_BYTES_STR),
        );
    }
    create_all(rt, &admin, &new)?;
    let n = if cl_partitions == 0 {
        partitions
    } else {
        cl_partitions
    };
    wait_for_leaders(&meta_client, &cfg.kafka.changelog_topic, n);
    check_topics(cfg, rt, &admin, layout, n)
}

/// Segments of a changelog touchstream creates: 64 MiB instead of the
/// broker's 1 GiB. The broker compacts only closed segments, so the open
/// one is read whole by every restore: at 1 GiB that is millions of
/// superseded records per partition (in one measured restore, 3.1 records
/// per customer at 1 GiB, 2.3 at 64 MiB, 4.5 s instead of 6 s).
const CHANGELOG_SEGMENT_BYTES: &str = "67108864";

/// Creates topics; one that exists already is fine.
pub(super) fn create_all(
    rt: &tokio::runtime::Handle,
    admin: &AdminClient<Ctx>,
    new: &[NewTopic<'_>],
) -> Result<(), ServiceError> {
    let results = rt
        .block_on(admin.create_topics(new, &AdminOptions::new().operation_timeout(Some(TIMEOUT))))
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
    Ok(())
}

/// With `kafka.repartition = "never"`: every input must have one
/// partition per task, and none may be listed to re-key (SPEC 8).
pub(super) fn co_partitioned(
    cfg: &Config,
    counts: &[(String, i32)],
    tasks: i32,
) -> Result<(), ServiceError> {
    let forced: Vec<&String> = cfg
        .kafka
        .repartition_topics
        .iter()
        .filter(|t| cfg.kafka.input_topics.contains(t))
        .collect();
    if counts.iter().all(|(_, n)| *n == tasks) && forced.is_empty() {
        return Ok(());
    }
    let listed: Vec<String> = counts
        .iter()
        .map(|(t, n)| format!("`{t}` has {n} partitions"))
        .collect();
    let forced = if forced.is_empty() {
        String::new()
    } else {
        format!(
            "; kafka.repartition_topics asks to re-key {}",
            forced
                .iter()
                .map(|t| format!("`{t}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    Err(ServiceError::NotCoPartitioned(format!(
        "input topics are not co-partitioned: {}; there are {tasks} tasks (kafka.tasks, else the \
         first input topic's partition count){forced}; kafka.repartition = \"never\" refuses \
         them (\"auto\" re-keys them through the repartition router). Give every input topic {tasks} \
         partitions, keyed by customer id with the Java client's partitioner (murmur2)",
        listed.join(", ")
    )))
}

/// Refuses a changelog that cannot hold the state (fewer partitions than
/// the input: each input partition's state and checkpoint markers need a
/// changelog partition of their own; not compacted: quiet customers'
/// state would expire) and reads the dead-letter topic's size limit.
pub(super) fn check_topics(
    cfg: &Config,
    rt: &tokio::runtime::Handle,
    admin: &AdminClient<Ctx>,
    layout: Layout,
    changelog_partitions: i32,
) -> Result<TopicFacts, ServiceError> {
    let input_partitions = layout.tasks;
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
    // An existing changelog keeps its segments: say what larger ones cost.
    let segment = value(0, "segment.bytes").and_then(|v| v.parse::<u64>().ok());
    let ours = CHANGELOG_SEGMENT_BYTES.parse::<u64>().unwrap_or(u64::MAX);
    if let Some(bytes) = segment.filter(|b| *b > ours) {
        warn!(
            changelog,
            segment_bytes = bytes,
            "The changelog's segments are larger than 64 MiB: the broker compacts only closed \
             segments, so every restore reads the open one whole, superseded records included. \
             Set segment.bytes=67108864 on it (kafka-configs --alter --entity-type topics \
             --entity-name <changelog> --add-config segment.bytes=67108864), as touchstream does \
             on a changelog it creates."
        );
    }
    let dlq_max_bytes = value(1, "max.message.bytes").and_then(|v| v.parse().ok());
    Ok(TopicFacts {
        layout,
        changelog_partitions,
        dlq_max_bytes,
    })
}

/// Waits (up to 30 s) until every partition of a topic has a leader, so
/// that a topic created a moment ago can be read at once.
pub(super) fn wait_for_leaders(client: &BaseConsumer<Ctx>, topic: &str, partitions: i32) {
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

/// The partition the Java client's default partitioner (and touchstream's
/// producer, `murmur2_random`) picks for `key` among `partitions`.
pub(crate) fn kafka_partition(key: &[u8], partitions: i32) -> i32 {
    if partitions <= 0 {
        return 0;
    }
    (murmur2(key) & 0x7fff_ffff) as i32 % partitions
}

/// Kafka's `Utils.murmur2` (seed 0x9747b28c).
fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M) ^ k;
    }
    let tail = chunks.remainder();
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
    h ^ (h >> 15)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values of the Java client's `Utils.murmur2` / default partitioner.
    #[test]
    fn murmur2_matches_the_java_client() {
        assert_eq!(murmur2(b"21") as i32, -973932308);
        assert_eq!(murmur2(b"foobar") as i32, -790332482);
        assert_eq!(murmur2(b"a-little-bit-long-string") as i32, -985981536);
        assert_eq!(murmur2(b"a-little-bit-longer-string") as i32, -1486304829);
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8") as i32,
            -58897971
        );
        assert_eq!(murmur2(b"abc") as i32, 479470107);
        assert_eq!(
            kafka_partition(b"foobar", 4),
            (-790332482i32 & 0x7fff_ffff) % 4
        );
    }
}
