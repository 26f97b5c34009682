//! Per-customer duplicate detection: the hashes of the `event_id`s of the
//! customer's last 32 accepted events (SPEC 2, 7).
//!
//! A 64-bit XXH3 hash (stable across versions and machines, so it survives
//! a changelog restore) stands in for the id: 8 bytes per remembered event
//! instead of the id itself. Two distinct ids of one customer collide with
//! probability ~2^-64 per pair.

use serde::{Deserialize, Serialize};
use thin_vec::ThinVec;

/// How many accepted events are remembered per customer.
pub const WINDOW: usize = 32;

/// Hash of an event id.
pub fn hash_id(event_id: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(event_id.as_bytes())
}

/// A ring of the last [`WINDOW`] event-id hashes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dedup {
    ring: ThinVec<u64>,
    next: u8,
}

impl Dedup {
    /// Whether the hash is among the remembered ones.
    pub fn contains(&self, h: u64) -> bool {
        self.ring.contains(&h)
    }

    /// Remembers a hash, forgetting the oldest beyond the window.
    pub fn insert(&mut self, h: u64) {
        if self.ring.len() < WINDOW {
            if self.ring.len() == self.ring.capacity() {
                let grow = (self.ring.capacity() / 2).clamp(4, WINDOW - self.ring.len());
                self.ring.reserve_exact(grow);
            }
            self.ring.push(h);
        } else {
            let i = self.next as usize % WINDOW;
            self.ring[i] = h;
            self.next = ((i + 1) % WINDOW) as u8;
        }
    }

    /// Heap bytes used.
    pub fn heap_bytes(&self) -> usize {
        crate::signals::thin_bytes(&self.ring)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_of_32() {
        let mut d = Dedup::default();
        for i in 0..40u64 {
            d.insert(i);
        }
        for i in 0..8 {
            assert!(!d.contains(i), "{i} forgotten");
        }
        for i in 8..40 {
            assert!(d.contains(i), "{i} remembered");
        }
    }
}
