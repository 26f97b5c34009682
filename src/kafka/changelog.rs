//! The state changelog: record layout and exact restore.
//!
//! Per task (partition p of every input topic, SPEC 8), state changes go
//! to the changelog partition with the same number, in *generations*: at
//! each checkpoint the engine's dirty customers are written (only their
//! latest state), then a marker `{gen, meta, inputs}` naming, for every
//! input, the offset they cover and its latest event time. A customer has
//! two keys ("slots") and each write goes to the slot that does not hold
//! its last state, so a checkpoint that never completes cannot overwrite
//! the last complete one — not even after the broker compacts the topic.
//!
//! Restore reads the partition to its end and takes, for every customer,
//! the record with the highest generation not above the last marker's.
//! Records of later (unfinished) generations are ignored and their keys
//! repaired (tombstoned) by the next checkpoint, before its marker.
//!
//! Keys: `topic \0 customer_id \0 slot` for state, `\0marker\0 topic` for
//! the marker, where `topic` is the task's first input topic (so a
//! deployment that had one input reads its state as it is). Values: JSON,
//! each with the `format` of the state layout ([`STATE_FORMAT`]; absent
//! means 1). Format 2 (one input: the marker's `offset`) is read and
//! migrated; a changelog written in another format is refused with a
//! clear error instead of being half understood.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::engine::state::Customer;
use crate::engine::PartitionMeta;

/// A changelog record that cannot be understood.
#[derive(Debug, Error)]
pub enum ChangelogError {
    /// The value is not valid JSON of the expected shape.
    #[error("changelog record at offset {offset} does not decode: {message}")]
    Decode {
        /// Offset in the changelog partition.
        offset: i64,
        /// Decoder message.
        message: String,
    },
    /// The record was written by a touchstream with another state layout.
    #[error(
        "changelog record at offset {offset} has state format {found}, this touchstream reads formats {OLDEST_FORMAT} and {STATE_FORMAT}: \
         run the touchstream version that wrote it, or start this one from scratch \
         (delete the changelog topic and reset the consumer group's offsets)"
    )]
    Format {
        /// Offset in the changelog partition.
        offset: i64,
        /// The record's format.
        found: u32,
    },
}

/// The layout of the state this build writes. 2: 48-bit dedup hashes,
/// carts and surveys under `rare`, no engagement channel list. 3: the
/// marker holds every input's offset and latest event time (`inputs`);
/// customers as in 2.
pub const STATE_FORMAT: u32 = 3;

/// The oldest format this build reads (and migrates).
pub const OLDEST_FORMAT: u32 = 2;

fn format_v1() -> u32 {
    1
}

/// Only the format of a record, read before the rest.
#[derive(Deserialize)]
struct Probe {
    #[serde(default = "format_v1")]
    format: u32,
}

/// A value with the format added in front.
#[derive(Serialize)]
struct Versioned<'a, T> {
    format: u32,
    #[serde(flatten)]
    inner: &'a T,
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(&Versioned {
        format: STATE_FORMAT,
        inner: v,
    })
    .unwrap_or_default()
}

fn decode_error(offset: i64) -> impl Fn(serde_json::Error) -> ChangelogError {
    move |e| ChangelogError::Decode {
        offset,
        message: e.to_string(),
    }
}

/// Reads a value's format and refuses one this build does not read.
fn format_of(v: &[u8], offset: i64) -> Result<u32, ChangelogError> {
    let probe: Probe = serde_json::from_slice(v).map_err(decode_error(offset))?;
    check_format(probe.format, offset)
}

/// Refuses a format this build does not read.
fn check_format(format: u32, offset: i64) -> Result<u32, ChangelogError> {
    if (OLDEST_FORMAT..=STATE_FORMAT).contains(&format) {
        Ok(format)
    } else {
        Err(ChangelogError::Format {
            offset,
            found: format,
        })
    }
}

/// A customer record as read: one pass over the JSON, the format with
/// the rest (format 2 and 3 customers have the same layout).
#[derive(Deserialize)]
struct StateRecordIn {
    #[serde(default = "format_v1")]
    format: u32,
    gen: u64,
    state: Option<Box<Customer>>,
}

