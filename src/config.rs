//! Configuration: one TOML file plus `TOUCHSTREAM_<SECTION>__<KEY>`
//! environment overrides (SPEC 6), with every default of the SPEC.
//!
//! This module turns text into a validated [`Config`]; it never opens a
//! network connection. [`Config::engine`] derives the pure [`EngineConfig`]
//! the engine runs on.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use thiserror::Error;

use crate::model::{TouchType, DAY_MS};

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

/// A duration written as `"5s"`, `"1h"`, `"7d"`, `"250ms"` (humantime syntax)
/// or as an integer number of milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Millis(pub i64);

impl Millis {
    /// As a std duration (negative values clamp to zero).
    pub fn as_duration(self) -> Duration {
        Duration::from_millis(self.0.max(0) as u64)
    }
}

impl<'de> Deserialize<'de> for Millis {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(i64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(ms) if ms >= 0 => Ok(Millis(ms)),
            Raw::Int(_) => Err(serde::de::Error::custom("a duration must not be negative")),
            Raw::Text(s) => parse_duration(&s).map_err(serde::de::Error::custom),
        }
    }
}

/// Parses `"5s"`, `"1h"`, `"7d"`, `"1h 30m"`, `"250ms"`.
pub fn parse_duration(s: &str) -> Result<Millis, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("`{s}` is not a duration like \"5s\", \"1h\" or \"7d\": {e}"))?;
    if !d.is_zero() && d.as_millis() == 0 {
        return Err(format!("`{s}` is below the 1 ms resolution of durations"));
    }
    i64::try_from(d.as_millis())
        .map(Millis)
        .map_err(|_| format!("`{s}` is too long"))
}

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

/// `[http]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Listen address for /metrics, /healthz, /readyz.
    pub listen: String,
    /// `/healthz` fails once the service loop has not turned for this long
    /// (a wedged process; Kubernetes then restarts it).
    pub stall_timeout: Millis,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "0.0.0.0:9464".into(),
            stall_timeout: Millis(600_000),
        }
    }
}

/// `[time]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TimeConfig {
    /// Watermark = max event time − this.
    pub max_out_of_orderness: Millis,
    /// Late events older than watermark − this are rejected.
    pub allowed_lateness: Millis,
    /// Wall-clock time after which a silent partition's watermark follows
    /// the wall clock.
    pub idle_timeout: Millis,
    /// Records more than this ahead of the wall clock are rejected.
    pub max_future: Millis,
}

impl Default for TimeConfig {
    fn default() -> Self {
        TimeConfig {
            max_out_of_orderness: Millis(5_000),
            allowed_lateness: Millis(3_600_000),
            idle_timeout: Millis(30_000),
            max_future: Millis(3_600_000),
        }
    }
}

/// `[signals]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SignalsConfig {
    /// Cart inactivity before `cart_abandoned`.
    pub cart_timeout: Millis,
    /// Window after an abandonment in which an order recovers it.
    pub recovery_window: Millis,
    /// Window after a campaign click in which an order converts it.
    pub conversion_window: Millis,
    /// Outbound messages in 7 d above which `contact_fatigue` fires.
    pub contact_cap: u32,
    /// Minimum engagement change to emit.
    pub min_delta: f64,
    /// Event-time inactivity after which a customer is evicted.
    pub state_ttl: Millis,
    /// Minimum time between two survey triggers of a customer.
    pub survey_cooldown: Millis,
}

impl Default for SignalsConfig {
    fn default() -> Self {
        SignalsConfig {
            cart_timeout: Millis(3_600_000),
            recovery_window: Millis(7 * DAY_MS),
            conversion_window: Millis(DAY_MS),
            contact_cap: 10,
            min_delta: 5.0,
            state_ttl: Millis(400 * DAY_MS),
            survey_cooldown: Millis(30 * DAY_MS),
        }
    }
}

/// `[engagement]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngagementConfig {
    /// Decay half-life.
    pub half_life: Millis,
    /// score = 100 × (1 − e^(−raw/scale)).
    pub scale: f64,
    /// Multiplier per extra channel in the last 30 d.
    pub channel_bonus: f64,
    /// Weight per touchpoint type (missing types keep their default).
    pub weights: BTreeMap<String, f64>,
}

impl Default for EngagementConfig {
    fn default() -> Self {
        EngagementConfig {
            half_life: Millis(7 * DAY_MS),
            scale: 10.0,
            channel_bonus: 0.1,
            weights: BTreeMap::new(),
        }
    }
}

/// `[churn]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChurnConfig {
    /// BG/NBD r.
    pub r: f64,
    /// BG/NBD alpha, in days.
    pub alpha: f64,
    /// BG/NBD a.
    pub a: f64,
    /// BG/NBD b.
    pub b: f64,
}

impl Default for ChurnConfig {
    fn default() -> Self {
        ChurnConfig {
            r: 0.243,
            alpha: 30.898,
            a: 0.793,
            b: 2.426,
        }
    }
}

/// `[clv]`: the Gamma-Gamma order-value model and the horizon of
/// `predicted_clv` (SPEC 4, "Customer lifetime value").
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClvConfig {
    /// Gamma-Gamma p.
    pub p: f64,
    /// Gamma-Gamma q (must exceed 1: the population mean is v·p/(q − 1)).
    pub q: f64,
    /// Gamma-Gamma v.
    pub v: f64,
    /// Months (of 30 days) predicted.
    pub horizon_months: u32,
    /// Discount per month.
    pub monthly_discount: f64,
}

