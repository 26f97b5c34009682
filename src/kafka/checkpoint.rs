//! Sending and checkpointing: every record goes through [`Worker::send`];
//! a checkpoint makes everything so far durable (flush and commit, or the
//! transaction) with the changed customers and a marker per task holding
//! every input's offset.

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
        self.producer.flush(TIMEOUT).map_err(kafka("flush"))?;
        self.fail_if_undelivered()
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

    pub(super) fn send(&self, mut record: BaseRecord<'_, [u8], [u8]>) -> Result<(), ServiceError> {
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
    pub(super) fn classify(&self, op: &str, e: KafkaError) -> ServiceError {
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

    /// Makes everything so far durable; see the module docs.
    pub(super) fn checkpoint(
        &mut self,
        consumer: &BaseConsumer<ConsumerCtx>,
    ) -> Result<(), ServiceError> {
        let started = Instant::now();
        if !self.eos {
            self.flush()?;
        }
        let cl_topic = self.cfg.kafka.changelog_topic.clone();
        let mut markers: Vec<(i32, Marker, i32)> = Vec::new();
        let parts: Vec<i32> = self.tasks.keys().copied().collect();
        for p in parts {
            let Some(task) = self.tasks.get_mut(&p) else {
                continue;
            };
            let core = &mut task.core;
            let changes = core.engine.drain_changes();
            let meta = core.engine.meta();
            let positions = core.positions();
            let first = core.inputs[0].topic.clone();
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
            let mut evicted = Vec::new();
            let cl_partition = p % self.changelog_partitions.max(1);
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
                        let k = state_key(&first, c.id(), c.slot);
                        (
                            k,
                            encode_state(&StateRecord {
                                gen,
                                state: Some(c),
                            }),
                        )
                    }
                    StateChange::Delete { id, slot } => {
                        let k = state_key(&first, &id, slot);
                        evicted.push(id);
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
            if let Some(t) = self.tasks.get_mut(&p) {
                t.core.evicted_pending.extend(evicted);
            }
            self.metrics
                .checkpoint_records
                .with_label_values(&[&p.to_string()])
                .observe(n as f64);
            if !positions.is_empty() {
                let marker = Marker {
                    gen,
                    meta,
                    inputs: positions,
                };
                markers.push((p, marker, cl_partition));
            }
        }
        if !self.eos {
            self.flush()?;
        }
        for (p, m, cl_partition) in &markers {
            let Some(first) = self.tasks.get(p).map(|t| t.core.inputs[0].topic.clone()) else {
                continue;
            };
            let k = marker_key(&first);
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
            for (i, inp) in t.core.inputs.iter().enumerate() {
                if let (Some(o), Some(_)) = (inp.next_offset, &t.queues[i]) {
                    offsets
                        .add_partition_offset(&inp.topic, t.partition, Offset::Offset(o))
                        .map_err(kafka("offset list"))?;
                }
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
        for (p, m, _) in markers {
            if let Some(t) = self.tasks.get_mut(&p) {
                let core = &mut t.core;
                core.marker = Some(m);
                let covered = std::mem::take(&mut core.evicted_pending);
                core.evicted_committed.extend(covered);
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
