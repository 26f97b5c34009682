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
//! Announcements (`announce.rs`) tell the tasks when a repartition input
//! is caught up, and the other instances where each lane stands.
//!
//! Several instances route one topic when its partitions are spread over
//! the group; their writes interleave in every repartition partition. Each
//! instance learns from the progress topic where the others stand, and
//! holds a lane back while its next record is more than
//! `kafka.router_max_drift` ahead of the slowest lane another instance
//! routes that is not at its end (watermark alignment, as Flink's across
//! source subtasks); meanwhile announcements are made as the lanes move.
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
    queue: PartitionQueue<Ctx>,
    /// Next offset to route: everything before it is sent.
    next_offset: Option<i64>,
    /// The event time of the last record routed.
    latest: Option<i64>,
    /// Records routed since its end was last announced (or never announced).
    pub(super) unannounced: bool,
    last_input: Instant,
    consumed: prometheus::IntCounter,
    repartitioned: prometheus::IntCounter,
}

/// What another instance announced of a source partition it routes.
#[derive(Debug, Clone, Copy)]
struct Peer {
    /// Its next record's event time, else the last routed one's.
    progress: Option<i64>,
    caught_up: bool,
}

/// The lanes of one re-keyed topic held here, their merge, and what the
/// other instances routing the same topic announced.
pub(super) struct RouteGroup {
    pub(super) topic: Rekeyed,
    pub(super) lanes: Vec<RouteLane>,
    pub(super) merge: Merge<Head>,
    /// Per source partition held elsewhere, its last announcement.
    peers: BTreeMap<i32, Peer>,
    pub(super) announced_at: Option<Instant>,
    /// Records routed or fetched since the last announcement.
    pub(super) moved: bool,
    /// `touchstream_router_aligning{topic}`.
    aligning: prometheus::IntGauge,
}

