//! [`Lanes`]: a customer's id and per-event lists in one allocation.
//!
//! Every customer keeps its id, the hashes of its last 32 event ids
//! (duplicates), its own touches of the last 30 d (attribution, engagement
//! channels), the channels of touches dropped from those (rarely any), the
//! carts it abandoned that no order has closed yet (each is abandoned
//! once), its open support contact, its churn facts and its outbound
//! messages of the last 7 d (contact fatigue). The lists hold 6-byte
//! [`Packed`] values and change by one entry at a time. Kept apart, each
//! would cost a pointer and a length in the customer and its own
//! rounded-up allocation (the id an `Arc` header too); here they are
//! consecutive parts of one exact-size boxed byte slice: the id's bytes,
//! then the lanes, with the id's length and six one-byte lane lengths
//! beside it (the last lane takes the rest).
//!
//! The signals that own a lane add their methods to [`Lanes`] in their own
//! module (`engine::dedup`, `signals::attribution`, `signals::cart`,
//! `signals::fatigue`, `engine::state`); `signals::churn` reads and writes
//! its lane whole.

use serde::de::Deserializer;
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};

use super::{List, Packed};
use crate::model::EventTime;

/// Bytes of one lane entry.
const ENTRY: usize = std::mem::size_of::<Packed>();

/// One of the lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// Hashes of the last 32 accepted event ids, oldest first (at most 32).
    Dedup = 0,
    /// Own touches, sorted by time (at most `attribution::KEEP` + 1).
    Touches = 1,
    /// Latest dropped touch per channel (at most 12).
    Dropped = 2,
    /// Carts abandoned and not closed by an order yet, as 48-bit hashes of
    /// their keys, oldest first (at most `cart::MAX_CLOSED_CARTS`).
    Closed = 3,
    /// The open support contact: time and channel (at most 1).
    Support = 4,
    /// The churn facts a customer has (order times, the pending p_alive
    /// crossing, the latest unsubscribe and NPS answer), tagged (at most
    /// `churn::FACTS`).
    Churn = 5,
    /// Outbound messages, sorted by time (any number).
    Messages = 6,
}

/// A customer's id and lists; see the module docs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lanes {
    /// The id's bytes, then the lanes' entries.
    bytes: List<u8>,
    /// Bytes of the id.
    id_len: u16,
    /// Entries of every lane but the last.
    lens: [u8; 6],
}

impl Lanes {
    /// Empty lists for the customer `id` (at most 65,535 bytes: the input
    /// rules allow 256; a longer one is cut at a character boundary).
    pub fn new(id: &str) -> Self {
        let mut end = id.len().min(usize::from(u16::MAX));
        while !id.is_char_boundary(end) {
            end -= 1;
        }
        Lanes {
            bytes: id.as_bytes()[..end].iter().copied().collect(),
            id_len: end as u16,
            lens: [0; 6],
        }
    }

    /// The customer id.
    pub fn id(&self) -> &str {
        // Always whole UTF-8: written only from a `&str` cut at a boundary.
        std::str::from_utf8(self.id_bytes()).unwrap_or_default()
    }

