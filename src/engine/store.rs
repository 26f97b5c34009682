//! Where a partition's customers live: fixed-size chunks of slots, found
//! through an index of slot numbers keyed by the customer id's hash.
//!
//! Timers name customers by slot, so a slot never moves while its customer
//! lives. Chunks grow one at a time (never a copy of the whole population,
//! never more than one chunk of slack), and the index holds only a 4-byte
//! slot per customer: the id it is compared with is the customer's own.

use hashbrown::HashTable;

use super::state::Customer;

/// Slots per chunk: as many as fit in 64 KiB. A chunk of a round number
/// of slots (256 × 160 B) is not a size the allocator has a class for, and
/// rounding it up cost a fifth of the chunk; 64 KiB is one.
const CHUNK: usize = (64 << 10) / std::mem::size_of::<Option<Customer>>();

/// The customers of one partition, by slot and by id.
#[derive(Debug, Default)]
pub struct Store {
    index: HashTable<u32>,
    hasher: ahash::RandomState,
    chunks: Vec<Box<[Option<Customer>]>>,
    /// Slots handed out so far (live or free).
    len: u32,
    free: Vec<u32>,
}

fn at(chunks: &[Box<[Option<Customer>]>], slot: u32) -> Option<&Customer> {
    let s = slot as usize;
    chunks.get(s / CHUNK)?.get(s % CHUNK)?.as_ref()
}

impl Store {
    /// Live customers.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether there is no customer.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The slot of a customer, by id.
    pub fn find(&self, id: &str) -> Option<u32> {
        let id = id.as_bytes();
        let h = self.hasher.hash_one(id);
        let chunks = &self.chunks;
        self.index
            .find(h, |&s| {
                at(chunks, s).is_some_and(|c| c.lists.id_bytes() == id)
            })
            .copied()
    }

    /// The customer in a slot.
    pub fn get(&self, slot: u32) -> Option<&Customer> {
        at(&self.chunks, slot)
    }

    /// The customer in a slot, mutably.
    pub fn get_mut(&mut self, slot: u32) -> Option<&mut Customer> {
        let s = slot as usize;
        self.chunks.get_mut(s / CHUNK)?.get_mut(s % CHUNK)?.as_mut()
    }

    fn cell(&mut self, slot: u32) -> &mut Option<Customer> {
        let s = slot as usize;
        if s / CHUNK == self.chunks.len() {
            self.chunks.push(
                (0..CHUNK)
                    .map(|_| None)
                    .collect::<Vec<_>>()
                    .into_boxed_slice(),
            );
        }
        &mut self.chunks[s / CHUNK][s % CHUNK]
    }

    /// Adds a customer whose id is not in the store; returns its slot.
    pub fn insert(&mut self, c: Customer) -> u32 {
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.len += 1;
                self.len - 1
            }
        };
        let h = self.hasher.hash_one(c.lists.id_bytes());
        *self.cell(slot) = Some(c);
        let Store {
            index,
            hasher,
            chunks,
            ..
        } = self;
        index.insert_unique(h, slot, |&s| {
            at(chunks, s).map_or(0, |c| hasher.hash_one(c.lists.id_bytes()))
        });
        slot
    }

    /// Removes the customer in a slot; the slot is reused later.
    pub fn remove(&mut self, slot: u32) -> Option<Customer> {
        let s = slot as usize;
        let c = self.chunks.get_mut(s / CHUNK)?.get_mut(s % CHUNK)?.take()?;
        let h = self.hasher.hash_one(c.lists.id_bytes());
        if let Ok(entry) = self.index.find_entry(h, |&x| x == slot) {
            entry.remove();
        }
        self.free.push(slot);
        Some(c)
    }

    /// Up to about `max` customers at evenly spaced slots (every one when
    /// the store has no more slots than that).
    pub fn spread(&self, max: usize) -> impl Iterator<Item = &Customer> {
        let slots = self.len as usize;
        let stride = slots.div_ceil(max.max(1)).max(1);
        (0..slots)
            .step_by(stride)
            .filter_map(|s| at(&self.chunks, s as u32))
    }

    /// Every live customer, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = &Customer> {
        self.chunks.iter().flat_map(|c| c.iter().flatten())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_reads_every_customer_of_a_small_store_and_about_max_of_a_large_one() {
        let mut s = Store::default();
        for i in 0..100 {
            s.insert(Customer::new(&format!("c{i}"), 0));
        }
        s.remove(5);
        assert_eq!(s.spread(1024).count(), 99);
        for i in 100..10_000 {
            s.insert(Customer::new(&format!("c{i}"), 0));
        }
        let n = s.spread(1024).count();
        assert!((900..=1024).contains(&n), "{n} sampled");
        let ids: std::collections::HashSet<_> = s.spread(1024).map(Customer::id).collect();
        assert!(
            ids.contains("c0") && ids.iter().any(|id| id.len() == 5),
            "spread over the store"
        );
    }

    #[test]
    fn insert_find_remove_reuse() {
        let mut s = Store::default();
        let ids: Vec<String> = (0..1000).map(|i| format!("c{i}")).collect();
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(s.insert(Customer::new(id, 0)), i as u32);
        }
        assert_eq!(s.len(), 1000);
        assert_eq!(s.find("c700"), Some(700));
        assert_eq!(s.find("nope"), None);
        assert_eq!(
            s.remove(700).map(|c| c.id().to_string()),
            Some("c700".into())
        );
        assert_eq!(s.find("c700"), None);
        assert!(s.get(700).is_none());
        assert_eq!(s.insert(Customer::new("again", 0)), 700);
        assert_eq!(s.find("again"), Some(700));
        assert_eq!(s.find("c699"), Some(699));
        assert_eq!(s.iter().count(), 1000);
    }
}
