//! A bare consume → produce pass-through: the baseline of
//! `scripts/bench-service`. It reads the input topics of a touchstream
//! configuration with the service's own group-consumer settings, produces
//! every record's key and value unchanged to one output topic with the
//! service's own producer settings (at_least_once), and commits the
//! consumed offsets once a second as the service's checkpoints do. No
//! decoding, no state, no derived events: what reading and writing Kafka
//! costs on its own.
//!
//! ```sh
//! cargo build --release --example passthrough
//! target/release/examples/passthrough CONFIG RECORDS OUTPUT_TOPIC
//! ```
//!
//! It stops after RECORDS records, once everything produced is
//! acknowledged and the offsets are committed, and prints the count and
//! the wall-clock rate from the first record to the last acknowledgement.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::Message;

/// The service's allocator, so that the comparison is of the work alone.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, config, records, output] = args.as_slice() else {
        bail!("usage: passthrough CONFIG RECORDS OUTPUT_TOPIC");
    };
    let records: u64 = records.parse().context("RECORDS is a count")?;
    let cfg = touchstream::config::Config::load(Some(Path::new(config)))?;
    let (consumer, producer) = touchstream::kafka::baseline_client_configs(&cfg);
    let consumer: BaseConsumer = consumer.create().context("create the consumer")?;
    let producer: ThreadedProducer<DefaultProducerContext> =
        producer.create().context("create the producer")?;
    let inputs: Vec<&str> = cfg.kafka.input_topics.iter().map(String::as_str).collect();
    consumer.subscribe(&inputs).context("subscribe")?;

    let mut n = 0u64;
    let mut first: Option<Instant> = None;
    let mut last_commit = Instant::now();
    while n < records {
        let msg = match consumer.poll(Duration::from_millis(100)) {
            None | Some(Err(KafkaError::PartitionEOF(_))) => continue,
            Some(Err(e)) => {
                eprintln!("passthrough: consumer error: {e}");
                continue;
            }
            Some(Ok(msg)) => msg,
        };
        first.get_or_insert_with(Instant::now);
        let mut record = BaseRecord::<[u8], [u8]>::to(output);
        if let Some(k) = msg.key() {
            record = record.key(k);
        }
        if let Some(v) = msg.payload() {
            record = record.payload(v);
        }
        while let Err((e, r)) = producer.send(record) {
            match e {
                KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull) => {
                    std::thread::sleep(Duration::from_millis(1));
                    record = r;
                }
                e => bail!("produce: {e}"),
            }
        }
        consumer
            .store_offset_from_message(&msg)
            .context("store offset")?;
        n += 1;
        if last_commit.elapsed() >= Duration::from_secs(1) {
            // As a checkpoint: what was produced is acknowledged before
            // the offsets that cover it are committed.
            producer.flush(Duration::from_secs(60)).context("flush")?;
            consumer
                .commit_consumer_state(CommitMode::Async)
                .context("commit")?;
            last_commit = Instant::now();
        }
    }
    producer.flush(Duration::from_secs(60)).context("flush")?;
    consumer
        .commit_consumer_state(CommitMode::Sync)
        .context("commit")?;
    let wall = first.map_or(0.0, |t| t.elapsed().as_secs_f64());
    println!(
        "passthrough: {n} records in {wall:.2} s from the first record: {:.0} records/s",
        n as f64 / wall.max(1e-9)
    );
    Ok(())
}
