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

/// A list stored as a boxed slice of exactly its elements (no allocation
/// when empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct List<T>(Box<[T]>);

impl<T> Default for List<T> {
    fn default() -> Self {
        List(Box::default())
    }
}

impl<T: Copy> List<T> {
    /// Replaces the elements at positions `range` (clamped to the list)
    /// with `with`, then gives back any spare room.
    pub fn splice(&mut self, range: std::ops::Range<usize>, with: &[T]) {
        let end = range.end.min(self.0.len());
        let start = range.start.min(end);
        if start == end && with.is_empty() {
            return;
        }
        let mut v = std::mem::take(&mut self.0).into_vec();
        let (old_len, removed, added) = (v.len(), end - start, with.len());
        if added >= removed {
            // Grow by the difference (any values), move the tail up.
            let grow = added - removed;
            v.reserve_exact(grow);
            v.extend_from_slice(&with[..grow]);
            v.copy_within(end..old_len, end + grow);
        } else {
            v.copy_within(end..old_len, start + added);
            v.truncate(old_len - (removed - added));
        }
        v[start..start + added].copy_from_slice(with);
        self.0 = v.into_boxed_slice();
    }
}

impl<T: Copy> List<T> {
    /// Moves the elements to a new allocation of exactly their size. An
    /// allocator may shrink a block in place and keep its whole size class
    /// (mimalloc does down to half of it); this gives the rest back after
    /// a list has shed much of itself.
    pub fn compact(&mut self) {
        if !self.0.is_empty() {
            self.0 = Box::from(&*self.0);
        }
    }
}

impl<T> List<T> {
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
            l.splice(i..i, &[x]);
        }
        l.splice(1..1, &[7, 8]);
        assert_eq!(&*l, &[5, 7, 8, 1, 9]);
        assert_eq!(l.heap_bytes(), 40);
        l.splice(2..4, &[]);
        l.splice(0..1, &[]);
        assert_eq!(&*l, &[7, 9]);
        l.splice(1..9, &[3]);
        assert_eq!(&*l, &[7, 3]);
        l.splice(0..5, &[]);
        assert!(l.is_empty());
        assert_eq!(l.heap_bytes(), 0);
        assert_eq!(List::from_iter([1u8, 2]).heap_bytes(), 2);
    }

    proptest::proptest! {
        #[test]
        fn splice_is_vec_splice(
            ops in proptest::collection::vec(
                (0usize..12, 0usize..12, proptest::collection::vec(0u8..255, 0..8)),
                0..40,
            )
        ) {
            let mut l = List::default();
            let mut model: Vec<u8> = Vec::new();
            for (a, b, with) in ops {
                l.splice(a..b, &with);
                let end = b.min(model.len());
                let start = a.min(end);
                model.splice(start..end, with.iter().copied());
                proptest::prop_assert_eq!(&*l, &model[..]);
                proptest::prop_assert_eq!(l.heap_bytes(), model.len());
            }
        }
    }
}
