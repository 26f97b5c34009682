//! JSON touchpoints (one object per line or per Kafka record).
//!
//! Unknown `channel` and `type` names become `other`; an unknown `survey`
//! symbol or a field of the wrong JSON type is a decode error; absent and
//! null fields are left for validation to call `missing_field`. Unknown
//! fields are ignored, so producers can add fields.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::model::{Channel, EventTime, Survey, TouchType};
use crate::validate::{RawTouchpoint, RejectReason, Rejection, MAX_ABS_TIMESTAMP};

#[derive(Deserialize)]
struct JsonTouchpoint<'a> {
    #[serde(default)]
    event_id: Option<String>,
    #[serde(default)]
    customer_id: Option<String>,
    /// Borrowed unless escaped: only its parsed name is kept.
    #[serde(default, borrow)]
    channel: Option<Cow<'a, str>>,
    #[serde(default, borrow, rename = "type")]
    kind: Option<Cow<'a, str>>,
    #[serde(default, deserialize_with = "timestamp")]
    timestamp: Option<EventTime>,
    /// Read as text and parsed here: serde_json refuses a number beyond
    /// f64's range (`1e400`), which is an `invalid_value` (not finite), not
    /// an undecodable record.
    #[serde(default, borrow)]
    value: Option<&'a serde_json::value::RawValue>,
    #[serde(default)]
    currency: Option<String>,
    #[serde(default)]
    cart_id: Option<String>,
    #[serde(default)]
    order_id: Option<String>,
    #[serde(default)]
    campaign_id: Option<String>,
    #[serde(default)]
    session_id: Option<String>,
    #[serde(default, deserialize_with = "survey")]
    survey: Option<Survey>,
    #[serde(default)]
    score: Option<i64>,
    #[serde(default)]
    attributes: Option<BTreeMap<String, String>>,
}

/// Parses an RFC 3339 timestamp into epoch millis.
pub fn parse_rfc3339(s: &str) -> Result<EventTime, String> {
    let dt = OffsetDateTime::parse(s, &Rfc3339)
        .map_err(|e| format!("`{s}` is not an RFC 3339 timestamp: {e}"))?;
    Ok((dt.unix_timestamp_nanos().div_euclid(1_000_000)) as EventTime)
}

/// Formats epoch millis as RFC 3339 (UTC, millisecond precision).
pub fn format_rfc3339(ms: EventTime) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|dt| {
            dt.format(&time::macros::format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
            ))
            .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}

fn timestamp<'de, D: Deserializer<'de>>(d: D) -> Result<Option<EventTime>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Option<EventTime>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("integer epoch millis or an RFC 3339 string")
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            // Far-future values are `future_timestamp` (validation); only
            // times before 1691-04-06 (−2^43 ms) are undecodable.
            if v < -MAX_ABS_TIMESTAMP {
                return Err(E::custom(format!(
                    "timestamp {v} is before the supported range (from -2^43 ms, 1691-04-06T08:49:37.792Z)"
                )));
            }
            Ok(Some(v))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            i64::try_from(v)
                .map_err(|_| E::custom("timestamp out of range"))
                .and_then(|v| self.visit_i64(v))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            parse_rfc3339(v)
                .map_err(E::custom)
                .and_then(|t| self.visit_i64(t))
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
            d.deserialize_any(V)
        }
    }
    d.deserialize_option(V)
}

fn survey<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Survey>, D::Error> {
    match Option::<String>::deserialize(d)? {
        None => Ok(None),
        Some(s) => Survey::parse(&s).map(Some).ok_or_else(|| {
            de::Error::custom(format!("unknown survey `{s}` (expected nps, csat or ces)"))
        }),
    }
}

/// A JSON number's value (±infinity beyond f64's range); `null` is none;
/// anything else is a decode error.
fn number(text: &str) -> Result<Option<f64>, Rejection> {
    if text == "null" {
        return Ok(None);
    }
    let numeric = text
        .bytes()
        .next()
        .is_some_and(|b| b == b'-' || b.is_ascii_digit());
    match text.parse::<f64>() {
        Ok(v) if numeric => Ok(Some(v)),
        _ => Err(Rejection::new(
            RejectReason::DecodeError,
            format!("`value` must be a number, got {text}"),
        )),
    }
}

/// Decodes one JSON touchpoint.
///
/// # Examples
/// ```
/// use touchstream::codec::json::decode;
/// let raw = decode(br#"{"event_id":"e1","customer_id":"c1","channel":"kiosk","type":"page_view","timestamp":"2026-01-01T00:00:00Z"}"#).unwrap();
/// assert_eq!(raw.channel.unwrap().as_str(), "other");
/// assert_eq!(raw.timestamp, Some(1_767_225_600_000));
/// ```
pub fn decode(bytes: &[u8]) -> Result<RawTouchpoint, Rejection> {
    // A UTF-8 byte order mark (editors put one at the start of a file) is
    // not part of the JSON.
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    // serde would also accept a JSON array (fields by position): a
    // touchpoint is an object.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        let message = match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
            Ok(_) => "a touchpoint must be a JSON object".to_string(),
            Err(e) => format!("not JSON: {e}"),
        };
        return Err(Rejection::new(RejectReason::DecodeError, message));
    }
    let j: JsonTouchpoint = serde_json::from_slice(bytes)
        .map_err(|e| Rejection::new(RejectReason::DecodeError, e.to_string()))?;
    Ok(RawTouchpoint {
        event_id: j.event_id,
        customer_id: j.customer_id,
        channel: j.channel.as_deref().map(Channel::parse_lenient),
        kind: j.kind.as_deref().map(TouchType::parse_lenient),
        timestamp: j.timestamp,
        value: match j.value {
            None => None,
            Some(raw) => number(raw.get())?,
        },
        currency: j.currency,
        cart_id: j.cart_id,
        order_id: j.order_id,
        campaign_id: j.campaign_id,
        session_id: j.session_id,
        survey: j.survey,
        score: j.score,
        attributes: j.attributes.unwrap_or_default(),
    })
}

