//! Event-time watermarks (SPEC 3 and 8).
//!
//! [`Watermark`] is a task's: for one input, max accepted event time −
//! `max_out_of_orderness`; it never goes back, and the edge may push it
//! further for an idle partition. [`InputWatermarks`] is the SPEC 8 merge
//! of several inputs: each input's watermark, the task's (their minimum),
//! and which input's next record comes next.

use serde::{Deserialize, Serialize};

use crate::model::EventTime;

/// A monotonic watermark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watermark {
    max_event: Option<EventTime>,
    current: Option<EventTime>,
    out_of_orderness: i64,
}

impl Watermark {
    /// A watermark that has seen nothing.
    pub fn new(out_of_orderness: i64) -> Self {
        Watermark {
            max_event: None,
            current: None,
            out_of_orderness,
        }
    }

    /// The current watermark (`None` before the first accepted event).
    pub fn current(&self) -> Option<EventTime> {
        self.current
    }

    /// The newest accepted event time.
    pub fn max_event(&self) -> Option<EventTime> {
        self.max_event
    }

    /// Whether `t` is older than the watermark.
    pub fn is_late(&self, t: EventTime) -> bool {
        self.current.is_some_and(|w| t < w)
    }

    /// Whether `t` is older than watermark − `allowed_lateness`.
    pub fn is_too_late(&self, t: EventTime, allowed_lateness: i64) -> bool {
        self.current
            .is_some_and(|w| t < w.saturating_sub(allowed_lateness))
    }

    /// The watermark an accepted event at `t` would produce.
    pub fn after_event(&self, t: EventTime) -> EventTime {
        let candidate = t.saturating_sub(self.out_of_orderness);
        match self.current {
            Some(w) => w.max(candidate),
            None => candidate,
        }
    }

    /// Records an accepted event; returns the new watermark.
    pub fn observe(&mut self, t: EventTime) -> EventTime {
        self.max_event = Some(self.max_event.map_or(t, |m| m.max(t)));
        let w = self.after_event(t);
        self.current = Some(w);
        w
    }

    /// Records an event of a task with several inputs: `to` is the task's
    /// watermark with it (see [`InputWatermarks::task_watermark`]), `None`
    /// while an input holds it where it is. Returns the new watermark.
    pub fn observe_to(&mut self, t: EventTime, to: Option<EventTime>) -> Option<EventTime> {
        self.max_event = Some(self.max_event.map_or(t, |m| m.max(t)));
        if let Some(to) = to {
            self.advance_to(to);
        }
        self.current
    }

    /// Moves the watermark to `to` if that is later (idle partitions).
    pub fn advance_to(&mut self, to: EventTime) -> EventTime {
        let w = self.current.map_or(to, |c| c.max(to));
        self.current = Some(w);
        w
    }
}

/// One input of a task, as the merge sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct InputMark {
    /// Latest event time among the records it delivered that passed the
    /// stateless rules of SPEC 2.
    latest: Option<EventTime>,
    /// Event time of its next such record, when one is waiting.
    head: Option<EventTime>,
    /// It has no more records (a file that ended).
    ended: bool,
    /// It received nothing for `idle_timeout`: left out of the task's
    /// watermark until its next record.
    idle: bool,
}

/// The inputs of one task (SPEC 8, "Time and order"): per input the
/// latest event time delivered and the next record waiting, from which
/// come the order of records (earliest next record first, ties to the
/// input listed first) and the task's watermark.
///
/// Invariants: a record that fails a stateless rule never reaches this
/// type (it is handled as soon as it is next on its input); the task's
/// watermark is computed while the record being processed is still its
/// input's head, so with in-order inputs it equals the watermark of one
/// input holding all records merged by event time.
///
/// # Examples
/// ```
/// use touchstream::time::watermark::InputWatermarks;
/// let mut w = InputWatermarks::new(2, 5);
/// w.set_head(0, Some(100));
/// w.set_head(1, Some(40));
/// assert_eq!(w.next(), Some(1));
/// assert_eq!(w.task_watermark(), Some(35));
/// w.deliver(1, 40);
/// w.set_head(1, None);
/// w.end(1);
/// assert_eq!(w.task_watermark(), Some(35), "an ended input holds its watermark");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputWatermarks {
    out_of_orderness: i64,
    inputs: Vec<InputMark>,
}

impl InputWatermarks {
    /// `n` inputs that have delivered nothing.
    pub fn new(n: usize, out_of_orderness: i64) -> Self {
        InputWatermarks {
            out_of_orderness,
            inputs: vec![InputMark::default(); n],
        }
    }

    /// Sets input `i`'s next record's event time (`None`: nothing waiting).
    pub fn set_head(&mut self, i: usize, head: Option<EventTime>) {
        if let Some(m) = self.inputs.get_mut(i) {
            m.head = head;
        }
    }

    /// Marks input `i` idle (left out of the task's watermark) or not.
    pub fn set_idle(&mut self, i: usize, idle: bool) {
        if let Some(m) = self.inputs.get_mut(i) {
            m.idle = idle;
        }
    }

