//! Announcements (SPEC 8): how the router tells the tasks, and the other
//! router instances, where the source partitions it routes stand.
//!
//! A task reads a repartition partition as one input whose records come
//! from every partition of the source topic. It may not take that input
//! as caught up at the end of the partition while the router still has
//! records of the source to route: so the router *announces*, in every
//! repartition partition and after the records it routed, where each
//! source partition it holds stands (a control record: no key, header
//! `touchstream.control = frontier`, value
//! `"<partition>:<progress>:<1 if routed to its end>,..."`, the progress
//! being the event time of its next record, else of the last one routed,
//! `-` if none). A task takes a repartition input as caught up at its end
//! only once every source partition's last news is "routed to its end",
//! not a record routed after it ([`Upstream`]). Announcements are made
//! when a partition reaches its end, and repeated every second while
//! nothing changes, for tasks that start reading after the last one.
//!
//! The same announcements go to `<group_id>.repartition-progress` (keyed
//! by topic and instance, compacted), read by every instance: there the
//! routers of several instances learn where the others stand, promptly,
//! for the watermark alignment of `router.rs`; while other instances route
//! the same topic they are also made as the lanes move.

#[allow(unused_imports)]
use super::*;

/// Reads an announcement's value: per source partition, its progress and
/// whether it is routed to its end.
pub(super) fn parse_announcement(value: &[u8]) -> Vec<(i32, Option<i64>, bool)> {
    std::str::from_utf8(value)
        .unwrap_or_default()
        .split(',')
        .filter_map(|entry| {
            let mut f = entry.split(':');
            let p = f.next()?.parse().ok()?;
            let progress = f.next()?.parse().ok();
            let caught_up = f.next()? == "1";
            Some((p, progress, caught_up))
        })
        .collect()
}

/// What a task knows of the source partitions behind one of its
/// repartition inputs.
#[derive(Debug, Clone)]
pub(super) struct Upstream {
    /// Per source partition: its end is announced and nothing routed since.
    caught_up: Vec<bool>,
    /// Per source partition: the highest offset of a record routed from it
    /// that the task has handled (-1: none); kept in the marker.
    handled: Vec<i64>,
    /// Wall-clock ms when the task started reading: an announcement made
    /// before it (by a router that may have died since) says nothing of
    /// what is routed now.
    since: i64,
}

/// What a record of a repartition topic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Routed {
    /// An announcement (noted), not a touchpoint.
    Control,
    /// A record the router sent again (after a crash, under
    /// `at_least_once`) that the task has handled already.
    Copy,
    /// A touchpoint, routed from this source partition and offset (when
    /// its headers say so).
    Record(Option<(usize, i64)>),
}

impl Upstream {
    /// `partitions` source partitions; `handled` from the task's marker.
    pub(super) fn new(partitions: i32, handled: &[i64], since: i64) -> Self {
        let n = partitions.max(0) as usize;
        let mut h = vec![-1; n];
        for (slot, o) in h.iter_mut().zip(handled) {
            *slot = *o;
        }
        Upstream {
            caught_up: vec![false; n],
            handled: h,
            since,
        }
    }

    /// Every source partition is routed to its end.
    pub(super) fn all_caught_up(&self) -> bool {
        self.caught_up.iter().all(|c| *c)
    }

    /// Per source partition, the highest offset handled.
    pub(super) fn handled(&self) -> &[i64] {
        &self.handled
    }

    /// The record routed from `source` is handled.
    pub(super) fn done(&mut self, source: Option<(usize, i64)>) {
        if let Some(h) = source.and_then(|(p, o)| Some((self.handled.get_mut(p)?, o))) {
            *h.0 = (*h.0).max(h.1);
        }
    }

