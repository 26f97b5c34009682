//! The record path of the service: the rebalance callback that restores
//! and revokes partitions, and per record decode, validate, engine,
//! derived events out; idle partitions, the registry wait and the gauges.

#[allow(unused_imports)]
use super::*;

pub(super) fn lock(w: &Mutex<Worker>) -> MutexGuard<'_, Worker> {
    w.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl ClientContext for ConsumerCtx {
    fn stats(&self, stats: Statistics) {
        for (topic, t) in &stats.topics {
            for (p, part) in &t.partitions {
                if let Some(lag) = partition_lag(part) {
                    self.metrics
                        .consumer_lag
                        .with_label_values(&[topic.as_str(), &p.to_string()])
                        .set(lag);
                }
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.metrics
            .kafka_errors
            .with_label_values(&[kind_of(&error)])
            .inc();
        warn!(%error, reason, "Kafka consumer error.");
    }

    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        forward_log(level, fac, log_message);
    }
}

/// Records of an assigned partition not consumed yet. librdkafka's own
/// `consumer_lag` counts from the offset the consumer committed, which with
/// `exactly_once` it never does (the producer commits offsets inside the
/// transaction): then the lag counts from the next offset to hand to the
/// application, up to the last stable offset (read_committed).
pub(super) fn partition_lag(part: &rdkafka::statistics::Partition) -> Option<i64> {
    if part.partition < 0 {
        return None;
    }
    if part.consumer_lag >= 0 {
        return Some(part.consumer_lag);
    }
    let end = if part.ls_offset >= 0 {
        part.ls_offset
    } else {
        part.hi_offset
    };
    (part.app_offset >= 0 && end >= 0).then(|| (end - part.app_offset).max(0))
}

impl ConsumerContext for ConsumerCtx {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        let mut w = lock(&self.worker);
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                w.health.ready.store(false, Ordering::Relaxed);
                let parts: Vec<(String, i32)> = tpl
                    .elements()
                    .iter()
                    .map(|e| (e.topic().to_string(), e.partition()))
                    .collect();
                for (topic, partition) in parts {
                    match w.restore(&topic, partition) {
                        Ok(Some(offset)) => {
                            let _ =
                                tpl.set_partition_offset(&topic, partition, Offset::Offset(offset));
                        }
                        Ok(None) => {}
                        Err(e) => {
                            error!(%e, topic, partition, "Partition restore failed.");
                            w.fatal.get_or_insert(e);
                        }
                    }
                }
                let r = if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                };
                if let Err(e) = r {
                    w.fatal.get_or_insert(ServiceError::Kafka {
                        op: "assign".into(),
                        source: e,
                    });
                }
                w.metrics.assigned_partitions.set(w.tasks.len() as i64);
                let ok = w.fatal.is_none();
                w.health.ready.store(ok, Ordering::Relaxed);
                w.metrics.ready.set(i64::from(ok));
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                if w.fatal.is_none() {
                    if let Err(e) = w.checkpoint(consumer) {
                        error!(%e, "Checkpoint on revoke failed.");
                        w.fatal.get_or_insert(e);
                    }
                }
                for e in tpl.elements() {
                    let key = (Arc::from(e.topic()), e.partition());
                    let p = e.partition().to_string();
                    let labels = [e.topic(), p.as_str()];
                    let _ = w.metrics.watermark.remove_label_values(&labels);
                    let _ = w.metrics.watermark_lag.remove_label_values(&labels);
                    let _ = w.metrics.consumer_lag.remove_label_values(&labels);
                    if w.tasks.remove(&key).is_some() {
                        info!(
                            topic = e.topic(),
                            partition = e.partition(),
                            "Partition revoked."
                        );
                    }
                }
                let r = if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                };
                if let Err(e) = r {
                    warn!(%e, "Unassign failed.");
                }
                w.metrics.assigned_partitions.set(w.tasks.len() as i64);
                w.update_gauges();
            }
            other => {
                error!(error = ?other, "Rebalance error.");
                let _ = consumer.unassign();
            }
        }
    }
}

