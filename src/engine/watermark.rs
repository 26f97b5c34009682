//! Per-partition event-time watermark (SPEC 3).
//!
//! watermark = max accepted event time − `max_out_of_orderness`; it never
//! goes back, and the edge may push it further for an idle partition.

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

    /// Moves the watermark to `to` if that is later (idle partitions).
    pub fn advance_to(&mut self, to: EventTime) -> EventTime {
        let w = self.current.map_or(to, |c| c.max(to));
        self.current = Some(w);
        w
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
}