    /// The customer id's bytes.
    pub fn id_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.id_len)]
    }

    /// Entry range of a lane.
    fn bounds(&self, lane: Lane) -> (usize, usize) {
        let i = lane as usize;
        let start: usize = self.lens[..i].iter().map(|&n| usize::from(n)).sum();
        let end = match self.lens.get(i) {
            Some(&n) => start + usize::from(n),
            None => (self.bytes.len() - usize::from(self.id_len)) / ENTRY,
        };
        (start, end)
    }

    /// Byte position of entry `i` (counted over all lanes).
    fn at(&self, i: usize) -> usize {
        usize::from(self.id_len) + i * ENTRY
    }

    fn add_len(&mut self, lane: Lane, delta: isize) {
        if let Some(n) = self.lens.get_mut(lane as usize) {
            // Lane sizes are bounded below 256 by their owners (a length
            // clamped here would shift every later lane).
            let to = *n as isize + delta;
            debug_assert!((0..=255).contains(&to), "{lane:?} length {to}");
            *n = to.clamp(0, 255) as u8;
        }
    }

    /// The entries of a lane.
    pub fn lane(&self, lane: Lane) -> &[Packed] {
        let (a, b) = self.bounds(lane);
        bytemuck::cast_slice(&self.bytes[self.at(a)..self.at(b)])
    }

    /// The entries of a lane, to change in place.
    pub fn lane_mut(&mut self, lane: Lane) -> &mut [Packed] {
        let (a, b) = self.bounds(lane);
        let (a, b) = (self.at(a), self.at(b));
        bytemuck::cast_slice_mut(&mut self.bytes[a..b])
    }

    /// Inserts `p` at position `i` of a lane (`i` <= its length).
    pub fn insert(&mut self, lane: Lane, i: usize, p: Packed) {
        let (a, b) = self.bounds(lane);
        let at = self.at((a + i).min(b));
        self.bytes.splice(at..at, bytemuck::bytes_of(&p));
        self.add_len(lane, 1);
    }

    /// Replaces a lane's entries (nothing is moved when they are the same).
    pub fn set_lane(&mut self, lane: Lane, entries: &[Packed]) {
        if self.lane(lane) == entries {
            return;
        }
        let (a, b) = self.bounds(lane);
        self.bytes
            .splice(self.at(a)..self.at(b), bytemuck::cast_slice(entries));
        self.add_len(lane, entries.len() as isize - (b - a) as isize);
    }

    /// Appends to a lane.
    pub fn push(&mut self, lane: Lane, p: Packed) {
        let (a, b) = self.bounds(lane);
        self.insert(lane, b - a, p);
    }

    /// Removes the first `n` entries of a lane.
    pub fn remove_front(&mut self, lane: Lane, n: usize) {
        let (a, b) = self.bounds(lane);
        let n = n.min(b - a);
        if n > 0 {
            self.bytes.splice(self.at(a)..self.at(a + n), &[]);
            self.add_len(lane, -(n as isize));
        }
    }

    /// Keeps the entries of a lane for which `f` is true.
    pub fn retain(&mut self, lane: Lane, mut f: impl FnMut(&Packed) -> bool) {
        let entries = self.lane(lane);
        let kept: Vec<Packed> = entries.iter().copied().filter(|p| f(p)).collect();
        let removed = entries.len() - kept.len();
        if removed == 0 {
            return;
        }
        let (a, b) = self.bounds(lane);
        self.bytes
            .splice(self.at(a)..self.at(b), bytemuck::cast_slice(&kept));
        self.add_len(lane, -(removed as isize));
    }

    /// Inserts into a time-sorted lane, after every entry with the same
    /// time (so ties keep arrival order).
    pub fn insert_sorted(&mut self, lane: Lane, p: Packed) {
        let t = p.time();
        let entries = self.lane(lane);
        let i = if entries.last().is_none_or(|l| l.time() <= t) {
            entries.len()
        } else {
            entries.partition_point(|x| x.time() <= t)
        };
        self.insert(lane, i, p);
    }

    /// Drops the entries with time <= `cutoff` from the front of a
    /// time-sorted lane.
    pub fn prune_until(&mut self, lane: Lane, cutoff: EventTime) {
        let n = self.lane(lane).partition_point(|x| x.time() <= cutoff);
        self.remove_front(lane, n);
    }

    /// Moves the lists to an allocation of exactly their size (see
    /// [`List::compact`]), after they have shed much.
    pub fn compact(&mut self) {
        self.bytes.compact();
    }

    /// Heap bytes used (the id and the entries).
    pub fn heap_bytes(&self) -> usize {
        self.bytes.heap_bytes()
    }

    /// Bytes of one lane's entries.
    pub fn lane_bytes(&self, lane: Lane) -> usize {
        std::mem::size_of_val(self.lane(lane))
    }

    /// Reads one word of the lists up front (a prefetch).
    pub fn touch(&self) -> Option<u8> {
        self.bytes.first().copied()
    }

    /// The lists as they are held: the id's length, the lengths of every
    /// lane but the last, and the bytes (the id's, then the entries). The
    /// binary changelog form (state format 4) writes these as they are.
    pub fn raw(&self) -> (u16, [u8; 6], &[u8]) {
        (self.id_len, self.lens, &self.bytes)
    }

    /// Lists from [`Lanes::raw`]'s parts, checked: `None` when the id is
    /// not whole UTF-8 within the bytes, the entries are not whole, or the
    /// lane lengths name more entries than there are.
    pub fn from_raw(id_len: u16, lens: [u8; 6], bytes: &[u8]) -> Option<Lanes> {
        let id = bytes.get(..usize::from(id_len))?;
        std::str::from_utf8(id).ok()?;
        let entries = bytes.len() - id.len();
        let named: usize = lens.iter().map(|&n| usize::from(n)).sum();
        if !entries.is_multiple_of(ENTRY) || named > entries / ENTRY {
            return None;
        }
        Some(Lanes {
            bytes: bytes.iter().copied().collect(),
            id_len,
            lens,
        })
    }
}

/// The changelog form keeps the shape of state format 2, where the id and
/// the lists were four fields of the customer: `id`, `dedup` (`ring`: 48-bit hashes as
/// integers, `next`: the position of the oldest), `attribution`
/// (`touches`, `dropped`) and `fatigue` (`messages`). The customer
/// flattens these keys into its own.
impl Lanes {
    /// Writes the `id`, `dedup`, `attribution` and `fatigue` keys into the
    /// customer's map (the closed carts and the open support contact are
    /// written by the customer, under `rare`, where format 2 had them).
    pub fn serialize_entries<M: SerializeMap>(&self, m: &mut M) -> Result<(), M::Error> {
        m.serialize_entry("id", self.id())?;
        let ring: Vec<u64> = self.lane(Lane::Dedup).iter().map(|p| p.bits()).collect();
        m.serialize_entry("dedup", &DedupForm { ring, next: 0 })?;
        m.serialize_entry(
            "attribution",
            &AttributionForm {
                touches: self.lane(Lane::Touches).to_vec(),
                dropped: self.lane(Lane::Dropped).to_vec(),
            },
        )?;
        m.serialize_entry(
            "fatigue",
            &FatigueForm {
                messages: self.lane(Lane::Messages).to_vec(),
                disarmed: false,
            },
        )
    }
}

