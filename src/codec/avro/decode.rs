//! Avro datums → raw touchpoints: the mapping of a decoded record
//! ([`raw_from_owned`]), datums written with the reader schema
//! ([`DatumReader`]) or with another one, resolved against it
//! ([`decode_datum`] and friends), and the bound on what apache-avro may
//! allocate for one datum ([`limit_allocations`]). It rejects, it does not
//! validate: that happens afterwards, in `validate`.

use apache_avro::types::Value;
use apache_avro::Schema;

use super::SchemaError;
use crate::model::{Channel, Survey, TouchType};
use crate::validate::{RawTouchpoint, RejectReason, Rejection, MAX_ABS_TIMESTAMP};

pub(super) fn decode_err(msg: impl Into<String>) -> Rejection {
    Rejection::new(RejectReason::DecodeError, msg)
}

/// Maps a decoded (reader-schema) Avro record to a raw touchpoint.
pub fn raw_from_value(value: &Value) -> Result<RawTouchpoint, Rejection> {
    raw_from_owned(value.clone())
}

fn owned_union(v: Value) -> Value {
    match v {
        Value::Union(_, inner) => *inner,
        other => other,
    }
}

fn take_string(v: Value, name: &str) -> Result<Option<String>, Rejection> {
    match owned_union(v) {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s)),
        other => Err(decode_err(format!(
            "field `{name}` is not a string: {other:?}"
        ))),
    }
}

fn take_symbol(v: Value, name: &str) -> Result<Option<String>, Rejection> {
    match owned_union(v) {
        Value::Null => Ok(None),
        Value::Enum(_, s) | Value::String(s) => Ok(Some(s)),
        other => Err(decode_err(format!(
            "field `{name}` is not an enum: {other:?}"
        ))),
    }
}

/// Like [`raw_from_value`], taking the value (no string copies).
pub fn raw_from_owned(value: Value) -> Result<RawTouchpoint, Rejection> {
    let Value::Record(fields) = value else {
        return Err(decode_err("not an Avro record"));
    };
    let mut raw = RawTouchpoint::default();
    for (name, v) in fields {
        match name.as_str() {
            "event_id" => raw.event_id = take_string(v, "event_id")?,
            "customer_id" => raw.customer_id = take_string(v, "customer_id")?,
            "channel" => {
                raw.channel = take_symbol(v, "channel")?.map(|s| Channel::parse_lenient(&s))
            }
            "type" => raw.kind = take_symbol(v, "type")?.map(|s| TouchType::parse_lenient(&s)),
            "timestamp" => {
                raw.timestamp = match owned_union(v) {
                    Value::Null => None,
                    Value::Long(t) | Value::TimestampMillis(t) => Some(t),
                    Value::Int(t) => Some(i64::from(t)),
                    other => {
                        return Err(decode_err(format!(
                            "field `timestamp` is not a long: {other:?}"
                        )))
                    }
                };
                if raw.timestamp.is_some_and(|t| t < -MAX_ABS_TIMESTAMP) {
                    return Err(decode_err(
                        "timestamp is before the supported range (from -2^43 ms, 1691-04-06T08:49:37.792Z)",
                    ));
                }
            }
            "value" => {
                raw.value = match owned_union(v) {
                    Value::Null => None,
                    Value::Double(d) => Some(d),
                    Value::Float(d) => Some(f64::from(d)),
                    other => {
                        return Err(decode_err(format!(
                            "field `value` is not a double: {other:?}"
                        )))
                    }
                }
            }
            "currency" => raw.currency = take_string(v, "currency")?,
            "cart_id" => raw.cart_id = take_string(v, "cart_id")?,
            "order_id" => raw.order_id = take_string(v, "order_id")?,
            "campaign_id" => raw.campaign_id = take_string(v, "campaign_id")?,
            "session_id" => raw.session_id = take_string(v, "session_id")?,
            "survey" => {
                raw.survey = match take_symbol(v, "survey")? {
                    None => None,
                    Some(s) => Some(
                        Survey::parse(&s)
                            .ok_or_else(|| decode_err(format!("unknown survey `{s}`")))?,
                    ),
                }
            }
            "score" => {
                raw.score = match owned_union(v) {
                    Value::Null => None,
                    Value::Int(i) => Some(i64::from(i)),
                    Value::Long(i) => Some(i),
                    other => {
                        return Err(decode_err(format!(
                            "field `score` is not an int: {other:?}"
                        )))
                    }
                }
            }
            "attributes" => match owned_union(v) {
                Value::Null => {}
                Value::Map(m) => {
                    for (k, v) in m {
                        match v {
                            Value::String(s) => {
                                raw.attributes.insert(k, s);
                            }
                            other => {
                                return Err(decode_err(format!(
                                    "attribute `{k}` is not a string: {other:?}"
                                )))
                            }
                        }
                    }
                }
                other => {
                    return Err(decode_err(format!(
                        "field `attributes` is not a map: {other:?}"
                    )))
                }
            },
            _ => {} // fields added by newer writers
        }
    }
    Ok(raw)
}

