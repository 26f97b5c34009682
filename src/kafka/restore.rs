//! Restoring a task from the changelog before its inputs are consumed:
//! read the changelog partition to its end, rebuild the engine from the
//! last complete checkpoint, and resume every input after the offset its
//! marker covers (an input the marker does not name starts at the group's
//! committed offset or per `auto_offset_reset`: a topic added to
//! `input_topics`).

#[allow(unused_imports)]
use super::*;

impl Worker {
    /// Restores task `partition` (not consumed yet: its queues are empty).
    pub(super) fn restore(&mut self, partition: i32) -> Result<(), ServiceError> {
        let started = Instant::now();
        let topic = self.state_prefix.clone();
        let topic = &*topic;
        let restore_err = |message: String| ServiceError::Restore {
            topic: topic.to_string(),
            partition,
            message,
        };
        let cl_topic = self.cfg.kafka.changelog_topic.clone();
        let cl_partition = partition % self.changelog_partitions.max(1);
        let rc = assigning_consumer(
            &self.cfg,
            &self.metrics,
            format!("{}-restore", self.cfg.kafka.group_id),
            &[
                ("enable.partition.eof", "false"),
                ("isolation.level", "read_committed"),
                // Fetch on as soon as the local queue has room (see
                // FETCH_QUEUE_BACKOFF_MS); a shorter queue keeps the
                // restore's peak memory near the state it builds.
                ("fetch.queue.backoff.ms", "1"),
                ("queued.min.messages", "20000"),
            ],
            "create restore consumer",
        )?;
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
                        op: "changelog watermarks",
                        source: e,
                    })
                }
            }
        };
        let builder = RestoreBuilder::new(topic).noting_markers_of(&self.cfg.kafka.input_topics);
        let mut first_record = None;
        // Two threads: this one reads the changelog (librdkafka's poll and
        // the message's release) and hands the records over in batches;
        // the other keeps each customer's latest records (the map). Each
        // was about half of a restore's CPU.
        let built = std::thread::scope(|scope| {
            let (batches, received) = std::sync::mpsc::sync_channel::<RecordBatch>(4);
            let building = scope.spawn(move || {
                let mut builder = builder;
                for batch in received {
                    for (key, value, offset) in batch.records() {
                        builder.push(key, value, offset)?;
                    }
                }
                Ok::<_, changelog::ChangelogError>(builder)
            });
            let read = if high > low {
                self.read_changelog(
                    &rc,
                    &cl_topic,
                    cl_partition,
                    high,
                    deadline,
                    &batches,
                    &mut first_record,
                )
            } else {
                Ok(())
            };
            drop(batches);
            let built = building.join();
            (read, built)
        });
        let builder = match built {
            // The builder's error is the cause when both failed (it stops
            // taking batches, which ends the read).
            (_, Ok(Err(e))) => return Err(restore_err(e.to_string())),
            (_, Err(_)) => return Err(restore_err("the restore's builder thread panicked".into())),
            (Err(e), _) => return Err(e),
            (Ok(()), Ok(Ok(b))) => b,
        };
        let read = started.elapsed();
        let mut restored = builder.finish();
        // The state is keyed by the first input topic: listed in another
        // order, or without its first topic, the inputs would start over
        // from an empty state and every customer's state would be lost
        // without a word (as Flink refuses state it cannot map back).
        if let (None, Some(other)) = (&restored.marker, &restored.foreign_marker) {
            return Err(restore_err(format!(
                "the changelog holds this task's state under input topic `{other}`, the first of \
                 `input_topics` when it was written; list `{other}` first in `input_topics` \
                 again (the first topic names the state: reordering the topics or dropping the \
                 first does not move it). To start over from an empty state, use another \
                 `changelog_topic`"
            )));
        }
        let customers = restored.saved.len();
        let mut engine = match &restored.marker {
            Some(m) => {
                // Decoded one at a time into the engine: never every
                // customer twice in memory.
                let mut failed = None;
                let decoded = restored.saved.drain(..).filter_map(|s| match s.customer() {
                    Ok(c) => c,
                    Err(e) => {
                        failed.get_or_insert(e);
                        None
                    }
                });
                let engine = Engine::restore(self.engine_cfg.clone(), m.meta, decoded);
                if let Some(e) = failed {
                    return Err(restore_err(e.to_string()));
                }
                engine
            }
            None => Engine::new(self.engine_cfg.clone()),
        };
        engine.collect_kpis(true);
        let mut merge = Merge::new(self.inputs.len(), self.engine_cfg.max_out_of_orderness);
        let now = Instant::now();
        let inputs: Vec<Input> = self
            .inputs
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let pos = restored
                    .marker
                    .as_ref()
                    .and_then(|m| m.inputs.iter().find(|p| *p.topic == **t));
                merge.restore_latest(i, pos.and_then(|p| p.latest));
                Input {
                    topic: t.clone(),
                    next_offset: pos.map(|p| p.offset),
                    last_input: now,
                    consumed: self.metrics.records_consumed.with_label_values(&[t]),
                    misrouted: self.metrics.misrouted.with_label_values(&[t]),
                    upstream: self.router.source_partitions(t).map(|n| {
                        let handled = pos.map(|p| p.routed.as_slice()).unwrap_or_default();
                        Upstream::new(n, handled, crate::validate::wall_clock_ms())
                    }),
                }
            })
            .collect();
        let resume: Vec<(String, Option<i64>)> = inputs
            .iter()
            .map(|i| (i.topic.to_string(), i.next_offset))
            .collect();
        let span = tracing::info_span!("task", task = partition);
        let task = Task {
            partition,
            queues: (0..inputs.len()).map(|_| None).collect(),
            core: TaskCore {
                engine,
                inputs,
                merge,
                marker: restored.marker,
                gen: restored.next_gen,
                repairs: restored.repairs,
                span,
                evicted_pending: Vec::new(),
                evicted_committed: Vec::new(),
            },
        };
        self.metrics
            .restore_duration
            .observe(started.elapsed().as_secs_f64());
        self.metrics.restored_customers.inc_by(customers as u64);
        info!(
            task = partition,
            customers,
            records = restored.records,
            resume = ?resume,
            seconds = started.elapsed().as_secs_f64(),
            first_record_seconds = first_record.map(|t| (t - started).as_secs_f64()),
            read_seconds = read.as_secs_f64(),
            "Task restored."
        );
        self.tasks.insert(partition, task);
        Ok(())
    }
    /// Reads changelog partition `partition` of `topic` from its start to
    /// `high` and hands its records to `batches` (ends early when their
    /// receiver is gone: it failed).
    #[allow(clippy::too_many_arguments)]
    fn read_changelog(
        &self,
        rc: &BaseConsumer<Ctx>,
        topic: &str,
        partition: i32,
        high: i64,
        deadline: Instant,
        batches: &std::sync::mpsc::SyncSender<RecordBatch>,
        first_record: &mut Option<Instant>,
    ) -> Result<(), ServiceError> {
        let restore_err = |message: String| ServiceError::Restore {
            topic: self.state_prefix.to_string(),
            partition,
            message,
        };
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Beginning)
            .map_err(kafka("restore assignment"))?;
        rc.assign(&tpl).map_err(kafka("assign changelog"))?;
        let mut batch = RecordBatch::default();
        let mut polls = 0u32;
        loop {
            // The clock is read once in a while, not per record.
            polls = polls.wrapping_add(1);
            if polls % 1024 == 1 {
                self.health.beat();
                if Instant::now() > deadline {
                    return Err(restore_err(format!(
                        "not done after {:?}",
                        self.cfg.kafka.restore_timeout.as_duration()
                    )));
                }
            }
            // Without a wait first: a wait reads the clock (twice).
            let polled = match rc.poll(Duration::ZERO) {
                None => rc.poll(Duration::from_millis(200)),
                some => some,
            };
            match polled {
                Some(Ok(m)) => {
                    first_record.get_or_insert_with(Instant::now);
                    batch.add(m.key().unwrap_or_default(), m.payload(), m.offset());
                    let last = m.offset() >= high - 1;
                    if (last || batch.is_full())
                        && batches.send(std::mem::take(&mut batch)).is_err()
                    {
                        return Ok(()); // the builder failed: its error is the cause
                    }
                    if last {
                        return Ok(());
                    }
                }
                Some(Err(e)) => warn!(%e, "Changelog read error during restore."),
                None => {
                    // Idle: what was read so far goes to the builder.
                    if !batch.is_empty() && batches.send(std::mem::take(&mut batch)).is_err() {
                        return Ok(());
                    }
                    let pos = rc.position().ok().and_then(|p| {
                        p.find_partition(topic, partition)
                            .and_then(|e| e.offset().to_raw())
                    });
                    if pos.is_some_and(|p| p >= high) {
                        return Ok(());
                    }
                    polls = 0; // idle: the deadline is checked next
                }
            }
        }
    }
}

