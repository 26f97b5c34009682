//! The repartition router (SPEC 8): the assigned partitions of re-keyed
//! input topics, read in event-time order (the merge, as a task reads its
//! inputs: a partition whose records run ahead waits for the slowest one
//! that still has records, so a backlog keeps each repartition partition in
//! event-time order), checked against the stateless rules of SPEC 2 (what
//! fails goes to the dead-letter topic with its original provenance), and
//! written, keyed by customer id with murmur2, to the repartition topic
//! with its original bytes, timestamp and headers plus `source.topic`,
//! `source.partition` and `source.offset`.
//!
//! A task reads a repartition partition as one input whose records come
//! from every partition of the source topic. It may not take that input
//! as caught up at the end of the partition while the router still has
//! records of the source to route: so the router announces, in every
//! repartition partition and after the records it routed, which source
//! partitions it has routed to their end (a *frontier*: a record with no
//! key, header `touchstream.control = caught_up`, value
//! `"<partition>,<partition>,..."`). A task takes a repartition input as
//! caught up at its end only once every source partition's last news is
//! such an announcement, not a record routed after it. Announcements are
//! repeated every second while nothing changes, for tasks that start
//! reading after the last one.
//!
//! The router's input offsets are committed with the checkpoint that
//! covers its writes: after they are acknowledged (`at_least_once`; a crash
//! re-sends, and the tasks' duplicate window drops the copies) or in the
//! same transaction (`exactly_once`). Once a task's marker covers a
//! repartition partition up to an offset, the records before it are
//! deleted (delete-records).

#[allow(unused_imports)]
use super::*;

/// One assigned partition of a re-keyed input topic.
pub(super) struct RouteLane {
    pub(super) topic: Arc<str>,
    pub(super) partition: i32,
    /// Its repartition topic.
    target: Arc<str>,
    queue: PartitionQueue<ConsumerCtx>,
    /// Next offset to route: everything before it is sent.
    next_offset: Option<i64>,
    /// Records routed since its end was last announced (or never announced).
    unannounced: bool,
    last_input: Instant,
    consumed: prometheus::IntCounter,
    repartitioned: prometheus::IntCounter,
}

/// The router's lanes and their merge.
pub(super) struct Router {
    /// The re-keyed input topics.
    pub(super) targets: Vec<Rekeyed>,
    pub(super) lanes: Vec<RouteLane>,
    merge: Merge<Head>,
    out_of_orderness: i64,
    /// When the lanes' ends were last announced.
    announced_at: Option<Instant>,
}

/// The header naming a control record of a repartition topic.
pub(super) const CONTROL_HEADER: &str = "touchstream.control";
/// Its value for an announcement of source partitions routed to their end.
const CAUGHT_UP: &str = "caught_up";
/// How often the lanes' ends are announced again while nothing changes.
const ANNOUNCE_EVERY: Duration = Duration::from_secs(1);
/// The least time between two announcements.
const ANNOUNCE_GAP: Duration = Duration::from_millis(10);

impl Router {
    pub(super) fn new(targets: Vec<Rekeyed>, out_of_orderness: i64) -> Self {
        Router {
            targets,
            lanes: Vec::new(),
            merge: Merge::new(0, out_of_orderness),
            out_of_orderness,
            announced_at: None,
        }
    }

    /// The repartition topic of `topic`, when the router re-keys it.
    pub(super) fn target(&self, topic: &str) -> Option<Arc<str>> {
        self.targets
            .iter()
            .find(|r| *r.source == *topic)
            .map(|r| r.internal.clone())
    }

    /// Whether `topic` is one of the repartition topics.
    pub(super) fn is_repartition_topic(&self, topic: &str) -> bool {
        self.source_partitions(topic).is_some()
    }

    /// The partition count of the topic a repartition topic re-keys.
    pub(super) fn source_partitions(&self, internal: &str) -> Option<i32> {
        self.targets
            .iter()
            .find(|r| *r.internal == *internal)
            .map(|r| r.partitions)
    }

