//! Configuration: one TOML file plus `TOUCHSTREAM_<SECTION>__<KEY>`
//! environment overrides (SPEC 6), with every default of the SPEC.
//!
//! This module turns text into a validated [`Config`]; it never opens a
//! network connection. [`Config::engine`] derives the pure [`EngineConfig`]
//! the engine runs on.
//!
//! - here: [`Config`], [`ConfigError`], loading (TOML, then the
//!   environment overrides);
//! - `duration`: [`Millis`], the duration of every section;
//! - `kafka`: the `[kafka]` and `[schema_registry]` sections;
//! - `http`: the `[http]` section;
//! - `engine`: the engine-facing sections (`[time]`, `[signals]`,
//!   `[engagement]`, `[churn]`, `[clv]`) and the build and checks of
//!   [`EngineConfig`].
//!
//! Everything is re-exported here: `config::X` is the path to use.

use std::path::Path;

use serde::Deserialize;
use thiserror::Error;

mod duration;
mod engine;
mod http;
mod kafka;

pub use duration::{parse_duration, Millis};
pub use engine::{
    default_weight, ChurnConfig, ClvConfig, EngagementConfig, EngineConfig, SignalsConfig,
    TimeConfig,
};
pub use http::HttpConfig;
pub use kafka::{Delivery, InputFormat, KafkaConfig, Repartition, SchemaRegistryConfig};

/// What went wrong while loading the configuration.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax {
        /// The file.
        path: String,
        /// Parser message (with line and column).
        message: String,
    },
    /// A key has a bad value or is unknown.
    #[error("config key `{key}`: {message}")]
    Key {
        /// Dotted key path, e.g. `time.max_out_of_orderness`.
        key: String,
        /// What is wrong with it.
        message: String,
    },
    /// An environment override could not be applied.
    #[error("environment variable {var}: {message}")]
    Env {
        /// The variable.
        var: String,
        /// What is wrong with it.
        message: String,
    },
}

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `[kafka]`
    pub kafka: KafkaConfig,
    /// `[schema_registry]`
    pub schema_registry: SchemaRegistryConfig,
    /// `[http]`
    pub http: HttpConfig,
    /// `[time]`
    pub time: TimeConfig,
    /// `[signals]`
    pub signals: SignalsConfig,
    /// `[engagement]`
    pub engagement: EngagementConfig,
    /// `[churn]`
    pub churn: ChurnConfig,
    /// `[clv]`
    pub clv: ClvConfig,
}

impl Config {
    /// Reads a TOML file and applies `TOUCHSTREAM_*` overrides from the
    /// process environment.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let vars: Vec<(String, String)> = std::env::vars().collect();
        let text = match path {
            Some(p) => std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                path: p.display().to_string(),
                source,
            })?,
            None => String::new(),
        };
        let name = path
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "<none>".into());
        Config::from_parts(&name, &text, &vars)
    }

    /// Parses TOML text and applies the given `TOUCHSTREAM_*` variables.
    pub fn from_parts(
        name: &str,
        text: &str,
        vars: &[(String, String)],
    ) -> Result<Config, ConfigError> {
        let mut table: toml::Table =
            text.parse()
                .map_err(|e: toml::de::Error| ConfigError::Syntax {
                    path: name.to_string(),
                    message: e.to_string(),
                })?;
        // Environment values are read as TOML values (numbers, booleans,
        // arrays) when they parse as one; `raw` keeps them as text for keys
        // that turn out to want a string (`TOUCHSTREAM_KAFKA__GROUP_ID=123`).
        let mut raw: Vec<(Vec<String>, String)> = Vec::new();
        for (var, value) in vars {
            if let Some(path) = apply_env(&mut table, var, value)? {
                raw.push((path, value.clone()));
            }
        }
        loop {
            match serde_path_to_error::deserialize::<_, Config>(toml::Value::Table(table.clone())) {
                Ok(cfg) => {
                    cfg.engine()?;
                    return Ok(cfg);
                }
                Err(e) => {
                    let key = e.path().to_string();
                    let retry = raw.iter().position(|(p, _)| p.join(".") == key);
                    match retry {
                        Some(i) => {
                            let (path, text) = raw.remove(i);
                            set_path(&mut table, &path, toml::Value::String(text));
                        }
                        None => {
                            return Err(ConfigError::Key {
                                key,
                                message: e.inner().to_string(),
                            })
                        }
                    }
                }
            }
        }
    }
}

fn key_err(key: &str, message: &str) -> ConfigError {
    ConfigError::Key {
        key: key.to_string(),
        message: message.to_string(),
    }
}

/// The sections of the configuration file.
const SECTIONS: [&str; 8] = [
    "kafka",
    "schema_registry",
    "http",
    "time",
    "signals",
    "engagement",
    "churn",
    "clv",
];

