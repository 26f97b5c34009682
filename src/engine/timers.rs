//! Event-time timers indexed by due time.
//!
//! One ordered map `(due, seq) → target` for a whole partition; it fires in
//! that order, so ties fire in the order they were set and output is
//! deterministic. Nothing here scans customers.
//!
//! Most timers only ever move later (a cart's activity extends it, a
//! customer's new touch postpones "inactive"). Moving an entry in the map on
//! every touchpoint would cost a removal and an insertion each time, so a
//! [`LazyTimer`] keeps its *logical* key (what the timer is set to) apart
//! from its *queued* key (the entry in the map). Moving a timer later only
//! changes the logical key; when the stale queued entry comes due it is put
//! back under the logical key, which keeps the sequence number the timer
//! was set with, so the firing order is exactly the one of an eager timer.
//! Moving a timer earlier replaces the queued entry at once. Invariant:
//! `queued.due <= logical.due` whenever both are set.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::EventTime;

/// Position of a timer in the queue: due time, then the order it was set in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TimerKey {
    /// When the timer is due (event time).
    pub due: EventTime,
    /// Sequence number; higher means set later.
    pub seq: u64,
}

impl TimerKey {
    /// The "no timer" value.
    pub const NONE: TimerKey = TimerKey {
        due: EventTime::MIN,
        seq: 0,
    };

    /// Whether this key names a timer.
    pub fn is_set(self) -> bool {
        self.due != EventTime::MIN
    }
}

/// Sequence bit that orders state-TTL checks after every other timer due at
/// the same instant.
pub const TTL_SEQ_BIT: u64 = 1 << 63;

/// What a timer is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TimerKind {
    /// A cart's abandonment timer.
    Cart,
    /// The customer's single churn re-evaluation timer.
    Churn,
    /// A campaign click's conversion-window timer.
    Survey,
    /// State-TTL check (never visible in output).
    Ttl,
}

impl TimerKind {
    /// Name used in derived event ids.
    pub fn as_str(self) -> &'static str {
        match self {
            TimerKind::Cart => "cart",
            TimerKind::Churn => "churn",
            TimerKind::Survey => "survey",
            TimerKind::Ttl => "ttl",
        }
    }
}

/// Whom a queued entry belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerTarget {
    /// Customer slot in the partition's state.
    pub slot: u32,
    /// Which of the customer's timers.
    pub kind: TimerKind,
}

/// A timer that may be moved often; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LazyTimer {
    /// What the timer is set to (`NONE` when unset).
    pub logical: TimerKey,
    /// The entry in the queue (`NONE` when none); not persisted.
    #[serde(skip, default = "none_key")]
    pub queued: TimerKey,
}

fn none_key() -> TimerKey {
    TimerKey::NONE
}

impl Default for LazyTimer {
    fn default() -> Self {
        LazyTimer {
            logical: TimerKey::NONE,
            queued: TimerKey::NONE,
        }
    }
}

impl LazyTimer {
    /// Due time if set.
    pub fn due(&self) -> Option<EventTime> {
        self.logical.is_set().then_some(self.logical.due)
    }
}

/// What to do with an entry popped from the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PopAction {
    /// The timer is due: run it.
    Fire,
    /// The entry was stale; it has been queued again under its logical key.
    Requeued,
    /// The timer was cancelled; nothing to do.
    Stale,
}

/// The per-partition timer queue.
#[derive(Debug, Default, Clone)]
pub struct TimerQueue {
    map: BTreeMap<TimerKey, TimerTarget>,
    next_seq: u64,
    /// TTL checks have their own counter so that they never shift the
    /// sequence numbers of visible timers (restored runs rebuild them).
    next_ttl_seq: u64,
}