/// Decodes a customer record in one pass; when it does not decode, a
/// record of another format is reported as such rather than as bad JSON.
fn decode_state(v: &[u8], offset: i64) -> Result<StateRecordIn, ChangelogError> {
    match serde_json::from_slice::<StateRecordIn>(v) {
        Ok(r) => {
            check_format(r.format, offset)?;
            Ok(r)
        }
        Err(e) => {
            format_of(v, offset)?;
            Err(decode_error(offset)(e))
        }
    }
}

/// Where one input of a task stands at a marker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputPosition {
    /// The input topic.
    pub topic: String,
    /// Next offset to consume (everything before it is covered).
    pub offset: i64,
    /// Latest event time among the records it delivered that passed the
    /// stateless rules (its watermark is this − `max_out_of_orderness`).
    #[serde(default)]
    pub latest: Option<crate::model::EventTime>,
    /// For a repartition topic: per partition of the topic it re-keys, the
    /// highest offset of a record routed from it that is handled (-1:
    /// none), so that records the router sends again are known as copies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routed: Vec<i64>,
}

/// The marker that closes a generation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Marker {
    /// Generation it closes.
    pub gen: u64,
    /// Watermark and timer sequence of the task.
    pub meta: PartitionMeta,
    /// Every input the task had consumed from (format 3).
    #[serde(default)]
    pub inputs: Vec<InputPosition>,
}

impl Marker {
    /// The offset to resume `topic` at, if the marker covers it.
    pub fn offset(&self, topic: &str) -> Option<i64> {
        self.inputs
            .iter()
            .find(|i| i.topic == topic)
            .map(|i| i.offset)
    }

    /// Decodes a marker of the task whose first input is `topic`; one of
    /// format 2 (a single input's `offset`) becomes that input's position.
    pub fn decode(topic: &str, v: &[u8], offset: i64) -> Result<Marker, ChangelogError> {
        #[derive(Deserialize)]
        struct V2 {
            gen: u64,
            offset: i64,
            meta: PartitionMeta,
        }
        if format_of(v, offset)? == 2 {
            let m: V2 = serde_json::from_slice(v).map_err(decode_error(offset))?;
            return Ok(Marker {
                gen: m.gen,
                inputs: vec![InputPosition {
                    topic: topic.to_string(),
                    offset: m.offset,
                    latest: m.meta.watermark.max_event(),
                    routed: Vec::new(),
                }],
                meta: m.meta,
            });
        }
        serde_json::from_slice(v).map_err(decode_error(offset))
    }
}

/// A customer record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StateRecord {
    /// Generation it belongs to.
    pub gen: u64,
    /// The state, or `None` when the customer was evicted.
    pub state: Option<Customer>,
}

/// The key of a customer's slot.
pub fn state_key(topic: &str, customer: &str, slot: u8) -> Vec<u8> {
    let mut k = Vec::with_capacity(topic.len() + customer.len() + 3);
    k.extend_from_slice(topic.as_bytes());
    k.push(0);
    k.extend_from_slice(customer.as_bytes());
    k.push(0);
    k.push(b'0' + slot);
    k
}

/// The key of a topic's marker.
pub fn marker_key(topic: &str) -> Vec<u8> {
    let mut k = b"\0marker\0".to_vec();
    k.extend_from_slice(topic.as_bytes());
    k
}

enum Key<'a> {
    Marker,
    State { customer: &'a str, slot: u8 },
    Other,
}

/// `marker`: the topic's [`marker_key`].
fn parse_key<'a>(topic: &str, marker: &[u8], key: &'a [u8]) -> Key<'a> {
    if key == marker {
        return Key::Marker;
    }
    let Some(rest) = key
        .strip_prefix(topic.as_bytes())
        .and_then(|r| r.strip_prefix(b"\0"))
    else {
        return Key::Other;
    };
    if rest.len() < 3 || rest[rest.len() - 2] != 0 {
        return Key::Other;
    }
    let slot = rest[rest.len() - 1].wrapping_sub(b'0');
    match std::str::from_utf8(&rest[..rest.len() - 2]) {
        Ok(customer) if slot == 1 || slot == 2 => Key::State { customer, slot },
        _ => Key::Other,
    }
}

/// Encodes a marker value.
pub fn encode_marker(m: &Marker) -> Vec<u8> {
    encode(m)
}

/// Encodes a state value.
pub fn encode_state(r: &StateRecord) -> Vec<u8> {
    encode(r)
}

