//! The Confluent wire format: magic byte 0, the 4-byte big-endian schema
//! id, then the datum.

use super::decode::decode_err;
use crate::validate::Rejection;

/// Prefixes a datum with the Confluent wire-format header.
pub fn frame(schema_id: u32, datum: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + datum.len());
    frame_header(schema_id, &mut out);
    out.extend_from_slice(datum);
    out
}

/// Appends the Confluent frame's header (magic byte, schema id) to `out`;
/// the datum follows.
pub fn frame_header(schema_id: u32, out: &mut Vec<u8>) {
    out.push(0);
    out.extend_from_slice(&schema_id.to_be_bytes());
}

/// Splits a Confluent-framed value into schema id and datum.
pub fn unframe(bytes: &[u8]) -> Result<(u32, &[u8]), Rejection> {
    if bytes.len() < 5 || bytes[0] != 0 {
        return Err(decode_err(
            "not in the Confluent wire format (magic byte 0 + 4-byte schema id)",
        ));
    }
    let id = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
    Ok((id, &bytes[5..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::avro::{decode_datum, touchpoint_schema, touchpoint_value, DatumReader};
    use crate::model::{Channel, Survey, TouchType, Touchpoint};

    #[test]
    fn touchpoint_roundtrip_through_framed_datum() {
        let schema = touchpoint_schema().unwrap();
        let mut tp = Touchpoint::new("e1", "c1", Channel::Sms, TouchType::SurveyResponse, 1234);
        tp.survey = Some(Survey::Nps);
        tp.score = Some(9);
        tp.value = Some(1.5);
        tp.attributes.insert("k".into(), "v".into());
        let datum = apache_avro::to_avro_datum(&schema, touchpoint_value(&tp)).unwrap();
        let framed = frame(7, &datum);
        let (id, body) = unframe(&framed).unwrap();
        assert_eq!(id, 7);
        let raw = decode_datum(&schema, &schema, body).unwrap();
        assert_eq!(
            DatumReader::new(&schema).unwrap().decode(body).unwrap(),
            raw
        );
        assert!(DatumReader::new(&schema)
            .unwrap()
            .decode(&[0xff, 0xff])
            .is_err());
        let mut trailing = body.to_vec();
        trailing.push(0);
        assert!(DatumReader::new(&schema)
            .unwrap()
            .decode(&trailing)
            .is_err());
        assert_eq!(raw.channel, Some(Channel::Sms));
        assert_eq!(raw.kind, Some(TouchType::SurveyResponse));
        assert_eq!(raw.timestamp, Some(1234));
        assert_eq!(raw.score, Some(9));
        assert_eq!(raw.attributes.get("k").map(String::as_str), Some("v"));
        assert!(unframe(&[1, 0, 0, 0, 1]).is_err());
        assert!(decode_datum(&schema, &schema, &[0xff, 0xff]).is_err());
    }
}
