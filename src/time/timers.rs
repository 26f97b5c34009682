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
//!
//! Every customer has a churn timer, most of them weeks ahead. Those wait
//! in *staging*: one bucket per day of due time, holding only the 4-byte
//! slots of the customers whose timers fall in it, instead of a 24-byte
//! entry in the ordered map (plus its share of tree nodes). When the
//! watermark enters a day, the engine loads that day's bucket: each
//! customer still staged there gets its map entry under its logical key,
//! before any timer of that day can fire, so the firing order is the one of
//! the map alone. A staged timer's `queued` key is the bucket's first
//! millisecond with the [`STAGED`] sequence number; a slot whose customer
//! no longer holds that key (its timer moved earlier or was cancelled, or
//! the slot changed hands) is stale and skipped when the bucket loads.

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

/// Width of a staging bucket.
pub const BUCKET_MS: EventTime = crate::model::DAY_MS;

/// Sequence number of a `queued` key that names a staging bucket.
pub const STAGED: u64 = u64::MAX;

fn bucket(due: EventTime) -> i64 {
    due.div_euclid(BUCKET_MS)
}

fn bucket_start(b: i64) -> EventTime {
    b.saturating_mul(BUCKET_MS)
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
    /// Churn timers due in days not loaded yet: customer slots per day.
    staged: BTreeMap<i64, Vec<u32>>,
    /// Slots in `staged` (stale ones included).
    staged_len: usize,
    /// Slots in `staged` whose timer has since moved earlier, been
    /// cancelled or gone with its customer: skipped when their day loads.
    stale: usize,
    /// Days up to this one have been loaded (`None`: none yet).
    loaded: Option<i64>,
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

    /// Number of pending timers (queued or staged; not the stale slots
    /// staging leaves behind, which [`TimerQueue::approx_bytes`] counts).
    pub fn len(&self) -> usize {
        (self.map.len() + self.staged_len).saturating_sub(self.stale)
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Approximate heap bytes: map entries with their share of tree nodes,
    /// staged slots with their share of spare room.
    pub fn approx_bytes(&self) -> usize {
        self.map.len() * 48 + self.staged_len * 6 + self.staged.len() * 64
    }

    /// Queues a lazy timer under its logical key (which is set; `queued`
    /// is not): staged when it is a churn timer of a day not loaded yet.
    fn place(&mut self, t: &mut LazyTimer, target: TimerTarget) {
        let b = bucket(t.logical.due);
        if target.kind == TimerKind::Churn && self.loaded.is_none_or(|l| b > l) {
            let slots = self.staged.entry(b).or_default();
            if slots.len() == slots.capacity() {
                slots.reserve_exact((slots.len() / 8).max(16));
            }
            slots.push(target.slot);
            self.staged_len += 1;
            t.queued = TimerKey {
                due: bucket_start(b),
                seq: STAGED,
            };
        } else {
            self.map.insert(t.logical, target);
            t.queued = t.logical;
        }
    }

    /// Drops a lazy timer's queued entry (a staged slot just goes stale).
    fn unqueue(&mut self, t: &mut LazyTimer) {
        if t.queued.is_set() {
            if t.queued.seq == STAGED {
                self.stale += 1;
            } else {
                self.map.remove(&t.queued);
            }
        }
        t.queued = TimerKey::NONE;
    }

    /// Takes the staged days the watermark has entered (and marks them
    /// loaded). The caller passes each slot's timer to [`TimerQueue::load`]
    /// before popping anything due at `watermark`.
    pub fn take_staged(&mut self, watermark: EventTime) -> Vec<(i64, Vec<u32>)> {
        let wb = bucket(watermark);
        if self.loaded.is_some_and(|l| l >= wb) {
            return Vec::new();
        }
        self.loaded = Some(wb);
        let mut out = Vec::new();
        while let Some(e) = self.staged.first_entry() {
            if *e.key() > wb {
                break;
            }
            let (b, slots) = e.remove_entry();
            self.staged_len -= slots.len();
            out.push((b, slots));
        }
        out
    }

    /// Loads a staged timer from day `b` into the map (or stages it again
    /// for a later day it was moved to); a timer not staged there is left
    /// alone (the slot was stale).
    pub fn load(&mut self, t: &mut LazyTimer, b: i64, target: TimerTarget) {
        if t.queued.seq != STAGED || t.queued.due != bucket_start(b) {
            self.skip_stale();
            return;
        }
        t.queued = TimerKey::NONE;
        if t.logical.is_set() {
            self.place(t, target);
        }
    }

    /// A slot taken from a staged day that no longer names a timer (its
    /// customer is gone).
    pub fn skip_stale(&mut self) {
        debug_assert!(self.stale > 0, "a stale slot was counted");
        self.stale = self.stale.saturating_sub(1);
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
            self.unqueue(t);
        }
        self.place(t, target);
    }

    /// Cancels a lazy timer and drops its queued entry.
    pub fn cancel(&mut self, t: &mut LazyTimer) {
        self.unqueue(t);
        *t = LazyTimer::default();
    }

    /// Re-creates the queued entry of a restored lazy timer.
    pub fn restore(&mut self, t: &mut LazyTimer, target: TimerTarget) {
        t.queued = TimerKey::NONE;
        if t.logical.is_set() {
            self.bump_seq(t.logical.seq);
            self.place(t, target);
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
            self.place(t, target);
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

    /// Fires what is due at `wm` the way the engine does: staged days
    /// first, then the queue.
    fn fire_churn(
        q: &mut TimerQueue,
        timers: &mut [LazyTimer],
        wm: EventTime,
    ) -> Vec<(u32, EventTime)> {
        for (day, slots) in q.take_staged(wm) {
            for slot in slots {
                let target = TimerTarget {
                    slot,
                    kind: TimerKind::Churn,
                };
                q.load(&mut timers[slot as usize], day, target);
            }
        }
        fire_all(q, timers, wm)
    }

    #[test]
    fn staged_churn_timers_fire_as_an_ordered_map_would() {
        // Churn timers set, moved both ways and cancelled while the
        // watermark advances: they fire at their last setting, in (due,
        // order set) order, exactly like a plain ordered map of logical keys.
        let day = BUCKET_MS;
        let mut q = TimerQueue::new();
        let mut ts = vec![LazyTimer::default(); 40];
        let mut model: std::collections::BTreeMap<TimerKey, u32> = Default::default();
        let mut fired = vec![];
        let mut want = vec![];
        let mut wm = 0;
        let mut x = 11u64;
        for _ in 0..3_000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let i = (x >> 33) as usize % ts.len();
            let target = TimerTarget {
                slot: i as u32,
                kind: TimerKind::Churn,
            };
            match (x >> 20) % 10 {
                0 => {
                    q.cancel(&mut ts[i]);
                    model.retain(|_, v| *v != i as u32);
                }
                1..=2 => {
                    wm += ((x >> 40) % (3 * day as u64)) as i64;
                    fired.extend(fire_churn(&mut q, &mut ts, wm));
                    while let Some((k, v)) = model.first_key_value().map(|(k, v)| (*k, *v)) {
                        if k.due > wm {
                            break;
                        }
                        model.remove(&k);
                        want.push((v, k.due));
                    }
                }
                _ => {
                    let due = wm + 1 + ((x >> 24) % (6 * day as u64)) as i64;
                    q.set(&mut ts[i], due, target);
                    model.retain(|_, v| *v != i as u32);
                    model.insert(ts[i].logical, i as u32);
                }
            }
            assert_eq!(q.len(), model.len(), "pending timers, stale slots apart");
        }
        assert!(
            want.len() > 100,
            "the test exercises firing: {}",
            want.len()
        );
        assert_eq!(fired, want);
    }

    #[test]
    fn a_stale_staged_slot_leaves_the_next_owner_alone() {
        let day = BUCKET_MS;
        let mut q = TimerQueue::new();
        let mut ts = [LazyTimer::default()];
        let churn = TimerTarget {
            slot: 0,
            kind: TimerKind::Churn,
        };
        assert!(fire_churn(&mut q, &mut ts, 0).is_empty());
        q.set(&mut ts[0], 5 * day, churn);
        assert_eq!(ts[0].queued.seq, STAGED, "far ahead: staged");
        q.cancel(&mut ts[0]); // the customer is gone; slot 0 changes hands
        q.set(&mut ts[0], 9 * day, churn);
        assert_eq!(fire_churn(&mut q, &mut ts, 6 * day), vec![]);
        assert_eq!(fire_churn(&mut q, &mut ts, 9 * day), vec![(0, 9 * day)]);
        assert!(q.is_empty());
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
