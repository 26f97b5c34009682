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
//! deployment that had one input reads its state as it is). Markers are
//! JSON with the `format` of the state layout ([`STATE_FORMAT`]; absent
//! means 1). Customer records of format 4 are binary: a zero byte (no JSON
//! value starts with one), the format, the generation (8 bytes, little
//! endian), then the customer's compact form
//! ([`Customer::encode_binary`]), nothing for an evicted customer. Formats
//! 2 and 3 (JSON customers; format 2 markers name one input's `offset`)
//! are read and migrated, so a changelog may hold both; one written in
//! another format is refused with a clear error instead of being half
//! understood.
//!
//! A binary customer is kept as its bytes while the partition is read and
//! decoded once, if it is the one restored: of the records of a changelog
//! that is not compacted yet, most are superseded.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::engine::state::Customer;
use crate::engine::PartitionMeta;

/// A changelog record that cannot be understood.
#[derive(Debug, Error)]
pub enum ChangelogError {
    /// The value is not valid JSON or binary state of the expected shape.
    #[error("changelog record at offset {offset} does not decode: {message}")]
    Decode {
        /// Offset in the changelog partition.
        offset: i64,
        /// Decoder message.
        message: String,
    },
    /// The record was written by a touchstream with another state layout.
    #[error(
        "changelog record at offset {offset} has state format {found}, this touchstream reads formats {OLDEST_FORMAT} to {STATE_FORMAT}: \
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
/// customers as in 2. 4: customers in the binary form (markers as in 3).
pub const STATE_FORMAT: u32 = 4;

/// The first byte of a binary value (format 4 and later).
const BINARY: u8 = 0;

/// Bytes before a binary customer: [`BINARY`], the format, the generation.
const BINARY_HEADER: usize = 10;

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

/// A JSON customer record as read (formats 2 and 3 have the same
/// customer layout): one pass, the format with the rest.
#[derive(Deserialize)]
struct StateRecordIn {
    #[serde(default = "format_v1")]
    format: u32,
    gen: u64,
    state: Option<Box<Customer>>,
}

/// A customer record as the restore keeps it, in one allocation: the
/// changelog offset (8 bytes, little endian), then the value in the
/// binary layout of format 4 (header, then the customer's binary form;
/// nothing after the header for an evicted customer). A JSON record of an
/// earlier format is put in this layout as it is read.
#[derive(Debug, Clone)]
pub struct SavedState(Box<[u8]>);

impl SavedState {
    /// Keeps a customer record's value, read at `offset`.
    fn read(v: &[u8], offset: i64) -> Result<SavedState, ChangelogError> {
        if v.first() == Some(&BINARY) {
            check_format(v.get(1).map_or(0, |&f| u32::from(f)), offset)?;
            if v.len() < BINARY_HEADER {
                return Err(ChangelogError::Decode {
                    offset,
                    message: "a binary record shorter than its header".into(),
                });
            }
            let mut kept = Vec::with_capacity(8 + v.len());
            kept.extend_from_slice(&offset.to_le_bytes());
            kept.extend_from_slice(v);
            return Ok(SavedState(kept.into_boxed_slice()));
        }
        match serde_json::from_slice::<StateRecordIn>(v) {
            Ok(r) => {
                check_format(r.format, offset)?;
                let mut kept = offset.to_le_bytes().to_vec();
                kept.extend(encode_state(&StateRecord {
                    gen: r.gen,
                    state: r.state.map(|c| *c),
                }));
                Ok(SavedState(kept.into_boxed_slice()))
            }
            Err(e) => {
                format_of(v, offset)?;
                Err(decode_error(offset)(e))
            }
        }
    }

    fn offset(&self) -> i64 {
        i64::from_le_bytes(self.0[..8].try_into().unwrap_or_default())
    }

    /// The record's generation.
    pub fn gen(&self) -> u64 {
        u64::from_le_bytes(self.0[10..18].try_into().unwrap_or_default())
    }

    /// The customer's binary form (empty: evicted).
    fn state(&self) -> &[u8] {
        &self.0[8 + BINARY_HEADER..]
    }