    /// Rebuilds the merge for the lanes `keep` (old indices) followed by
    /// `added` new ones; waiting records and lane states move along.
    fn rebuild(&mut self, keep: &[usize], added: usize) {
        let mut merge = Merge::new(keep.len() + added, self.out_of_orderness);
        for (j, &i) in keep.iter().enumerate() {
            merge.restore_latest(j, self.merge.marks().latest(i));
            if let Some((t, head)) = self.merge.take(i) {
                merge.push(j, t, head);
            } else if self.merge.is_caught_up(i) {
                merge.caught_up(j);
            }
            if self.merge.is_idle(i) {
                merge.set_idle(j, true);
            }
        }
        self.merge = merge;
    }

    fn add(&mut self, lane: RouteLane) {
        let keep: Vec<usize> = (0..self.lanes.len()).collect();
        self.rebuild(&keep, 1);
        self.lanes.push(lane);
    }

    /// Drops a revoked lane (its unrouted records are read again by the
    /// partition's next owner: its offset is not committed past them).
    pub(super) fn remove(&mut self, topic: &str, partition: i32) -> bool {
        let Some(gone) = self
            .lanes
            .iter()
            .position(|l| *l.topic == *topic && l.partition == partition)
        else {
            return false;
        };
        let keep: Vec<usize> = (0..self.lanes.len()).filter(|i| *i != gone).collect();
        self.rebuild(&keep, 0);
        self.lanes.remove(gone);
        true
    }

    /// Drops every lane (their queues hold the consumer).
    pub(super) fn clear(&mut self) {
        self.lanes.clear();
        self.merge = Merge::new(0, self.out_of_orderness);
    }

    /// The router's input offsets, for the checkpoint.
    pub(super) fn offsets(&self, tpl: &mut TopicPartitionList) -> Result<(), ServiceError> {
        for l in &self.lanes {
            if let Some(o) = l.next_offset {
                tpl.add_partition_offset(&l.topic, l.partition, Offset::Offset(o))
                    .map_err(kafka("offset list"))?;
            }
        }
        Ok(())
    }

    /// Marks lanes idle that received nothing for `idle` (the merge no
    /// longer waits for them).
    pub(super) fn set_idle(&mut self, idle: Duration) {
        for (i, l) in self.lanes.iter().enumerate() {
            self.merge.set_idle(i, l.last_input.elapsed() >= idle);
        }
    }
}

/// What a task knows of the source partitions behind one of its
/// repartition inputs.
#[derive(Debug, Clone)]
pub(super) struct Upstream {
    /// Per source partition: its end is announced and nothing routed since.
    caught_up: Vec<bool>,
}

impl Upstream {
    pub(super) fn new(partitions: i32) -> Self {
        Upstream {
            caught_up: vec![false; partitions.max(0) as usize],
        }
    }

    /// Every source partition is routed to its end.
    pub(super) fn all_caught_up(&self) -> bool {
        self.caught_up.iter().all(|c| *c)
    }

    /// Takes a record of the repartition partition: true when it is an
    /// announcement (not a touchpoint), which it notes; a routed record
    /// makes its source partition not caught up.
    pub(super) fn note(&mut self, msg: &impl Message) -> bool {
        let Some(headers) = msg.headers() else {
            return false;
        };
        let mut control = None;
        let mut source = None;
        for h in headers.iter() {
            if h.key == CONTROL_HEADER {
                control = Some(h.value == Some(CAUGHT_UP.as_bytes()));
            } else if h.key == "source.partition" {
                source = h
                    .value
                    .and_then(|v| std::str::from_utf8(v).ok())
                    .and_then(|v| v.parse::<usize>().ok());
            }
        }
        if let Some(caught_up) = control {
            if !caught_up {
                return true;
            }
            let listed = msg.payload().and_then(|v| std::str::from_utf8(v).ok());
            for p in listed.unwrap_or_default().split(',') {
                if let Some(c) = p
                    .parse::<usize>()
                    .ok()
                    .and_then(|p| self.caught_up.get_mut(p))
                {
                    *c = true;
                }
            }
            return true;
        }
        if let Some(c) = source.and_then(|p| self.caught_up.get_mut(p)) {
            *c = false;
        }
        false
    }
}

