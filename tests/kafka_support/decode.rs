//! Output records decoded: Confluent-framed Avro into `serde_json` values
//! shaped like `touchstream replay`'s JSON lines ([`OutputSchemas`],
//! [`decode_outputs`]).

use std::collections::HashMap;

use apache_avro::types::Value as Avro;
use apache_avro::Schema;
use serde_json::{json, Value};
use touchstream::codec::avro::{DerivedSchemas, DERIVED_SCHEMAS};
use touchstream::model::DerivedType;

use super::collect::Rec;

/// An Avro value as the JSON `touchstream replay` would print: unions as
/// their value, enums as symbols, maps as objects, timestamps as millis.
pub fn avro_to_json(v: &Avro) -> Value {
    match v {
        Avro::Null => Value::Null,
        Avro::Boolean(b) => json!(b),
        Avro::Int(i) => json!(i),
        Avro::Long(i) => json!(i),
        Avro::Float(f) => json!(f64::from(*f)),
        Avro::Double(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
        Avro::String(s) => json!(s),
        Avro::Enum(_, s) => json!(s),
        Avro::Union(_, inner) => avro_to_json(inner),
        Avro::Array(items) => Value::Array(items.iter().map(avro_to_json).collect()),
        Avro::Map(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), avro_to_json(v)))
                .collect(),
        ),
        Avro::Record(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, v)| (k.clone(), avro_to_json(v)))
                .collect(),
        ),
        Avro::TimestampMillis(t) | Avro::TimestampMicros(t) | Avro::LocalTimestampMillis(t) => {
            json!(t)
        }
        Avro::Date(d) => json!(d),
        other => panic!("unexpected Avro value in an output: {other:?}"),
    }
}

/// Output schemas by the id in the frame.
pub struct OutputSchemas {
    pub by_id: HashMap<u32, (DerivedType, Schema)>,
}

impl OutputSchemas {
    /// Ids 101..=108 in SPEC table order (no registry).
    pub fn defaults() -> Self {
        Self::with_ids(|i, _| 101 + i as u32)
    }

    pub fn with_ids(id: impl Fn(usize, DerivedType) -> u32) -> Self {
        let schemas = DerivedSchemas::load().expect("derived schemas");
        let by_id = DERIVED_SCHEMAS
            .iter()
            .enumerate()
            .map(|(i, (t, _))| (id(i, *t), (*t, schemas.get(*t).clone())))
            .collect();
        OutputSchemas { by_id }
    }

    /// Schemas given as text under ids (e.g. as a registry holds them).
    pub fn from_texts(texts: &[(u32, DerivedType, String)]) -> Self {
        let by_id = texts
            .iter()
            .map(|(id, t, text)| {
                (
                    *id,
                    (
                        *t,
                        Schema::parse_str(text)
                            .unwrap_or_else(|e| panic!("schema {id} ({t}): {e}")),
                    ),
                )
            })
            .collect();
        OutputSchemas { by_id }
    }

    /// Unframes and decodes one output value: (schema id, type, JSON).
    pub fn decode(&self, bytes: &[u8]) -> (u32, DerivedType, Value) {
        assert!(
            bytes.len() >= 5 && bytes[0] == 0,
            "output value is not Confluent-framed: {bytes:?}"
        );
        let id = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
        let (t, schema) = self
            .by_id
            .get(&id)
            .unwrap_or_else(|| panic!("output frame has unknown schema id {id}"));
        let mut datum = &bytes[5..];
        let v = apache_avro::from_avro_datum(schema, &mut datum, None)
            .unwrap_or_else(|e| panic!("output of schema id {id} ({t}) does not decode: {e}"));
        assert!(
            datum.is_empty(),
            "{} trailing bytes after a {t} datum",
            datum.len()
        );
        (id, *t, avro_to_json(&v))
    }
}

/// A decoded output record.
#[derive(Debug, Clone)]
pub struct OutEvent {
    pub rec: Rec,
    pub schema_id: u32,
    pub kind: DerivedType,
    pub json: Value,
}

impl OutEvent {
    pub fn event_id(&self) -> String {
        self.json["event_id"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

/// Decodes every record of the output topics (panics on anything that
/// is not a well-formed output).
pub fn decode_outputs(recs: &[Rec], prefix: &str, schemas: &OutputSchemas) -> Vec<OutEvent> {
    recs.iter()
        .filter(|r| r.topic.starts_with(prefix))
        .map(|r| {
            let value = r
                .value
                .as_ref()
                .unwrap_or_else(|| panic!("output record without value: {r:?}"));
            let (schema_id, kind, json) = schemas.decode(value);
            OutEvent {
                rec: r.clone(),
                schema_id,
                kind,
                json,
            }
        })
        .collect()
}
