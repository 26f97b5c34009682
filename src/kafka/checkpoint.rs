//! Sending and checkpointing: every record goes through [`Worker::send`];
//! a checkpoint makes everything so far durable with the changed customers
//! and a marker per task holding every input's offset.
//!
//! `at_least_once` checkpoints do not stop processing: [`Worker::begin_checkpoint`]
//! drains the tasks' changed customers into the changelog and notes the
//! markers and offsets; records keep flowing meanwhile. Every record sent
//! is counted under the *epoch* it belongs to (the checkpoint that will
//! cover it), and acknowledgements count down. Once everything of the
//! checkpoint's epoch is acknowledged (derived events, dead letters and its
//! changelog records), its markers are sent; once those are acknowledged,
//! the input offsets are committed to the group ([`Worker::advance_checkpoint`],
//! looked at every turn of the loop). One checkpoint is in flight at a
//! time, so a customer's next write never lands in the slot holding its
//! last complete state. Revoke and shutdown settle synchronously.
//!
//! `exactly_once`: the same records, the markers and the offsets commit in
//! one transaction, synchronously.

#[allow(unused_imports)]
use super::*;

impl Worker {
    pub(super) fn fail_if_undelivered(&self) -> Result<(), ServiceError> {
        match self.producer.context().failure.lock() {
            Ok(f) => match f.as_ref() {
                Some(msg) => Err(ServiceError::Delivery(msg.clone())),
                None => Ok(()),
            },
            Err(_) => Err(ServiceError::Delivery("delivery state poisoned".into())),
        }
    }

    pub(super) fn flush(&self) -> Result<(), ServiceError> {
        self.await_in_flight()?;
        self.producer.flush(TIMEOUT).map_err(kafka("flush"))?;
        self.fail_if_undelivered()
    }