impl TimerQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of queued entries (pending timers, including stale ones).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The next sequence number to be handed out.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Sets the next sequence number (restore from a checkpoint).
    pub fn set_next_seq(&mut self, seq: u64) {
        self.next_seq = seq;
    }

    /// Makes sure future sequence numbers are above `seq` (restore).
    pub fn bump_seq(&mut self, seq: u64) {
        let seq = seq & !TTL_SEQ_BIT;
        if seq >= self.next_seq {
            self.next_seq = seq + 1;
        }
    }

    fn take_seq(&mut self) -> u64 {
        let s = self.next_seq;
        self.next_seq += 1;
        s
    }

    /// Sets (or moves) a lazy timer to `due`. Setting it to the time it is
    /// already set to changes nothing (it keeps its place among ties).
    pub fn set(&mut self, t: &mut LazyTimer, due: EventTime, target: TimerTarget) {
        if t.logical.is_set() && t.logical.due == due {
            return;
        }
        let key = TimerKey {
            due,
            seq: self.take_seq(),
        };
        t.logical = key;
        if t.queued.is_set() {
            if t.queued.due <= due {
                return; // the stale entry will requeue itself
            }
            self.map.remove(&t.queued);
        }
        self.map.insert(key, target);
        t.queued = key;
    }

    /// Cancels a lazy timer and drops its queued entry.
    pub fn cancel(&mut self, t: &mut LazyTimer) {
        if t.queued.is_set() {
            self.map.remove(&t.queued);
        }
        *t = LazyTimer::default();
    }

    /// Re-creates the queued entry of a restored lazy timer.
    pub fn restore(&mut self, t: &mut LazyTimer, target: TimerTarget) {
        if t.logical.is_set() {
            self.bump_seq(t.logical.seq);
            self.map.insert(t.logical, target);
            t.queued = t.logical;
        }
    }

    /// Adds a fixed timer (one that is never moved) and returns its key.
    pub fn add_fixed(&mut self, due: EventTime, target: TimerTarget) -> TimerKey {
        let key = TimerKey {
            due,
            seq: self.take_seq(),
        };
        self.map.insert(key, target);
        key
    }

    /// Re-inserts a fixed timer with its original key (restore).
    pub fn restore_fixed(&mut self, key: TimerKey, target: TimerTarget) {
        self.bump_seq(key.seq);
        self.map.insert(key, target);
    }

    /// Adds a TTL check at `due`; it orders after other timers due then.
    pub fn add_ttl(&mut self, due: EventTime, slot: u32) -> TimerKey {
        let key = TimerKey {
            due,
            seq: self.next_ttl_seq | TTL_SEQ_BIT,
        };
        self.next_ttl_seq += 1;
        self.map.insert(
            key,
            TimerTarget {
                slot,
                kind: TimerKind::Ttl,
            },
        );
        key
    }

    /// Removes an entry by key (fixed timers, TTL checks).
    pub fn remove(&mut self, key: TimerKey) {
        self.map.remove(&key);
    }

    /// The earliest entry due at or before `watermark`, removed from the queue.
    pub fn pop_due(&mut self, watermark: EventTime) -> Option<(TimerKey, TimerTarget)> {
        let (&key, _) = self.map.first_key_value()?;
        if key.due > watermark {
            return None;
        }
        self.map.pop_first()
    }

    /// Decides what a popped entry means for the lazy timer it belongs to.
    pub fn resolve(
        &mut self,
        t: &mut LazyTimer,
        popped: TimerKey,
        target: TimerTarget,
    ) -> PopAction {
        if t.queued == popped {
            t.queued = TimerKey::NONE;
        }
        if !t.logical.is_set() {
            return PopAction::Stale;
        }
        if t.logical == popped {
            t.logical = TimerKey::NONE;
            return PopAction::Fire;
        }
        // Logical is later than the popped entry: queue it under its own key.
        if !t.queued.is_set() {
            self.map.insert(t.logical, target);
            t.queued = t.logical;
        }
        PopAction::Requeued
    }

    /// Earliest due time queued, if any.
    pub fn peek_due(&self) -> Option<EventTime> {
        self.map.first_key_value().map(|(k, _)| k.due)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tgt(slot: u32) -> TimerTarget {
        TimerTarget {
            slot,
            kind: TimerKind::Cart,
        }
    }

    /// Drains everything due at `wm`, resolving against the given timers.
    fn fire_all(
        q: &mut TimerQueue,
        timers: &mut [LazyTimer],
        wm: EventTime,
    ) -> Vec<(u32, EventTime)> {
        let mut fired = vec![];
        while let Some((key, target)) = q.pop_due(wm) {
            let t = &mut timers[target.slot as usize];
            if q.resolve(t, key, target) == PopAction::Fire {
                fired.push((target.slot, key.due));
            }
        }
        fired
    }

    #[test]
    fn lazy_move_later_fires_once_at_new_time() {
        let mut q = TimerQueue::new();
        let mut ts = [LazyTimer::default()];
        q.set(&mut ts[0], 100, tgt(0));
        q.set(&mut ts[0], 200, tgt(0));
        assert_eq!(q.len(), 1);
        assert_eq!(fire_all(&mut q, &mut ts, 150), vec![]);
        assert_eq!(q.len(), 1, "requeued under the logical key");
        assert_eq!(fire_all(&mut q, &mut ts, 200), vec![(0, 200)]);
        assert!(q.is_empty());
    }

    #[test]
    fn move_earlier_replaces_entry() {
        let mut q = TimerQueue::new();
        let mut ts = [LazyTimer::default()];
        q.set(&mut ts[0], 200, tgt(0));
        q.set(&mut ts[0], 100, tgt(0));
        assert_eq!(q.len(), 1);
        assert_eq!(fire_all(&mut q, &mut ts, 100), vec![(0, 100)]);
        assert!(q.is_empty());
    }

    #[test]
    fn ties_fire_in_the_order_set_even_after_lazy_moves() {
        let mut q = TimerQueue::new();
        let mut ts = [LazyTimer::default(), LazyTimer::default()];
        // Timer 0 is set first at 50, then moved to 300 (set order: 2nd).
        q.set(&mut ts[0], 50, tgt(0));
        q.set(&mut ts[1], 300, tgt(1)); // set order: 1st at 300
        q.set(&mut ts[0], 300, tgt(0)); // set order: 2nd at 300
        assert_eq!(fire_all(&mut q, &mut ts, 1000), vec![(1, 300), (0, 300)]);
    }

    #[test]
    fn cancel_removes() {
        let mut q = TimerQueue::new();
        let mut ts = [LazyTimer::default()];
        q.set(&mut ts[0], 100, tgt(0));
        q.set(&mut ts[0], 200, tgt(0));
        q.cancel(&mut ts[0]);
        assert!(q.is_empty());
        assert_eq!(fire_all(&mut q, &mut ts, 1000), vec![]);
    }

    #[test]
    fn ttl_orders_after_regular_timers_at_same_due() {
        let mut q = TimerQueue::new();
        let ttl = q.add_ttl(100, 7);
        let fixed = q.add_fixed(100, tgt(1));
        assert_eq!(q.pop_due(100).unwrap().0, fixed);
        assert_eq!(q.pop_due(100).unwrap().0, ttl);
    }
}
