//! The data model shared by every part of touchstream: the input
//! [`Touchpoint`], the [`DerivedEvent`]s the engine emits, and the small
//! enums (channel, touchpoint type, survey) with their SPEC names.
//!
//! This module owns names and shapes only; it performs no validation (see
//! [`crate::validate`]) and no I/O. It imports nothing else of the crate.
//!
//! - here: event time and its bounds, and the `name_enum!` macro the enums
//!   are made with;
//! - `touchpoint`: [`Touchpoint`] and its enums ([`Channel`],
//!   [`TouchType`], [`Survey`]);
//! - `derived`: [`DerivedEvent`], [`DerivedType`], [`Payload`] and the
//!   payloads' types ([`ChurnLevel`], [`ChurnReason`], [`JourneyStage`],
//!   [`ChannelSet`], [`EventId`], [`Weights`], [`AttributionModels`]).
//!
//! Everything is re-exported here: `model::X` is the path to use.

/// Timestamps beyond ±2^43 ms of the Unix epoch (before 1691-04-06 or
/// after 2248-09-26) cannot be represented by the engine's packed 6-byte
/// time fields: an earlier one is a decode error, a later one is in the
/// future of any real clock.
pub const MAX_ABS_TIMESTAMP: i64 = 1 << 43;

/// Event time in epoch milliseconds.
pub type EventTime = i64;

/// One day in milliseconds.
pub const DAY_MS: i64 = 86_400_000;
/// One hour in milliseconds.
pub const HOUR_MS: i64 = 3_600_000;

/// An enum of SPEC names: `ALL`, `as_str`, `parse`, `parse_lenient`,
/// `index`, `from_index`, `Display` and serde by name. Used by the
/// submodules (declared after it, so it is in scope there).
macro_rules! name_enum {
    (
        $(#[$meta:meta])*
        $name:ident, fallback = $fallback:expr, [ $( $(#[$vmeta:meta])* $variant:ident => $text:literal ),+ $(,)? ]
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum $name {
            $( $(#[$vmeta])* #[doc = $text] $variant ),+
        }

        impl $name {
            /// Every value, in SPEC order (which is also the Avro symbol order).
            pub const ALL: &'static [$name] = &[ $( $name::$variant ),+ ];

            /// The SPEC name of the value.
            pub fn as_str(self) -> &'static str {
                match self { $( $name::$variant => $text ),+ }
            }

            /// Parses a SPEC name exactly; `None` for anything else.
            pub fn parse(s: &str) -> Option<Self> {
                match s { $( $text => Some($name::$variant), )+ _ => None }
            }

            /// Parses a SPEC name; unknown names map to the fallback value.
            pub fn parse_lenient(s: &str) -> Self {
                Self::parse(s).unwrap_or($fallback)
            }

            /// Position of the value in [`Self::ALL`].
            pub fn index(self) -> usize {
                self as usize
            }

            /// The value at position `i` of [`Self::ALL`].
            pub fn from_index(i: usize) -> Option<Self> {
                Self::ALL.get(i).copied()
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::serde::Serialize for $name {
            fn serialize<S: ::serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <::std::borrow::Cow<'de, str> as ::serde::Deserialize<'de>>::deserialize(d)?;
                Self::parse(&s).ok_or_else(|| ::serde::de::Error::custom(format!("unknown {} `{}`", stringify!($name), s)))
            }
        }
    };
}

mod derived;
mod touchpoint;

pub use derived::{
    AttributionModels, ChannelSet, ChurnLevel, ChurnReason, DerivedEvent, DerivedType, EventId,
    JourneyStage, Payload, Weights,
};
pub use touchpoint::{Channel, Survey, TouchType, Touchpoint};
