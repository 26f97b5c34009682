//! Derived-event ids: a pure function of the event's type, its customer
//! and its cause (a touchpoint or a timer), the same on every machine and
//! version. Owns nothing else; it must never read state or the clock.

use crate::model::{DerivedType, EventTime};
use crate::time::timers::TimerKind;

/// What caused a derived event; its id is a pure function of this.
#[derive(Debug, Clone, Copy)]
pub enum Cause<'a> {
    /// A touchpoint, by its `event_id`.
    Touch(&'a str),
    /// A timer: kind, due time and a discriminator (cart or campaign id).
    Timer {
        /// Kind of timer.
        kind: TimerKind,
        /// Due time.
        due: EventTime,
        /// Cart id or campaign id ("" when none).
        discriminator: &'a str,
    },
}

/// The deterministic id of a derived event: a UUID (version 8, RFC 9562
/// "custom") holding the 128-bit XXH3 hash of its type, the customer and
/// its cause. Same cause, same id, on every machine and version.
///
/// # Examples
/// ```
/// use touchstream::engine::{event_id, Cause};
/// use touchstream::model::DerivedType;
/// let a = event_id(DerivedType::EngagementScore, "c1", Cause::Touch("e1"));
/// let b = event_id(DerivedType::EngagementScore, "c1", Cause::Touch("e1"));
/// assert_eq!(a, b);
/// assert_ne!(a, event_id(DerivedType::ChurnRisk, "c1", Cause::Touch("e1")));
/// ```
pub fn event_id(kind: DerivedType, customer: &str, cause: Cause<'_>) -> crate::model::EventId {
    let due_bytes;
    let parts: &[&[u8]] = match cause {
        Cause::Touch(id) => &[
            kind.as_str().as_bytes(),
            customer.as_bytes(),
            b"tp",
            id.as_bytes(),
        ],
        Cause::Timer {
            kind: tk,
            due,
            discriminator,
        } => {
            due_bytes = due.to_le_bytes();
            &[
                kind.as_str().as_bytes(),
                customer.as_bytes(),
                b"timer",
                tk.as_str().as_bytes(),
                &due_bytes,
                discriminator.as_bytes(),
            ]
        }
    };
    crate::model::EventId(uuid::Uuid::new_v8(hash_parts(parts).to_be_bytes()).as_u128())
}

/// XXH3-128 of the parts, each prefixed by its length (u64, little
/// endian). Short inputs are gathered on the stack and hashed in one call;
/// longer ones go through the streaming hasher (same bytes, same digest).
fn hash_parts(parts: &[&[u8]]) -> u128 {
    let total: usize = parts.iter().map(|p| 8 + p.len()).sum();
    let mut buf = [0u8; 512];
    if total <= buf.len() {
        let mut at = 0;
        for p in parts {
            buf[at..at + 8].copy_from_slice(&(p.len() as u64).to_le_bytes());
            buf[at + 8..at + 8 + p.len()].copy_from_slice(p);
            at += 8 + p.len();
        }
        xxhash_rust::xxh3::xxh3_128(&buf[..at])
    } else {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        for p in parts {
            h.update(&(p.len() as u64).to_le_bytes());
            h.update(p);
        }
        h.digest128()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(parts: &[&[u8]]) -> u128 {
        let mut bytes = Vec::new();
        for p in parts {
            bytes.extend_from_slice(&(p.len() as u64).to_le_bytes());
            bytes.extend_from_slice(p);
        }
        xxhash_rust::xxh3::xxh3_128(&bytes)
    }

    #[test]
    fn hashed_parts_are_the_same_on_the_stack_and_streamed() {
        let long = vec![b'x'; 700];
        for parts in [
            vec![&b"engagement_score"[..], b"c1", b"tp", b"e1"],
            vec![&b"a"[..], &long[..], b"", b"z"],
            vec![&long[..496]],
            vec![&long[..505]],
        ] {
            assert_eq!(hash_parts(&parts), reference(&parts));
        }
    }
}
