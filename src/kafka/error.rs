//! Why the Kafka service stops: [`ServiceError`], one variant per failed
//! operation, and the classification of client errors for the metrics.

#[allow(unused_imports)]
use super::*;

/// Why the service stopped.
#[derive(Debug, Error)]
pub enum ServiceError {
    /// A Kafka operation failed.
    #[error("kafka: {op}: {source}")]
    Kafka {
        /// The operation that failed.
        op: &'static str,
        /// The client error.
        source: KafkaError,
    },
    /// A produced record was not acknowledged.
    #[error("delivery failed: {0}")]
    Delivery(String),
    /// Another instance with the same transactional id took over.
    #[error(
        "fenced by another instance with the same transactional id (a zombie of this \
         instance, or another instance with the same `kafka.instance_id`: each needs its own): {0}"
    )]
    Fenced(String),
    /// Restoring a partition failed.
    #[error("restore of {topic}[{partition}] failed: {message}")]
    Restore {
        /// Input topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// What went wrong.
        message: String,
    },
    /// The schema registry failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// A schema failed.
    #[error(transparent)]
    Schema(#[from] crate::codec::avro::SchemaError),
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// Topics are missing or misconfigured.
    #[error("topics: {0}")]
    Topics(String),
    /// The input topics cannot form whole tasks (SPEC 8).
    #[error("{0}")]
    NotCoPartitioned(String),
    /// A secret named by `file:PATH` could not be read.
    #[error("{key}: {message}")]
    Secret {
        /// The configuration key.
        key: String,
        /// What went wrong.
        message: String,
    },
}

pub(super) fn kafka(op: &'static str) -> impl FnOnce(KafkaError) -> ServiceError {
    move |source| ServiceError::Kafka { op, source }
}

pub(super) fn kind_of(e: &KafkaError) -> &'static str {
    match e.rdkafka_error_code() {
        Some(RDKafkaErrorCode::BrokerTransportFailure) | Some(RDKafkaErrorCode::AllBrokersDown) => {
            "transport"
        }
        Some(RDKafkaErrorCode::Authentication)
        | Some(RDKafkaErrorCode::SaslAuthenticationFailed) => "authentication",
        Some(RDKafkaErrorCode::TopicAuthorizationFailed)
        | Some(RDKafkaErrorCode::GroupAuthorizationFailed) => "authorization",
        Some(RDKafkaErrorCode::MessageTimedOut) => "timeout",
        Some(RDKafkaErrorCode::SSL) => "ssl",
        _ => "other",
    }
}

pub(super) fn txn_error(op: &'static str, e: KafkaError) -> ServiceError {
    let fenced = matches!(
        e.rdkafka_error_code(),
        Some(RDKafkaErrorCode::Fenced)
            | Some(RDKafkaErrorCode::ProducerFenced)
            | Some(RDKafkaErrorCode::InvalidProducerEpoch)
    ) || e.to_string().to_lowercase().contains("fenced");
    if fenced {
        ServiceError::Fenced(format!("{op}: {e}"))
    } else {
        ServiceError::Kafka { op, source: e }
    }
}