impl Worker {
    /// Takes a partition of a re-keyed topic: its own fetch queue, at the
    /// group's committed offset (or per `auto_offset_reset`).
    pub(super) fn route_from(
        &mut self,
        topic: &str,
        partition: i32,
        target: Arc<str>,
        consumer: Option<&Arc<BaseConsumer<ConsumerCtx>>>,
        wake: &Arc<Wake>,
    ) {
        let Some(mut q) = consumer.and_then(|c| c.split_partition_queue(topic, partition)) else {
            self.fatal.get_or_insert(ServiceError::Topics(format!(
                "cannot open the fetch queue of {topic}[{partition}]"
            )));
            return;
        };
        let wake = wake.clone();
        q.set_nonempty_callback(move || wake.notify());
        let topic: Arc<str> = Arc::from(topic);
        info!(topic = %topic, partition, repartition_topic = %target, "Routing partition.");
        let lane = RouteLane {
            consumed: self.metrics.records_consumed.with_label_values(&[&topic]),
            repartitioned: self.metrics.repartitioned.with_label_values(&[&topic]),
            topic,
            partition,
            target,
            queue: q,
            next_offset: None,
            unannounced: true,
            last_input: Instant::now(),
        };
        self.router.add(lane);
    }

    /// Routes what the router's queues hold, in event-time order; returns
    /// the records taken.
    pub(super) fn pump_router(&mut self, now: Instant) -> Result<usize, ServiceError> {
        if self.router.lanes.is_empty() {
            return Ok(0);
        }
        let mut router = std::mem::replace(&mut self.router, Router::new(Vec::new(), 0));
        let r = self.route_batch(&mut router, now);
        self.router = router;
        r
    }

    fn route_batch(&mut self, r: &mut Router, now: Instant) -> Result<usize, ServiceError> {
        let mut n = 0;
        loop {
            for (i, lane) in r.lanes.iter_mut().enumerate() {
                while r.merge.wants(i) {
                    let msg = match self.fetch(&lane.queue) {
                        Fetched::Nothing => break,
                        Fetched::End => {
                            r.merge.caught_up(i);
                            break;
                        }
                        Fetched::Record(msg) => msg,
                    };
                    n += 1;
                    r.merge.received(i);
                    lane.consumed.inc();
                    lane.last_input = now;
                    let Some(checked) = self.check(&msg) else {
                        return Ok(n);
                    };
                    match checked {
                        Err(rejection) => {
                            lane.next_offset = Some(msg.offset() + 1);
                            self.dead_letter(&msg, &rejection)?;
                        }
                        Ok(tp) => {
                            let t = tp.timestamp;
                            r.merge.push(
                                i,
                                t,
                                Head {
                                    msg: msg.detach(),
                                    tp,
                                },
                            );
                        }
                    }
                }
            }
            if n >= BATCH {
                return Ok(n);
            }
            let Some(next) = r.merge.pop() else {
                return Ok(n);
            };
            let Some(lane) = r.lanes.get_mut(next.input) else {
                return Ok(n);
            };
            self.route(lane, &next.item)?;
        }
    }