impl Serialize for Lanes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(4))?;
        self.serialize_entries(&mut m)?;
        m.end()
    }
}

#[derive(Serialize, Deserialize, Default)]
struct DedupForm {
    ring: Vec<u64>,
    #[serde(default)]
    next: u8,
}

#[derive(Serialize, Deserialize, Default)]
struct AttributionForm {
    touches: Vec<Packed>,
    #[serde(default)]
    dropped: Vec<Packed>,
}

#[derive(Serialize, Deserialize, Default)]
struct FatigueForm {
    messages: Vec<Packed>,
    /// Implied by the counts now (see `signals::fatigue`); written as
    /// `false` so that a build of state format 2 that still reads the flag
    /// can restore this state (at worst one extra `contact_fatigue` for a
    /// customer above the cap at that moment), and ignored when read.
    #[serde(default)]
    disarmed: bool,
}

#[derive(Deserialize)]
struct Forms {
    id: String,
    #[serde(default)]
    dedup: DedupForm,
    #[serde(default)]
    attribution: AttributionForm,
    #[serde(default)]
    fatigue: FatigueForm,
}

impl<'de> Deserialize<'de> for Lanes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let f = Forms::deserialize(d)?;
        let window = crate::signals::dedup::WINDOW;
        let mut ring: Vec<Packed> = f
            .dedup
            .ring
            .into_iter()
            .take(window)
            .map(Packed::from_bits)
            .collect();
        if ring.len() == window {
            ring.rotate_left(usize::from(f.dedup.next) % window);
        }
        let keep = super::attribution::KEEP + 1;
        // Lists are written in their order (sorted by time, ties in arrival
        // order): taken as they are.
        let mut touches = f.attribution.touches;
        if touches.len() > keep {
            touches.drain(..touches.len() - keep);
        }
        let mut dropped = f.attribution.dropped;
        dropped.truncate(crate::model::Channel::ALL.len());
        let messages = f.fatigue.messages;
        let mut lanes = Lanes::new(&f.id);
        lanes.lens = [
            ring.len() as u8,
            touches.len() as u8,
            dropped.len() as u8,
            0,
            0,
            0,
        ];
        let entries: Vec<Packed> = ring
            .into_iter()
            .chain(touches)
            .chain(dropped)
            .chain(messages)
            .collect();
        let end = lanes.bytes.len();
        lanes.bytes.splice(end..end, bytemuck::cast_slice(&entries));
        Ok(lanes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Channel;

    fn p(t: EventTime) -> Packed {
        Packed::new(t, Channel::Web)
    }

    fn times(l: &Lanes, lane: Lane) -> Vec<EventTime> {
        l.lane(lane).iter().map(|x| x.time()).collect()
    }

    #[test]
    fn lanes_change_independently() {
        let mut l = Lanes::new("cust-é");
        l.insert_sorted(Lane::Messages, p(5));
        l.insert_sorted(Lane::Touches, p(3));
        l.insert_sorted(Lane::Touches, p(1));
        l.push(Lane::Dedup, Packed::from_bits(77));
        l.push(Lane::Dropped, p(9));
        l.insert_sorted(Lane::Messages, p(4));
        assert_eq!(times(&l, Lane::Touches), [1, 3]);
        assert_eq!(times(&l, Lane::Messages), [4, 5]);
        assert_eq!(times(&l, Lane::Dropped), [9]);
        assert_eq!(l.lane(Lane::Dedup), [Packed::from_bits(77)]);
        l.prune_until(Lane::Touches, 1);
        l.retain(Lane::Messages, |x| x.time() != 4);
        l.remove_front(Lane::Dedup, 5);
        assert_eq!(times(&l, Lane::Touches), [3]);
        assert_eq!(times(&l, Lane::Messages), [5]);
        assert_eq!(times(&l, Lane::Dropped), [9]);
        assert!(l.lane(Lane::Dedup).is_empty());
        assert_eq!(l.heap_bytes(), 7 + 18);
        assert_eq!(l.id(), "cust-é");
        let back: Lanes = serde_json::from_str(&serde_json::to_string(&l).unwrap()).unwrap();
        assert_eq!(back, l);
    }

    #[test]
    fn an_overlong_id_is_cut_at_a_character_boundary() {
        let id = "é".repeat(40_000);
        let l = Lanes::new(&id);
        assert_eq!(l.id().len(), 65_534);
        assert!(id.starts_with(l.id()));
    }
}
