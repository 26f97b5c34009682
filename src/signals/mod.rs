//! The signals of SPEC 4, one module each. Every module owns a small state
//! struct that lives inside the customer's state and functions the engine
//! calls on a touchpoint or a timer; they return payloads and never do I/O
//! or read a clock. Helpers shared by several signals (packed time/tag
//! pairs, sorted insertion, exponential decay) live here, once.
//!
//! The modules are plain functions rather than implementations of one
//! trait object: each needs different inputs (a cart id, the churn change,
//! the order's touches), and static calls keep the hot path inlined.

pub mod attribution;
pub mod cart;
pub mod churn;
pub mod config;
pub mod dedup;
pub mod engagement;
pub mod fatigue;
pub mod journey;
pub mod lanes;
pub mod list;
pub mod survey;
pub mod value;

use serde::{Deserialize, Serialize};
use thin_vec::ThinVec;

pub use lanes::{Lane, Lanes};
pub use list::List;

use crate::model::{Channel, ChannelSet, EventTime};

/// An event time and a 4-bit tag (a channel) in 6 bytes: `t * 16 + tag`
/// as a 48-bit two's-complement integer. Valid for |t| < 2^43 ms (years
/// 1691 to 2248), which decoding and validation guarantee
/// ([`crate::model::MAX_ABS_TIMESTAMP`]). Per-customer lists hold many
/// of these, so the two bytes an `i64` would add count.
#[derive(Clone, Copy, PartialEq, Eq, Hash, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(transparent)]
pub struct Packed([u8; 6]);

impl Packed {
    /// Packs a time and a channel.
    pub fn new(t: EventTime, channel: Channel) -> Self {
        Self::from_raw(t.wrapping_mul(16).wrapping_add(channel as i64))
    }

    fn from_raw(v: i64) -> Self {
        let b = v.to_le_bytes();
        Packed([b[0], b[1], b[2], b[3], b[4], b[5]])
    }

    fn raw(self) -> i64 {
        let mut w = [0u8; 8];
        w[..6].copy_from_slice(&self.0);
        (i64::from_le_bytes(w) << 16) >> 16
    }

    /// Packs a time and a 4-bit tag (`tag` & 15).
    pub fn tagged(t: EventTime, tag: u8) -> Self {
        Self::from_raw(t.wrapping_mul(16).wrapping_add(i64::from(tag & 15)))
    }

    /// The 4-bit tag (a channel's index, for [`Packed::new`]).
    pub fn tag(self) -> u8 {
        (self.raw() & 15) as u8
    }

    /// A 48-bit value (an event-id hash) stored as is.
    pub fn from_bits(bits: u64) -> Self {
        Self::from_raw(bits as i64)
    }

    /// The 48 bits, unsigned (see [`Packed::from_bits`]).
    pub fn bits(self) -> u64 {
        let mut w = [0u8; 8];
        w[..6].copy_from_slice(&self.0);
        u64::from_le_bytes(w)
    }

    /// The time.
    pub fn time(self) -> EventTime {
        self.raw() >> 4
    }

    /// The channel.
    pub fn channel(self) -> Channel {
        Channel::from_index((self.raw() & 15) as usize).unwrap_or(Channel::Other)
    }
}

impl Ord for Packed {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.raw().cmp(&other.raw())
    }
}

impl PartialOrd for Packed {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl std::fmt::Debug for Packed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Packed({}, {})", self.time(), self.channel().as_str())
    }
}

/// The changelog form is `t * 16 + tag + 1` (as in state format 2, when the
/// value was a non-zero `i64`).
impl Serialize for Packed {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(self.raw() + 1)
    }
}

impl<'de> Deserialize<'de> for Packed {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = i64::deserialize(d)?.wrapping_sub(1);
        let max = crate::model::MAX_ABS_TIMESTAMP;
        if !(-max..max).contains(&(v >> 4)) || (v & 15) > 11 {
            return Err(serde::de::Error::custom(format!(
                "packed time/channel {v} out of range"
            )));
        }
        Ok(Self::from_raw(v))
    }
}