    /// Writes one valid record to its repartition partition.
    fn route(&mut self, lane: &mut RouteLane, head: &Head) -> Result<(), ServiceError> {
        // A record waiting in the merge may be routed after a checkpoint
        // committed the transaction it was read in.
        self.ensure_txn()?;
        let msg = &head.msg;
        let key = head.tp.customer_id.as_bytes();
        let partition = kafka_partition(key, self.task_count);
        let mut headers = OwnedHeaders::new();
        if let Some(hs) = msg.headers() {
            for h in hs.iter().filter(|h| !h.key.starts_with("source.")) {
                headers = headers.insert(h);
            }
        }
        let source_partition = msg.partition().to_string();
        let source_offset = msg.offset().to_string();
        let headers = headers
            .insert(Header {
                key: "source.topic",
                value: Some(msg.topic()),
            })
            .insert(Header {
                key: "source.partition",
                value: Some(source_partition.as_str()),
            })
            .insert(Header {
                key: "source.offset",
                value: Some(source_offset.as_str()),
            });
        let mut rec: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&lane.target)
            .key(key)
            .partition(partition)
            .headers(headers);
        if let Some(p) = msg.payload() {
            rec = rec.payload(p);
        }
        if let Some(ts) = msg.timestamp().to_millis() {
            rec = rec.timestamp(ts);
        }
        self.send(rec)?;
        lane.repartitioned.inc();
        lane.next_offset = Some(msg.offset() + 1);
        lane.unannounced = true;
        Ok(())
    }

    /// Announces in every repartition partition which source partitions
    /// held here are routed to their end: when one reached its end since
    /// the last announcement (at most every [`ANNOUNCE_GAP`]), and again
    /// every [`ANNOUNCE_EVERY`].
    pub(super) fn announce(&mut self, now: Instant) -> Result<(), ServiceError> {
        let r = &self.router;
        let since = r.announced_at.map(|t| now.saturating_duration_since(t));
        let news = r
            .lanes
            .iter()
            .enumerate()
            .any(|(i, l)| l.unannounced && r.merge.is_caught_up(i));
        let due = match since {
            None => true,
            Some(d) => (news && d >= ANNOUNCE_GAP) || d >= ANNOUNCE_EVERY,
        };
        if r.lanes.is_empty() || !due {
            return Ok(());
        }
        let mut messages: Vec<(Arc<str>, String)> = Vec::new();
        for t in &r.targets {
            let caught: Vec<String> = r
                .lanes
                .iter()
                .enumerate()
                .filter(|(i, l)| *l.topic == *t.source && r.merge.is_caught_up(*i))
                .map(|(_, l)| l.partition.to_string())
                .collect();
            if !caught.is_empty() {
                messages.push((t.internal.clone(), caught.join(",")));
            }
        }
        self.router.announced_at = Some(now);
        if messages.is_empty() {
            return Ok(());
        }
        self.ensure_txn()?;
        for (internal, value) in &messages {
            for p in 0..self.task_count {
                let headers = OwnedHeaders::new().insert(Header {
                    key: CONTROL_HEADER,
                    value: Some(CAUGHT_UP),
                });
                self.send(
                    BaseRecord::<[u8], [u8]>::to(internal)
                        .partition(p)
                        .payload(value.as_bytes())
                        .headers(headers),
                )?;
            }
        }
        let r = &mut self.router;
        for i in 0..r.lanes.len() {
            if r.merge.is_caught_up(i) {
                r.lanes[i].unannounced = false;
            }
        }
        Ok(())
    }

    /// Deletes the records of repartition partitions that these markers
    /// cover (every record before the offset a task resumes at).
    pub(super) fn purge_repartitioned(&mut self, covered: &[(Arc<str>, i32, i64)]) {
        let mut tpl = TopicPartitionList::new();
        for (topic, partition, offset) in covered {
            let key = (topic.clone(), *partition);
            if self.purged.get(&key).is_some_and(|o| o >= offset) {
                continue;
            }
            if tpl
                .add_partition_offset(topic, *partition, Offset::Offset(*offset))
                .is_ok()
            {
                self.purged.insert(key, *offset);
            }
        }
        if tpl.count() == 0 {
            return;
        }
        let admin = self.admin.clone();
        let metrics = self.metrics.clone();
        self.rt.spawn(async move {
            let opts = AdminOptions::new().operation_timeout(Some(TIMEOUT));
            match admin.delete_records(&tpl, &opts).await {
                Ok(done) => {
                    for e in done.elements() {
                        if let Err(err) = e.error() {
                            warn!(topic = e.topic(), partition = e.partition(), %err, "Cannot delete repartition records.");
                        }
                    }
                }
                Err(e) => {
                    metrics.kafka_errors.with_label_values(&[kind_of(&e)]).inc();
                    warn!(%e, "Cannot delete repartition records.");
                }
            }
        });
    }
}
