//! A Confluent-compatible schema registry client (the documented REST API:
//! `GET /schemas/ids/{id}`, `POST /subjects/{subject}/versions`), with a
//! cache, and the input decoder that resolves writer schemas through it —
//! or, without a registry, through ids configured for the shipped schemas.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use apache_avro::Schema;
use thiserror::Error;

use crate::codec::avro::{self, DerivedSchemas, SchemaError, DERIVED_SCHEMAS, TOUCHPOINT_SCHEMA};
use crate::config::{Config, InputFormat};
use crate::model::DerivedType;
use crate::validate::{RawTouchpoint, RejectReason, Rejection};

/// Registry failures that are not "no such schema".
#[derive(Debug, Error)]
pub enum RegistryError {
    /// The registry could not be reached or answered an error.
    #[error("schema registry {url}: {message}")]
    Transport {
        /// The URL requested.
        url: String,
        /// What happened.
        message: String,
    },
    /// The registry returned a schema that does not parse.
    #[error(transparent)]
    Schema(#[from] SchemaError),
}

/// A registry client with a schema cache.
pub struct Registry {
    base: String,
    agent: ureq::Agent,
    cache: HashMap<u32, Option<Arc<Schema>>>,
}

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

impl Registry {
    /// A client for `url` (e.g. `http://registry:8081`).
    pub fn new(url: &str) -> Self {
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(10))
            .build();
        Registry {
            base: url.trim_end_matches('/').to_string(),
            agent,
            cache: HashMap::new(),
        }
    }

    /// The writer schema with this id; `None` when the registry does not know it.
    pub fn schema_by_id(&mut self, id: u32) -> Result<Option<Arc<Schema>>, RegistryError> {
        if let Some(s) = self.cache.get(&id) {
            return Ok(s.clone());
        }
        let url = format!("{}/schemas/ids/{id}", self.base);
        let found = match self.agent.get(&url).set("Accept", CONTENT_TYPE).call() {
            Ok(resp) => {
                let body: serde_json::Value =
                    resp.into_json().map_err(|e| RegistryError::Transport {
                        url: url.clone(),
                        message: e.to_string(),
                    })?;
                let text = body["schema"]
                    .as_str()
                    .ok_or_else(|| RegistryError::Transport {
                        url: url.clone(),
                        message: "response has no `schema`".into(),
                    })?;
                Some(Arc::new(avro::parse_schema(
                    &format!("registry id {id}"),
                    text,
                )?))
            }
            Err(ureq::Error::Status(404, _)) => None,
            Err(e) => {
                return Err(RegistryError::Transport {
                    url,
                    message: e.to_string(),
                })
            }
        };
        self.cache.insert(id, found.clone());
        Ok(found)
    }

    /// Registers a schema under a subject; returns its id.
    pub fn register(&self, subject: &str, schema_text: &str) -> Result<u32, RegistryError> {
        let url = format!("{}/subjects/{subject}/versions", self.base);
        let body = serde_json::json!({ "schema": schema_text });
        let resp = self
            .agent
            .post(&url)
            .set("Content-Type", CONTENT_TYPE)
            .send_json(body)
            .map_err(|e| RegistryError::Transport {
                url: url.clone(),
                message: e.to_string(),
            })?;
        let v: serde_json::Value = resp.into_json().map_err(|e| RegistryError::Transport {
            url: url.clone(),
            message: e.to_string(),
        })?;
        v["id"]
            .as_u64()
            .and_then(|id| u32::try_from(id).ok())
            .ok_or_else(|| RegistryError::Transport {
                url,
                message: format!("no id in response {v}"),
            })
    }
}

/// Default schema id of the shipped touchpoint schema without a registry.
pub const DEFAULT_TOUCHPOINT_ID: u32 = 1;
/// Without a registry, derived type `i` (SPEC table order) uses id `BASE + i`.
pub const DEFAULT_OUTPUT_ID_BASE: u32 = 101;

/// Decodes input values (JSON or Confluent-framed Avro).
pub struct InputDecoder {
    format: InputFormat,
    formats: std::collections::BTreeMap<String, InputFormat>,
    reader: Schema,
    reader_canonical: String,
    /// Per writer id: a fast reader when it equals the reader schema (no
    /// resolution needed), else None.
    same: HashMap<u32, Option<Arc<avro::DatumReader>>>,
    known: HashMap<u32, Arc<Schema>>,
    registry: Option<Registry>,
}

