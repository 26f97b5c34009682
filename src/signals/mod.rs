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
pub mod engagement;
pub mod fatigue;
pub mod journey;
pub mod survey;

use serde::{Deserialize, Serialize};
use thin_vec::ThinVec;

use crate::model::{Channel, ChannelSet, EventTime};

/// An event time and a 4-bit tag (a channel) in 8 bytes: `t * 16 + tag`.
/// Valid for |t| < 2^59 ms, which validation guarantees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Packed(std::num::NonZeroI64);

impl Packed {
    /// Packs a time and a channel.
    pub fn new(t: EventTime, channel: Channel) -> Self {
        // Tag 15 is never a channel (there are 12), so the value is never 0:
        // store tag + 1 in the low 4 bits.
        let v = t * 16 + channel as i64 + 1;
        Packed(std::num::NonZeroI64::new(v).unwrap_or(std::num::NonZeroI64::MIN))
    }

    fn raw(self) -> i64 {
        self.0.get() - 1
    }

    /// The time.
    pub fn time(self) -> EventTime {
        self.raw().div_euclid(16)
    }

    /// The channel.
    pub fn channel(self) -> Channel {
        Channel::from_index(self.raw().rem_euclid(16) as usize).unwrap_or(Channel::Other)
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

/// Grows a vector by a quarter (at least 4) instead of doubling: per-
/// customer vectors are small and many, so slack matters more than the
/// few extra reallocations.
pub fn reserve_compact<T>(v: &mut ThinVec<T>) {
    if v.len() == v.capacity() {
        v.reserve_exact((v.capacity() / 4).max(4));
    }
}

/// Inserts into a vector sorted by time, after every entry with the same
/// time (so ties keep arrival order).
pub fn insert_sorted(v: &mut ThinVec<Packed>, p: Packed) {
    let t = p.time();
    reserve_compact(v);
    if v.last().map_or(true, |l| l.time() <= t) {
        v.push(p);
    } else {
        let i = v.partition_point(|x| x.time() <= t);
        v.insert(i, p);
    }
}

/// Drops entries with time <= `cutoff` from the front of a time-sorted vector.
pub fn prune_until(v: &mut ThinVec<Packed>, cutoff: EventTime) {
    let n = v.partition_point(|x| x.time() <= cutoff);
    if n > 0 {
        v.drain(..n);
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
        for t in [-1_000_000_123i64, -1, 0, 1, 1_700_000_000_123] {
            for c in Channel::ALL {
                let p = Packed::new(t, *c);
                assert_eq!((p.time(), p.channel()), (t, *c));
            }
        }
    }

    #[test]
    fn sorted_insert_keeps_ties_in_arrival_order() {
        let mut v = ThinVec::new();
        insert_sorted(&mut v, Packed::new(10, Channel::Web));
        insert_sorted(&mut v, Packed::new(5, Channel::Sms));
        insert_sorted(&mut v, Packed::new(10, Channel::Email));
        insert_sorted(&mut v, Packed::new(7, Channel::Push));
        let got: Vec<_> = v.iter().map(|p| (p.time(), p.channel())).collect();
        assert_eq!(
            got,
            vec![
                (5, Channel::Sms),
                (7, Channel::Push),
                (10, Channel::Web),
                (10, Channel::Email)
            ]
        );
        prune_until(&mut v, 7);
        assert_eq!(v.len(), 2);
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
