//! The group's rebalances: the tasks an assignment brings are restored
//! and their input partitions given their own fetch queues at the offsets
//! their markers hold; a revocation checkpoints first, then drops the
//! partitions and, once none of a task's inputs is held, the task and its
//! metrics. Also the group consumer's statistics (lag, repartition size).

#[allow(unused_imports)]
use super::*;

/// What the group consumer's context holds for its rebalances.
pub(super) struct Group {
    pub(super) worker: Arc<Mutex<Worker>>,
    /// The consumer itself, for splitting partition queues in the
    /// rebalance callback (set once it is created).
    pub(super) consumer: std::sync::OnceLock<std::sync::Weak<BaseConsumer<Ctx>>>,
    pub(super) wake: Arc<Wake>,
    /// `<group_id>.repartition.`: the repartition topics' names begin so.
    pub(super) repartition_prefix: String,
}

impl Group {
    /// The group consumer's statistics: lag per input partition, and
    /// records kept per repartition partition.
    pub(super) fn stats(&self, metrics: &Metrics, stats: &Statistics) {
        for (topic, t) in &stats.topics {
            for (p, part) in &t.partitions {
                if let Some(lag) = partition_lag(part) {
                    metrics
                        .consumer_lag
                        .with_label_values(&[topic.as_str(), &p.to_string()])
                        .set(lag);
                }
                if topic.starts_with(&self.repartition_prefix)
                    && part.partition >= 0
                    && part.lo_offset >= 0
                    && part.hi_offset >= part.lo_offset
                {
                    metrics
                        .repartition_retained
                        .with_label_values(&[topic.as_str(), &p.to_string()])
                        .set(part.hi_offset - part.lo_offset);
                }
            }
        }
    }

    /// Assigns (restoring each new task) or revokes (after a checkpoint)
    /// the partitions of `tpl`; a scrape sees whole tasks throughout.
    pub(super) fn rebalance(
        &self,
        consumer: &BaseConsumer<Ctx>,
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
                let arc = self.consumer.get().and_then(std::sync::Weak::upgrade);
                for (topic, partition) in &parts {
                    if w.router.target(topic).is_some() {
                        w.route_from(topic, *partition, arc.as_ref(), &self.wake);
                        continue;
                    }
                    let Some(i) = w.inputs.iter().position(|t| **t == **topic) else {
                        continue;
                    };
                    if !w.tasks.contains_key(partition) {
                        if let Err(e) = w.restore(*partition) {
                            error!(%e, task = partition, "Task restore failed.");
                            w.fatal.get_or_insert(e);
                            continue;
                        }
                    }
                    let repartition = w.router.is_repartition_topic(topic);
                    let Some(task) = w.tasks.get_mut(partition) else {
                        continue;
                    };
                    let start = match task.core.inputs[i].next_offset {
                        Some(o) => Some(Offset::Offset(o)),
                        // A repartition partition no marker covers yet:
                        // every record in it is still to be processed.
                        None if repartition => Some(Offset::Beginning),
                        None => None,
                    };
                    if let Some(o) = start {
                        let _ = tpl.set_partition_offset(topic, *partition, o);
                    }
                    // Split before assigning: the partition's records (and
                    // its end) then come on its own queue only.
                    match arc
                        .as_ref()
                        .and_then(|c| c.split_partition_queue(topic, *partition))
                    {
                        Some(mut q) => {
                            let wake = self.wake.clone();
                            q.set_nonempty_callback(move || wake.notify());
                            task.queues[i] = Some(q);
                        }
                        None => {
                            w.fatal.get_or_insert(ServiceError::Topics(format!(
                                "cannot open the fetch queue of {topic}[{partition}]"
                            )));
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
                        op: "assign",
                        source: e,
                    });
                }
                let incomplete = w.incomplete_tasks();
                if !incomplete.is_empty() {
                    error!(
                        tasks = ?incomplete,
                        "Assigned only part of these tasks' input partitions: they wait, and the \
                         instance is not ready, until the group assigns the rest (every group \
                         member must subscribe to the same input topics)."
                    );
                }
                w.metrics.assigned_partitions.set(w.assigned_partitions());
                let ok = w.fatal.is_none() && incomplete.is_empty();
                w.health.ready.store(ok, Ordering::Relaxed);
                w.metrics.ready.set(i64::from(ok));
                w.update_gauges();
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                if w.fatal.is_none() && w.phase == Phase::Running {
                    if let Err(e) = w.checkpoint(consumer) {
                        error!(%e, "Checkpoint on revoke failed.");
                        w.fatal.get_or_insert(e);
                    }
                }
                // A scrape sees every revoked partition's series or none.
                let metrics = w.metrics.clone();
                let whole = metrics
                    .partitions
                    .write()
                    .unwrap_or_else(|p| p.into_inner());
                for e in tpl.elements() {
                    w.revoke(e.topic(), e.partition());
                }
                let r = if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                };
                if let Err(e) = r {
                    warn!(%e, "Unassign failed.");
                }
                w.metrics.assigned_partitions.set(w.assigned_partitions());
                w.set_gauges();
                drop(whole);
            }
            other => {
                error!(error = ?other, "Rebalance error.");
                let _ = consumer.unassign();
            }
        }
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

impl Worker {
    /// Input partitions held.
    pub(super) fn assigned_partitions(&self) -> i64 {
        self.tasks
            .values()
            .map(|t| t.queues.iter().flatten().count() as i64)
            .sum::<i64>()
            + self.router.lane_count() as i64
    }

    /// Tasks of which only some input partitions are assigned here.
    pub(super) fn incomplete_tasks(&self) -> Vec<i32> {
        self.tasks
            .values()
            .filter(|t| t.queues.iter().any(Option::is_none))
            .map(|t| t.partition)
            .collect()
    }

    /// Drops a revoked input partition; a task none of whose inputs is
    /// held any more is dropped with its metrics.
    pub(super) fn revoke(&mut self, topic: &str, partition: i32) {
        let p = partition.to_string();
        let labels = [topic, p.as_str()];
        let _ = self.metrics.watermark.remove_label_values(&labels);
        let _ = self.metrics.watermark_lag.remove_label_values(&labels);
        let _ = self.metrics.consumer_lag.remove_label_values(&labels);
        let _ = self.metrics.input_idle.remove_label_values(&labels);
        let _ = self
            .metrics
            .repartition_retained
            .remove_label_values(&labels);
        if self.router.remove(topic, partition) {
            info!(topic, partition, "Routing of partition revoked.");
            return;
        }
        let Some(task) = self.tasks.get_mut(&partition) else {
            return;
        };
        if let Some(i) = task.core.inputs.iter().position(|inp| &*inp.topic == topic) {
            task.queues[i] = None;
            task.core.merge.forget(i);
        }
        if task.queues.iter().all(Option::is_none) {
            self.tasks.remove(&partition);
            let _ = self
                .metrics
                .task_watermark
                .remove_label_values(&[p.as_str()]);
            info!(task = partition, "Task revoked.");
        }
    }
}
