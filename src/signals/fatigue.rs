//! `contact_fatigue` (SPEC 4, SPEC 7 "Fatigue").
//!
//! Counts `message_sent` touches in (clock − 7 d, clock]. Fires when the
//! count goes above `contact_cap`, then re-arms only at a `message_sent`
//! whose count before it is back at or under the cap.
//!
//! Only the newest `max(contact_cap + 1, 64)` messages are kept (64 so that
//! a cap raised across a restart, over a changelog trimmed at the old cap,
//! still counts exactly while the new cap is under 64): whether a count is
//! above the cap, and which messages it counts when it first gets there,
//! depend on no other. Proof: the window is a suffix of the messages by
//! time (every message is at or before the clock), so while fewer than
//! `cap + 1` messages are in it, the newest `cap + 1` hold them all and the
//! count is exact; otherwise they are all in it, so the count before any
//! new message is at least `cap + 1`, above the cap, and nothing fires. A
//! message fires only with exactly `cap + 1` in the window. (Without the
//! bound, one customer messaged every second kept 600,000 messages and
//! each new one cost a pass over them.)
//!
//! No "disarmed" flag is kept: a message fires exactly when its count
//! before is at or under the cap and its count after is above it. Proof:
//! the count before a message is at most the count after the previous one
//! (the clock only moves on and every remembered message is at or before
//! it), so a message whose count before is above the cap follows one whose
//! count after was above the cap, which either fired or was itself
//! disarmed; and a count before at or under the cap re-arms.

use super::{distinct_channels, Lane, Lanes, Packed};
use crate::model::{Channel, EventTime, Payload, DAY_MS};
use crate::signals::config::EngineConfig;

/// The trailing window.
pub const WINDOW: i64 = 7 * DAY_MS;

/// Messages kept at least, whatever the cap: a cap raised across a restart
/// (a changelog trimmed at the old cap) still counts exactly up to 63.
pub const MIN_KEPT: usize = 64;

/// A customer's outbound messages live in the [`Lane::Messages`] lane,
/// sorted by time: those still inside some future window. (State format 2
/// also held a `disarmed` flag; it is implied, see the module docs, and
/// ignored when read.)
impl Lanes {
    /// Forgets messages at or before `clock` − 7 d: they never count again.
    pub fn forget_messages(&mut self, clock: EventTime) {
        self.prune_until(Lane::Messages, clock - WINDOW);
    }

    /// A `message_sent` at `t`; `clock` is the customer's clock after it.
    pub fn on_message(
        &mut self,
        cfg: &EngineConfig,
        t: EventTime,
        channel: Channel,
        clock: EventTime,
    ) -> Option<Payload> {
        let from = clock - WINDOW;
        self.insert_sorted(Lane::Messages, Packed::new(t, channel));
        // Messages at or before clock − 7 d never count again: the clock only moves on.
        self.prune_until(Lane::Messages, from);
        // Saturates at cap + 2 before trimming: see the module docs.
        let after = self.lane(Lane::Messages).len() as u32;
        let keep = (cfg.contact_cap as usize).saturating_add(1).max(MIN_KEPT);
        let extra = self.lane(Lane::Messages).len().saturating_sub(keep);
        self.remove_front(Lane::Messages, extra);
        let messages = self.lane(Lane::Messages);
        let this_counts = t > from;
        let before = if this_counts { after - 1 } else { after };
        if before > cfg.contact_cap || after <= cfg.contact_cap {
            return None;
        }
        Some(Payload::ContactFatigue {
            messages_7d: after,
            channels: distinct_channels(messages.iter().map(|p| p.channel())),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hysteresis_at_cap() {
        let cfg = EngineConfig {
            contact_cap: 2,
            ..EngineConfig::default()
        };
        let mut f = Lanes::default();
        let h = 3_600_000;
        assert!(f.on_message(&cfg, 0, Channel::Email, 0).is_none());
        assert!(f.on_message(&cfg, h, Channel::Sms, h).is_none());
        assert!(
            f.on_message(&cfg, 2 * h, Channel::Email, 2 * h).is_some(),
            "3 > 2 fires"
        );
        assert!(
            f.on_message(&cfg, 3 * h, Channel::Email, 3 * h).is_none(),
            "disarmed"
        );
        // A week later the count before the next message is 0: re-armed,
        // but 1 is not above the cap.
        let t = 3 * h + WINDOW;
        assert!(f.on_message(&cfg, t, Channel::Push, t).is_none());
        assert!(f.on_message(&cfg, t + 1, Channel::Push, t + 1).is_none());
        assert!(f.on_message(&cfg, t + 2, Channel::Push, t + 2).is_some());
    }

    #[test]
    fn a_cap_raised_across_a_restart_still_counts_exactly() {
        let low = EngineConfig {
            contact_cap: 2,
            ..EngineConfig::default()
        };
        let mut f = Lanes::default();
        for t in 0..10 {
            f.on_message(&low, t, Channel::Email, t);
        }
        // Restarted with a cap of 10: the 11th message in the week fires.
        let high = EngineConfig {
            contact_cap: 10,
            ..EngineConfig::default()
        };
        let fired = f.on_message(&high, 10, Channel::Sms, 10);
        assert!(
            matches!(
                fired,
                Some(Payload::ContactFatigue {
                    messages_7d: 11,
                    ..
                })
            ),
            "{fired:?}"
        );
    }

    /// The rule as first written, with an explicit "disarmed" flag.
    struct Flagged {
        messages: Vec<EventTime>,
        disarmed: bool,
    }

    impl Flagged {
        fn on_message(&mut self, cap: u32, t: EventTime, clock: EventTime) -> bool {
            let from = clock - WINDOW;
            self.messages.push(t);
            self.messages.retain(|&m| m > from);
            let after = self.messages.len() as u32;
            let before = if t > from { after - 1 } else { after };
            if before <= cap {
                self.disarmed = false;
            }
            if self.disarmed || after <= cap {
                return false;
            }
            self.disarmed = true;
            true
        }
    }

    proptest::proptest! {
        /// Firing without a flag is the flagged rule, late messages included.
        #[test]
        fn same_as_the_flagged_rule(
            cap in 0u32..5,
            steps in proptest::collection::vec((0i64..3 * DAY_MS, 0i64..9 * DAY_MS), 1..60),
        ) {
            let cfg = EngineConfig { contact_cap: cap, ..EngineConfig::default() };
            let mut f = Lanes::default();
            let mut reference = Flagged { messages: vec![], disarmed: false };
            let mut clock = 0;
            for (forward, back) in steps {
                clock += forward;
                let t = clock - back;
                let got = f.on_message(&cfg, t, Channel::Email, clock);
                let fired = reference.on_message(cap, t, clock);
                proptest::prop_assert_eq!(got.is_some(), fired);
                if let Some(Payload::ContactFatigue { messages_7d, .. }) = got {
                    // What the unbounded list counts.
                    proptest::prop_assert_eq!(messages_7d as usize, reference.messages.len());
                }
                proptest::prop_assert!(f.lane(Lane::Messages).len() <= (cap as usize + 1).max(MIN_KEPT));
                if forward % 3 == 0 {
                    f.forget_messages(clock);
                }
            }
        }
    }
}