impl InputDecoder {
    /// A decoder for the configured format and schema source.
    pub fn new(cfg: &Config) -> Result<Self, SchemaError> {
        let reader = avro::touchpoint_schema()?;
        let mut known = HashMap::new();
        let registry = cfg.schema_registry.url.as_deref().map(Registry::new);
        if registry.is_none() || cfg.schema_registry.touchpoint_schema_id.is_some() {
            let id = cfg
                .schema_registry
                .touchpoint_schema_id
                .unwrap_or(DEFAULT_TOUCHPOINT_ID);
            known.insert(
                id,
                Arc::new(avro::parse_schema("touchpoint", TOUCHPOINT_SCHEMA)?),
            );
        }
        let reader_canonical = reader.canonical_form();
        Ok(InputDecoder {
            format: cfg.kafka.input_format,
            formats: cfg.kafka.input_formats.clone(),
            reader,
            reader_canonical,
            same: HashMap::new(),
            known,
            registry,
        })
    }

    /// Decodes one record value. `Err(Ok(rejection))` is bad data; the
    /// registry being unreachable is `Err(Err(..))` (retry, do not reject).
    pub fn decode(
        &mut self,
        topic: &str,
        value: Option<&[u8]>,
    ) -> Result<RawTouchpoint, Result<Rejection, RegistryError>> {
        let Some(bytes) = value else {
            return Err(Ok(Rejection::new(
                RejectReason::DecodeError,
                "record has no value (tombstone)",
            )));
        };
        match self.formats.get(topic).copied().unwrap_or(self.format) {
            InputFormat::Json => crate::codec::json::decode(bytes).map_err(Ok),
            InputFormat::Avro => {
                let (id, datum) = avro::unframe(bytes).map_err(Ok)?;
                let writer = match self.known.get(&id) {
                    Some(s) => s.clone(),
                    None => match self.registry.as_mut() {
                        Some(r) => match r.schema_by_id(id).map_err(Err)? {
                            Some(s) => s,
                            None => {
                                return Err(Ok(Rejection::new(
                                    RejectReason::UnknownSchema,
                                    format!("schema id {id} is not in the registry"),
                                )))
                            }
                        },
                        None => {
                            return Err(Ok(Rejection::new(
                                RejectReason::UnknownSchema,
                                format!("schema id {id} is not configured (no schema registry)"),
                            )))
                        }
                    },
                };
                let canonical = &self.reader_canonical;
                let fast = self
                    .same
                    .entry(id)
                    .or_insert_with(|| {
                        (writer.canonical_form() == *canonical)
                            .then(|| avro::DatumReader::new(&writer).ok().map(Arc::new))
                            .flatten()
                    })
                    .clone();
                match fast {
                    Some(r) => r.decode(datum).map_err(Ok),
                    None => avro::decode_datum(&writer, &self.reader, datum).map_err(Ok),
                }
            }
        }
    }
}

/// Encodes derived events as Confluent-framed Avro under known ids.
pub struct OutputEncoder {
    schemas: DerivedSchemas,
    ids: [u32; DERIVED_SCHEMAS.len()],
}

impl OutputEncoder {
    /// Registers the output schemas under `<topic>-value` when a registry
    /// is configured; otherwise uses the default ids.
    pub fn new(cfg: &Config) -> Result<Self, RegistryError> {
        let schemas = DerivedSchemas::load()?;
        let mut ids = [0u32; DERIVED_SCHEMAS.len()];
        for (i, (t, text)) in DERIVED_SCHEMAS.iter().enumerate() {
            ids[i] = match cfg.schema_registry.url.as_deref() {
                Some(url) => Registry::new(url)
                    .register(&format!("{}-value", output_topic(cfg, *t)), text)?,
                None => DEFAULT_OUTPUT_ID_BASE + i as u32,
            };
        }
        Ok(OutputEncoder { schemas, ids })
    }

    /// The framed value of an event.
    pub fn encode(&self, ev: &crate::model::DerivedEvent) -> Result<Vec<u8>, SchemaError> {
        let datum = self.schemas.encode_datum(ev)?;
        Ok(avro::frame(self.ids[ev.kind as usize], &datum))
    }

    /// The schema id used for a type.
    pub fn id(&self, t: DerivedType) -> u32 {
        self.ids[t as usize]
    }
}

/// The output topic of a derived type.
pub fn output_topic(cfg: &Config, t: DerivedType) -> String {
    format!("{}{}", cfg.kafka.output_topic_prefix, t.as_str())
}