impl RouteGroup {
    /// Rebuilds the merge for the lanes `keep` (old indices) followed by
    /// `added` new ones; waiting records and lane states move along.
    fn rebuild(&mut self, keep: &[usize], added: usize, out_of_orderness: i64) {
        let mut merge = Merge::new(keep.len() + added, out_of_orderness);
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

    /// How far this instance's lanes may route: the lowest progress among
    /// the source partitions other instances route that are not at their
    /// end (`Some(None)`: none such), or `None` while one of them has not
    /// announced where it stands (then nothing is routed: as a task's input
    /// that has delivered nothing holds its watermark).
    fn peer_limit(&self) -> Option<Option<i64>> {
        let mut lowest: Option<i64> = None;
        for p in 0..self.topic.partitions {
            if self.lanes.iter().any(|l| l.partition == p) {
                continue;
            }
            let peer = self.peers.get(&p)?;
            if peer.caught_up {
                continue;
            }
            let progress = peer.progress?;
            lowest = Some(lowest.map_or(progress, |l| l.min(progress)));
        }
        Some(lowest)
    }

    /// `"<partition>:<progress or ->:<1 if routed to its end>,..."` for
    /// every lane held here.
    pub(super) fn announcement(&self) -> String {
        self.lanes
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let progress = self.merge.head_time(i).or(l.latest);
                format!(
                    "{}:{}:{}",
                    l.partition,
                    progress.map_or_else(|| "-".to_string(), |t| t.to_string()),
                    u8::from(self.merge.is_caught_up(i))
                )
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// The router: one group per re-keyed topic.
pub(super) struct Router {
    pub(super) groups: Vec<RouteGroup>,
    out_of_orderness: i64,
    /// How far ahead of the slowest other instance a lane may route.
    drift: i64,
    /// Reads the progress topic (every instance's announcements).
    progress: Option<BaseConsumer<Ctx>>,
    pub(super) progress_topic: String,
    /// This instance's key prefix in the progress topic.
    pub(super) instance: String,
    /// The router epoch records are routed under now (`announce`).
    pub(super) epoch: u64,
    /// Announcements for the progress topic, each waiting until every
    /// record routed up to its epoch is acknowledged: (epoch, key, value).
    pub(super) unacknowledged: std::collections::VecDeque<(u64, Vec<(String, String)>)>,
}

/// The header naming a control record of a repartition topic.
pub(super) const CONTROL_HEADER: &str = "touchstream.control";
/// Its value for an announcement of the source partitions' progress.
pub(super) const FRONTIER: &str = "frontier";
/// How often the lanes are announced again while nothing changes.
pub(super) const ANNOUNCE_EVERY: Duration = Duration::from_secs(1);
/// The least time between two announcements of a topic's lanes.
pub(super) const ANNOUNCE_GAP: Duration = Duration::from_millis(10);

impl Router {
    pub(super) fn new(
        targets: Vec<Rekeyed>,
        out_of_orderness: i64,
        drift: i64,
        metrics: &Arc<Metrics>,
        cfg: &Config,
        wake: &Arc<Wake>,
    ) -> Result<Self, ServiceError> {
        let progress_topic = progress_topic(&cfg.kafka.group_id);
        let progress = if targets.is_empty() {
            None
        } else {
            let mut c = assigning_consumer(
                cfg,
                metrics,
                format!("{}-progress", cfg.kafka.group_id),
                &[("isolation.level", "read_uncommitted")],
                "create progress consumer",
            )?;
            // A lane held back waits for news from the other instances.
            let wake = wake.clone();
            c.set_nonempty_callback(move || wake.notify());
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(&progress_topic, 0, Offset::Beginning)
                .map_err(kafka("progress assignment"))?;
            c.assign(&tpl).map_err(kafka("assign progress topic"))?;
            Some(c)
        };
        Ok(Router {
            progress,
            progress_topic,
            instance: instance_id(cfg),
            epoch: 0,
            unacknowledged: Default::default(),
            groups: targets
                .into_iter()
                .map(|t| RouteGroup {
                    aligning: metrics.router_aligning.with_label_values(&[&t.source]),
                    topic: t,
                    lanes: Vec::new(),
                    merge: Merge::new(0, out_of_orderness),
                    peers: BTreeMap::new(),
                    announced_at: None,
                    moved: false,
                })
                .collect(),
            out_of_orderness,
            drift,
        })
    }

    /// Takes in what the instances announced in the progress topic since
    /// the last look.
    pub(super) fn read_progress(&mut self) {
        let Some(c) = self.progress.as_ref() else {
            return;
        };
        let mut news = Vec::new();
        for _ in 0..1000 {
            match c.poll(Duration::ZERO) {
                Some(Ok(m)) => {
                    let source = m
                        .key()
                        .and_then(|k| std::str::from_utf8(k).ok())
                        .and_then(|k| k.rsplit_once('|'))
                        .map(|(source, _)| source.to_string());
                    if let Some(source) = source {
                        news.push((source, parse_announcement(m.payload().unwrap_or_default())));
                    }
                }
                Some(Err(e)) => {
                    warn!(%e, "Cannot read the repartition progress topic.");
                    break;
                }
                None => break,
            }
        }
        for (source, announced) in news {
            self.note_peers(&source, &announced);
        }
    }

    /// The repartition topic of `topic`, when the router re-keys it.
    pub(super) fn target(&self, topic: &str) -> Option<Arc<str>> {
        self.groups
            .iter()
            .find(|g| *g.topic.source == *topic)
            .map(|g| g.topic.internal.clone())
    }

    /// Whether `topic` is one of the repartition topics.
    pub(super) fn is_repartition_topic(&self, topic: &str) -> bool {
        self.source_partitions(topic).is_some()
    }

    /// The partition count of the topic a repartition topic re-keys.
    pub(super) fn source_partitions(&self, internal: &str) -> Option<i32> {
        self.groups
            .iter()
            .find(|g| *g.topic.internal == *internal)
            .map(|g| g.topic.partitions)
    }

    /// Partitions routed here.
    pub(super) fn lane_count(&self) -> usize {
        self.groups.iter().map(|g| g.lanes.len()).sum()
    }

    fn add(&mut self, lane: RouteLane) {
        let ooo = self.out_of_orderness;
        if let Some(g) = self
            .groups
            .iter_mut()
            .find(|g| *g.topic.source == *lane.topic)
        {
            let keep: Vec<usize> = (0..g.lanes.len()).collect();
            g.rebuild(&keep, 1, ooo);
            g.lanes.push(lane);
        }
    }

    /// Drops a revoked lane (its unrouted records are read again by the
    /// partition's next owner: its offset is not committed past them).
    pub(super) fn remove(&mut self, topic: &str, partition: i32) -> bool {
        let ooo = self.out_of_orderness;
        for g in &mut self.groups {
            let Some(gone) = g
                .lanes
                .iter()
                .position(|l| *l.topic == *topic && l.partition == partition)
            else {
                continue;
            };
            let keep: Vec<usize> = (0..g.lanes.len()).filter(|i| *i != gone).collect();
            g.rebuild(&keep, 0, ooo);
            g.lanes.remove(gone);
            return true;
        }
        false
    }

    /// Drops every lane (their queues hold the consumer).
    pub(super) fn clear(&mut self) {
        for g in &mut self.groups {
            g.lanes.clear();
            g.merge = Merge::new(0, self.out_of_orderness);
        }
    }

    /// The router's input offsets, for the checkpoint.
    pub(super) fn offsets(&self, tpl: &mut TopicPartitionList) -> Result<(), ServiceError> {
        for l in self.groups.iter().flat_map(|g| &g.lanes) {
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
        for g in &mut self.groups {
            for (i, l) in g.lanes.iter().enumerate() {
                g.merge.set_idle(i, l.last_input.elapsed() >= idle);
            }
        }
    }

    /// Notes an announcement of the progress topic: where an instance's
    /// lanes of the re-keyed topic `source` stand.
    fn note_peers(&mut self, source: &str, announcement: &[(i32, Option<i64>, bool)]) {
        let Some(g) = self.groups.iter_mut().find(|g| *g.topic.source == *source) else {
            return;
        };
        for (p, progress, caught_up) in announcement {
            if g.lanes.iter().any(|l| l.partition == *p) {
                continue;
            }
            g.peers.insert(
                *p,
                Peer {
                    progress: *progress,
                    caught_up: *caught_up,
                },
            );
        }
    }
}

impl Worker {
    /// Takes a partition of a re-keyed topic: its own fetch queue, at the
    /// group's committed offset (or per `auto_offset_reset`).
    pub(super) fn route_from(
        &mut self,
        topic: &str,
        partition: i32,
        consumer: Option<&Arc<BaseConsumer<Ctx>>>,
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
        info!(topic = %topic, partition, "Routing partition.");
        let lane = RouteLane {
            consumed: self.metrics.records_consumed.with_label_values(&[&topic]),
            repartitioned: self.metrics.repartitioned.with_label_values(&[&topic]),
            topic,
            partition,
            queue: q,
            next_offset: None,
            latest: None,
            unannounced: true,
            last_input: Instant::now(),
        };
        self.router.add(lane);
    }

    /// Routes what the router's queues hold, each re-keyed topic in
    /// event-time order; returns the records taken.
    pub(super) fn pump_router(&mut self, now: Instant) -> Result<usize, ServiceError> {
        let mut n = 0;
        for gi in 0..self.router.groups.len() {
            if self.router.groups[gi].lanes.is_empty() {
                continue;
            }
            // The group leaves the router while it runs: its queues lend
            // the records, the worker sends them.
            let placeholder = RouteGroup {
                topic: self.router.groups[gi].topic.clone(),
                lanes: Vec::new(),
                merge: Merge::new(0, 0),
                peers: BTreeMap::new(),
                announced_at: None,
                moved: false,
                aligning: self.router.groups[gi].aligning.clone(),
            };
            let mut g = std::mem::replace(&mut self.router.groups[gi], placeholder);
            let r = self.route_group(&mut g, now);
            self.router.groups[gi] = g;
            n += r?;
        }
        Ok(n)
    }

    fn route_group(&mut self, g: &mut RouteGroup, now: Instant) -> Result<usize, ServiceError> {
        let drift = self.router.drift;
        let mut n = 0;
        loop {
            for (i, lane) in g.lanes.iter_mut().enumerate() {
                while g.merge.wants(i) {
                    let msg = match self.fetch(&lane.queue) {
                        Fetched::Nothing => break,
                        Fetched::End => {
                            g.merge.caught_up(i);
                            break;
                        }
                        Fetched::Record(msg) => msg,
                    };
                    n += 1;
                    g.moved = true;
                    g.merge.received(i);
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
                            let head = Head {
                                msg: msg.detach(),
                                tp,
                                source: None,
                            };
                            g.merge.push(i, t, head);
                        }
                    }
                }
            }
            if n >= BATCH {
                return Ok(n);
            }
            // Watermark alignment across instances: a lane does not run
            // further ahead than `drift` of the slowest lane another
            // instance routes into the same partitions.
            let Some(t) = g.merge.peek() else {
                return Ok(n);
            };
            let aligned = match g.peer_limit() {
                None => false,
                Some(None) => true,
                Some(Some(slowest)) => t <= slowest.saturating_add(drift),
            };
            g.aligning.set(i64::from(!aligned));
            if !aligned {
                return Ok(n);
            }
            let Some(next) = g.merge.pop() else {
                return Ok(n);
            };
            let internal = g.topic.internal.clone();
            let Some(lane) = g.lanes.get_mut(next.input) else {
                return Ok(n);
            };
            self.route(lane, &internal, &next.item)?;
            g.moved = true;
        }
    }

    /// Writes one valid record to its repartition partition.
    fn route(
        &mut self,
        lane: &mut RouteLane,
        internal: &str,
        head: &Head,
    ) -> Result<(), ServiceError> {
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
        let mut rec: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(internal)
            .key(key)
            .partition(partition)
            .headers(headers);
        if let Some(p) = msg.payload() {
            rec = rec.payload(p);
        }
        if let Some(ts) = msg.timestamp().to_millis() {
            rec = rec.timestamp(ts);
        }
        send_counted(&self.producer, self.epoch, Some(self.router.epoch), rec)?;
        lane.repartitioned.inc();
        lane.next_offset = Some(msg.offset() + 1);
        lane.latest = Some(head.tp.timestamp);
        lane.unannounced = true;
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