    /// The customer (`None`: evicted).
    pub fn customer(&self) -> Result<Option<Customer>, ChangelogError> {
        if self.state().is_empty() {
            return Ok(None);
        }
        Customer::decode_binary(self.state())
            .map(Some)
            .map_err(|e| ChangelogError::Decode {
                offset: self.offset(),
                message: e.to_string(),
            })
    }
}

/// Decodes a customer record whole (tools and tests; the restore keeps
/// states undecoded until it knows which it restores).
pub fn decode_state(v: &[u8], offset: i64) -> Result<StateRecord, ChangelogError> {
    let saved = SavedState::read(v, offset)?;
    Ok(StateRecord {
        gen: saved.gen(),
        state: saved.customer()?,
    })
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
    let mut k = MARKER_KEY_PREFIX.to_vec();
    k.extend_from_slice(topic.as_bytes());
    k
}

/// What every marker key starts with (the first input topic follows).
const MARKER_KEY_PREFIX: &[u8] = b"\0marker\0";

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

/// Encodes a state value (binary, format 4).
pub fn encode_state(r: &StateRecord) -> Vec<u8> {
    let mut v = Vec::with_capacity(256);
    v.push(BINARY);
    v.push(STATE_FORMAT as u8);
    v.extend_from_slice(&r.gen.to_le_bytes());
    if let Some(c) = &r.state {
        c.encode_binary(&mut v);
    }
    v
}

/// Encodes a state value as JSON in an earlier `format` (2 or 3: they
/// have the same customer layout), as the builds of that format wrote it.
pub fn encode_state_json(r: &StateRecord, format: u32) -> Vec<u8> {
    serde_json::to_vec(&Versioned { format, inner: r }).unwrap_or_default()
}

/// What a restore produced.
#[derive(Debug, Default)]
pub struct Restored {
    /// The last complete marker, if any.
    pub marker: Option<Marker>,
    /// Customers as of that marker, in no particular order, not decoded
    /// yet (see [`Restored::customers`]).
    pub saved: Vec<SavedState>,
    /// The generation the next checkpoint must use.
    pub next_gen: u64,
    /// Keys holding records of unfinished generations, to tombstone.
    pub repairs: Vec<Vec<u8>>,
    /// Records read.
    pub records: u64,
    /// The first topic of `input_topics` when another checkpoint of
    /// these inputs was written (one of them now listed later, or one no
    /// longer listed whose marker covers one of them).
    pub foreign_marker: Option<String>,
}

impl Restored {
    /// Every restored customer, decoded (tools and tests: the service
    /// decodes them one by one into its engine).
    pub fn customers(&self) -> Result<Vec<Customer>, ChangelogError> {
        let mut out = Vec::with_capacity(self.saved.len());
        for s in &self.saved {
            out.extend(s.customer()?);
        }
        Ok(out)
    }
}

/// Collects changelog records of one topic's partition, then resolves
/// them to the state of the last complete marker.
#[derive(Debug)]
pub struct RestoreBuilder {
    topic: String,
    marker_key: Vec<u8>,
    marker: Option<Marker>,
    max_gen: u64,
    /// customer → its entry in `slots`.
    ids: ahash::HashMap<Box<str>, u32>,
    /// Per customer, per slot: the latest record by offset.
    slots: Vec<[Option<SavedState>; 2]>,
    /// Entries written since the last marker: the marker settles them
    /// (see [`RestoreBuilder::settle`]).
    unsettled: Vec<u32>,
    records: u64,
    /// The task's input topics, and the first topic met that keys a
    /// marker of another prefix covering one of them.
    inputs: Vec<String>,
    foreign: Option<String>,
}

impl RestoreBuilder {
    /// A builder for one input topic.
    pub fn new(topic: &str) -> Self {
        RestoreBuilder {
            topic: topic.to_string(),
            marker_key: marker_key(topic),
            marker: None,
            max_gen: 0,
            ids: ahash::HashMap::default(),
            slots: Vec::new(),
            unsettled: Vec::new(),
            records: 0,
            inputs: Vec::new(),
            foreign: None,
        }
    }

    /// Also notes a marker under another first topic that is one of
    /// `topics` (the task's inputs) or covers one of them: state written
    /// while another topic was listed first (see
    /// [`Restored::foreign_marker`]).
    pub fn noting_markers_of(mut self, topics: &[String]) -> Self {
        self.inputs = topics.to_vec();
        self
    }

    /// Whether a marker keyed by `first` (not this task's) is one of this
    /// task's inputs' state.
    fn is_foreign_marker(&self, first: &[u8], value: &[u8], offset: i64) -> bool {
        let Ok(first) = std::str::from_utf8(first) else {
            return false;
        };
        self.inputs.iter().any(|t| t == first)
            || Marker::decode(first, value, offset)
                .is_ok_and(|m| m.inputs.iter().any(|p| self.inputs.contains(&p.topic)))
    }