/// The most apache-avro may allocate for one string or byte field, and the
/// most items it may reserve room for in one array or map block, while
/// decoding a touchpoint. It reserves a map's or array's room from the
/// count a datum claims: without a bound a few bytes claiming 5·10^8
/// attributes made it ask for 87 GB and abort the process, which on Kafka
/// would be a record no restart gets past. No real touchpoint comes near.
pub const MAX_DECODE_ALLOCATION: usize = 256 * 1024;

/// A datum that does not decode; apache-avro's allocation refusal says
/// "bytes" also for item counts, so it is put in our words.
fn datum_err(e: apache_avro::Error) -> Rejection {
    let text = e.to_string();
    if text.contains("Unable to allocate") {
        return decode_err(format!(
            "Avro datum does not decode: a string, bytes or array/map block claims more than \
             {MAX_DECODE_ALLOCATION} (bytes or items) ({text})"
        ));
    }
    decode_err(format!("Avro datum does not decode: {text}"))
}

/// Sets [`MAX_DECODE_ALLOCATION`] (apache-avro's process-wide limit; the
/// first setting wins, and every decoder here sets it before decoding).
pub fn limit_allocations() {
    apache_avro::util::max_allocation_bytes(MAX_DECODE_ALLOCATION);
}

/// Decodes a datum written with `writer` into a raw touchpoint, resolving
/// it against the shipped reader schema (schema evolution: added optional
/// fields, new enum symbols).
pub fn decode_datum(
    writer: &Schema,
    reader: &Schema,
    mut datum: &[u8],
) -> Result<RawTouchpoint, Rejection> {
    let raw = decode_datum_prefix(writer, reader, &mut datum)?;
    if !datum.is_empty() {
        return Err(decode_err(format!(
            "{} trailing bytes after the Avro datum",
            datum.len()
        )));
    }
    Ok(raw)
}

/// Like [`decode_datum`], for a datum at the start of `data` (a container
/// block): `data` moves past it.
pub fn decode_datum_prefix(
    writer: &Schema,
    reader: &Schema,
    data: &mut &[u8],
) -> Result<RawTouchpoint, Rejection> {
    decode_datum_framed(writer, reader, data)?
}

/// Reads the datum at the start of `data` (which moves past it), then
/// resolves and converts it. The outer error: the datum's framing does
/// not read, so where the next one starts is unknown; the inner one: it
/// reads but is rejected (the next one starts where `data` now does).
pub fn decode_datum_framed(
    writer: &Schema,
    reader: &Schema,
    data: &mut &[u8],
) -> Result<Result<RawTouchpoint, Rejection>, Rejection> {
    limit_allocations();
    let value = apache_avro::from_avro_datum(writer, data, None).map_err(datum_err)?;
    // Resolution is only needed when the writer schema differs; skipping it
    // for the common case is many times faster.
    if std::ptr::eq(writer, reader) {
        return Ok(raw_from_owned(value));
    }
    let missing = missing_required(&value);
    Ok(value
        .resolve(reader)
        .map_err(|e| match missing {
            // SPEC 7: an absent or null required field is missing_field,
            // in Avro as in JSON (here it is why resolution failed).
            Some(name) => Rejection::new(
                RejectReason::MissingField,
                format!("required field `{name}` is missing or null"),
            ),
            None => datum_err(e),
        })
        .and_then(raw_from_owned))
}

/// A required touchpoint field a writer's record lacks (those without a
/// default in the reader schema) or holds as null.
fn missing_required(value: &Value) -> Option<&'static str> {
    let Value::Record(fields) = value else {
        return None;
    };
    let get = |name: &str| fields.iter().find(|(n, _)| n == name).map(|(_, v)| v);
    let is_null = |v: &Value| match v {
        Value::Null => true,
        Value::Union(_, inner) => matches!(**inner, Value::Null),
        _ => false,
    };
    for name in ["event_id", "customer_id", "channel", "type", "timestamp"] {
        let has_default = matches!(name, "channel" | "type");
        match get(name) {
            None if !has_default => return Some(name),
            Some(v) if is_null(v) => return Some(name),
            _ => {}
        }
    }
    None
}

/// No single-object header: lets [`apache_avro::GenericSingleObjectReader`]
/// decode bare datums with the names of its schema resolved once.
struct NoHeader;

impl apache_avro::headers::HeaderBuilder for NoHeader {
    fn build_header(&self) -> Vec<u8> {
        Vec::new()
    }
}

