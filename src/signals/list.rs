//! [`List`]: a per-customer list whose allocation holds exactly its
//! elements.
//!
//! A customer's longest lists (its last 32 event-id hashes, its touches of
//! the last 30 d, its outbound messages of the last 7 d) change by one
//! element at a time, and there are millions of them. A `Vec` or `ThinVec`
//! keeps a length, a capacity and spare slots; here the allocation is a
//! boxed slice of exactly the elements, with nothing else in it, and each
//! change resizes it. With mimalloc a resize within the allocation's size
//! class stays in place, so most of them cost no copy.

use serde::{Deserialize, Serialize};

/// A list stored as a boxed slice of exactly its elements (no allocation
/// when empty). Serialized as a plain sequence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct List<T>(Box<[T]>);

impl<T> Default for List<T> {
    fn default() -> Self {
        List(Box::default())
    }
}

impl<T> List<T> {
    /// Changes the list as a `Vec`, then gives back any spare room.
    fn edit<R>(&mut self, f: impl FnOnce(&mut Vec<T>) -> R) -> R {
        let mut v = std::mem::take(&mut self.0).into_vec();
        let r = f(&mut v);
        self.0 = v.into_boxed_slice();
        r
    }

    /// Inserts an element at `i` (shifting the later ones).
    pub fn insert(&mut self, i: usize, x: T) {
        self.edit(|v| {
            v.reserve_exact(1);
            v.insert(i, x)
        })
    }

    /// Removes the elements at positions `start..end`.
    pub fn remove_range(&mut self, start: usize, end: usize) {
        if start < end {
            self.edit(|v| {
                let end = end.min(v.len());
                v.drain(start.min(end)..end);
            })
        }
    }

    /// Keeps the elements for which `f` is true.
    pub fn retain(&mut self, f: impl FnMut(&T) -> bool) {
        self.edit(|v| v.retain(f))
    }

    /// Heap bytes used (the elements; nothing when empty).
    pub fn heap_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.0)
    }
}

impl<T> std::ops::Deref for List<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.0
    }
}

impl<T> std::ops::DerefMut for List<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.0
    }
}

impl<T> FromIterator<T> for List<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        List(iter.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_exactly_its_elements() {
        let mut l = List::default();
        assert_eq!(l.heap_bytes(), 0);
        for (i, x) in [5u64, 1, 9].into_iter().enumerate() {
            l.insert(i, x);
        }
        l.insert(1, 7);
        assert_eq!(&*l, &[5, 7, 1, 9]);
        assert_eq!(l.heap_bytes(), 32);
        l.retain(|&x| x != 1);
        l.remove_range(0, 1);
        assert_eq!(&*l, &[7, 9]);
        l.remove_range(0, 5);
        assert!(l.is_empty());
        assert_eq!(l.heap_bytes(), 0);
        let json = serde_json::to_string(&List::from_iter([1u8, 2])).unwrap();
        assert_eq!(json, "[1,2]");
        assert_eq!(
            serde_json::from_str::<List<u8>>(&json).unwrap(),
            List::from_iter([1, 2])
        );
    }
}
