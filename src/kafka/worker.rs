//! The record path of the service: per task its inputs' records through
//! decode, the pipeline (validate, engine), the merge of several inputs,
//! derived events out; idle inputs, the registry wait and the gauges.

#[allow(unused_imports)]
use super::*;

pub(super) fn lock(w: &Mutex<Worker>) -> MutexGuard<'_, Worker> {
    w.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Worker {
    pub(super) fn emit(&mut self) -> Result<(), ServiceError> {
        let events = std::mem::take(&mut self.buf);
        // One value buffer for every event (librdkafka copies it).
        let mut value = std::mem::take(&mut self.value_buf);
        let mut id = [0; 36];
        for ev in &events {
            self.encoder.encode_into(ev, &mut value)?;
            let headers = OwnedHeaders::new_with_capacity(2)
                .insert(Header {
                    key: "type",
                    value: Some(ev.kind.as_str()),
                })
                .insert(Header {
                    key: "event_id",
                    value: Some(ev.event_id.hyphenated(&mut id)),
                });
            let rec: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&self.topics[ev.kind as usize])
                .key(ev.customer_id.as_bytes())
                .payload(value.as_slice())
                .headers(headers);
            self.send(rec)?;
            self.metrics.derived_event(ev.kind);
        }
        self.value_buf = value;
        self.buf = events;
        self.buf.clear();
        Ok(())
    }

    /// A record that came on the consumer's own queue: every assigned
    /// partition has a queue of its own, so this is one of a partition no
    /// longer held (ignored; it is read again by its new owner).
    pub(super) fn stray(&mut self, msg: &impl Message) -> Result<(), ServiceError> {
        self.metrics
            .records_consumed
            .with_label_values(&[msg.topic()])
            .inc();
        warn!(
            topic = msg.topic(),
            partition = msg.partition(),
            "Record for a partition not held ignored."
        );
        Ok(())
    }

    /// Processes what the tasks' queues hold; returns the records taken.
    pub(super) fn pump(&mut self, now: Instant) -> Result<usize, ServiceError> {
        let mut total = 0;
        let parts: Vec<i32> = self.tasks.keys().copied().collect();
        for p in parts {
            // The task leaves the map while it runs: its queues lend the
            // records, the worker sends what they cause.
            let Some(mut task) = self.tasks.remove(&p) else {
                continue;
            };
            let r = if task.queues.len() == 1 {
                self.pump_single(&mut task, now)
            } else {
                self.pump_merged(&mut task, now)
            };
            self.tasks.insert(p, task);
            total += r?;
            if self.shutdown.load(Ordering::Relaxed) {
                break;
            }
        }
        Ok(total)
    }

    /// A task with one input: records in offset order (SPEC 3).
    fn pump_single(&mut self, task: &mut Task, now: Instant) -> Result<usize, ServiceError> {
        let Task {
            partition,
            queues,
            core,
        } = task;
        let Some(q) = queues.first().and_then(Option::as_ref) else {
            return Ok(0);
        };
        let span = core.span.clone();
        let _entered = span.enter();
        let mut n = 0;
        while n < BATCH {
            let Fetched::Record(msg) = self.fetch(q) else {
                break;
            };
            n += 1;
            let input = &mut core.inputs[0];
            let Some(source) = self.routed(input, &msg) else {
                continue;
            };
            self.count_in(input, now);
            let Some(checked) = self.check(&msg) else {
                break;
            };
            let input = &mut core.inputs[0];
            input.next_offset = Some(msg.offset() + 1);
            if let Some(u) = input.upstream.as_mut() {
                u.done(source);
            }
            match checked {
                Err(rejection) => self.dead_letter(&msg, &rejection)?,
                Ok(tp) => {
                    self.count_misrouted(&tp, *partition, &core.inputs[0]);
                    self.offer(core, &msg, &tp, None)?
                }
            }
        }
        Ok(n)
    }

    /// A task with several inputs (SPEC 8): the next record is the earliest
    /// of the inputs' next valid records (ties: the input listed first);
    /// what fails a stateless rule is handled as soon as it is next on its
    /// input; the task waits for an input that still has records to fetch,
    /// not for one that is caught up or idle.
    fn pump_merged(&mut self, task: &mut Task, now: Instant) -> Result<usize, ServiceError> {
        let Task {
            partition,
            queues,
            core,
        } = task;
        if queues.iter().any(Option::is_none) {
            return Ok(0);
        }
        let span = core.span.clone();
        let _entered = span.enter();
        let mut n = 0;
        loop {
            for (i, q) in queues.iter().enumerate() {
                let Some(q) = q else { continue };
                while core.merge.wants(i) {
                    let msg = match self.fetch(q) {
                        Fetched::Nothing => break,
                        Fetched::End => {
                            // A repartition input is caught up once the
                            // router has also routed its sources to their end.
                            let upstream = core.inputs[i].upstream.as_ref();
                            if upstream.is_none_or(Upstream::all_caught_up) {
                                core.merge.caught_up(i);
                            }
                            break;
                        }
                        Fetched::Record(msg) => msg,
                    };
                    n += 1;
                    let Some(source) = self.routed(&mut core.inputs[i], &msg) else {
                        continue;
                    };
                    core.merge.received(i);
                    self.count_in(&mut core.inputs[i], now);
                    let Some(checked) = self.check(&msg) else {
                        return Ok(n);
                    };
                    match checked {
                        Err(rejection) => {
                            let input = &mut core.inputs[i];
                            input.next_offset = Some(msg.offset() + 1);
                            if let Some(u) = input.upstream.as_mut() {
                                u.done(source);
                            }
                            self.dead_letter(&msg, &rejection)?;
                        }
                        Ok(tp) => {
                            self.count_misrouted(&tp, *partition, &core.inputs[i]);
                            let t = tp.timestamp;
                            let head = Head {
                                msg: msg.detach(),
                                tp,
                                source,
                            };
                            core.merge.push(i, t, head);
                        }
                    }
                }
            }
            if n >= BATCH {
                return Ok(n);
            }
            let Some(next) = core.merge.pop() else {
                return Ok(n);
            };
            let Head { msg, tp, source } = next.item;
            let input = &mut core.inputs[next.input];
            input.next_offset = Some(msg.offset() + 1);
            if let Some(u) = input.upstream.as_mut() {
                u.done(source);
            }
            self.offer(core, &msg, &tp, Some(next.to))?;
        }
    }

    /// Sorts a record of a task input: `None` when it is not a touchpoint
    /// to process (an announcement of the router, or a copy the router sent
    /// again: counted as a duplicate; either way passed over), else where
    /// it was routed from (a repartition input's record).
    fn routed(&self, input: &mut Input, msg: &impl Message) -> Option<Option<(usize, i64)>> {
        let Some(u) = input.upstream.as_mut() else {
            return Some(None);
        };
        match u.note(msg) {
            Routed::Record(source) => Some(source),
            Routed::Control => {
                input.next_offset = Some(msg.offset() + 1);
                None
            }
            Routed::Copy => {
                input.next_offset = Some(msg.offset() + 1);
                self.metrics.duplicates.inc();
                None
            }
        }
    }

    /// The next record of an input partition's queue, or its end.
    pub(super) fn fetch<'q>(&self, q: &'q PartitionQueue<Ctx>) -> Fetched<'q> {
        loop {
            match q.poll(Duration::ZERO) {
                None => return Fetched::Nothing,
                Some(Err(KafkaError::PartitionEOF(_))) => return Fetched::End,
                Some(Err(e)) => self.consumer_error(&e),
                Some(Ok(msg)) => return Fetched::Record(msg),
            }
        }
    }

    /// Counts a record received on `input` at `now`.
    fn count_in(&mut self, input: &mut Input, now: Instant) {
        self.consumed_at.push(now);
        input.consumed.inc();
        input.last_input = now;
    }

    pub(super) fn consumer_error(&self, e: &KafkaError) {
        self.metrics
            .kafka_errors
            .with_label_values(&[kind_of(e)])
            .inc();
        warn!(%e, "Consumer error.");
    }

    /// Decodes a record and checks the rules of SPEC 2 that need no state.
    /// `None`: a stop was requested while the registry was awaited (the
    /// record is read again after the restart: its offset is not covered).
    pub(super) fn check(&mut self, msg: &impl Message) -> Option<Result<Touchpoint, Rejection>> {
        self.ensure_txn_or_fail()?;
        let decoded = loop {
            match self.decoder.decode(msg.topic(), msg.payload()) {
                Ok(raw) => break Ok(raw),
                Err(Ok(rejection)) => break Err(rejection),
                Err(Err(e)) => {
                    // The registry is unreachable: retry, never reject good
                    // data. Every task waits (one service loop): not ready
                    // meanwhile, still live, and a stop request is honoured
                    // at once.
                    self.metrics
                        .kafka_errors
                        .with_label_values(&["schema_registry"])
                        .inc();
                    warn!(%e, "Schema registry unavailable; every partition waits for it (not ready); retrying.");
                    if !self.wait_for_registry() {
                        return None;
                    }
                }
            }
        };
        if self.registry_waiting {
            self.registry_back();
        }
        let clock = Clock {
            now: crate::validate::wall_clock_ms(),
            max_future: self.cfg.time.max_future.0,
        };
        Some(pipeline::check(decoded, clock))
    }

    /// Counts a valid record whose customer id does not hash to the
    /// partition (task) it came on.
    fn count_misrouted(&self, tp: &Touchpoint, partition: i32, input: &Input) {
        if kafka_partition(tp.customer_id.as_bytes(), self.task_count) != partition {
            input.misrouted.inc();
        }
    }

    /// Begins the transaction if needed; a failure is kept as fatal.
    fn ensure_txn_or_fail(&mut self) -> Option<()> {
        match self.ensure_txn() {
            Ok(()) => Some(()),
            Err(e) => {
                self.fatal.get_or_insert(e);
                None
            }
        }
    }

    /// Offers a valid touchpoint to the task's engine (`to`: the task's
    /// watermark with it, for a task with several inputs) and sends what
    /// it causes; a record too late goes to the dead-letter topic.
    fn offer(
        &mut self,
        core: &mut TaskCore,
        msg: &impl Message,
        tp: &Touchpoint,
        to: Option<Option<i64>>,
    ) -> Result<(), ServiceError> {
        // A record waiting in the merge may be taken after a checkpoint
        // committed the transaction it was read in.
        self.ensure_txn()?;
        let before = *core.engine.stats();
        let verdict = pipeline::step(
            &mut core.engine,
            InputEvent::Record { tp, merged: to },
            &mut self.buf,
        );
        let after = *core.engine.stats();
        self.metrics.record_kpis(core.engine.kpis());
        core.engine.clear_kpis();
        self.metrics
            .timers_fired
            .inc_by(after.timers_fired - before.timers_fired);
        self.metrics.evicted.inc_by(after.evicted - before.evicted);
        match verdict {
            Verdict::Accepted { late: true } => self.metrics.late_events.inc(),
            Verdict::Accepted { late: false } | Verdict::Advanced(_) => {}
            Verdict::Duplicate => self.metrics.duplicates.inc(),
            Verdict::Rejected(rejection) => self.dead_letter(msg, &rejection)?,
        }
        self.emit()
    }

    /// Waits a second for the registry to come back, marking the instance
    /// not ready and counting the waiting partitions; false when a stop
    /// was requested meanwhile.
    pub(super) fn wait_for_registry(&mut self) -> bool {
        if !self.registry_waiting {
            self.registry_waiting = true;
            self.ready_before_registry = self.health.ready.load(Ordering::Relaxed);
        }
        self.health.ready.store(false, Ordering::Relaxed);
        self.metrics.ready.set(0);
        self.metrics
            .partitions_waiting_on_registry
            .set(self.metrics.assigned_partitions.get());
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
    pub(super) fn registry_back(&mut self) {
        self.registry_waiting = false;
        self.metrics.partitions_waiting_on_registry.set(0);
        let ready = self.ready_before_registry && self.fatal.is_none();
        self.health.ready.store(ready, Ordering::Relaxed);
        self.metrics.ready.set(i64::from(ready));
        info!("Schema registry answers again; processing resumed.");
    }

    /// Idle inputs (SPEC 3 and 8): an input that received nothing for
    /// `idle_timeout` is left out of its task's watermark; when every input
    /// of a task is idle the task's watermark follows the wall clock.
    pub(super) fn idle_advance(&mut self) -> Result<(), ServiceError> {
        let idle = self.cfg.time.idle_timeout.as_duration();
        let now = crate::validate::wall_clock_ms();
        let mut fired = false;
        self.router.set_idle(idle);
        let mut buf = std::mem::take(&mut self.buf);
        for task in self.tasks.values_mut() {
            let core = &mut task.core;
            let mut changed = false;
            for (i, inp) in core.inputs.iter().enumerate() {
                changed |= core.merge.set_idle(i, inp.last_input.elapsed() >= idle);
            }
            let event = if core.merge.all_idle() {
                InputEvent::Tick { now }
            } else if changed && core.inputs.len() > 1 {
                match core.merge.marks().task_watermark() {
                    Some(to) => InputEvent::Idle { to },
                    None => continue,
                }
            } else {
                continue;
            };
            let before = buf.len();
            if pipeline::step(&mut core.engine, event, &mut buf) == Verdict::Advanced(true) {
                fired |= buf.len() > before;
                self.metrics.record_kpis(core.engine.kpis());
                core.engine.clear_kpis();
            }
        }
        self.buf = buf;
        if fired {
            self.ensure_txn()?;
        }
        self.emit()?;
        self.update_gauges();
        Ok(())
    }

    /// Updates the gauges; a scrape sees all of the update or none of it.
    pub(super) fn update_gauges(&self) {
        let metrics = self.metrics.clone();
        let _whole = metrics
            .partitions
            .write()
            .unwrap_or_else(|p| p.into_inner());
        self.set_gauges();
    }

    /// [`Worker::update_gauges`] for a caller that holds the metrics'
    /// partition lock (the rebalance callback).
    pub(super) fn set_gauges(&self) {
        let (mut customers, mut bytes, mut timers) = (0, 0, 0);
        let mut population = crate::engine::kpi::Population::default();
        let now = crate::validate::wall_clock_ms();
        for t in self.tasks.values() {
            let core = &t.core;
            customers += core.engine.customers();
            let p = core.engine.population();
            for i in 0..3 {
                population.levels[i] += p.levels[i];
            }
            for i in 0..5 {
                population.stages[i] += p.stages[i];
            }
            bytes += core.engine.estimated_state_bytes();
            timers += core.engine.pending_timers();
            let part = t.partition.to_string();
            if let Some(w) = core.engine.watermark() {
                self.metrics
                    .task_watermark
                    .with_label_values(&[part.as_str()])
                    .set(w as f64 / 1000.0);
            }
            let single = core.inputs.len() == 1;
            for (i, inp) in core.inputs.iter().enumerate() {
                if t.queues[i].is_none() {
                    continue;
                }
                let labels = [&*inp.topic, part.as_str()];
                self.metrics
                    .input_idle
                    .with_label_values(&labels)
                    .set(i64::from(core.merge.is_idle(i)));
                let w = if single {
                    core.engine.watermark()
                } else {
                    core.merge.marks().input_watermark(i)
                };
                if let Some(w) = w {
                    self.metrics
                        .watermark
                        .with_label_values(&labels)
                        .set(w as f64 / 1000.0);
                    self.metrics
                        .watermark_lag
                        .with_label_values(&labels)
                        .set((now - w) as f64 / 1000.0);
                }
            }
        }
        self.metrics.customers.set(customers as i64);
        self.metrics.set_population(&population);
        self.metrics.state_bytes.set(bytes as i64);
        self.metrics.pending_timers.set(timers as i64);
    }
}

/// What an input partition's queue holds next.
pub(super) enum Fetched<'q> {
    Record(rdkafka::message::BorrowedMessage<'q>),
    /// The end of the partition (nothing more to fetch for now).
    End,
    /// Nothing yet.
    Nothing,
}

/// Records a task takes from its queues per turn of the poll loop.
pub(super) const BATCH: usize = 1024;