    /// Takes a record of the repartition partition. An announcement made
    /// since the task started is noted (where each source partition
    /// stands); a routed record makes its source partition not caught up,
    /// and is a copy when its source offset is handled already (the router
    /// routes each source partition in offset order, so a copy is the only
    /// way an offset comes again).
    pub(super) fn note(&mut self, msg: &impl Message) -> Routed {
        let Some(headers) = msg.headers() else {
            return Routed::Record(None);
        };
        let mut control = None;
        let mut partition = None;
        let mut offset = None;
        let number = |v: Option<&[u8]>| v.and_then(|v| std::str::from_utf8(v).ok())?.parse().ok();
        for h in headers.iter() {
            match h.key {
                CONTROL_HEADER => control = Some(h.value == Some(FRONTIER.as_bytes())),
                "source.partition" => partition = number(h.value),
                "source.offset" => offset = number(h.value),
                _ => {}
            }
        }
        match control {
            // A control record of another kind (a later version's): skipped.
            Some(false) => Routed::Control,
            Some(true) => {
                let at = msg.timestamp().to_millis().unwrap_or(i64::MIN);
                if at >= self.since {
                    let announced = parse_announcement(msg.payload().unwrap_or_default());
                    for (p, _, caught_up) in announced {
                        let slot = usize::try_from(p)
                            .ok()
                            .and_then(|p| self.caught_up.get_mut(p));
                        if let Some(c) = slot {
                            *c = caught_up;
                        }
                    }
                }
                Routed::Control
            }
            None => {
                let Some(p) = partition.and_then(|p: i64| usize::try_from(p).ok()) else {
                    return Routed::Record(None);
                };
                if let Some(c) = self.caught_up.get_mut(p) {
                    *c = false;
                }
                match offset {
                    Some(o) if self.handled.get(p).is_some_and(|h| o <= *h) => Routed::Copy,
                    Some(o) => Routed::Record(Some((p, o))),
                    None => Routed::Record(None),
                }
            }
        }
    }
}

impl Worker {
    /// Announces in every repartition partition where the source
    /// partitions routed here stand (module docs): when one reached its
    /// end since the last announcement, or, while other instances route
    /// the same topic, when the lanes moved (at most every
    /// [`ANNOUNCE_GAP`]); and every [`ANNOUNCE_EVERY`].
    pub(super) fn announce(&mut self, now: Instant) -> Result<(), ServiceError> {
        self.router.read_progress();
        self.publish_acknowledged()?;
        // (repartition topic, progress key, value, to the tasks too)
        let mut messages: Vec<(Arc<str>, String, String, bool)> = Vec::new();
        let room = self.router.unacknowledged.len() + 1 < ROUTED_EPOCHS;
        for g in &mut self.router.groups {
            if g.lanes.is_empty() {
                continue;
            }
            let since = g.announced_at.map(|t| now.saturating_duration_since(t));
            let news = g
                .lanes
                .iter()
                .enumerate()
                .any(|(i, l)| l.unannounced && g.merge.is_caught_up(i));
            let shared = (g.lanes.len() as i32) < g.topic.partitions;
            let (tasks, peers) = match since {
                None => (true, true),
                Some(d) if d >= ANNOUNCE_EVERY => (true, true),
                Some(d) if d >= ANNOUNCE_GAP => (news, news || (shared && g.moved)),
                Some(_) => (false, false),
            };
            if !peers || !room {
                continue;
            }
            messages.push((
                g.topic.internal.clone(),
                format!("{}|{}", g.topic.source, self.router.instance),
                g.announcement(),
                tasks,
            ));
            g.announced_at = Some(now);
            g.moved = false;
            if tasks {
                for i in 0..g.lanes.len() {
                    if g.merge.is_caught_up(i) {
                        g.lanes[i].unannounced = false;
                    }
                }
            }
        }
        if messages.is_empty() {
            return Ok(());
        }
        self.ensure_txn()?;
        for (internal, _, value, tasks) in &messages {
            if !tasks {
                continue;
            }
            // After the records routed before it in each partition: the
            // producer keeps a partition's order.
            for p in 0..self.task_count {
                let headers = OwnedHeaders::new().insert(Header {
                    key: CONTROL_HEADER,
                    value: Some(FRONTIER),
                });
                self.send(
                    BaseRecord::<[u8], [u8]>::to(internal)
                        .partition(p)
                        .payload(value.as_bytes())
                        .headers(headers),
                )?;
            }
        }
        // The other instances must not read a lane's progress before the
        // records routed up to it are in the repartition partitions (they
        // would route later records ahead of them): the announcement waits
        // until this router epoch is acknowledged.
        let r = &mut self.router;
        r.unacknowledged.push_back((
            r.epoch,
            messages.into_iter().map(|(_, k, v, _)| (k, v)).collect(),
        ));
        r.epoch += 1;
        self.publish_acknowledged()
    }