    /// Feeds one record in offset order (`value` None for a tombstone).
    pub fn push(
        &mut self,
        key: &[u8],
        value: Option<&[u8]>,
        offset: i64,
    ) -> Result<(), ChangelogError> {
        match parse_key(&self.topic, &self.marker_key, key) {
            Key::Other => {
                if let (None, Some(first), Some(v)) =
                    (&self.foreign, key.strip_prefix(MARKER_KEY_PREFIX), value)
                {
                    if self.is_foreign_marker(first, v, offset) {
                        self.foreign = Some(String::from_utf8_lossy(first).into_owned());
                    }
                }
            }
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
                        let saved = SavedState::read(v, offset)?;
                        self.max_gen = self.max_gen.max(saved.gen());
                        Some(saved)
                    }
                };
                let i = match self.ids.get(customer) {
                    Some(&i) => i,
                    None => {
                        let i = self.slots.len() as u32;
                        self.slots.push([None, None]);
                        self.ids.insert(customer.into(), i);
                        i
                    }
                };
                if let Some(entry) = self.slots.get_mut(i as usize) {
                    entry[usize::from(slot - 1)] = record;
                }
                self.unsettled.push(i);
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
        for i in std::mem::take(&mut self.unsettled) {
            let Some(entry) = self.slots.get_mut(i as usize) else {
                continue;
            };
            // `finish` keeps the first slot of two equal generations.
            let older = match &*entry {
                [Some(a), Some(b)] if a.gen() <= gen && b.gen() <= gen => {
                    usize::from(a.gen() >= b.gen())
                }
                _ => continue,
            };
            entry[older] = None;
        }
    }