/// Changelog records read and not yet kept: their keys and values one
/// after another in one buffer.
#[derive(Default)]
struct RecordBatch {
    bytes: Vec<u8>,
    /// Per record: where its key ends, where its value ends (`None`: a
    /// tombstone) and its offset.
    records: Vec<(usize, Option<usize>, i64)>,
}

impl RecordBatch {
    const RECORDS: usize = 512;
    const BYTES: usize = 256 * 1024;

    fn add(&mut self, key: &[u8], value: Option<&[u8]>, offset: i64) {
        if self.records.is_empty() {
            self.records.reserve(Self::RECORDS);
            self.bytes.reserve(Self::BYTES + 4096);
        }
        self.bytes.extend_from_slice(key);
        let key_end = self.bytes.len();
        let value_end = value.map(|v| {
            self.bytes.extend_from_slice(v);
            self.bytes.len()
        });
        self.records.push((key_end, value_end, offset));
    }

    fn is_full(&self) -> bool {
        self.records.len() >= Self::RECORDS || self.bytes.len() >= Self::BYTES
    }

    fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Every record: key, value, offset.
    fn records(&self) -> impl Iterator<Item = (&[u8], Option<&[u8]>, i64)> {
        let mut at = 0;
        self.records
            .iter()
            .map(move |&(key_end, value_end, offset)| {
                let key = self.bytes.get(at..key_end).unwrap_or_default();
                at = key_end;
                let value = value_end.map(|end| {
                    let v = self.bytes.get(at..end).unwrap_or_default();
                    at = end;
                    v
                });
                (key, value, offset)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::RecordBatch;

    #[test]
    fn a_record_batch_gives_back_what_it_was_given() {
        let mut batch = RecordBatch::default();
        let records: Vec<(Vec<u8>, Option<Vec<u8>>, i64)> = (0..RecordBatch::RECORDS as i64)
            .map(|i| match i % 3 {
                0 => (
                    format!("k{i}").into_bytes(),
                    Some(vec![i as u8; i as usize]),
                    i,
                ),
                1 => (format!("k{i}").into_bytes(), None, i),
                _ => (Vec::new(), Some(Vec::new()), i),
            })
            .collect();
        for (n, (k, v, o)) in records.iter().enumerate() {
            assert!(!batch.is_full(), "full after {n} records");
            batch.add(k, v.as_deref(), *o);
        }
        assert!(batch.is_full());
        let back: Vec<(Vec<u8>, Option<Vec<u8>>, i64)> = batch
            .records()
            .map(|(k, v, o)| (k.to_vec(), v.map(<[u8]>::to_vec), o))
            .collect();
        assert_eq!(back, records);
        // Full by bytes too: one big value.
        let mut batch = RecordBatch::default();
        batch.add(b"k", Some(&vec![7; RecordBatch::BYTES]), 0);
        assert!(batch.is_full());
        assert!(!batch.is_empty());
    }
}