/// Decodes datums written with one known schema (the common case: the
/// writer schema is the reader schema), resolving the schema's names once
/// instead of per record as `from_avro_datum` does.
pub struct DatumReader {
    inner: apache_avro::GenericSingleObjectReader,
}

impl DatumReader {
    /// A reader for datums written with `schema`.
    pub fn new(schema: &Schema) -> Result<Self, SchemaError> {
        apache_avro::GenericSingleObjectReader::new_with_header_builder(schema.clone(), NoHeader)
            .map(|inner| DatumReader { inner })
            .map_err(|e| SchemaError::Parse {
                name: "datum reader".into(),
                message: e.to_string(),
            })
    }

    /// Decodes one datum into a raw touchpoint.
    pub fn decode(&self, mut datum: &[u8]) -> Result<RawTouchpoint, Rejection> {
        let raw = self.decode_prefix(&mut datum)?;
        if !datum.is_empty() {
            return Err(decode_err(format!(
                "{} trailing bytes after the Avro datum",
                datum.len()
            )));
        }
        Ok(raw)
    }

    /// Decodes the datum at the start of `data` (a container block); `data`
    /// moves past it.
    pub fn decode_prefix(&self, data: &mut &[u8]) -> Result<RawTouchpoint, Rejection> {
        self.decode_framed(data)?
    }

    /// Like [`decode_datum_framed`]: the outer error is a datum whose
    /// framing does not read, the inner one a datum that reads but is
    /// rejected.
    pub fn decode_framed(
        &self,
        data: &mut &[u8],
    ) -> Result<Result<RawTouchpoint, Rejection>, Rejection> {
        limit_allocations();
        let value = self.inner.read_value(data).map_err(datum_err)?;
        Ok(raw_from_owned(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::avro::encode::put_long;
    use crate::codec::avro::{touchpoint_schema, touchpoint_value, TOUCHPOINT_SCHEMA};
    use crate::model::Touchpoint;

    /// A few bytes claiming 5·10^8 attributes: a decode error, not an abort
    /// on an 87 GB allocation (on Kafka, a record no restart would get past).
    #[test]
    fn a_huge_claimed_map_count_is_a_decode_error() {
        let schema = touchpoint_schema().unwrap();
        let tp = Touchpoint::new("e", "c", Channel::Web, TouchType::PageView, 1);
        let mut datum = apache_avro::to_avro_datum(&schema, touchpoint_value(&tp)).unwrap();
        assert_eq!(datum.pop(), Some(0), "attributes, empty, come last");
        let mut claimed = Vec::new();
        put_long(&mut claimed, 500_000_000);
        datum.extend_from_slice(&claimed);
        datum.extend_from_slice(&[2, b'k', 2, b'v', 0]);
        let reader = DatumReader::new(&schema).unwrap();
        let e = reader.decode(&datum).unwrap_err();
        assert_eq!(e.reason, RejectReason::DecodeError);
        let e = decode_datum(&schema, &touchpoint_schema().unwrap(), &datum).unwrap_err();
        assert_eq!(e.reason, RejectReason::DecodeError);
        // A real map still decodes.
        let mut ok = apache_avro::to_avro_datum(&schema, touchpoint_value(&tp)).unwrap();
        ok.pop();
        ok.extend_from_slice(&[2, 2, b'k', 2, b'v', 0]);
        assert_eq!(
            reader
                .decode(&ok)
                .unwrap()
                .attributes
                .get("k")
                .map(String::as_str),
            Some("v")
        );
    }

    /// SPEC 7: an absent or null required field is missing_field, in a
    /// datum written with another schema as in JSON.
    #[test]
    fn a_required_field_a_writer_lacks_or_nulls_is_missing_field() {
        let reader = touchpoint_schema().unwrap();
        let nullable = TOUCHPOINT_SCHEMA.replacen(
            "\"name\": \"customer_id\",\n      \"type\": \"string\"",
            "\"name\": \"customer_id\",\n      \"type\": [\"null\", \"string\"]",
            1,
        );
        assert_ne!(
            nullable, TOUCHPOINT_SCHEMA,
            "the schema text changed: adjust the test"
        );
        let writer = Schema::parse_str(&nullable).unwrap();
        let tp = Touchpoint::new("e", "c", Channel::Web, TouchType::PageView, 1);
        let mut v = touchpoint_value(&tp);
        if let Value::Record(fields) = &mut v {
            for (name, value) in fields.iter_mut() {
                if name == "customer_id" {
                    *value = Value::Union(0, Box::new(Value::Null));
                }
            }
        }
        let datum = apache_avro::to_avro_datum(&writer, v).unwrap();
        let e = decode_datum(&writer, &reader, &datum).unwrap_err();
        assert_eq!(e.reason, RejectReason::MissingField, "{}", e.message);
        assert!(e.message.contains("customer_id"), "{}", e.message);
    }
}