    /// Sends to the progress topic the announcements whose routed records
    /// are all acknowledged.
    fn publish_acknowledged(&mut self) -> Result<(), ServiceError> {
        let progress = self.router.progress_topic.clone();
        while let Some((epoch, _)) = self.router.unacknowledged.front() {
            if self
                .producer
                .context()
                .routed(*epoch)
                .load(Ordering::Acquire)
                > 0
            {
                break;
            }
            let Some((_, messages)) = self.router.unacknowledged.pop_front() else {
                break;
            };
            self.ensure_txn()?;
            for (key, value) in &messages {
                self.send(
                    BaseRecord::<[u8], [u8]>::to(&progress)
                        .key(key.as_bytes())
                        .payload(value.as_bytes()),
                )?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::Timestamp;

    fn record(headers: &[(&str, &str)], payload: &str, at: i64) -> OwnedMessage {
        let mut h = OwnedHeaders::new();
        for (k, v) in headers {
            h = h.insert(Header {
                key: k,
                value: Some(*v),
            });
        }
        OwnedMessage::new(
            Some(payload.as_bytes().to_vec()),
            None,
            "g.repartition.web".into(),
            Timestamp::CreateTime(at),
            0,
            7,
            Some(h),
        )
    }

    fn frontier(value: &str, at: i64) -> OwnedMessage {
        record(&[(CONTROL_HEADER, FRONTIER)], value, at)
    }

    fn routed(partition: &str, offset: &str) -> OwnedMessage {
        record(
            &[("source.partition", partition), ("source.offset", offset)],
            "{}",
            0,
        )
    }

    #[test]
    fn announcements_are_parsed() {
        assert_eq!(
            parse_announcement(b"0:1767234337954:1,2:-:0,x:1:1,3:5"),
            vec![(0, Some(1_767_234_337_954), true), (2, None, false)]
        );
        assert!(parse_announcement(b"").is_empty());
    }

    /// A repartition input is caught up only once every source partition's
    /// last news is "routed to its end", announced since the task started;
    /// a routed record after it undoes that for its partition; control
    /// records are not touchpoints.
    #[test]
    fn a_task_knows_when_every_source_partition_is_routed_to_its_end() {
        let mut up = Upstream::new(3, &[], 100);
        assert!(!up.all_caught_up());
        assert_eq!(
            up.note(&frontier("0:10:1,1:20:1,2:-:1", 99)),
            Routed::Control
        );
        assert!(!up.all_caught_up(), "announced before the task started");
        assert_eq!(up.note(&frontier("0:10:1,1:20:1", 100)), Routed::Control);
        assert!(!up.all_caught_up(), "partition 2 has said nothing since");
        up.note(&frontier("2:-:1", 101));
        assert!(up.all_caught_up());
        assert_eq!(up.note(&routed("1", "5")), Routed::Record(Some((1, 5))));
        assert!(!up.all_caught_up(), "partition 1 routed a record since");
        let other = record(&[(CONTROL_HEADER, "something-newer")], "1:30:1", 102);
        assert_eq!(up.note(&other), Routed::Control, "skipped");
        assert!(!up.all_caught_up());
        up.note(&frontier("1:30:1", 103));
        assert!(up.all_caught_up());
    }

    /// A record whose source offset is handled already is a copy the
    /// router sent again; the handled offsets come back from the marker.
    #[test]
    fn copies_sent_again_are_known_by_their_source_offset() {
        let mut up = Upstream::new(2, &[4], 0);
        assert_eq!(up.note(&routed("0", "4")), Routed::Copy);
        assert_eq!(up.note(&routed("0", "5")), Routed::Record(Some((0, 5))));
        assert_eq!(
            up.note(&routed("0", "5")),
            Routed::Record(Some((0, 5))),
            "not handled yet"
        );
        up.done(Some((0, 5)));
        assert_eq!(up.note(&routed("0", "5")), Routed::Copy);
        assert_eq!(up.note(&routed("1", "0")), Routed::Record(Some((1, 0))));
        up.done(Some((1, 0)));
        assert_eq!(up.handled(), &[5, 0]);
        let plain = record(&[], "{}", 0);
        assert_eq!(up.note(&plain), Routed::Record(None));
    }
}