    /// Waits until every record sent is acknowledged (delivered or
    /// failed: the producer's own thread serves the reports), looking
    /// every millisecond. rdkafka's `flush` (also the one inside
    /// `commit_transaction`) waits 100 ms between two looks whenever
    /// anything is still in flight: every transaction took ~100 ms to
    /// commit, however little it held. After this, both return at once.
    fn await_in_flight(&self) -> Result<(), ServiceError> {
        let deadline = Instant::now() + TIMEOUT;
        while self.producer.in_flight_count() > 0 {
            if Instant::now() > deadline {
                return Err(ServiceError::Kafka {
                    op: "flush",
                    source: KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut),
                });
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }

    pub(super) fn ensure_txn(&mut self) -> Result<(), ServiceError> {
        if self.eos && !self.in_txn {
            self.producer
                .begin_transaction()
                .map_err(|e| self.classify("begin transaction", e))?;
            self.in_txn = true;
        }
        Ok(())
    }

    /// Sends a record of the current epoch.
    pub(super) fn send(&self, record: BaseRecord<'_, [u8], [u8]>) -> Result<(), ServiceError> {
        self.send_in(self.epoch, record)
    }

    /// Sends a record counted under `epoch` until it is acknowledged.
    pub(super) fn send_in(
        &self,
        epoch: u64,
        r: BaseRecord<'_, [u8], [u8]>,
    ) -> Result<(), ServiceError> {
        send_with(&self.producer, epoch, r)
    }

    pub(super) fn classify(&self, op: &'static str, e: KafkaError) -> ServiceError {
        classify(&self.producer, op, e)
    }

    /// Makes everything so far durable before returning (revoke, shutdown;
    /// every checkpoint under `exactly_once`); see the module docs.
    pub(super) fn checkpoint(&mut self, consumer: &BaseConsumer<Ctx>) -> Result<(), ServiceError> {
        if self.eos {
            return self.checkpoint_transaction(consumer);
        }
        self.settle_checkpoint(consumer)?;
        self.begin_checkpoint()?;
        self.settle_checkpoint(consumer)
    }

    /// Waits until the checkpoint in flight, if any, is complete.
    fn settle_checkpoint(&mut self, consumer: &BaseConsumer<Ctx>) -> Result<(), ServiceError> {
        while let Some(p) = self.pending.as_mut() {
            if let Some(w) = p.writer.take() {
                match w.join() {
                    Ok(written) => written?,
                    Err(_) => {
                        return Err(ServiceError::Delivery(
                            "the changelog writer panicked".into(),
                        ))
                    }
                }
            }
            self.flush()?;
            // Synchronous: on revoke, the next owner of a routed partition
            // resumes at the committed offset (an older one would make it
            // route records again, late behind newer ones).
            self.advance_checkpoint(consumer, CommitMode::Sync)?;
        }
        Ok(())
    }

    /// Starts an `at_least_once` checkpoint: the changed customers are
    /// taken from the engines here, then encoded and sent to the changelog
    /// by a thread of their own; the markers and offsets wait for the
    /// epoch to be acknowledged. Returns at once; nothing is waited for.
    pub(super) fn begin_checkpoint(&mut self) -> Result<(), ServiceError> {
        let started = Instant::now();
        let (batches, markers, offsets) = self.collect_changes()?;
        let consumed_at = std::mem::take(&mut self.consumed_at);
        let epoch = self.epoch;
        let writer = if batches.is_empty() {
            None
        } else {
            let producer = self.producer.clone();
            let metrics = self.metrics.clone();
            let topic = self.cfg.kafka.changelog_topic.clone();
            let spawned = std::thread::Builder::new()
                .name("changelog".into())
                .spawn(move || write_batches(&producer, &metrics, &topic, epoch, batches));
            match spawned {
                Ok(h) => Some(h),
                Err(e) => {
                    return Err(ServiceError::Delivery(format!(
                        "cannot start the changelog writer: {e}"
                    )))
                }
            }
        };
        self.pending = Some(Pending {
            epoch,
            writer,
            markers_sent: false,
            markers,
            offsets,
            consumed_at,
            started,
        });
        self.epoch += 1;
        self.last_checkpoint = Instant::now();
        self.metrics
            .checkpoint_pause
            .observe(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// Moves the checkpoint in flight on once its epoch is acknowledged:
    /// first its markers, then (those acknowledged) the group offsets.
    pub(super) fn advance_checkpoint(
        &mut self,
        consumer: &BaseConsumer<Ctx>,
        mode: CommitMode,
    ) -> Result<(), ServiceError> {
        let Some(p) = self.pending.as_ref() else {
            return Ok(());
        };
        if self
            .producer
            .context()
            .outstanding(p.epoch)
            .load(Ordering::Acquire)
            > 0
        {
            return Ok(());
        }
        self.fail_if_undelivered()?;
        let Some(mut p) = self.pending.take() else {
            return Ok(());
        };
        if !p.markers_sent && !p.markers.is_empty() {
            self.send_markers(p.epoch, &p.markers)?;
            p.markers_sent = true;
            self.pending = Some(p);
            return Ok(());
        }
        if p.offsets.count() > 0 {
            if let Err(e) = consumer.commit(&p.offsets, mode) {
                // The changelog marker is authoritative for the tasks; for
                // the router a failed commit routes records again (copies
                // the tasks' duplicate window drops).
                warn!(%e, "Offset commit failed.");
            }
        }
        self.complete(p.markers, &p.consumed_at, p.started);
        Ok(())
    }

    /// An `exactly_once` checkpoint: the changed customers, the markers and
    /// the input offsets commit in one transaction.
    fn checkpoint_transaction(&mut self, consumer: &BaseConsumer<Ctx>) -> Result<(), ServiceError> {
        let started = Instant::now();
        let (batches, markers, offsets) = self.collect_changes()?;
        if !batches.is_empty() || !markers.is_empty() {
            self.ensure_txn()?;
        }
        let cl_topic = self.cfg.kafka.changelog_topic.clone();
        write_batches(
            &self.producer,
            &self.metrics,
            &cl_topic,
            self.epoch,
            batches,
        )?;
        self.send_markers(self.epoch, &markers)?;
        let written = started.elapsed();
        if self.in_txn {
            if offsets.count() > 0 {
                let gm = consumer
                    .group_metadata()
                    .ok_or_else(|| ServiceError::Fenced("no consumer group metadata".into()))?;
                if let Err(e) = self
                    .producer
                    .send_offsets_to_transaction(&offsets, &gm, TIMEOUT)
                {
                    return self.roll_back(consumer, "send offsets to transaction", e);
                }
            }
            let offsets_sent = started.elapsed();
            self.await_in_flight()?;
            let delivered = started.elapsed();
            if let Err(e) = self.producer.commit_transaction(TIMEOUT) {
                return self.roll_back(consumer, "commit transaction", e);
            }
            self.in_txn = false;
            tracing::debug!(
                written_ms = written.as_secs_f64() * 1e3,
                offsets_ms = offsets_sent.as_secs_f64() * 1e3,
                delivered_ms = delivered.as_secs_f64() * 1e3,
                committed_ms = started.elapsed().as_secs_f64() * 1e3,
                "Transaction committed."
            );
        }
        let consumed_at = std::mem::take(&mut self.consumed_at);
        self.complete(markers, &consumed_at, started);
        self.last_checkpoint = Instant::now();
        self.metrics
            .checkpoint_pause
            .observe(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// A transaction that failed but can be aborted (typically: the group
    /// rebalanced while it was open, so its offsets carry an old
    /// generation): aborted, and every task rolled back to its last
    /// checkpoint, as Kafka Streams does with a migrated task. Each task is
    /// restored from the changelog again and its inputs rewound to the
    /// offsets its marker covers: nothing of the aborted transaction was
    /// ever visible to read_committed readers, and its records are
    /// processed again. A fatal error (fenced), or a failure with routed
    /// inputs (their router lanes are not rewound), stops the instance.
    fn roll_back(
        &mut self,
        consumer: &BaseConsumer<Ctx>,
        op: &'static str,
        e: KafkaError,
    ) -> Result<(), ServiceError> {
        let abortable = matches!(&e, KafkaError::Transaction(t) if t.txn_requires_abort());
        if !abortable
            || self.router.lane_count() > 0
            || self.producer.client().fatal_error().is_some()
        {
            return Err(self.classify(op, e));
        }
        warn!(%e, op, "Transaction failed; aborting it and rolling every task back to its last checkpoint.");
        self.producer
            .abort_transaction(TIMEOUT)
            .map_err(|e| self.classify("abort transaction", e))?;
        self.in_txn = false;
        self.metrics
            .kafka_errors
            .with_label_values(&["transaction_aborted"])
            .inc();
        // The aborted records' deliveries failed (purged): expected.
        if let Ok(mut f) = self.producer.context().failure.lock() {
            f.take();
        }
        self.consumed_at.clear();
        let parts: Vec<i32> = self.tasks.keys().copied().collect();
        for p in parts {
            let Some(old) = self.tasks.remove(&p) else {
                continue;
            };
            self.restore(p)?;
            let Some(task) = self.tasks.get_mut(&p) else {
                continue;
            };
            task.queues = old.queues;
            for (i, q) in task.queues.iter().enumerate() {
                if q.is_none() {
                    continue;
                }
                let input = &task.core.inputs[i];
                let to = match input.next_offset {
                    Some(o) => Offset::Offset(o),
                    // No marker: nothing of this task was ever committed.
                    None if self.cfg.kafka.auto_offset_reset == "latest" => Offset::End,
                    None => Offset::Beginning,
                };
                consumer
                    .seek(&input.topic, p, to, TIMEOUT)
                    .map_err(kafka("rewind an input after an aborted transaction"))?;
            }
        }
        self.last_checkpoint = Instant::now();
        Ok(())
    }

    /// Takes every task's changed customers (and the keys to repair) for
    /// the changelog; returns them with the markers to write once they are
    /// durable, and the input offsets those cover.
    #[allow(clippy::type_complexity)]
    fn collect_changes(
        &mut self,
    ) -> Result<(Vec<TaskChanges>, Vec<PendingMarker>, TopicPartitionList), ServiceError> {
        let mut batches = Vec::new();
        let mut markers: Vec<PendingMarker> = Vec::new();
        for (p, task) in self.tasks.iter_mut() {
            let p = *p;
            let core = &mut task.core;
            let changes = core.engine.drain_changes();
            let meta = core.engine.meta();
            let positions = core.positions();
            let first = self.state_prefix.clone();
            let mut repairs = std::mem::take(&mut core.repairs);
            for id in std::mem::take(&mut core.evicted_committed) {
                if core.engine.customer(&id).is_none() {
                    repairs.push(state_key(&first, &id, 1));
                    repairs.push(state_key(&first, &id, 2));
                }
            }
            let covered = core
                .marker
                .as_ref()
                .is_some_and(|m| m.meta == meta && m.inputs == positions);
            if changes.is_empty() && repairs.is_empty() && covered {
                continue;
            }
            let gen = core.gen;
            core.gen += 1;
            for ch in &changes {
                if let StateChange::Delete { id, .. } = ch {
                    core.evicted_pending.push(id.clone());
                }
            }
            let cl_partition = p % self.changelog_partitions.max(1);
            if !positions.is_empty() {
                markers.push(PendingMarker {
                    task: p,
                    first: first.clone(),
                    marker: Marker {
                        gen,
                        meta,
                        inputs: positions,
                    },
                    cl_partition,
                });
            }
            batches.push(TaskChanges {
                task: p,
                first,
                gen,
                cl_partition,
                repairs,
                changes,
            });
        }
        let mut offsets = TopicPartitionList::new();
        for t in self.tasks.values() {
            for (i, inp) in t.core.inputs.iter().enumerate() {
                if let (Some(o), Some(_)) = (inp.next_offset, &t.queues[i]) {
                    offsets
                        .add_partition_offset(&inp.topic, t.partition, Offset::Offset(o))
                        .map_err(kafka("offset list"))?;
                }
            }
        }
        self.router.offsets(&mut offsets)?;
        Ok((
            batches.into_iter().filter(|b| !b.is_empty()).collect(),
            markers,
            offsets,
        ))
    }

    fn send_markers(&self, epoch: u64, markers: &[PendingMarker]) -> Result<(), ServiceError> {
        let cl_topic = &self.cfg.kafka.changelog_topic;
        for m in markers {
            let k = marker_key(&m.first);
            let v = encode_marker(&m.marker);
            self.send_in(
                epoch,
                BaseRecord::to(cl_topic)
                    .key(k.as_slice())
                    .payload(v.as_slice())
                    .partition(m.cl_partition),
            )?;
        }
        Ok(())
    }

    /// A checkpoint is durable: the tasks remember its markers, evicted
    /// customers' keys become due for tombstones, latencies are observed.
    fn complete(&mut self, markers: Vec<PendingMarker>, consumed_at: &[Instant], started: Instant) {
        let covered: Vec<(Arc<str>, i32, i64)> = markers
            .iter()
            .flat_map(|m| {
                m.marker
                    .inputs
                    .iter()
                    .filter(|i| self.router.is_repartition_topic(&i.topic))
                    .map(move |i| (Arc::from(i.topic.as_str()), m.task, i.offset))
            })
            .collect();
        if !covered.is_empty() {
            self.purge_repartitioned(&covered);
        }
        for m in markers {
            if let Some(t) = self.tasks.get_mut(&m.task) {
                let core = &mut t.core;
                core.marker = Some(m.marker);
                let covered = std::mem::take(&mut core.evicted_pending);
                core.evicted_committed.extend(covered);
            }
        }
        let done = Instant::now();
        for at in consumed_at {
            self.metrics
                .processing_latency
                .observe(done.duration_since(*at).as_secs_f64());
        }
        self.metrics
            .commit_duration
            .observe(started.elapsed().as_secs_f64());
        self.update_gauges();
    }
}

/// A task's changed customers and keys to repair, for the changelog.
pub(super) struct TaskChanges {
    task: i32,
    /// The task's first input topic (the keys' prefix).
    first: Arc<str>,
    gen: u64,
    cl_partition: i32,
    repairs: Vec<Vec<u8>>,
    changes: Vec<StateChange>,
}

impl TaskChanges {
    fn is_empty(&self) -> bool {
        self.repairs.is_empty() && self.changes.is_empty()
    }
}

/// Encodes and sends tasks' changes to the changelog under `epoch` (on the
/// changelog writer's thread for `at_least_once`, inside the transaction
/// for `exactly_once`).
fn write_batches(
    producer: &ThreadedProducer<Ctx>,
    metrics: &Metrics,
    cl_topic: &str,
    epoch: u64,
    batches: Vec<TaskChanges>,
) -> Result<(), ServiceError> {
    for b in batches {
        let n = b.changes.len() + b.repairs.len();
        for k in &b.repairs {
            send_with(
                producer,
                epoch,
                BaseRecord::<[u8], [u8]>::to(cl_topic)
                    .key(k.as_slice())
                    .partition(b.cl_partition),
            )?;
        }
        let gen = b.gen;
        for ch in b.changes {
            let (k, v) = match ch {
                StateChange::Upsert(c) => (
                    state_key(&b.first, c.id(), c.slot),
                    encode_state(&StateRecord {
                        gen,
                        state: Some(c),
                    }),
                ),
                StateChange::Delete { id, slot } => (
                    state_key(&b.first, &id, slot),
                    encode_state(&StateRecord { gen, state: None }),
                ),
            };
            send_with(
                producer,
                epoch,
                BaseRecord::to(cl_topic)
                    .key(k.as_slice())
                    .payload(v.as_slice())
                    .partition(b.cl_partition),
            )?;
        }
        metrics
            .checkpoint_records
            .with_label_values(&[&b.task.to_string()])
            .observe(n as f64);
    }
    Ok(())
}

/// Sends a record counted under `epoch` until it is acknowledged.
fn send_with(
    producer: &ThreadedProducer<Ctx>,
    epoch: u64,
    r: BaseRecord<'_, [u8], [u8]>,
) -> Result<(), ServiceError> {
    send_counted(producer, epoch, None, r)
}

/// Sends a record counted under `epoch`, and a routed one under its
/// router epoch too, until it is acknowledged.
pub(super) fn send_counted(
    producer: &ThreadedProducer<Ctx>,
    epoch: u64,
    routed: Option<u64>,
    r: BaseRecord<'_, [u8], [u8]>,
) -> Result<(), ServiceError> {
    let mut record = BaseRecord {
        topic: r.topic,
        partition: r.partition,
        payload: r.payload,
        key: r.key,
        timestamp: r.timestamp,
        headers: r.headers,
        delivery_opaque: opaque(epoch, routed),
    };
    let ctx = producer.context();
    ctx.outstanding(epoch).fetch_add(1, Ordering::AcqRel);
    if let Some(r) = routed {
        ctx.routed(r).fetch_add(1, Ordering::AcqRel);
    }
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                // Backpressure: the consumer is not polled while we wait.
                record = r;
                std::thread::sleep(Duration::from_millis(2));
            }
            Err((e, _)) => {
                ctx.outstanding(epoch).fetch_sub(1, Ordering::AcqRel);
                if let Some(r) = routed {
                    ctx.routed(r).fetch_sub(1, Ordering::AcqRel);
                }
                return Err(classify(producer, "produce", e));
            }
        }
    }
}

/// Names the real cause of a producer failure: a fatal producer error
/// (e.g. fenced by a newer instance with the same transactional id)
/// surfaces as a generic error on the call that hit it.
fn classify(producer: &ThreadedProducer<Ctx>, op: &'static str, e: KafkaError) -> ServiceError {
    if let Some((code, reason)) = producer.client().fatal_error() {
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

/// A task's marker, to send once its checkpoint's records are durable.
pub(super) struct PendingMarker {
    task: i32,
    /// The task's first input topic (the marker's key).
    first: Arc<str>,
    marker: Marker,
    cl_partition: i32,
}

/// An `at_least_once` checkpoint in flight.
pub(super) struct Pending {
    /// The epoch whose records it covers.
    epoch: u64,
    /// The thread encoding and sending its changed customers.
    writer: Option<std::thread::JoinHandle<Result<(), ServiceError>>>,
    markers_sent: bool,
    markers: Vec<PendingMarker>,
    offsets: TopicPartitionList,
    consumed_at: Vec<Instant>,
    started: Instant,
}