/// Encodes a touchpoint as one JSON object (the generator's output).
pub fn encode(tp: &crate::model::Touchpoint) -> String {
    serde_json::to_string(tp).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(s: &str) -> Option<RejectReason> {
        decode(s.as_bytes()).err().map(|r| r.reason)
    }

    #[test]
    fn decode_rules() {
        let ok = r#"{"event_id":"e","customer_id":"c","channel":"web","type":"page_view","timestamp":5}"#;
        assert_eq!(reason(ok), None);
        assert_eq!(reason("not json"), Some(RejectReason::DecodeError));
        assert_eq!(reason("[1,2]"), Some(RejectReason::DecodeError));
        assert_eq!(
            reason(r#"["e1","c1","web","page_view",1767225600000]"#),
            Some(RejectReason::DecodeError)
        );
        assert_eq!(
            reason(r#"{"timestamp":-9223372036854775808}"#),
            Some(RejectReason::DecodeError)
        );
        assert_eq!(
            decode(br#"{"timestamp":9223372036854775807}"#)
                .unwrap()
                .timestamp,
            Some(i64::MAX)
        );
        assert_eq!(reason(r#"{"event_id":5}"#), Some(RejectReason::DecodeError));
        assert_eq!(
            reason(r#"{"timestamp":1.5}"#),
            Some(RejectReason::DecodeError)
        );
        assert_eq!(
            reason(r#"{"timestamp":"yesterday"}"#),
            Some(RejectReason::DecodeError)
        );
        assert_eq!(
            reason(r#"{"survey":"bogus"}"#),
            Some(RejectReason::DecodeError)
        );
        assert_eq!(reason(r#"{"score":"7"}"#), Some(RejectReason::DecodeError));
        assert_eq!(reason(r#"{"value":"12"}"#), Some(RejectReason::DecodeError));
        assert_eq!(reason(r#"{"value":true}"#), Some(RejectReason::DecodeError));
        assert_eq!(reason(r#"{"value":[1]}"#), Some(RejectReason::DecodeError));
        let v = |t: &str| decode(t.as_bytes()).unwrap().value;
        assert_eq!(v(r#"{"value":1e400}"#), Some(f64::INFINITY));
        assert_eq!(v(r#"{"value":12.5}"#), Some(12.5));
        assert_eq!(v(r#"{"value":null}"#), None);
        assert_eq!(v(r#"{"value":0.1}"#), Some(0.1));
        assert_eq!(
            reason(r#"{"attributes":{"a":1}}"#),
            Some(RejectReason::DecodeError)
        );
        assert_eq!(
            reason(r#"{"timestamp":null,"event_id":null,"extra":[1]}"#),
            None
        );
        let raw = decode(
            br#"{"type":"teleport","channel":null,"timestamp":"2026-01-01T01:00:00.5+01:00"}"#,
        )
        .unwrap();
        assert_eq!(raw.kind, Some(TouchType::Other));
        assert_eq!(raw.channel, None);
        assert_eq!(raw.timestamp, Some(1_767_225_600_500));
    }

    #[test]
    fn rfc3339_roundtrip() {
        let ms = 1_767_225_600_123;
        assert_eq!(parse_rfc3339(&format_rfc3339(ms)).unwrap(), ms);
    }

    #[test]
    fn a_value_that_is_no_object_says_whether_it_is_json() {
        for (input, says) in [
            (&b"this is {not json"[..], "not JSON: expected ident"),
            (b"", "not JSON: EOF"),
            (br#"["e1","c1"]"#, "must be a JSON object"),
            (b" 42 ", "must be a JSON object"),
            (b"\xEF\xBB\xBF[1]", "must be a JSON object"),
        ] {
            let r = decode(input).unwrap_err();
            assert_eq!(r.reason, RejectReason::DecodeError);
            assert!(
                r.message.contains(says),
                "{:?}: {}",
                String::from_utf8_lossy(input),
                r.message
            );
        }
    }

    #[test]
    fn a_byte_order_mark_is_not_part_of_the_json() {
        let line = br#"{"event_id":"e1","customer_id":"c1","channel":"web","type":"page_view","timestamp":1}"#;
        let with_bom = [&b"\xEF\xBB\xBF"[..], line].concat();
        assert_eq!(
            decode(&with_bom).unwrap().event_id,
            decode(line).unwrap().event_id
        );
    }
}
