//! Input records: producing them in order (an idempotent producer that
//! reports delivery failures), input lines as records (JSON keyed by
//! customer, Confluent-framed Avro), the partitioners tests choose
//! partitions with (a stable hash, Java's murmur2), and `touchstream
//! generate` traffic.

use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;
use serde_json::Value;
use touchstream::codec::avro::{frame, touchpoint_schema, touchpoint_value};
use touchstream::model::Touchpoint;
use touchstream::validate::{validate, Clock};

use super::basics::{wall_ms, BIN, HOUR};
use super::broker::client;

/// One record to produce.
#[derive(Debug, Clone)]
pub struct In {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub partition: i32,
}

struct DeliveryCtx {
    errors: Mutex<Vec<String>>,
}
impl ClientContext for DeliveryCtx {}
impl ProducerContext for DeliveryCtx {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = r {
            self.errors.lock().unwrap().push(e.to_string());
        }
    }
}

/// A producer that keeps order (idempotent) and reports delivery failures.
pub struct TestProducer {
    p: ThreadedProducer<DeliveryCtx>,
}

impl TestProducer {
    pub fn new(b: &str) -> Self {
        let p = client(b)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "2")
            // Room for records near the broker's default 1 MiB limit.
            .set("message.max.bytes", "2000000")
            .create_with_context(DeliveryCtx {
                errors: Mutex::new(Vec::new()),
            })
            .expect("producer");
        TestProducer { p }
    }

    pub fn send(&self, topic: &str, r: &In) {
        let mut rec: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).partition(r.partition);
        if let Some(k) = &r.key {
            rec = rec.key(k.as_slice());
        }
        if let Some(v) = &r.value {
            rec = rec.payload(v.as_slice());
        }
        loop {
            match self.p.send(rec) {
                Ok(()) => return,
                Err((
                    KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                    back,
                )) => {
                    rec = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((e, _)) => panic!("produce to {topic}: {e}"),
            }
        }
    }

    /// Waits for every acknowledgement; panics on any delivery failure.
    pub fn flush(&self) {
        self.p
            .flush(Duration::from_secs(60))
            .expect("producer flush");
        let errors = self.p.context().errors.lock().unwrap();
        assert!(errors.is_empty(), "delivery failures: {errors:?}");
    }
}

/// Produces records in order and waits for them.
pub fn produce(b: &str, topic: &str, records: &[In]) {
    let p = TestProducer::new(b);
    for r in records {
        p.send(topic, r);
    }
    p.flush();
}

/// Produces `records` in `chunks` pieces, `pause` apart, on a thread.
pub fn produce_paced(
    b: &str,
    topic: &str,
    records: Vec<In>,
    chunks: usize,
    pause: Duration,
) -> std::thread::JoinHandle<()> {
    let (b, topic) = (b.to_string(), topic.to_string());
    std::thread::spawn(move || {
        let p = TestProducer::new(&b);
        let size = records.len().div_ceil(chunks.max(1)).max(1);
        for (i, chunk) in records.chunks(size).enumerate() {
            if i > 0 {
                std::thread::sleep(pause);
            }
            for r in chunk {
                p.send(&topic, r);
            }
            p.flush();
        }
    })
}

/// The `customer_id` of a JSON line, if it has one (bad lines may not).
pub fn customer_of(line: &str) -> Option<String> {
    serde_json::from_str::<Value>(line)
        .ok()?
        .get("customer_id")?
        .as_str()
        .map(str::to_string)
}

/// JSON lines as records keyed by customer id, all on `partition`.
pub fn json_records(lines: &[String], partition: i32) -> Vec<In> {
    lines
        .iter()
        .map(|l| In {
            key: customer_of(l).map(String::into_bytes),
            value: Some(l.as_bytes().to_vec()),
            partition,
        })
        .collect()
}

/// A good JSON line as a touchpoint (panics on a bad line).
pub fn touchpoint_of(line: &str) -> Touchpoint {
    let raw = touchstream::codec::json::decode(line.as_bytes())
        .unwrap_or_else(|e| panic!("{line}: {e:?}"));
    validate(
        raw,
        Clock {
            now: wall_ms(),
            max_future: HOUR,
        },
    )
    .unwrap_or_else(|e| panic!("{line}: {e:?}"))
}

/// Confluent-framed Avro (shipped schema, id 1) of a good JSON line.
pub fn avro_framed(line: &str, schema_id: u32) -> Vec<u8> {
    let schema = touchpoint_schema().expect("touchpoint schema");
    let datum = apache_avro::to_avro_datum(&schema, touchpoint_value(&touchpoint_of(line)))
        .expect("encode touchpoint");
    frame(schema_id, &datum)
}

/// A touchpoint as one JSON line.
pub fn json_line(tp: &Touchpoint) -> String {
    serde_json::to_string(tp).expect("touchpoint json")
}

/// Stable partition of a customer among `n` (the test decides partitions).
pub fn partition_for(customer: &str, n: i32) -> i32 {
    let h = customer.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    (h % n as u64) as i32
}

/// Kafka's Java `Utils.murmur2` (the default partitioner's hash).
pub fn murmur2(data: &[u8]) -> i32 {
    const M: u32 = 0x5bd1_e995;
    let len = data.len();
    let mut h: u32 = 0x9747_b28c ^ len as u32;
    for c in data.chunks_exact(4) {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = &data[len & !3..];
    if tail.len() == 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition Java's default partitioner picks for a key.
pub fn java_partition(key: &[u8], partitions: i32) -> i32 {
    (murmur2(key) & 0x7fff_ffff) % partitions
}

/// The first customer id `"{prefix}-{k}"` (k = 0, 1, ...) that Java's
/// default partitioner (murmur2) puts on `partition` of `partitions`.
pub fn customer_on(prefix: &str, partition: i32, partitions: i32) -> String {
    (0..1_000_000)
        .map(|k| format!("{prefix}-{k}"))
        .find(|c| java_partition(c.as_bytes(), partitions) == partition)
        .unwrap_or_else(|| panic!("no {prefix}-k on partition {partition} of {partitions}"))
}

/// `touchstream generate` output as lines.
pub fn generate(args: &[&str]) -> Vec<String> {
    let out = Command::new(BIN)
        .arg("generate")
        .args(args)
        .output()
        .expect("run touchstream generate");
    assert!(
        out.status.success(),
        "generate {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}