/// What a restore produced.
#[derive(Debug, Default)]
pub struct Restored {
    /// The last complete marker, if any.
    pub marker: Option<Marker>,
    /// Customers as of that marker.
    pub customers: Vec<Customer>,
    /// The generation the next checkpoint must use.
    pub next_gen: u64,
    /// Keys holding records of unfinished generations, to tombstone.
    pub repairs: Vec<Vec<u8>>,
    /// Records read.
    pub records: u64,
}

/// A slot's record: its generation and the state (`None`: evicted).
/// Boxed: a customer's entry holds two slots, most of them empty once
/// settled, and an inline `Customer` would make every entry (and the map
/// while it grows) twice the struct's size.
type Generation = (u64, Option<Box<Customer>>);

/// Collects changelog records of one topic's partition, then resolves
/// them to the state of the last complete marker.
#[derive(Debug)]
pub struct RestoreBuilder {
    topic: String,
    marker_key: Vec<u8>,
    marker: Option<Marker>,
    max_gen: u64,
    /// customer → per slot (gen, record) — latest by offset.
    slots: HashMap<Arc<str>, [Option<Generation>; 2]>,
    /// Customers written since the last marker: the marker settles them
    /// (see [`RestoreBuilder::settle`]).
    unsettled: Vec<Arc<str>>,
    records: u64,
}

impl RestoreBuilder {
    /// A builder for one input topic.
    pub fn new(topic: &str) -> Self {
        RestoreBuilder {
            topic: topic.to_string(),
            marker_key: marker_key(topic),
            marker: None,
            max_gen: 0,
            slots: HashMap::new(),
            unsettled: Vec::new(),
            records: 0,
        }
    }

    /// Feeds one record in offset order (`value` None for a tombstone).
    pub fn push(
        &mut self,
        key: &[u8],
        value: Option<&[u8]>,
        offset: i64,
    ) -> Result<(), ChangelogError> {
        match parse_key(&self.topic, &self.marker_key, key) {
            Key::Other => {}
            Key::Marker => {
                self.records += 1;
                if let Some(v) = value {
                    let m = Marker::decode(&self.topic, v, offset)?;
                    self.max_gen = self.max_gen.max(m.gen);
                    self.settle(m.gen);
                    self.marker = Some(m);
                }
            }
            Key::State { customer, slot } => {
                self.records += 1;
                let record = match value {
                    None => None,
                    Some(v) => {
                        let r = decode_state(v, offset)?;
                        self.max_gen = self.max_gen.max(r.gen);
                        Some((r.gen, r.state))
                    }
                };
                let id = match self.slots.get_key_value(customer) {
                    Some((id, _)) => id.clone(),
                    None => {
                        let id: Arc<str> = Arc::from(customer);
                        self.slots.insert(id.clone(), [None, None]);
                        id
                    }
                };
                if let Some(entry) = self.slots.get_mut(&id) {
                    entry[usize::from(slot - 1)] = record;
                }
                self.unsettled.push(id);
            }
        }
        Ok(())
    }

    /// At the marker of generation `gen`: of a customer written since the
    /// previous marker whose two slots both hold records of complete
    /// generations (≤ `gen`, so ≤ the last marker's), the older can never
    /// be restored; it is dropped now, so that a restore holds about one
    /// state per customer rather than two (work: the records read).
    fn settle(&mut self, gen: u64) {
        for id in std::mem::take(&mut self.unsettled) {
            let Some(entry) = self.slots.get_mut(&id) else {
                continue;
            };
            // `finish` keeps the first slot of two equal generations.
            let older = match &*entry {
                [Some((a, _)), Some((b, _))] if *a <= gen && *b <= gen => usize::from(a >= b),
                _ => continue,
            };
            entry[older] = None;
        }
    }

