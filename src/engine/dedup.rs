//! Per-customer duplicate detection: the hashes of the `event_id`s of the
//! customer's last 32 accepted events (SPEC 2, 7).
//!
//! A 48-bit XXH3 hash (stable across versions and machines, so it survives
//! a changelog restore) stands in for the id: 6 bytes per remembered event
//! instead of the id itself. A new event is mistaken for a duplicate only
//! if its hash equals one of the customer's 32 remembered ones: probability
//! 32 × 2^-48 ≈ 1.1e-13 per event (one in ~270 years at a billion events
//! a day), in exchange for 64 bytes less state per active customer.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::signals::List;

/// How many accepted events are remembered per customer.
pub const WINDOW: usize = 32;

/// Hash of an event id (48 bits are kept).
pub fn hash_id(event_id: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(event_id.as_bytes())
}

/// The 48 bits of a hash that are remembered.
fn short(h: u64) -> [u8; 6] {
    let b = h.to_le_bytes();
    [b[0], b[1], b[2], b[3], b[4], b[5]]
}

/// The last [`WINDOW`] event-id hashes, oldest first. When full, an insert
/// shifts the list down by one (a 186-byte move) rather than keeping a ring
/// position; a full list is one 192-byte allocation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dedup {
    ring: List<[u8; 6]>,
}

impl Dedup {
    /// Whether the hash is among the remembered ones.
    pub fn contains(&self, h: u64) -> bool {
        let s = short(h);
        self.ring.contains(&s)
    }

    /// Remembers a hash, forgetting the oldest beyond the window.
    pub fn insert(&mut self, h: u64) {
        let s = short(h);
        if self.ring.len() < WINDOW {
            self.ring.push(s);
        } else {
            self.ring.copy_within(1.., 0);
            if let Some(last) = self.ring.last_mut() {
                *last = s;
            }
        }
    }

    /// The first remembered hash (read early, as a prefetch).
    pub fn touch(&self) -> Option<[u8; 6]> {
        self.ring.first().copied()
    }

    /// Heap bytes used.
    pub fn heap_bytes(&self) -> usize {
        self.ring.heap_bytes()
    }
}

/// The changelog form: the hashes as 48-bit integers, and the position of
/// the oldest (always 0 now; state format 2 kept a ring position there).
#[derive(Serialize, Deserialize)]
struct Persisted {
    ring: Vec<u64>,
    next: u8,
}

impl Serialize for Dedup {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let ring = self
            .ring
            .iter()
            .map(|b| {
                let mut w = [0u8; 8];
                w[..6].copy_from_slice(b);
                u64::from_le_bytes(w)
            })
            .collect();
        Persisted { ring, next: 0 }.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Dedup {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let p = Persisted::deserialize(d)?;
        let mut ring: List<[u8; 6]> = p.ring.into_iter().take(WINDOW).map(short).collect();
        if ring.len() == WINDOW {
            ring.rotate_left(usize::from(p.next) % WINDOW);
        }
        Ok(Dedup { ring })
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
        let back: Dedup = serde_json::from_str(&serde_json::to_string(&d).unwrap()).unwrap();
        assert_eq!(back, d);
    }

    #[test]
    fn a_restored_ring_one_short_of_full_still_grows() {
        let mut d = Dedup::default();
        for i in 0..30u64 {
            d.insert(i);
        }
        // A restored ring's capacity is exactly its length.
        let mut back: Dedup = serde_json::from_str(&serde_json::to_string(&d).unwrap()).unwrap();
        for i in 30..35u64 {
            back.insert(i);
        }
        assert!(!back.contains(2) && back.contains(3) && back.contains(34));
    }

    #[test]
    fn a_format_2_ring_position_is_read_as_the_oldest() {
        // Ring of 32 where slot 5 is the oldest (the next to be replaced).
        let ring: Vec<u64> = (0..32u64)
            .map(|i| if i < 5 { 100 + i } else { i })
            .collect();
        let json = serde_json::json!({ "ring": ring, "next": 5 }).to_string();
        let mut d: Dedup = serde_json::from_str(&json).unwrap();
        d.insert(999);
        assert!(!d.contains(5), "the oldest went first");
        assert!(d.contains(6) && d.contains(100) && d.contains(999));
    }
}