/// Heap bytes of a thin vector: its header (length and capacity) and its
/// slots; nothing for an empty one.
pub fn thin_bytes<T>(v: &ThinVec<T>) -> usize {
    if v.capacity() == 0 {
        0
    } else {
        16 + v.capacity() * std::mem::size_of::<T>()
    }
}

/// Frees an emptied vector's allocation (per-customer lists are many and
/// mostly empty: keeping their capacity would cost more than reallocating).
pub fn free_if_empty<T>(v: &mut ThinVec<T>) {
    if v.is_empty() && v.capacity() > 0 {
        *v = ThinVec::new();
    }
}

/// 0.5^(dt / half_life): the weight left after `dt` ms.
pub fn decay(dt: i64, half_life: i64) -> f64 {
    if dt == 0 {
        1.0
    } else {
        (-(dt as f64) / half_life as f64 * std::f64::consts::LN_2).exp()
    }
}

/// The distinct channels of the given entries.
pub fn distinct_channels(entries: impl Iterator<Item = Channel>) -> ChannelSet {
    entries.collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_roundtrip_including_negative_times() {
        // The range validation accepts: -2^43 <= t < 2^43.
        let max = crate::model::MAX_ABS_TIMESTAMP;
        for t in [
            -max,
            -max + 1,
            -1_000_000_123i64,
            -1,
            0,
            1,
            1_700_000_000_123,
            max - 1,
        ] {
            for c in Channel::ALL {
                let p = Packed::new(t, *c);
                assert_eq!((p.time(), p.channel()), (t, *c));
                let json = serde_json::to_string(&p).unwrap();
                assert_eq!(json, (t * 16 + *c as i64 + 1).to_string());
                assert_eq!(serde_json::from_str::<Packed>(&json).unwrap(), p);
            }
        }
        for beyond in [max * 16 + 1, -(max + 1) * 16 + 1] {
            assert!(serde_json::from_str::<Packed>(&beyond.to_string()).is_err());
        }
    }

    #[test]
    fn sorted_insert_keeps_ties_in_arrival_order() {
        let mut v = Lanes::default();
        let l = Lane::Touches;
        v.insert_sorted(l, Packed::new(10, Channel::Web));
        v.insert_sorted(l, Packed::new(5, Channel::Sms));
        v.insert_sorted(l, Packed::new(10, Channel::Email));
        v.insert_sorted(l, Packed::new(7, Channel::Push));
        let got: Vec<_> = v.lane(l).iter().map(|p| (p.time(), p.channel())).collect();
        assert_eq!(
            got,
            vec![
                (5, Channel::Sms),
                (7, Channel::Push),
                (10, Channel::Web),
                (10, Channel::Email)
            ]
        );
        v.prune_until(l, 7);
        assert_eq!(v.lane(l).len(), 2);
    }

    #[test]
    fn decay_halves_per_half_life() {
        assert_eq!(decay(0, 10), 1.0);
        assert!((decay(10, 10) - 0.5).abs() < 1e-15);
        assert!((decay(30, 10) - 0.125).abs() < 1e-15);
    }

    #[test]
    fn channels_sorted_by_name() {
        let v = distinct_channels(
            [Channel::Web, Channel::Email, Channel::Web, Channel::Sms].into_iter(),
        );
        assert_eq!(
            v.iter().collect::<Vec<_>>(),
            vec![Channel::Email, Channel::Sms, Channel::Web]
        );
        let all: Vec<&str> = Channel::ALL
            .iter()
            .copied()
            .collect::<ChannelSet>()
            .iter()
            .map(|c| c.as_str())
            .collect();
        let mut sorted = all.clone();
        sorted.sort();
        assert_eq!(all, sorted);
    }
}
