//! Reading topics back: [`Collector`] (every partition of some topics from
//! the beginning, output topics and the dead-letter topic alike, with
//! waits for a count, for quiet or for the end) and [`read_partition`].
//! Decoding what was read is `decode.rs`'s.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

use super::basics::unique;
use super::broker::{client, wait_topic};

/// One consumed record.
#[derive(Debug, Clone)]
pub struct Rec {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl Rec {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.as_ref())
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }
    pub fn key_str(&self) -> Option<String> {
        self.key
            .as_ref()
            .map(|k| String::from_utf8_lossy(k).into_owned())
    }
}

/// Reads every partition of some topics from the beginning, accumulating.
pub struct Collector {
    b: String,
    consumer: BaseConsumer,
    parts: Vec<(String, i32)>,
    pub records: Vec<Rec>,
    /// Distinct `event_id` headers seen.
    pub ids: HashSet<String>,
}

impl Collector {
    /// Waits (up to 30 s) for the topics to exist, then assigns all their
    /// partitions from offset 0.
    pub fn new(b: &str, topics: &[String], read_committed: bool) -> Self {
        let consumer: BaseConsumer = client(b)
            .set("group.id", unique("collector"))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .set(
                "isolation.level",
                if read_committed {
                    "read_committed"
                } else {
                    "read_uncommitted"
                },
            )
            .create()
            .expect("collector consumer");
        let mut tpl = TopicPartitionList::new();
        let mut parts = Vec::new();
        for t in topics {
            let n = wait_topic(b, t, Duration::from_secs(30));
            for p in 0..n {
                tpl.add_partition_offset(t, p, Offset::Beginning)
                    .expect("tpl");
                parts.push((t.clone(), p));
            }
        }
        consumer.assign(&tpl).expect("assign");
        Collector {
            b: b.to_string(),
            consumer,
            parts,
            records: Vec::new(),
            ids: HashSet::new(),
        }
    }

    fn take(&mut self, r: Rec) {
        if let Some(id) = r.header("event_id") {
            self.ids.insert(id);
        }
        self.records.push(r);
    }
}

impl Collector {
    /// Polls for `dur`; returns how many records arrived.
    pub fn poll_for(&mut self, dur: Duration) -> usize {
        let before = self.records.len();
        let end = Instant::now() + dur;
        while Instant::now() < end {
            match self.consumer.poll(Duration::from_millis(50)) {
                Some(Ok(m)) => {
                    let r = to_rec(&m);
                    drop(m);
                    self.take(r)
                }
                Some(Err(e)) => eprintln!("collector: {e}"),
                None => {}
            }
        }
        self.records.len() - before
    }

    /// Polls until `done(self)` holds; false on timeout.
    pub fn wait_until(
        &mut self,
        timeout: Duration,
        mut done: impl FnMut(&Collector) -> bool,
    ) -> bool {
        let end = Instant::now() + timeout;
        loop {
            if done(self) {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            self.poll_for(Duration::from_millis(200));
        }
    }

    /// Polls until `n` distinct event ids have arrived; false on timeout.
    pub fn wait_distinct(&mut self, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, |c| c.ids.len() >= n)
    }

    /// Polls until `n` distinct event ids have arrived, or nothing new has
    /// arrived for `quiet` (the service has settled short of `n`: the
    /// caller's comparison then says what is missing), or `timeout`.
    /// Returns whether `n` was reached.
    pub fn settle(&mut self, n: usize, timeout: Duration, quiet: Duration) -> bool {
        let end = Instant::now() + timeout;
        let mut last_change = Instant::now();
        let mut last_len = self.records.len();
        loop {
            if self.ids.len() >= n {
                return true;
            }
            if Instant::now() >= end || last_change.elapsed() >= quiet {
                eprintln!(
                    "collector settled at {} of {n} distinct events",
                    self.ids.len()
                );
                return false;
            }
            self.poll_for(Duration::from_millis(200));
            if self.records.len() != last_len {
                last_len = self.records.len();
                last_change = Instant::now();
            }
        }
    }

    /// Reads until every partition's position has reached its current high
    /// watermark (for read_committed: until the stable offset passes it).
    pub fn drain(&mut self, timeout: Duration) {
        let highs: Vec<(String, i32, i64)> = self
            .parts
            .iter()
            .map(|(t, p)| {
                let (_, h) = self
                    .consumer
                    .fetch_watermarks(t, *p, Duration::from_secs(10))
                    .expect("watermarks");
                (t.clone(), *p, h)
            })
            .collect();
        let end = Instant::now() + timeout;
        loop {
            self.poll_for(Duration::from_millis(100));
            let pos = self.consumer.position().expect("position");
            let behind: Vec<_> = highs
                .iter()
                .filter(|(t, p, h)| {
                    let at = pos
                        .find_partition(t, *p)
                        .and_then(|e| e.offset().to_raw())
                        .unwrap_or(-1);
                    *h > 0 && at < *h
                })
                .collect();
            if behind.is_empty() {
                return;
            }
            assert!(
                Instant::now() < end,
                "collector did not reach the end of {behind:?} within {timeout:?}"
            );
        }
    }

    pub fn in_topic(&self, topic: &str) -> Vec<&Rec> {
        self.records.iter().filter(|r| r.topic == topic).collect()
    }

    pub fn broker(&self) -> &str {
        &self.b
    }
}

fn to_rec(m: &rdkafka::message::BorrowedMessage<'_>) -> Rec {
    let headers = m
        .headers()
        .map(|h| {
            h.iter()
                .map(|x| (x.key.to_string(), x.value.map(<[u8]>::to_vec)))
                .collect()
        })
        .unwrap_or_default();
    let r = Rec {
        topic: m.topic().to_string(),
        partition: m.partition(),
        offset: m.offset(),
        key: m.key().map(<[u8]>::to_vec),
        value: m.payload().map(<[u8]>::to_vec),
        headers,
    };
    r
}

/// Every record of one partition (read to its end).
pub fn read_partition(b: &str, topic: &str, partition: i32, read_committed: bool) -> Vec<Rec> {
    let consumer: BaseConsumer = client(b)
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .set(
            "isolation.level",
            if read_committed {
                "read_committed"
            } else {
                "read_uncommitted"
            },
        )
        .create()
        .expect("reader");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Beginning)
        .expect("tpl");
    consumer.assign(&tpl).expect("assign");
    let (_, high) = consumer
        .fetch_watermarks(topic, partition, Duration::from_secs(10))
        .expect("watermarks");
    let mut c = Collector {
        b: b.to_string(),
        consumer,
        parts: vec![(topic.to_string(), partition)],
        records: Vec::new(),
        ids: HashSet::new(),
    };
    if high > 0 {
        c.drain(Duration::from_secs(30));
    }
    c.records
}