/// Applies one `TOUCHSTREAM_<SECTION>__<KEY>[__<SUBKEY>]` variable. Other
/// variables are ignored. Values are read as TOML values when they parse as
/// one (numbers, booleans, arrays), else as strings. Keys of the
/// `[kafka.client]`, `[kafka.consumer]` and `[kafka.producer]` pass-throughs
/// use `_` for librdkafka's `.` (`TOUCHSTREAM_KAFKA__CLIENT__SASL_PASSWORD`
/// → `sasl.password`).
fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) {
    let mut node = table;
    for (i, part) in path.iter().enumerate() {
        if i + 1 == path.len() {
            node.insert(part.clone(), value);
            return;
        }
        match node.get_mut(part) {
            Some(toml::Value::Table(t)) => node = t,
            _ => return,
        }
    }
}

/// Returns the key path when the value was read as a non-string TOML value
/// (so that the caller can fall back to the text).
fn apply_env(
    table: &mut toml::Table,
    var: &str,
    value: &str,
) -> Result<Option<Vec<String>>, ConfigError> {
    let Some(rest) = var.strip_prefix("TOUCHSTREAM_") else {
        return Ok(None);
    };
    if !rest.contains("__") {
        // A section name and a single underscore is a typo that would
        // otherwise be ignored without a word.
        // (Kubernetes' service links, e.g. TOUCHSTREAM_HTTP_SERVICE_HOST
        // for a Service named touchstream-http, are not typos.)
        let lower = rest.to_ascii_lowercase();
        let service_link =
            lower.contains("_service_") || lower.ends_with("_port") || lower.contains("_port_");
        let section = SECTIONS
            .iter()
            .find(|s| lower.starts_with(&format!("{s}_")))
            .filter(|_| !service_link);
        if let Some(section) = section {
            let key = &rest[section.len() + 1..];
            return Err(ConfigError::Env {
                var: var.to_string(),
                message: format!(
                    "not read: section and key are separated by a double underscore \
                     (TOUCHSTREAM_{}__{key})",
                    section.to_ascii_uppercase()
                ),
            });
        }
        // TOUCHSTREAM_TEST_PYTHON and the like are not config overrides.
        return Ok(None);
    }
    let parts: Vec<String> = rest.split("__").map(|p| p.to_ascii_lowercase()).collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(ConfigError::Env {
            var: var.to_string(),
            message: "expected TOUCHSTREAM_<SECTION>__<KEY>".into(),
        });
    }
    let parsed = format!("v = {value}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_string()));
    let mut node = table;
    let last = parts.len() - 1;
    let is_client = parts.len() == 3
        && parts[0] == "kafka"
        && matches!(parts[1].as_str(), "client" | "consumer" | "producer");
    for (i, part) in parts.iter().enumerate() {
        if i == last {
            if is_client {
                node.insert(
                    part.replace('_', "."),
                    toml::Value::String(value.to_string()),
                );
                return Ok(None);
            }
            let typed = !parsed.is_str();
            node.insert(part.clone(), parsed);
            return Ok(typed.then(|| parts.clone()));
        }
        let entry = node
            .entry(part.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        node = match entry {
            toml::Value::Table(t) => t,
            _ => {
                return Err(ConfigError::Env {
                    var: var.to_string(),
                    message: format!("`{part}` is not a section"),
                })
            }
        };
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{TouchType, DAY_MS};

    #[test]
    fn defaults_match_spec() {
        let c = Config::from_parts("t", "", &[]).unwrap();
        assert_eq!(c.kafka.brokers, "localhost:9092");
        assert_eq!(c.kafka.group_id, "touchstream");
        assert_eq!(c.kafka.input_topics, vec!["touchpoints".to_string()]);
        assert_eq!(c.kafka.input_format, InputFormat::Avro);
        assert_eq!(c.kafka.output_topic_prefix, "cx.");
        assert_eq!(c.kafka.dlq_topic, "touchpoints.dlq");
        assert_eq!(c.kafka.changelog_topic, "touchstream.changelog");
        assert_eq!(c.kafka.delivery, Delivery::AtLeastOnce);
        assert_eq!(c.http.listen, "0.0.0.0:9464");
        let e = c.engine().unwrap();
        assert_eq!(e.max_out_of_orderness, 5_000);
        assert_eq!(e.allowed_lateness, 3_600_000);
        assert_eq!(c.time.idle_timeout, Millis(30_000));
        assert_eq!(e.cart_timeout, 3_600_000);
        assert_eq!(e.recovery_window, 7 * DAY_MS);
        assert_eq!(e.conversion_window, DAY_MS);
        assert_eq!(e.contact_cap, 10);
        assert_eq!(e.min_delta, 5.0);
        assert_eq!(e.state_ttl, 400 * DAY_MS);
        assert_eq!(e.weights[TouchType::OrderPlaced.index()], 20.0);
        assert_eq!(e.weights[TouchType::Unsubscribed.index()], -10.0);
    }

    #[test]
    fn file_and_env_overrides() {
        let text = r#"
            [kafka]
            brokers = "a:1"
            input_topics = ["x", "y"]
            [time]
            max_out_of_orderness = "10s"
            [signals]
            contact_cap = 3
            [engagement.weights]
            page_view = 1.5
        "#;
        let vars = vec![
            ("TOUCHSTREAM_KAFKA__BROKERS".to_string(), "b:2".to_string()),
            (
                "TOUCHSTREAM_KAFKA__INPUT_TOPICS".to_string(),
                "p,q".to_string(),
            ),
            (
                "TOUCHSTREAM_SIGNALS__MIN_DELTA".to_string(),
                "2.5".to_string(),
            ),
            (
                "TOUCHSTREAM_KAFKA__CLIENT__SASL_PASSWORD".to_string(),
                "s3cret".to_string(),
            ),
            (
                "TOUCHSTREAM_TEST_PYTHON".to_string(),
                "/usr/bin/python3".to_string(),
            ),
            (
                "TOUCHSTREAM_KAFKA__PRODUCER__LINGER_MS".to_string(),
                "20".to_string(),
            ),
            ("TOUCHSTREAM_KAFKA__GROUP_ID".to_string(), "123".to_string()),
            (
                "TOUCHSTREAM_KAFKA__DLQ_TOPIC".to_string(),
                "true".to_string(),
            ),
        ];
        let c = Config::from_parts("t", text, &vars).unwrap();
        assert_eq!(c.kafka.brokers, "b:2");
        assert_eq!(c.kafka.group_id, "123");
        assert_eq!(c.kafka.dlq_topic, "true");
        assert_eq!(c.kafka.input_topics, vec!["p".to_string(), "q".to_string()]);
        assert_eq!(c.signals.min_delta, 2.5);
        assert_eq!(c.signals.contact_cap, 3);
        assert_eq!(c.time.max_out_of_orderness, Millis(10_000));
        assert_eq!(
            c.kafka.client.get("sasl.password").map(String::as_str),
            Some("s3cret")
        );
        assert_eq!(
            c.kafka.producer.get("linger.ms").map(String::as_str),
            Some("20")
        );
        assert!(c.kafka.consumer.is_empty());
        assert_eq!(c.engine().unwrap().weights[0], 1.5);
    }

    #[test]
    fn bad_keys_are_named() {
        let err =
            Config::from_parts("t", "[time]\nmax_out_of_orderness = \"soon\"\n", &[]).unwrap_err();
        assert!(
            err.to_string().contains("time.max_out_of_orderness"),
            "{err}"
        );
        let err = Config::from_parts("t", "[signals]\ncart_timeot = \"1h\"\n", &[]).unwrap_err();
        assert!(err.to_string().contains("cart_timeot"), "{err}");
        let err = Config::from_parts("t", "[kafka]\ndelivery = \"maybe\"\n", &[]).unwrap_err();
        assert!(err.to_string().contains("kafka.delivery"), "{err}");
        let err = Config::from_parts("t", "[engagement.weights]\nfoo = 1.0\n", &[]).unwrap_err();
        assert!(err.to_string().contains("engagement.weights.foo"), "{err}");
        let err = Config::from_parts("t", "[time\n", &[]).unwrap_err();
        assert!(matches!(err, ConfigError::Syntax { .. }));
    }

    #[test]
    fn a_single_underscore_after_a_section_is_an_error_naming_the_fix() {
        let vars = vec![(
            "TOUCHSTREAM_SIGNALS_CONTACT_CAP".to_string(),
            "12".to_string(),
        )];
        let e = Config::from_parts("t", "", &vars).unwrap_err().to_string();
        assert!(e.contains("TOUCHSTREAM_SIGNALS_CONTACT_CAP"), "{e}");
        assert!(e.contains("TOUCHSTREAM_SIGNALS__CONTACT_CAP"), "{e}");
        // Other TOUCHSTREAM_ variables are none of the config's business.
        for other in [
            "TOUCHSTREAM_REQUIRE_KAFKA",
            "TOUCHSTREAM_HTTP_SERVICE_HOST",
            "TOUCHSTREAM_HTTP_PORT",
            "TOUCHSTREAM_HTTP_PORT_9464_TCP_ADDR",
        ] {
            let vars = vec![(other.to_string(), "1".to_string())];
            assert!(Config::from_parts("t", "", &vars).is_ok(), "{other}");
        }
    }
}