    /// Resolves to the state of the last complete marker.
    pub fn finish(self) -> Restored {
        let committed = self.marker.as_ref().map_or(0, |m| m.gen);
        let mut customers = Vec::with_capacity(self.slots.len());
        let mut repairs = Vec::new();
        for (id, slots) in self.slots {
            let mut best: Option<Generation> = None;
            for (i, s) in slots.into_iter().enumerate() {
                let Some((gen, state)) = s else { continue };
                if gen > committed || self.marker.is_none() {
                    repairs.push(state_key(&self.topic, &id, (i + 1) as u8));
                } else if best.as_ref().is_none_or(|(g, _)| gen > *g) {
                    best = Some((gen, state));
                }
            }
            if let Some((_, Some(c))) = best {
                customers.push(*c);
            }
        }
        repairs.sort();
        Restored {
            marker: self.marker,
            customers,
            next_gen: self.max_gen + 1,
            repairs,
            records: self.records,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::watermark::Watermark;

    fn cust(id: &str, newest: i64, slot: u8) -> Customer {
        let mut c = Customer::new(id, newest);
        c.slot = slot;
        c
    }

    fn pos(t: &str, offset: i64) -> InputPosition {
        InputPosition {
            topic: t.to_string(),
            offset,
            latest: None,
            routed: Vec::new(),
        }
    }

    fn meta() -> PartitionMeta {
        PartitionMeta {
            watermark: Watermark::new(5),
            next_seq: 1,
        }
    }

    #[test]
    fn unfinished_generation_is_ignored_even_after_compaction() {
        let t = "tp";
        let mut b = RestoreBuilder::new(t);
        // gen 1: c at slot 1 (newest 10), marker 1 @ offset 100.
        let rec = |gen, c: Customer| {
            encode_state(&StateRecord {
                gen,
                state: Some(c),
            })
        };
        b.push(&state_key(t, "c", 1), Some(&rec(1, cust("c", 10, 1))), 0)
            .unwrap();
        b.push(
            &marker_key(t),
            Some(&encode_marker(&Marker {
                gen: 1,
                meta: meta(),
                inputs: vec![pos(t, 100)],
            })),
            1,
        )
        .unwrap();
        // gen 2 starts: c at slot 2 (newest 20) — then a crash, no marker.
        b.push(&state_key(t, "c", 2), Some(&rec(2, cust("c", 20, 2))), 2)
            .unwrap();
        // Another topic's records are ignored.
        b.push(
            &state_key("other", "c", 1),
            Some(&rec(9, cust("c", 99, 1))),
            3,
        )
        .unwrap();
        let r = b.finish();
        assert_eq!(r.marker.unwrap().offset(t), Some(100));
        assert_eq!(r.customers.len(), 1);
        assert_eq!(r.customers[0].newest, 10);
        assert_eq!(r.next_gen, 3);
        assert_eq!(r.repairs, vec![state_key(t, "c", 2)]);
    }

    #[test]
    fn tombstones_after_a_committed_deletion_leave_the_customer_absent() {
        let t = "tp";
        let mut b = RestoreBuilder::new(t);
        let rec = |gen, c: Option<Customer>| encode_state(&StateRecord { gen, state: c });
        b.push(
            &state_key(t, "d", 1),
            Some(&rec(1, Some(cust("d", 10, 1)))),
            0,
        )
        .unwrap();
        b.push(&state_key(t, "d", 2), Some(&rec(2, None)), 1)
            .unwrap();
        b.push(
            &marker_key(t),
            Some(&encode_marker(&Marker {
                gen: 2,
                meta: meta(),
                inputs: vec![pos(t, 7)],
            })),
            2,
        )
        .unwrap();
        // Next generation: both keys tombstoned; crash before its marker.
        b.push(&state_key(t, "d", 1), None, 3).unwrap();
        b.push(&state_key(t, "d", 2), None, 4).unwrap();
        let r = b.finish();
        assert!(r.customers.is_empty());
        assert!(r.repairs.is_empty());
    }

    #[test]
    fn a_marker_leaves_one_state_per_customer_and_spares_unfinished_ones() {
        let t = "tp";
        let mut b = RestoreBuilder::new(t);
        let rec = |gen, c: Option<Customer>| encode_state(&StateRecord { gen, state: c });
        let marker = |gen| {
            encode_marker(&Marker {
                gen,
                meta: meta(),
                inputs: vec![pos(t, 7)],
            })
        };
        let held = |b: &RestoreBuilder| -> usize {
            b.slots.values().flatten().filter(|s| s.is_some()).count()
        };
        let push = |b: &mut RestoreBuilder, slot, gen, newest, offset| {
            let state = Some(cust("c", newest, slot));
            b.push(&state_key(t, "c", slot), Some(&rec(gen, state)), offset)
                .unwrap();
        };
        push(&mut b, 1, 1, 10, 0);
        b.push(&marker_key(t), Some(&marker(1)), 1).unwrap();
        push(&mut b, 2, 2, 20, 2);
        assert_eq!(held(&b), 2, "generation 2 is not complete yet");
        b.push(&marker_key(t), Some(&marker(2)), 3).unwrap();
        assert_eq!(
            held(&b),
            1,
            "generation 1's state can no longer be restored"
        );
        // Generation 3 never completes: its record stays beside the last
        // complete one, which restore takes; the unfinished key is repaired.
        push(&mut b, 1, 3, 30, 4);
        assert_eq!(held(&b), 2);
        let r = b.finish();
        assert_eq!(r.customers.len(), 1);
        assert_eq!(r.customers[0].newest, 20);
        assert_eq!(r.repairs, vec![state_key(t, "c", 1)]);
        assert_eq!(r.next_gen, 4);
    }

    #[test]
    fn latest_complete_generation_wins_and_deletions_stick() {
        let t = "tp";
        let mut b = RestoreBuilder::new(t);
        let rec = |gen, c: Option<Customer>| encode_state(&StateRecord { gen, state: c });
        b.push(
            &state_key(t, "c", 1),
            Some(&rec(1, Some(cust("c", 10, 1)))),
            0,
        )
        .unwrap();
        b.push(
            &state_key(t, "d", 1),
            Some(&rec(1, Some(cust("d", 10, 1)))),
            1,
        )
        .unwrap();
        b.push(
            &state_key(t, "c", 2),
            Some(&rec(2, Some(cust("c", 20, 2)))),
            2,
        )
        .unwrap();
        b.push(&state_key(t, "d", 2), Some(&rec(2, None)), 3)
            .unwrap();
        b.push(
            &marker_key(t),
            Some(&encode_marker(&Marker {
                gen: 2,
                meta: meta(),
                inputs: vec![pos(t, 7)],
            })),
            4,
        )
        .unwrap();
        let r = b.finish();
        assert_eq!(r.customers.len(), 1);
        assert_eq!(r.customers[0].newest, 20);
        assert!(r.repairs.is_empty());
    }

    #[test]
    fn a_single_input_marker_of_format_2_is_migrated() {
        let t = "tp";
        let mut b = RestoreBuilder::new(t);
        let old = br#"{"format":2,"gen":4,"offset":31,"meta":{"watermark":{"max_event":1000,"current":995,"out_of_orderness":5},"next_seq":9}}"#;
        b.push(&marker_key(t), Some(old), 0).unwrap();
        let c = br#"{"format":2,"gen":4,"state":null}"#;
        b.push(&state_key(t, "c", 1), Some(c), 1).unwrap();
        let r = b.finish();
        let m = r.marker.expect("the old marker is read");
        assert_eq!(m.gen, 4);
        assert_eq!(m.meta.next_seq, 9);
        assert_eq!(
            m.inputs,
            vec![InputPosition {
                topic: t.to_string(),
                offset: 31,
                latest: Some(1000),
                routed: Vec::new(),
            }]
        );
        assert_eq!(r.next_gen, 5);
        // Written again in the current format, it reads back the same.
        let again = Marker::decode(t, &encode_marker(&m), 2).unwrap();
        assert_eq!(again, m);
    }

    #[test]
    fn another_state_format_is_refused_with_a_clear_error() {
        let t = "tp";
        let mut b = RestoreBuilder::new(t);
        // Written by a build before formats existed (format 1, no field).
        let old = br#"{"gen":1,"meta":{"watermark":{"max_event":null,"current":null,"ooo":5},"next_seq":1},"offset":3}"#;
        let e = b.push(&marker_key(t), Some(old), 7).unwrap_err();
        let msg = e.to_string();
        assert!(
            matches!(
                e,
                ChangelogError::Format {
                    offset: 7,
                    found: 1
                }
            ),
            "{msg}"
        );
        assert!(
            msg.contains("state format 1") && msg.contains("reads formats 2 and 3"),
            "{msg}"
        );
        let newer = br#"{"format":4,"gen":1,"state":null}"#;
        let e = b.push(&state_key(t, "c", 1), Some(newer), 8).unwrap_err();
        assert!(matches!(e, ChangelogError::Format { found: 4, .. }), "{e}");
        // The current format round-trips.
        let rec = encode_state(&StateRecord {
            gen: 1,
            state: Some(cust("c", 10, 1)),
        });
        assert!(String::from_utf8_lossy(&rec).starts_with(r#"{"format":3,"#));
        b.push(&state_key(t, "c", 1), Some(&rec), 9).unwrap();
    }
}