impl Worker {
    pub(super) fn emit(&mut self) -> Result<(), ServiceError> {
        let events = std::mem::take(&mut self.buf);
        for ev in &events {
            let value = self.encoder.encode(ev)?;
            let event_id = ev.event_id.to_string();
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: "type",
                    value: Some(ev.kind.as_str()),
                })
                .insert(Header {
                    key: "event_id",
                    value: Some(event_id.as_str()),
                });
            let rec: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&self.topics[ev.kind as usize])
                .key(ev.customer_id.as_bytes())
                .payload(value.as_slice())
                .headers(headers);
            self.send(rec)?;
            self.metrics.derived_event(ev.kind);
        }
        self.buf = events;
        self.buf.clear();
        Ok(())
    }

    /// Processes one record, consumed at `now`.
    pub(super) fn process(&mut self, msg: &impl Message, now: Instant) -> Result<(), ServiceError> {
        self.consumed_at.push(now);
        // The topic name of the previous record, shared: no allocation per
        // record while a batch comes from one topic.
        let topic = match &self.last_topic {
            Some(t) if &**t == msg.topic() => t.clone(),
            _ => {
                let t: Arc<str> = Arc::from(msg.topic());
                self.last_topic = Some(t.clone());
                t
            }
        };
        let key = (topic, msg.partition());
        let Some(span) = self.tasks.get(&key).map(|t| {
            t.consumed.inc();
            t.span.clone()
        }) else {
            self.metrics
                .records_consumed
                .with_label_values(&[msg.topic()])
                .inc();
            warn!(
                topic = msg.topic(),
                partition = msg.partition(),
                "Record for an unassigned partition ignored."
            );
            return Ok(());
        };
        let _entered = span.enter();
        self.ensure_txn()?;
        let decoded = loop {
            match self.decoder.decode(msg.topic(), msg.payload()) {
                Ok(raw) => break Ok(raw),
                Err(Ok(rejection)) => break Err(rejection),
                Err(Err(e)) => {
                    // The registry is unreachable: retry, never reject good
                    // data. Every partition waits (one service loop): not
                    // ready meanwhile, still live, and a stop request is
                    // honoured at once (the record is read again after the
                    // restart: its offset is not committed).
                    self.metrics
                        .kafka_errors
                        .with_label_values(&["schema_registry"])
                        .inc();
                    warn!(%e, "Schema registry unavailable; every partition waits for it (not ready); retrying.");
                    if !self.wait_for_registry() {
                        return Ok(());
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
        let result = decoded.and_then(|raw| validate(raw, clock));
        let Some(task) = self.tasks.get_mut(&key) else {
            return Ok(());
        };
        task.next_offset = Some(msg.offset() + 1);
        task.last_input = now;
        match result {
            Err(rejection) => self.dead_letter(msg, &rejection)?,
            Ok(tp) => {
                let t = tp.timestamp;
                let wm = task.engine.watermark();
                let before = *task.engine.stats();
                let outcome = task.engine.on_touchpoint(&tp, &mut self.buf);
                let after = *task.engine.stats();
                self.metrics.record_kpis(task.engine.kpis());
                task.engine.clear_kpis();
                self.metrics
                    .timers_fired
                    .inc_by(after.timers_fired - before.timers_fired);
                self.metrics.evicted.inc_by(after.evicted - before.evicted);
                match outcome {
                    Outcome::Accepted { late } => {
                        if late {
                            self.metrics.late_events.inc();
                        }
                    }
                    Outcome::Duplicate => self.metrics.duplicates.inc(),
                    Outcome::TooLate => {
                        let rejection =
                            Rejection::too_late(t, wm, self.engine_cfg.allowed_lateness);
                        self.dead_letter(msg, &rejection)?;
                    }
                }
                self.emit()?;
            }
        }
        Ok(())
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
            .set(self.tasks.len() as i64);
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

    /// Idle partitions follow the wall clock (SPEC 3).
    pub(super) fn idle_advance(&mut self) -> Result<(), ServiceError> {
        let idle = self.cfg.time.idle_timeout.as_duration();
        let now_ms = crate::validate::wall_clock_ms();
        let to = now_ms - self.engine_cfg.max_out_of_orderness;
        let mut fired = false;
        let mut buf = std::mem::take(&mut self.buf);
        for task in self.tasks.values_mut() {
            if task.last_input.elapsed() >= idle && task.engine.watermark().is_some_and(|w| w < to)
            {
                let before = buf.len();
                task.engine.advance_watermark(to, &mut buf);
                fired |= buf.len() > before;
                self.metrics.record_kpis(task.engine.kpis());
                task.engine.clear_kpis();
            }
        }
        self.buf = buf;
        if fired {
            self.ensure_txn()?;
        }
        self.emit()
    }

    pub(super) fn update_gauges(&self) {
        let (mut customers, mut bytes, mut timers) = (0, 0, 0);
        let mut population = crate::engine::kpi::Population::default();
        let now = crate::validate::wall_clock_ms();
        for t in self.tasks.values() {
            customers += t.engine.customers();
            let p = t.engine.population();
            for i in 0..3 {
                population.levels[i] += p.levels[i];
            }
            for i in 0..5 {
                population.stages[i] += p.stages[i];
            }
            bytes += t.engine.approx_state_bytes();
            timers += t.engine.pending_timers();
            if let Some(w) = t.engine.watermark() {
                let p = t.partition.to_string();
                self.metrics
                    .watermark
                    .with_label_values(&[&*t.topic, p.as_str()])
                    .set(w as f64 / 1000.0);
                self.metrics
                    .watermark_lag
                    .with_label_values(&[&*t.topic, p.as_str()])
                    .set((now - w) as f64 / 1000.0);
            }
        }
        self.metrics.customers.set(customers as i64);
        self.metrics.set_population(&population);
        self.metrics.state_bytes.set(bytes as i64);
        self.metrics.pending_timers.set(timers as i64);
    }
}
