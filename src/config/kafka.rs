//! The `[kafka]` and `[schema_registry]` sections: their types and SPEC
//! defaults (values only; the service in `kafka/` connects with them).

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};

use super::Millis;

/// A list given either as a TOML array or as a comma-separated string (the
/// form an environment variable can carry).
fn string_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        List(Vec<String>),
        Text(String),
    }
    Ok(match Raw::deserialize(d)? {
        Raw::List(v) => v,
        Raw::Text(s) => s
            .split(',')
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty())
            .collect(),
    })
}

/// Input value format of a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputFormat {
    /// Confluent wire-format Avro.
    Avro,
    /// One JSON object per record.
    Json,
}

/// Delivery guarantee.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// Offsets committed after everything they caused is acknowledged.
    AtLeastOnce,
    /// One Kafka transaction per batch.
    ExactlyOnce,
}

/// What to do with an input topic that is not co-partitioned with the
/// tasks (SPEC 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Repartition {
    /// Re-key it through the repartition router.
    Auto,
    /// Refuse it: the instance stays not ready, naming the topics.
    Never,
}

/// `[kafka]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers.
    pub brokers: String,
    /// Consumer group.
    pub group_id: String,
    /// Input topics.
    #[serde(deserialize_with = "string_list")]
    pub input_topics: Vec<String>,
    /// Input value format.
    pub input_format: InputFormat,
    /// Per-topic input format, overriding `input_format` for those topics.
    pub input_formats: BTreeMap<String, InputFormat>,
    /// Prefix of the per-type output topics.
    pub output_topic_prefix: String,
    /// Dead-letter topic.
    pub dlq_topic: String,
    /// Compacted state changelog topic.
    pub changelog_topic: String,
    /// Delivery guarantee.
    pub delivery: Delivery,
    /// Transactional id prefix (exactly-once); the instance id is appended.
    pub transactional_id: Option<String>,
    /// How often offsets and changelog are committed.
    pub commit_interval: Millis,
    /// This instance's stable id (transactional id suffix); default:
    /// `<host name>-<HTTP port>` (stable for one instance, different for
    /// instances sharing a host).
    pub instance_id: Option<String>,
    /// Create the changelog, output and dead-letter topics when missing.
    pub create_topics: bool,
    /// Where to start a partition with neither a changelog marker nor a
    /// committed offset: `earliest` or `latest`.
    pub auto_offset_reset: String,
    /// Longest a partition restore may take before the instance gives up.
    pub restore_timeout: Millis,
    /// Replication factor for topics touchstream creates.
    pub replication_factor: i32,
    /// librdkafka settings passed through verbatim to every client
    /// (SASL, SSL, timeouts).
    pub client: BTreeMap<String, String>,
    /// librdkafka settings for the consumers only (e.g. `fetch.max.bytes`),
    /// applied after `client`.
    pub consumer: BTreeMap<String, String>,
    /// librdkafka settings for the producer only (e.g. `linger.ms`,
    /// `compression.type`), applied after `client`.
    pub producer: BTreeMap<String, String>,
    /// The number of tasks (default: the first input topic's partitions).
    pub tasks: Option<i32>,
    /// Inputs that are not co-partitioned: `auto` or `never` (SPEC 8).
    pub repartition: Repartition,
    /// Input topics to re-key whatever they look like.
    #[serde(deserialize_with = "string_list")]
    pub repartition_topics: Vec<String>,
    /// How far (event time) a router instance may run ahead of the other
    /// instances routing the same topic (default: half of
    /// `time.allowed_lateness`).
    pub router_max_drift: Option<Millis>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "localhost:9092".into(),
            group_id: "touchstream".into(),
            input_topics: vec!["touchpoints".into()],
            input_format: InputFormat::Avro,
            input_formats: BTreeMap::new(),
            output_topic_prefix: "cx.".into(),
            dlq_topic: "touchpoints.dlq".into(),
            changelog_topic: "touchstream.changelog".into(),
            delivery: Delivery::AtLeastOnce,
            transactional_id: None,
            commit_interval: Millis(1_000),
            instance_id: None,
            create_topics: true,
            auto_offset_reset: "earliest".into(),
            restore_timeout: Millis(300_000),
            replication_factor: 1,
            client: BTreeMap::new(),
            consumer: BTreeMap::new(),
            producer: BTreeMap::new(),
            tasks: None,
            repartition: Repartition::Auto,
            repartition_topics: Vec::new(),
            router_max_drift: None,
        }
    }
}

/// `[schema_registry]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchemaRegistryConfig {
    /// Confluent-compatible registry URL; unset means "use `schemas/`".
    /// Credentials in it (`http://user:pass@host`) are taken out and used
    /// as `username`/`password`; they never reach a log line.
    pub url: Option<String>,
    /// HTTP basic-auth user for the registry.
    pub username: Option<String>,
    /// HTTP basic-auth password; `file:PATH` reads it from a file (a
    /// mounted Kubernetes Secret).
    pub password: Option<String>,
    /// Without a registry: the schema id the shipped touchpoint schema is
    /// known under.
    pub touchpoint_schema_id: Option<u32>,
}