impl Default for ClvConfig {
    fn default() -> Self {
        ClvConfig {
            p: 6.25,
            q: 3.74,
            v: 15.44,
            horizon_months: 12,
            monthly_discount: 0.01,
        }
    }
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

/// Default engagement weight of each touchpoint type (SPEC 4).
pub fn default_weight(t: TouchType) -> f64 {
    use TouchType::*;
    match t {
        PageView => 1.0,
        ProductView => 2.0,
        Search => 2.0,
        AddToCart => 5.0,
        RemoveFromCart => 0.0,
        CheckoutStarted => 8.0,
        OrderPlaced => 20.0,
        OrderReturned => -5.0,
        AppOpen => 1.0,
        StoreVisit => 5.0,
        MessageSent => 0.0,
        MessageOpened => 1.0,
        MessageClicked => 3.0,
        Unsubscribed => -10.0,
        SupportContact => 1.0,
        SupportResolved => 1.0,
        SurveyResponse => 3.0,
        LoyaltyRedeemed => 5.0,
        SocialInteraction => 2.0,
        Other => 0.0,
    }
}

pub use crate::engine::config::EngineConfig;

/// The engine's settings read from `[time]`, `[signals]`, `[engagement]`,
/// `[churn]` and `[clv]` with their defaults.
impl Default for EngineConfig {
    fn default() -> Self {
        // The default config is valid by construction.
        Config::default()
            .engine()
            .unwrap_or_else(|_| unreachable!("defaults are valid"))
    }
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

    /// The pure engine settings, validated.
    pub fn engine(&self) -> Result<EngineConfig, ConfigError> {
        let mut weights = [0.0; 20];
        for t in TouchType::ALL {
            weights[t.index()] = default_weight(*t);
        }
        for (name, w) in &self.engagement.weights {
            let t = TouchType::parse(name).ok_or_else(|| ConfigError::Key {
                key: format!("engagement.weights.{name}"),
                message: "not a touchpoint type".into(),
            })?;
            if !w.is_finite() {
                return Err(key_err(
                    &format!("engagement.weights.{name}"),
                    "must be finite",
                ));
            }
            weights[t.index()] = *w;
        }
        let positive = |key: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(v)
            } else {
                Err(key_err(key, "must be a positive number"))
            }
        };
        positive("engagement.scale", self.engagement.scale)?;
        positive("churn.r", self.churn.r)?;
        positive("churn.alpha", self.churn.alpha)?;
        positive("churn.a", self.churn.a)?;
        positive("churn.b", self.churn.b)?;
        positive("clv.p", self.clv.p)?;
        positive("clv.v", self.clv.v)?;
        if !(self.clv.q.is_finite() && self.clv.q > 1.0) {
            return Err(key_err(
                "clv.q",
                "must be a number above 1 (the population mean order value is v·p/(q − 1))",
            ));
        }
        if !(1..=1200).contains(&self.clv.horizon_months) {
            return Err(key_err("clv.horizon_months", "must be 1 to 1200 months"));
        }
        if !(self.clv.monthly_discount.is_finite() && self.clv.monthly_discount > -1.0) {
            return Err(key_err("clv.monthly_discount", "must be a number above -1"));
        }
        if !(self.engagement.channel_bonus.is_finite()) {
            return Err(key_err("engagement.channel_bonus", "must be finite"));
        }
        if !(self.signals.min_delta.is_finite() && self.signals.min_delta >= 0.0) {
            return Err(key_err("signals.min_delta", "must be a number >= 0"));
        }
        if self.engagement.half_life.0 <= 0 {
            return Err(key_err("engagement.half_life", "must be positive"));
        }
        for (key, v) in [
            ("signals.cart_timeout", self.signals.cart_timeout),
            ("signals.state_ttl", self.signals.state_ttl),
            ("signals.conversion_window", self.signals.conversion_window),
            ("http.stall_timeout", self.http.stall_timeout),
        ] {
            if v.0 <= 0 {
                return Err(key_err(key, "must be positive"));
            }
        }
        if self.kafka.input_topics.is_empty() {
            return Err(key_err("kafka.input_topics", "needs at least one topic"));
        }
        Ok(EngineConfig {
            max_out_of_orderness: self.time.max_out_of_orderness.0,
            allowed_lateness: self.time.allowed_lateness.0,
            cart_timeout: self.signals.cart_timeout.0,
            recovery_window: self.signals.recovery_window.0,
            conversion_window: self.signals.conversion_window.0,
            contact_cap: self.signals.contact_cap,
            min_delta: self.signals.min_delta,
            state_ttl: self.signals.state_ttl.0,
            survey_cooldown: self.signals.survey_cooldown.0,
            half_life: self.engagement.half_life.0,
            scale: self.engagement.scale,
            channel_bonus: self.engagement.channel_bonus,
            weights,
            r: self.churn.r,
            alpha: self.churn.alpha,
            a: self.churn.a,
            b: self.churn.b,
            gamma_gamma: crate::clv::GammaGamma {
                p: self.clv.p,
                q: self.clv.q,
                v: self.clv.v,
            },
            horizon_months: self.clv.horizon_months,
            monthly_discount: self.clv.monthly_discount,
        })
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
