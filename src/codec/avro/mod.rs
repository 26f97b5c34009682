//! Avro: touchpoints from object container files and from the Confluent
//! wire format (magic byte 0, 4-byte big-endian schema id, datum), and
//! derived events to Confluent-framed datums. The schemas are the files in
//! `schemas/`, compiled in.
//!
//! - `schema`: the schema texts, their parsing,
//!   [`DerivedSchemas`];
//! - `decode`: datums → [`RawTouchpoint`](crate::validate::RawTouchpoint)
//!   or a [`Rejection`](crate::validate::Rejection) (with the allocation
//!   bound);
//! - `encode`: touchpoints and derived events → Avro values and bytes;
//! - `wire`: the Confluent frame;
//! - [`container`]: object container files, block by block.
//!
//! Everything public is re-exported here, so `codec::avro::X` is the path
//! to use; the submodules are where the code lives.

use thiserror::Error;

pub mod container;
mod decode;
mod encode;
mod schema;
mod wire;

pub use decode::{
    decode_datum, decode_datum_framed, decode_datum_prefix, limit_allocations, raw_from_owned,
    raw_from_value, DatumReader, MAX_DECODE_ALLOCATION,
};
pub use encode::{derived_value, touchpoint_value};
pub use schema::{
    parse_schema, touchpoint_schema, DerivedSchemas, DERIVED_SCHEMAS, TOUCHPOINT_SCHEMA,
};
pub use wire::{frame, frame_header, unframe};

/// Problems with schemas themselves (not with records).
#[derive(Debug, Error)]
pub enum SchemaError {
    /// A schema did not parse.
    #[error("schema {name} does not parse: {message}")]
    Parse {
        /// Which schema.
        name: String,
        /// Parser message.
        message: String,
    },
    /// A value did not match its schema when encoding.
    #[error("cannot encode {name}: {message}")]
    Encode {
        /// Which schema.
        name: String,
        /// Encoder message.
        message: String,
    },
}
