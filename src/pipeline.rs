//! The one record path that `replay` and the service share (SPEC 2, 3 and
//! 8): a decoded record → the stateless rules → the task's engine → what
//! became of it, and the task's watermark moved without a record.
//!
//! It owns no I/O and reads no clock: the edges decode (a file, a Kafka
//! record), pass the wall clock in, and send or print what comes out. What
//! a task takes is an [`InputEvent`]: a record, an idle advance, a tick of
//! the wall clock while every input is idle, or the end of a replay's
//! inputs. `replay` can therefore play back what the service did, idle
//! advances included (see [`crate::cli::replay::Replay::event`]). A record
//! the engine finds too late becomes its [`Rejection`] here, once, with its
//! SPEC message; both edges report it as they report any other.

use crate::engine::{Engine, Outcome};
use crate::model::{DerivedEvent, EventTime, Touchpoint};
use crate::validate::{validate, Clock, RawTouchpoint, Rejection};

/// Checks a decoded record (or its decode failure) against the rules of
/// SPEC 2 that need no state.
pub fn check(
    decoded: Result<RawTouchpoint, Rejection>,
    clock: Clock,
) -> Result<Touchpoint, Rejection> {
    decoded.and_then(|raw| validate(raw, clock))
}

/// What a task's engine takes, in the order the task takes it.
#[derive(Debug, Clone, Copy)]
pub enum InputEvent<'a> {
    /// A valid touchpoint (see [`check`]).
    Record {
        /// The touchpoint.
        tp: &'a Touchpoint,
        /// For a task with several inputs: the task's watermark with this
        /// record (`None` while an input holds it back, see
        /// [`crate::time::watermark::InputWatermarks::task_watermark`]).
        /// `None` for a task with one input: the record moves the
        /// watermark itself (SPEC 3).
        merged: Option<Option<EventTime>>,
    },
    /// An input went idle (or came back): the task's watermark, recomputed
    /// without the idle inputs, is `to`. It moves a watermark the task
    /// already has, never starts one.
    Idle {
        /// The task's watermark without its idle inputs.
        to: EventTime,
    },
    /// Every input is idle: the task's watermark follows the wall clock,
    /// `now − max_out_of_orderness` (SPEC 3). It moves a watermark the task
    /// already has, never starts one.
    Tick {
        /// The wall clock, epoch millis.
        now: EventTime,
    },
    /// A replay's inputs all ended: the watermark moves to `to`, the
    /// minimum over the inputs of their latest event time −
    /// `max_out_of_orderness`; nothing fires beyond it.
    End {
        /// The final watermark.
        to: EventTime,
    },
}

/// What became of an [`InputEvent`].
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The record was applied; `late` when older than the watermark.
    Accepted {
        /// Older than the watermark, within the allowed lateness.
        late: bool,
    },
    /// A duplicate of one of the customer's last 32 events: dropped.
    Duplicate,
    /// The record breaks a rule that needs the task's state (`too_late`).
    Rejected(Rejection),
    /// A watermark event; `true` when the watermark moved.
    Advanced(bool),
}

/// Hands one input event to a task's engine; derived events are appended
/// to `out`.
pub fn step(engine: &mut Engine, event: InputEvent<'_>, out: &mut Vec<DerivedEvent>) -> Verdict {
    match event {
        InputEvent::Record { tp, merged } => record(engine, tp, merged, out),
        InputEvent::Idle { to } => advance_existing(engine, to, out),
        InputEvent::Tick { now } => {
            let to = now.saturating_sub(engine.config().max_out_of_orderness);
            advance_existing(engine, to, out)
        }
        InputEvent::End { to } => {
            let before = engine.watermark();
            engine.advance_watermark(to, out);
            Verdict::Advanced(engine.watermark() != before)
        }
    }
}

fn record(
    engine: &mut Engine,
    tp: &Touchpoint,
    merged: Option<Option<EventTime>>,
    out: &mut Vec<DerivedEvent>,
) -> Verdict {
    let watermark = engine.watermark();
    let outcome = match merged {
        None => engine.on_touchpoint(tp, out),
        Some(to) => engine.on_merged(tp, to, out),
    };
    match outcome {
        Outcome::Accepted { late } => Verdict::Accepted { late },
        Outcome::Duplicate => Verdict::Duplicate,
        Outcome::TooLate => Verdict::Rejected(Rejection::too_late(
            tp.timestamp,
            watermark,
            engine.config().allowed_lateness,
        )),
    }
}