    /// Resolves to the state of the last complete marker.
    pub fn finish(self) -> Restored {
        let committed = self.marker.as_ref().map_or(0, |m| m.gen);
        let mut customers = Vec::with_capacity(self.slots.len());
        // In the order customers first appear (the map's order would jump
        // around memory); their ids are looked up only for repairs.
        let mut to_repair: Vec<(u32, u8)> = Vec::new();
        for (i, slots) in self.slots.into_iter().enumerate() {
            let mut best: Option<SavedState> = None;
            for (n, s) in slots.into_iter().enumerate() {
                let Some(s) = s else { continue };
                if s.gen() > committed || self.marker.is_none() {
                    to_repair.push((i as u32, (n + 1) as u8));
                } else if best.as_ref().is_none_or(|b| s.gen() > b.gen()) {
                    best = Some(s);
                }
            }
            match best {
                Some(s) if !s.state().is_empty() => customers.push(s),
                _ => {}
            }
        }
        let mut repairs = Vec::with_capacity(to_repair.len());
        if !to_repair.is_empty() {
            let mut names: Vec<Option<&str>> = vec![None; self.ids.len()];
            for (id, &i) in &self.ids {
                if let Some(name) = names.get_mut(i as usize) {
                    *name = Some(id);
                }
            }
            for (i, slot) in to_repair {
                if let Some(Some(id)) = names.get(i as usize) {
                    repairs.push(state_key(&self.topic, id, slot));
                }
            }
        }
        repairs.sort();
        Restored {
            marker: self.marker,
            saved: customers,
            next_gen: self.max_gen + 1,
            repairs,
            records: self.records,
            foreign_marker: self.foreign,
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
    fn a_marker_of_another_input_topic_is_noted() {
        let topics = ["web".to_string(), "store".to_string()];
        let mark = |b: &mut RestoreBuilder, t: &str, offset| {
            let m = Marker {
                gen: 1,
                meta: meta(),
                inputs: vec![pos(t, 10)],
            };
            b.push(&marker_key(t), Some(&encode_marker(&m)), offset)
                .unwrap();
        };
        // Written while `web` was first; read with `store` first.
        let mut b = RestoreBuilder::new("store").noting_markers_of(&topics);
        mark(&mut b, "web", 0);
        let r = b.finish();
        assert!(r.marker.is_none());
        assert_eq!(r.foreign_marker.as_deref(), Some("web"));
        // Another application's marker (none of these inputs), or a
        // deleted marker, is not noted.
        let mut b = RestoreBuilder::new("store").noting_markers_of(&topics);
        mark(&mut b, "gone", 0);
        b.push(&marker_key("web"), None, 1).unwrap();
        assert_eq!(b.finish().foreign_marker, None);
        // A first topic no longer listed whose marker covers an input is.
        let mut b = RestoreBuilder::new("store").noting_markers_of(&topics[1..]);
        let m = Marker {
            gen: 1,
            meta: meta(),
            inputs: vec![pos("web", 10), pos("store", 4)],
        };
        b.push(&marker_key("web"), Some(&encode_marker(&m)), 0)
            .unwrap();
        assert_eq!(b.finish().foreign_marker.as_deref(), Some("web"));
        // The task's own marker is not another topic's.
        let mut b = RestoreBuilder::new("web").noting_markers_of(&topics);
        mark(&mut b, "web", 0);
        let r = b.finish();
        assert!(r.marker.is_some());
        assert_eq!(r.foreign_marker, None);
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
        assert_eq!(r.marker.as_ref().unwrap().offset(t), Some(100));
        assert_eq!(r.customers().unwrap().len(), 1);
        assert_eq!(r.customers().unwrap()[0].newest, 10);
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
        assert!(r.customers().unwrap().is_empty());
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
            b.slots.iter().flatten().filter(|s| s.is_some()).count()
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
        assert_eq!(r.customers().unwrap().len(), 1);
        assert_eq!(r.customers().unwrap()[0].newest, 20);
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
        assert_eq!(r.customers().unwrap().len(), 1);
        assert_eq!(r.customers().unwrap()[0].newest, 20);
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
            msg.contains("state format 1") && msg.contains("reads formats 2 to 4"),
            "{msg}"
        );
        let newer = br#"{"format":5,"gen":1,"state":null}"#;
        let e = b.push(&state_key(t, "c", 1), Some(newer), 8).unwrap_err();
        assert!(matches!(e, ChangelogError::Format { found: 5, .. }), "{e}");
        let newer_binary = [BINARY, 5, 1, 0, 0, 0, 0, 0, 0, 0];
        let e = b
            .push(&state_key(t, "c", 1), Some(&newer_binary), 9)
            .unwrap_err();
        assert!(matches!(e, ChangelogError::Format { found: 5, .. }), "{e}");
        // The current format round-trips.
        let rec = encode_state(&StateRecord {
            gen: 1,
            state: Some(cust("c", 10, 1)),
        });
        assert_eq!(rec[..2], [BINARY, 4]);
        b.push(&state_key(t, "c", 1), Some(&rec), 10).unwrap();
    }

    #[test]
    fn a_binary_record_that_does_not_decode_is_a_clear_error_when_restored() {
        let t = "tp";
        let mut b = RestoreBuilder::new(t);
        let mut rec = encode_state(&StateRecord {
            gen: 1,
            state: Some(cust("c", 10, 1)),
        });
        // A lane length naming entries that are not there.
        let short = [BINARY, 4, 1];
        let e = b.push(&state_key(t, "c", 1), Some(&short), 0).unwrap_err();
        assert!(e.to_string().contains("shorter than its header"), "{e}");
        rec.truncate(rec.len() - 1);
        b.push(&state_key(t, "c", 1), Some(&rec), 1).unwrap();
        b.push(
            &marker_key(t),
            Some(&encode_marker(&Marker {
                gen: 1,
                meta: meta(),
                inputs: vec![pos(t, 1)],
            })),
            2,
        )
        .unwrap();
        let r = b.finish();
        let e = r.customers().unwrap_err();
        assert!(matches!(e, ChangelogError::Decode { offset: 1, .. }), "{e}");
    }

    /// A changelog that a format-3 build wrote (JSON customers) and this
    /// build went on writing (binary customers, markers of format 4):
    /// each customer restores from its latest complete record, whatever
    /// its form.
    #[test]
    fn json_and_binary_records_of_one_changelog_restore_together() {
        let t = "tp";
        let mut b = RestoreBuilder::new(t);
        let json = |gen, c: Customer| {
            encode_state_json(
                &StateRecord {
                    gen,
                    state: Some(c),
                },
                3,
            )
        };
        let marker = |gen, format: u32| {
            let m = Marker {
                gen,
                meta: meta(),
                inputs: vec![pos(t, 7)],
            };
            serde_json::to_vec(&Versioned { format, inner: &m }).unwrap()
        };
        b.push(&state_key(t, "a", 1), Some(&json(1, cust("a", 10, 1))), 0)
            .unwrap();
        b.push(&state_key(t, "b", 1), Some(&json(1, cust("b", 11, 1))), 1)
            .unwrap();
        b.push(&marker_key(t), Some(&marker(1, 3)), 2).unwrap();
        let bin = |gen, c: Option<Customer>| encode_state(&StateRecord { gen, state: c });
        b.push(
            &state_key(t, "a", 2),
            Some(&bin(2, Some(cust("a", 20, 2)))),
            3,
        )
        .unwrap();
        b.push(
            &state_key(t, "c", 1),
            Some(&bin(2, Some(cust("c", 22, 1)))),
            4,
        )
        .unwrap();
        b.push(&marker_key(t), Some(&marker(2, 4)), 5).unwrap();
        // Generation 3 never completes.
        b.push(&state_key(t, "b", 2), Some(&bin(3, None)), 6)
            .unwrap();
        let r = b.finish();
        let mut got: Vec<(String, i64)> = r
            .customers()
            .unwrap()
            .iter()
            .map(|c| (c.id().to_string(), c.newest))
            .collect();
        got.sort();
        assert_eq!(
            got,
            vec![("a".into(), 20), ("b".into(), 11), ("c".into(), 22)]
        );
        assert_eq!(r.repairs, vec![state_key(t, "b", 2)]);
        assert_eq!(r.next_gen, 4);
    }
}