    /// Restores input `i`'s latest event time (from a checkpoint).
    pub fn restore_latest(&mut self, i: usize, latest: Option<EventTime>) {
        if let Some(m) = self.inputs.get_mut(i) {
            m.latest = latest;
        }
    }

    /// Input `i`'s next record's event time, when one is waiting.
    pub fn head(&self, i: usize) -> Option<EventTime> {
        self.inputs.get(i).and_then(|m| m.head)
    }

    /// Input `i`'s latest event time delivered.
    pub fn latest(&self, i: usize) -> Option<EventTime> {
        self.inputs.get(i).and_then(|m| m.latest)
    }

    /// Input `i`'s watermark: its latest event time (its next record
    /// included) − `max_out_of_orderness`.
    pub fn input_watermark(&self, i: usize) -> Option<EventTime> {
        let m = self.inputs.get(i)?;
        m.latest
            .max(m.head)
            .map(|t| t.saturating_sub(self.out_of_orderness))
    }

    /// Whether every input is idle (the wall-clock rule of SPEC 3 applies).
    pub fn all_idle(&self) -> bool {
        self.inputs.iter().all(|m| m.idle)
    }

    /// Input `i` delivered a record at `t`.
    pub fn deliver(&mut self, i: usize, t: EventTime) {
        if let Some(m) = self.inputs.get_mut(i) {
            m.latest = Some(m.latest.map_or(t, |l| l.max(t)));
        }
    }

    /// Input `i` has no more records.
    pub fn end(&mut self, i: usize) {
        if let Some(m) = self.inputs.get_mut(i) {
            m.ended = true;
            m.head = None;
        }
    }

    /// The input whose next record is the earliest (ties: the input listed
    /// first); `None` when no record is waiting.
    pub fn next(&self) -> Option<usize> {
        self.inputs
            .iter()
            .enumerate()
            .filter_map(|(i, m)| m.head.map(|h| (h, i)))
            .min()
            .map(|(_, i)| i)
    }

    /// The task's watermark: the minimum over the inputs of their latest
    /// event time (their next record included) − `max_out_of_orderness`.
    /// An idle input, and one that ended without a record, are left out;
    /// one that has neither delivered nor has a record waiting holds the
    /// watermark where it is (`None`), as does a task whose inputs are all
    /// idle (the edge applies the wall clock then).
    pub fn task_watermark(&self) -> Option<EventTime> {
        let mut min: Option<EventTime> = None;
        for m in self.inputs.iter().filter(|m| !m.idle || m.head.is_some()) {
            match m.latest.max(m.head) {
                Some(t) => min = Some(min.map_or(t, |x| x.min(t))),
                None if m.ended => {}
                None => return None,
            }
        }
        min.map(|t| t.saturating_sub(self.out_of_orderness))
    }

    /// The final watermark once every input ended: the minimum over the
    /// inputs of their latest event time − `max_out_of_orderness`.
    pub fn final_watermark(&self) -> Option<EventTime> {
        self.inputs
            .iter()
            .filter_map(|m| m.latest)
            .min()
            .map(|t| t.saturating_sub(self.out_of_orderness))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_and_lateness() {
        let mut w = Watermark::new(5);
        assert!(!w.is_late(0));
        assert_eq!(w.observe(100), 95);
        assert_eq!(w.observe(50), 95, "never goes back");
        assert!(w.is_late(94));
        assert!(!w.is_late(95));
        assert!(w.is_too_late(84, 10));
        assert!(!w.is_too_late(85, 10));
        assert_eq!(w.advance_to(90), 95);
        assert_eq!(w.advance_to(200), 200);
        assert_eq!(w.observe(201), 200);
    }

    #[test]
    fn an_input_with_nothing_yet_holds_the_task_and_an_empty_one_is_left_out() {
        let mut w = InputWatermarks::new(3, 0);
        w.set_head(0, Some(10));
        assert_eq!(w.task_watermark(), None, "inputs 1 and 2 hold it");
        w.end(2);
        w.set_head(1, Some(20));
        assert_eq!(w.task_watermark(), Some(10));
        assert_eq!(w.next(), Some(0));
        w.set_head(1, Some(10));
        assert_eq!(w.next(), Some(0), "ties go to the input listed first");
        w.deliver(0, 10);
        w.end(0);
        w.deliver(1, 10);
        w.end(1);
        assert_eq!(w.final_watermark(), Some(10));
    }

    #[test]
    fn an_idle_input_is_left_out_until_its_next_record() {
        let mut w = InputWatermarks::new(2, 5);
        w.deliver(0, 100);
        assert_eq!(w.task_watermark(), None, "input 1 has delivered nothing");
        w.set_idle(1, true);
        assert_eq!(w.task_watermark(), Some(95));
        assert!(!w.all_idle());
        w.set_head(1, Some(50));
        assert_eq!(
            w.task_watermark(),
            Some(45),
            "it rejoins with its next record"
        );
        w.set_idle(1, false);
        w.deliver(1, 50);
        w.set_head(1, None);
        assert_eq!(w.input_watermark(1), Some(45));
        w.set_idle(0, true);
        w.set_idle(1, true);
        assert!(w.all_idle());
        assert_eq!(w.task_watermark(), None);
    }
}