/// Moves the watermark to `to` when the task has one and it is earlier.
fn advance_existing(engine: &mut Engine, to: EventTime, out: &mut Vec<DerivedEvent>) -> Verdict {
    let moves = engine.watermark().is_some_and(|w| w < to);
    if moves {
        engine.advance_watermark(to, out);
    }
    Verdict::Advanced(moves)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::EngineConfig;
    use crate::model::{Channel, DerivedType, TouchType};
    use crate::validate::RejectReason;
    use std::sync::Arc;

    const MIN: i64 = 60_000;

    fn engine() -> Engine {
        Engine::new(Arc::new(EngineConfig::default()))
    }

    fn tp(id: &str, kind: TouchType, t: EventTime) -> Touchpoint {
        let raw = RawTouchpoint {
            event_id: Some(id.into()),
            customer_id: Some("c1".into()),
            channel: Some(Channel::Web),
            kind: Some(kind),
            timestamp: Some(t),
            ..RawTouchpoint::default()
        };
        check(
            Ok(raw),
            Clock {
                now: t,
                max_future: 3_600_000,
            },
        )
        .expect("valid")
    }

    #[test]
    fn a_too_late_record_is_rejected_with_the_spec_message() {
        let mut e = engine();
        let mut out = Vec::new();
        let day = 86_400_000;
        let first = tp("e1", TouchType::PageView, 10 * day);
        assert_eq!(
            step(
                &mut e,
                InputEvent::Record {
                    tp: &first,
                    merged: None
                },
                &mut out
            ),
            Verdict::Accepted { late: false }
        );
        let old = tp("e2", TouchType::PageView, day);
        match step(
            &mut e,
            InputEvent::Record {
                tp: &old,
                merged: None,
            },
            &mut out,
        ) {
            Verdict::Rejected(r) => {
                assert_eq!(r.reason, RejectReason::TooLate);
                assert_eq!(
                    r,
                    Rejection::too_late(day, e.watermark(), e.config().allowed_lateness)
                );
            }
            other => panic!("expected too_late, got {other:?}"),
        }
        assert_eq!(
            step(
                &mut e,
                InputEvent::Record {
                    tp: &first,
                    merged: None
                },
                &mut out
            ),
            Verdict::Duplicate
        );
    }

    #[test]
    fn idle_and_tick_move_only_a_watermark_the_task_has() {
        let mut e = engine();
        let mut out = Vec::new();
        assert_eq!(
            step(&mut e, InputEvent::Tick { now: 1_000 * MIN }, &mut out),
            Verdict::Advanced(false)
        );
        assert_eq!(
            step(&mut e, InputEvent::Idle { to: 1_000 * MIN }, &mut out),
            Verdict::Advanced(false)
        );
        assert_eq!(e.watermark(), None);
        let cart = tp("e1", TouchType::AddToCart, 100 * MIN);
        step(
            &mut e,
            InputEvent::Record {
                tp: &cart,
                merged: None,
            },
            &mut out,
        );
        let abandoned = |out: &[DerivedEvent]| {
            out.iter()
                .any(|ev| ev.payload.derived_type() == DerivedType::CartAbandoned)
        };
        assert!(!abandoned(&out));
        // The cart timer (1 h) is reached by the wall clock alone.
        let now = 100 * MIN + 61 * MIN + e.config().max_out_of_orderness;
        assert_eq!(
            step(&mut e, InputEvent::Tick { now }, &mut out),
            Verdict::Advanced(true)
        );
        assert_eq!(e.watermark(), Some(161 * MIN));
        assert!(abandoned(&out), "{out:?}");
        // Never backwards.
        assert_eq!(
            step(&mut e, InputEvent::Idle { to: 120 * MIN }, &mut out),
            Verdict::Advanced(false)
        );
        assert_eq!(
            step(&mut e, InputEvent::End { to: 120 * MIN }, &mut out),
            Verdict::Advanced(false)
        );
    }
}
