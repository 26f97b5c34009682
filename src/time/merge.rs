//! The merge of a task's inputs (SPEC 8, "Time and order"), pure: the
//! Kafka task and `replay A B C` feed it their inputs' next valid records
//! and take records back in the order the task processes them, each with
//! the task's watermark to process it at.
//!
//! Rules: the next record is the earliest among the inputs' next records
//! (ties: the input listed first); the merge waits for an input that may
//! still have records (no next record, neither caught up nor idle) and
//! never for one that is caught up, idle or ended. So a backlog comes out
//! in one order whatever the fetch timing (see the property test in
//! `tests/properties.rs`).

use crate::model::EventTime;

use super::watermark::InputWatermarks;

/// What the merge knows of one input.
#[derive(Debug, Clone)]
struct Lane<T> {
    head: Option<T>,
    /// Nothing more to fetch for now (Kafka: the end of the partition).
    caught_up: bool,
    /// Nothing received for `idle_timeout` (left out of the watermark).
    idle: bool,
    /// No more records ever (a file that ended).
    ended: bool,
}

/// A record taken from the merge.
#[derive(Debug, Clone, PartialEq)]
pub struct Next<T> {
    /// The input it came from.
    pub input: usize,
    /// The record.
    pub item: T,
    /// The task's watermark with it: `None` while an input holds it.
    pub to: Option<EventTime>,
}

/// The inputs of one task: their next records, their states and their
/// watermarks ([`InputWatermarks`]).
///
/// # Examples
/// ```
/// use touchstream::time::merge::Merge;
/// let mut m = Merge::new(2, 0);
/// m.push(0, 20, "b");
/// assert!(m.waiting(), "input 1 may still have an earlier record");
/// assert!(m.pop().is_none());
/// m.push(1, 10, "a");
/// assert_eq!(m.pop().map(|n| n.item), Some("a"));
/// m.caught_up(1);
/// assert_eq!(m.pop().map(|n| n.item), Some("b"), "a caught-up input is not waited for");
/// ```
#[derive(Debug, Clone)]
pub struct Merge<T> {
    marks: InputWatermarks,
    lanes: Vec<Lane<T>>,
}

impl<T> Merge<T> {
    /// `n` inputs that have delivered nothing.
    pub fn new(n: usize, out_of_orderness: i64) -> Self {
        Merge {
            marks: InputWatermarks::new(n, out_of_orderness),
            lanes: (0..n)
                .map(|_| Lane {
                    head: None,
                    caught_up: false,
                    idle: false,
                    ended: false,
                })
                .collect(),
        }
    }

    /// The inputs' watermarks.
    pub fn marks(&self) -> &InputWatermarks {
        &self.marks
    }

    /// Restores input `i`'s latest event time (from a checkpoint).
    pub fn restore_latest(&mut self, i: usize, latest: Option<EventTime>) {
        self.marks.restore_latest(i, latest);
    }

    /// Whether input `i` needs its next record (it has none waiting).
    pub fn wants(&self, i: usize) -> bool {
        self.lanes
            .get(i)
            .is_some_and(|l| l.head.is_none() && !l.ended)
    }

    /// Input `i`'s next valid record, at event time `t`: it is no longer
    /// caught up or idle.
    pub fn push(&mut self, i: usize, t: EventTime, item: T) {
        if let Some(l) = self.lanes.get_mut(i) {
            l.head = Some(item);
            l.caught_up = false;
            l.idle = false;
            self.marks.set_idle(i, false);
            self.marks.set_head(i, Some(t));
        }
    }

    /// Input `i` received a record (valid or not): no longer caught up or idle.
    pub fn received(&mut self, i: usize) {
        if let Some(l) = self.lanes.get_mut(i) {
            l.caught_up = false;
            l.idle = false;
            self.marks.set_idle(i, false);
        }
    }

    /// Input `i` has nothing more to fetch for now.
    pub fn caught_up(&mut self, i: usize) {
        if let Some(l) = self.lanes.get_mut(i) {
            l.caught_up = true;
        }
    }

    /// Input `i` has no more records ever (it holds its watermark; one
    /// that delivered nothing is left out).
    pub fn end(&mut self, i: usize) {
        if let Some(l) = self.lanes.get_mut(i) {
            l.ended = true;
            self.marks.end(i);
        }
    }

    /// Marks input `i` idle or not; true when that changed it. An input
    /// with a record waiting is never idle.
    pub fn set_idle(&mut self, i: usize, idle: bool) -> bool {
        let Some(l) = self.lanes.get_mut(i) else {
            return false;
        };
        let idle = idle && l.head.is_none();
        let changed = l.idle != idle;
        l.idle = idle;
        self.marks.set_idle(i, idle);
        changed
    }

    /// Whether input `i` is idle.
    pub fn is_idle(&self, i: usize) -> bool {
        self.lanes.get(i).is_some_and(|l| l.idle)
    }

    /// Whether input `i` has nothing more to fetch for now.
    pub fn is_caught_up(&self, i: usize) -> bool {
        self.lanes.get(i).is_some_and(|l| l.caught_up)
    }

    /// Takes input `i`'s waiting record back, with its event time (to move
    /// it into another merge).
    pub fn take(&mut self, i: usize) -> Option<(EventTime, T)> {
        let t = self.marks.head(i)?;
        let item = self.lanes.get_mut(i)?.head.take()?;
        self.marks.set_head(i, None);
        Some((t, item))
    }

    /// Whether every input is idle (the wall-clock rule of SPEC 3 applies).
    pub fn all_idle(&self) -> bool {
        self.lanes.iter().all(|l| l.idle)
    }

    /// Whether the merge waits for an input that may still have records.
    pub fn waiting(&self) -> bool {
        self.lanes
            .iter()
            .any(|l| l.head.is_none() && !l.caught_up && !l.idle && !l.ended)
    }

    /// Drops input `i`'s waiting record (its partition was revoked).
    pub fn forget(&mut self, i: usize) {
        if let Some(l) = self.lanes.get_mut(i) {
            l.head = None;
            self.marks.set_head(i, None);
        }
    }

    /// The event time of the record [`Merge::pop`] would give next.
    pub fn peek(&self) -> Option<EventTime> {
        if self.waiting() {
            return None;
        }
        self.marks.head(self.marks.next()?)
    }

    /// Input `i`'s waiting record's event time.
    pub fn head_time(&self, i: usize) -> Option<EventTime> {
        self.marks.head(i)
    }

    /// The next record in the task's order, with the task's watermark to
    /// process it at; `None` while the merge waits or nothing is waiting.
    pub fn pop(&mut self) -> Option<Next<T>> {
        if self.waiting() {
            return None;
        }
        let i = self.marks.next()?;
        let item = self.lanes.get_mut(i)?.head.take()?;
        let to = self.marks.task_watermark();
        let t = self.marks.head(i)?;
        self.marks.deliver(i, t);
        self.marks.set_head(i, None);
        Some(Next { input: i, item, to })
    }
}
