//! Bytes ↔ model: JSON touchpoints and derived events, Avro (object
//! container files and the Confluent wire format).
//!
//! Decoders return [`RawTouchpoint`](crate::validate::RawTouchpoint)s or a
//! [`Rejection`](crate::validate::Rejection) with reason `decode_error` /
//! `unknown_schema`; validation happens afterwards, in one place.

pub mod avro;
pub mod json;
