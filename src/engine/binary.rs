//! A customer's compact binary form (state format 4 of the changelog):
//! the fields as the engine holds them, encoded with postcard. The lists
//! ([`Lanes`]) go as the one byte run they are in memory; the rest as
//! varints, the enumerations as their index. A typical customer is about a
//! quarter of its JSON form (format 3) and decodes without parsing text.
//!
//! Format 4 adds nothing and drops nothing: a customer reads back equal to
//! the one written, except the queue entries of its timers, which are
//! never persisted and are re-queued on restore (as with JSON).

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::state::{Customer, Rare};
use crate::model::{Channel, ChurnLevel, EventTime, JourneyStage};
use crate::signals::churn::ChurnState;
use crate::signals::engagement::EngagementState;
use crate::signals::journey::JourneyState;
use crate::signals::value::ValueState;
use crate::signals::Lanes;
use crate::time::timers::LazyTimer;

/// A binary customer that cannot be read back.
#[derive(Debug, Error)]
pub enum BinaryStateError {
    /// The bytes are not a customer of this form.
    #[error("binary customer state does not decode: {0}")]
    Decode(#[from] postcard::Error),
    /// A field decoded but holds a value no customer can have.
    #[error("binary customer state is inconsistent: {0}")]
    Invalid(&'static str),
}

/// The encoded fields. `Cow`: borrowed when written, owned when read.
#[derive(Serialize, Deserialize)]
struct Form<'a> {
    newest: EventTime,
    clock: EventTime,
    id_len: u16,
    lens: [u8; 6],
    #[serde(borrow, serialize_with = "as_bytes")]
    lanes: &'a [u8],
    engagement: Cow<'a, EngagementState>,
    orders: u32,
    level: u8,
    last_activity: EventTime,
    timer: LazyTimer,
    stage: Option<u8>,
    rare: Option<Cow<'a, Rare>>,
    value: Option<Cow<'a, ValueState>>,
    last_channel: Option<u8>,
    slot: u8,
}

/// The lists as one byte string (a length, then the bytes), not a
/// sequence of numbers.
fn as_bytes<S: serde::Serializer>(b: &&[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_bytes(b)
}

impl Customer {
    /// Appends the customer's binary form to `out`.
    pub fn encode_binary(&self, out: &mut Vec<u8>) {
        let (id_len, lens, lanes) = self.lists.raw();
        let form = Form {
            newest: self.newest,
            clock: self.clock,
            id_len,
            lens,
            lanes,
            engagement: Cow::Borrowed(&self.engagement),
            orders: self.churn.orders,
            level: self.churn.level.index() as u8,
            last_activity: self.churn.last_activity,
            timer: self.churn.timer,
            stage: self.journey.stage.map(|s| s.index() as u8),
            rare: self.rare.as_deref().map(Cow::Borrowed),
            value: self.value.as_deref().map(Cow::Borrowed),
            last_channel: self.last_channel.map(|c| c.index() as u8),
            slot: self.slot,
        };
        // Every field has a known length and a serde form postcard writes
        // (the round-trip tests cover each): this cannot fail. Were it to,
        // a partial record would restore as another state: better no
        // record at all.
        #[allow(clippy::expect_used)]
        let bytes = postcard::to_extend(&form, std::mem::take(out))
            .expect("a customer's binary form always serializes");
        *out = bytes;
    }

    /// Reads a customer written by [`Customer::encode_binary`]; `bytes`
    /// holds exactly one.
    pub fn decode_binary(bytes: &[u8]) -> Result<Customer, BinaryStateError> {
        let f: Form<'_> = postcard::from_bytes(bytes)?;
        let lists =
            Lanes::from_raw(f.id_len, f.lens, f.lanes).ok_or(BinaryStateError::Invalid("lists"))?;
        let level = ChurnLevel::from_index(usize::from(f.level))
            .ok_or(BinaryStateError::Invalid("churn level"))?;
        let stage = match f.stage {
            Some(s) => Some(
                JourneyStage::from_index(usize::from(s))
                    .ok_or(BinaryStateError::Invalid("journey stage"))?,
            ),
            None => None,
        };
        let last_channel = match f.last_channel {
            Some(c) => Some(
                Channel::from_index(usize::from(c)).ok_or(BinaryStateError::Invalid("channel"))?,
            ),
            None => None,
        };
        if !matches!(f.slot, 0..=2) {
            return Err(BinaryStateError::Invalid("changelog slot"));
        }
        let mut timer = f.timer;
        timer.queued = crate::time::timers::TimerKey::NONE;
        Ok(Customer {
            newest: f.newest,
            clock: f.clock,
            lists,
            engagement: f.engagement.into_owned(),
            churn: ChurnState {
                orders: f.orders,
                level,
                last_activity: f.last_activity,
                timer,
            },
            journey: JourneyState { stage },
            rare: f.rare.map(|r| Box::new(r.into_owned())),
            value: f.value.map(|v| Box::new(v.into_owned())),
            last_channel,
            slot: f.slot,
            dirty: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_that_are_not_a_customer_are_refused() {
        let mut bytes = Vec::new();
        Customer::new("c", 5).encode_binary(&mut bytes);
        assert!(Customer::decode_binary(&bytes).is_ok());
        assert!(Customer::decode_binary(&bytes[..bytes.len() - 1]).is_err());
        assert!(Customer::decode_binary(&[]).is_err());
        // Lane lengths naming an entry the bytes do not hold.
        let c = Customer::new("c", 5);
        let (id_len, _, lanes) = c.lists.raw();
        let bad = Lanes::from_raw(id_len, [1, 0, 0, 0, 0, 0], lanes);
        assert!(bad.is_none());
        assert!(
            Lanes::from_raw(2, [0; 6], b"c").is_none(),
            "id beyond the bytes"
        );
        assert!(Lanes::from_raw(1, [0; 6], &[0xff]).is_none(), "not UTF-8");
        assert!(
            Lanes::from_raw(1, [0; 6], b"c12345").is_none(),
            "a partial entry"
        );
    }
}
