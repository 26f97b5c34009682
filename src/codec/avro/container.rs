//! Avro object container files (`replay`, `fit-churn`), read block by block
//! so that damage costs only what it touches.
//!
//! apache-avro's `Reader` stops at the first damaged block, so one flipped
//! byte lost the rest of a file, and a block whose record count is too
//! small hid its other records without a word. Here the framing (header,
//! then blocks of count, size, data and the 16-byte sync marker) is read
//! by hand and the datums are decoded by [`codec::avro`](super):
//! - a block whose framing is damaged is skipped up to the next sync
//!   marker (what sync markers are for), and reading goes on after it;
//! - a record that does not decode is rejected, and the rest of its block,
//!   whose record boundaries are then unknown, is reported as lost;
//! - bytes left over after a block's records are reported.
//!
//! Blocks are bounded ([`MAX_BLOCK_BYTES`], compressed and inflated), so a
//! damaged size or a deflate bomb cannot take the memory.

use std::collections::HashMap;
use std::io::{self, Read};

use apache_avro::Schema;
use thiserror::Error;

use super::{decode_datum_framed, DatumReader};
use crate::validate::{RawTouchpoint, Rejection};

/// The largest block read, before and after inflating.
pub const MAX_BLOCK_BYTES: usize = 64 << 20;

const MAGIC: &[u8; 4] = b"Obj\x01";

/// A file that cannot be read as an Avro object container at all.
#[derive(Debug, Error)]
pub enum ContainerError {
    /// Reading failed.
    #[error("reading the Avro file failed")]
    Io(#[from] io::Error),
    /// The header is not an Avro object container header.
    #[error("not an Avro object container file: {0}")]
    Header(String),
    /// The file's codec is not one this build reads.
    #[error("Avro codec `{0}` is not supported (this build reads `null` and `deflate`)")]
    Codec(String),
}

/// What reading produced, in file order.
#[derive(Debug)]
pub enum Item {
    /// A record (decoded, or why not), with its block (1-based).
    Record {
        /// The block it is in.
        block: u64,
        /// The touchpoint, or why it does not decode.
        result: Result<RawTouchpoint, Rejection>,
    },
    /// Damage that cost records which cannot be read one by one.
    Damaged {
        /// The block (1-based) where it was found.
        block: u64,
        /// Byte offset in the file where the block starts.
        offset: u64,
        /// Records lost, when the block says how many (else unknown).
        records: Option<u64>,
        /// What was wrong.
        message: String,
    },
}

/// Reads `input` (an Avro object container) and hands every record and
/// every damaged stretch to `f`, in order. Fails only when the file as a
/// whole cannot be read (bad header, unsupported codec, I/O), or when `f`
/// fails.
pub fn read<R: Read>(
    input: R,
    reader: &Schema,
    mut f: impl FnMut(Item) -> io::Result<()>,
) -> Result<(), ContainerError> {
    let mut input = Input::new(input);
    let header = read_header(&mut input)?;
    let fast = (header.writer.canonical_form() == reader.canonical_form())
        .then(|| DatumReader::new(&header.writer).ok())
        .flatten();
    let mut block = 0u64;
    loop {
        let offset = input.offset;
        input.start_recording();
        let head = read_long(&mut input).and_then(|count| match count {
            None => Ok(None),
            Some(count) => match read_long(&mut input)? {
                Some(size) => Ok(Some((count, size))),
                None => Err(Framing::Truncated),
            },
        });
        let skip = match head {
            Ok(None) => return Ok(()),
            Ok(Some((count, size))) => {
                block += 1;
                let at = (block, offset);
                read_block(&mut input, &header, &fast, reader, at, count, size, &mut f)?
            }
            Err(e) => {
                block += 1;
                e.io()?;
                Some((None, "its header is damaged".to_string()))
            }
        };
        // A damaged block: reported, and skipped to the next sync marker.
        if let Some((records, why)) = skip {
            let skipped = input.resync(&header.sync)?;
            let to = if input.at_end()? {
                "the end of the file"
            } else {
                "the next sync marker"
            };
            f(Item::Damaged {
                block,
                offset,
                records,
                message: format!("{why}; {skipped} bytes skipped to {to}"),
            })?;
        }
    }
}

/// What a damaged block lost (when its count says) and why.
type Skip = Option<(Option<u64>, String)>;

/// Reads the block whose count and size have been read, handing its
/// records to `f`; `Some` when it must be skipped to the next marker.
#[allow(clippy::too_many_arguments)]
fn read_block<R: Read>(
    input: &mut Input<R>,
    header: &Header,
    fast: &Option<DatumReader>,
    reader: &Schema,
    (block, offset): (u64, u64),
    count: i64,
    size: i64,
    f: &mut impl FnMut(Item) -> io::Result<()>,
) -> Result<Skip, ContainerError> {
    let sane = |v: i64| usize::try_from(v).ok().filter(|&v| v <= MAX_BLOCK_BYTES);
    let (Some(n), Some(size)) = (sane(count), sane(size)) else {
        let why = format!("its record count {count} or size {size} is impossible");
        return Ok(Some((None, why)));
    };
    let n = n as u64;
    let mut data = vec![0u8; size];
    let mut marker = [0u8; 16];
    if !input.read_full(&mut data)? || !input.read_full(&mut marker)? {
        // A damaged size can run past the end too: the search for the
        // next marker finds the block's own, if there is one.
        let why = "it runs past the end of the file (a damaged size, or a truncated file)";
        return Ok(Some((Some(n), why.into())));
    }
    let decode = |data: &[u8], f: &mut dyn FnMut(Item) -> io::Result<()>| {
        decode_block(data, n, block, offset, fast, &header.writer, reader, f)
    };
    if marker == header.sync {
        input.stop_recording();
        match header.codec.inflate(data) {
            Ok(data) => {
                decode(&data, f)?;
            }
            Err(e) => f(Item::Damaged {
                block,
                offset,
                records: Some(n),
                message: format!("its data does not inflate: {e}"),
            })?,
        }
        return Ok(None);
    }
    // The marker is damaged. Only the marker, when it is nearly the sync
    // and the (uncompressed) records fill the block exactly: then they are
    // kept. Otherwise the count, the size or the data may be damaged too.
    let near = marker
        .iter()
        .zip(&header.sync)
        .filter(|(a, b)| a == b)
        .count()
        >= 12;
    if near && n > 0 && matches!(header.codec, Codec::Null) {
        let mut items = Vec::new();
        if decode(&data, &mut |i| {
            items.push(i);
            Ok(())
        })? {
            input.stop_recording();
            for item in items {
                f(item)?;
            }
            f(Item::Damaged {
                block,
                offset,
                records: Some(0),
                message: "its sync marker is damaged; its records decode and are kept".into(),
            })?;
            return Ok(None);
        }
    }
    let why = "its sync marker is missing (a damaged count, size or data)";
    Ok(Some((Some(n), why.into())))
}

/// Decodes a block's `n` records into `f`; true when every record's
/// framing reads and the records fill the block exactly. A record that
/// reads but is rejected (say, an enum symbol the reader lacks) costs only
/// itself; one whose framing does not read costs the rest of the block,
/// whose record boundaries are then unknown.
#[allow(clippy::too_many_arguments)]
fn decode_block(
    data: &[u8],
    n: u64,
    block: u64,
    offset: u64,
    fast: &Option<DatumReader>,
    writer: &Schema,
    reader: &Schema,
    f: &mut dyn FnMut(Item) -> io::Result<()>,
) -> io::Result<bool> {
    let mut rest = data;
    for k in 0..n {
        let framed = match fast {
            Some(r) => r.decode_framed(&mut rest),
            None => decode_datum_framed(writer, reader, &mut rest),
        };
        match framed {
            Ok(result) => f(Item::Record { block, result })?,
            Err(rejection) => {
                f(Item::Record {
                    block,
                    result: Err(rejection),
                })?;
                let lost = n - k - 1;
                if lost > 0 {
                    f(Item::Damaged {
                        block,
                        offset,
                        records: Some(lost),
                        message: format!(
                            "record {} of its {n} does not read, so where the next ones start is unknown",
                            k + 1
                        ),
                    })?;
                }
                return Ok(false);
            }
        }
    }
    if !rest.is_empty() {
        f(Item::Damaged {
            block,
            offset,
            records: None,
            message: format!(
                "{} bytes are left after its {n} records (a damaged record count)",
                rest.len()
            ),
        })?;
        return Ok(false);
    }
    Ok(true)
}

struct Header {
    writer: Schema,
    codec: Codec,
    sync: [u8; 16],
}

#[derive(Debug, Clone, Copy)]
enum Codec {
    Null,
    Deflate,
}

impl Codec {
    fn inflate(self, data: Vec<u8>) -> Result<Vec<u8>, String> {
        match self {
            Codec::Null => Ok(data),
            Codec::Deflate => {
                miniz_oxide::inflate::decompress_to_vec_with_limit(&data, MAX_BLOCK_BYTES)
                    .map_err(|e| format!("{:?}", e.status))
            }
        }
    }
}

fn read_header(input: &mut Input<impl Read>) -> Result<Header, ContainerError> {
    let bad = |m: &str| ContainerError::Header(m.to_string());
    let mut magic = [0u8; 4];
    if !input.read_full(&mut magic)? || &magic != MAGIC {
        return Err(bad("it does not start with `Obj\\x01`"));
    }
    // The metadata: a map of bytes, in blocks ending with a zero count.
    let mut meta: HashMap<String, Vec<u8>> = HashMap::new();
    let mut total = 0usize;
    loop {
        let count = read_long(input)
            .map_err(|e| e.header())?
            .ok_or_else(|| bad("it ends in the metadata"))?;
        if count == 0 {
            break;
        }
        if count < 0 {
            // A negative count is followed by the block's size in bytes.
            read_long(input).map_err(|e| e.header())?;
        }
        for _ in 0..count.unsigned_abs() {
            let key = read_bytes(input, &mut total)?;
            let value = read_bytes(input, &mut total)?;
            meta.insert(String::from_utf8_lossy(&key).into_owned(), value);
        }
    }
    let mut sync = [0u8; 16];
    if !input.read_full(&mut sync)? {
        return Err(bad("it ends before the sync marker"));
    }
    let schema = meta
        .get("avro.schema")
        .ok_or_else(|| bad("no `avro.schema` in the metadata"))?;
    let schema = std::str::from_utf8(schema).map_err(|_| bad("`avro.schema` is not UTF-8"))?;
    let writer = Schema::parse_str(schema)
        .map_err(|e| ContainerError::Header(format!("its schema does not parse: {e}")))?;
    let codec = match meta
        .get("avro.codec")
        .map(|c| String::from_utf8_lossy(c).into_owned())
    {
        None => Codec::Null,
        Some(c) if c == "null" => Codec::Null,
        Some(c) if c == "deflate" => Codec::Deflate,
        Some(c) => return Err(ContainerError::Codec(c)),
    };
    Ok(Header {
        writer,
        codec,
        sync,
    })
}

/// A length-prefixed byte string of the header (bounded in all).
fn read_bytes(input: &mut Input<impl Read>, total: &mut usize) -> Result<Vec<u8>, ContainerError> {
    let bad = |m: &str| ContainerError::Header(m.to_string());
    let len = read_long(input)
        .map_err(|e| e.header())?
        .ok_or_else(|| bad("it ends in the metadata"))?;
    let len = usize::try_from(len).map_err(|_| bad("a negative length in the metadata"))?;
    *total = total.saturating_add(len);
    if *total > MAX_BLOCK_BYTES {
        return Err(bad("its metadata is larger than 64 MiB"));
    }
    let mut v = vec![0u8; len];
    if !input.read_full(&mut v)? {
        return Err(bad("it ends in the metadata"));
    }
    Ok(v)
}

/// Why a varint could not be read.
enum Framing {
    Io(io::Error),
    /// The file ends inside it.
    Truncated,
    /// More than 10 bytes.
    TooLong,
}

impl Framing {
    /// Passes I/O errors on; the others are damage.
    fn io(self) -> Result<(), ContainerError> {
        match self {
            Framing::Io(e) => Err(e.into()),
            _ => Ok(()),
        }
    }

    fn header(self) -> ContainerError {
        match self {
            Framing::Io(e) => e.into(),
            Framing::Truncated => ContainerError::Header("it ends in the metadata".into()),
            Framing::TooLong => ContainerError::Header("a damaged number in the metadata".into()),
        }
    }
}

/// A zigzag varint `long`; `None` at a clean end of the file.
fn read_long(input: &mut Input<impl Read>) -> Result<Option<i64>, Framing> {
    let mut v: u64 = 0;
    for i in 0..10 {
        let Some(b) = input.byte().map_err(Framing::Io)? else {
            return if i == 0 {
                Ok(None)
            } else {
                Err(Framing::Truncated)
            };
        };
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(Some(((v >> 1) as i64) ^ -((v & 1) as i64)));
        }
    }
    Err(Framing::TooLong)
}

/// The file, with the bytes of the current block kept so that a damaged
/// block can be searched for the next sync marker from its second byte.
struct Input<R> {
    inner: io::BufReader<R>,
    /// Bytes to read again before `inner` (from a damaged block).
    again: Vec<u8>,
    at: usize,
    /// The current block's bytes, while recording.
    recorded: Vec<u8>,
    recording: bool,
    /// Offset in the file of the next byte read.
    offset: u64,
}

impl<R: Read> Input<R> {
    fn new(inner: R) -> Self {
        Input {
            inner: io::BufReader::with_capacity(1 << 16, inner),
            again: Vec::new(),
            at: 0,
            recorded: Vec::new(),
            recording: false,
            offset: 0,
        }
    }

    fn start_recording(&mut self) {
        self.recorded.clear();
        self.recording = true;
    }

    fn stop_recording(&mut self) {
        self.recording = false;
        self.recorded.clear();
    }

    fn byte(&mut self) -> io::Result<Option<u8>> {
        let mut b = [0u8; 1];
        Ok(self.read_full(&mut b)?.then_some(b[0]))
    }

    /// Fills `buf`; false when the file ends first.
    fn read_full(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        let mut filled = 0;
        if self.at < self.again.len() {
            let n = (self.again.len() - self.at).min(buf.len());
            buf[..n].copy_from_slice(&self.again[self.at..self.at + n]);
            self.at += n;
            filled = n;
        }
        while filled < buf.len() {
            match self.inner.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.recording {
            self.recorded.extend_from_slice(&buf[..filled]);
        }
        self.offset += filled as u64;
        Ok(filled == buf.len())
    }

    fn at_end(&mut self) -> io::Result<bool> {
        if self.at < self.again.len() {
            return Ok(false);
        }
        Ok(io::BufRead::fill_buf(&mut self.inner)?.is_empty())
    }

    /// Moves just past the next `sync`, searching from the second byte of
    /// the current block; returns the bytes skipped.
    fn resync(&mut self, sync: &[u8; 16]) -> io::Result<u64> {
        self.recording = false;
        let mut back = std::mem::take(&mut self.recorded);
        if back.is_empty() {
            return Ok(0);
        }
        // Everything recorded but the first byte is read again (before any
        // bytes still pending from an earlier resync, which the offset has
        // not counted yet).
        back.drain(..1);
        self.offset -= back.len() as u64;
        back.extend_from_slice(&self.again[self.at..]);
        self.again = back;
        self.at = 0;
        let mut window = [0u8; 16];
        let mut seen = 0u64;
        let skipped = 1u64;
        while let Some(b) = self.byte()? {
            window.copy_within(1.., 0);
            window[15] = b;
            seen += 1;
            if seen >= 16 && &window == sync {
                return Ok(skipped + seen - 16);
            }
        }
        Ok(skipped + seen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::avro::{touchpoint_schema, touchpoint_value};
    use crate::model::{Channel, TouchType, Touchpoint};

    fn file(n: usize, per_block: usize, codec: apache_avro::Codec) -> (Vec<u8>, [u8; 16]) {
        let schema = touchpoint_schema().unwrap();
        let mut w = apache_avro::Writer::with_codec(&schema, Vec::new(), codec);
        for i in 0..n {
            let tp = Touchpoint::new(
                format!("e{i}"),
                "c",
                Channel::Web,
                TouchType::PageView,
                i as i64,
            );
            w.append(touchpoint_value(&tp)).unwrap();
            if (i + 1) % per_block == 0 {
                w.flush().unwrap();
            }
        }
        let bytes = w.into_inner().unwrap();
        let end = header_end(&bytes);
        let mut sync = [0u8; 16];
        sync.copy_from_slice(&bytes[end - 16..end]);
        (bytes, sync)
    }

    /// Where the header ends (with the sync marker).
    fn header_end(bytes: &[u8]) -> usize {
        let mut input = Input::new(bytes);
        read_header(&mut input).ok().unwrap();
        input.offset as usize
    }

    /// Event ids read, and (block, records lost, message) of each loss.
    type Losses = Vec<(u64, Option<u64>, String)>;

    fn events(bytes: &[u8]) -> (Vec<String>, Losses) {
        let schema = touchpoint_schema().unwrap();
        let mut ok = Vec::new();
        let mut bad = Vec::new();
        read(bytes, &schema, |item| {
            match item {
                Item::Record { result: Ok(r), .. } => ok.push(r.event_id.unwrap_or_default()),
                Item::Record {
                    block,
                    result: Err(e),
                } => bad.push((block, Some(1), e.message)),
                Item::Damaged {
                    block,
                    records,
                    message,
                    ..
                } => bad.push((block, records, message)),
            }
            Ok(())
        })
        .unwrap();
        (ok, bad)
    }

    fn positions(bytes: &[u8], sync: &[u8; 16]) -> Vec<usize> {
        bytes
            .windows(16)
            .enumerate()
            .filter(|(_, w)| *w == sync)
            .map(|(i, _)| i)
            .collect()
    }

    #[test]
    fn every_record_of_a_sound_file_in_both_codecs() {
        for codec in [
            apache_avro::Codec::Null,
            apache_avro::Codec::Deflate(Default::default()),
        ] {
            let (bytes, _) = file(100, 10, codec);
            let (ok, bad) = events(&bytes);
            assert_eq!(ok.len(), 100);
            assert_eq!(ok[99], "e99");
            assert!(bad.is_empty(), "{bad:?}");
        }
    }

    #[test]
    fn a_damaged_sync_marker_costs_one_block_only() {
        let (bytes, sync) = file(100, 10, apache_avro::Codec::Null);
        let marks = positions(&bytes, &sync);
        // marks[0] ends the header; marks[3] ends block 3. A damaged marker
        // alone keeps the block's records.
        let mut b = bytes.clone();
        b[marks[3] + 5] ^= 0xff;
        let (ok, bad) = events(&b);
        assert_eq!(ok.len(), 100, "{bad:?}");
        assert_eq!((bad[0].0, bad[0].1), (3, Some(0)), "{bad:?}");
        // A damaged data byte as well (a string length made longer): the
        // block is skipped up to the next marker, which ends block 4.
        let at = b.windows(3).position(|w| w == b"e25").unwrap();
        b[at - 1] += 2;
        let (ok, bad) = events(&b);
        assert_eq!(ok.len(), 80, "{bad:?}");
        assert!(!ok.contains(&"e25".to_string()) && ok.contains(&"e40".to_string()));
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert_eq!((bad[0].0, bad[0].1), (3, Some(10)));
        assert!(bad[0].2.contains("sync marker is missing"), "{}", bad[0].2);
    }

    #[test]
    fn a_damaged_size_or_count_costs_one_block_only() {
        let (bytes, sync) = file(100, 10, apache_avro::Codec::Null);
        let marks = positions(&bytes, &sync);
        let block5 = marks[4] + 16;
        // The count (10 → zigzag 20 = 0x14) made huge, then made too small.
        for (count, lost) in [(&[0xff, 0xff, 0xff, 0xff, 0x7f][..], 10), (&[0x0a][..], 5)] {
            let mut b = bytes.clone();
            b.splice(block5..block5 + 1, count.iter().copied());
            let (ok, bad) = events(&b);
            assert_eq!(ok.len(), 100 - lost, "{bad:?}");
            assert_eq!(bad.len(), 1, "{bad:?}");
            assert_eq!(bad[0].0, 5);
        }
        // The size made huge.
        let mut b = bytes.clone();
        b.splice(block5 + 1..block5 + 2, [0xff, 0xff, 0xff, 0xff, 0x7f]);
        let (ok, bad) = events(&b);
        assert_eq!(ok.len(), 90, "{bad:?}");
        assert!(bad[0].2.contains("impossible"), "{bad:?}");
    }

    #[test]
    fn a_record_that_does_not_decode_loses_the_rest_of_its_block() {
        let (mut bytes, _) = file(30, 10, apache_avro::Codec::Null);
        // The first record of block 2: its event_id's length made negative.
        let at = bytes.windows(3).position(|w| w == b"e10").unwrap();
        bytes[at - 1] = 0x01;
        let (ok, bad) = events(&bytes);
        assert_eq!(ok.len(), 20, "{bad:?}");
        assert_eq!(bad.len(), 2, "{bad:?}");
        assert_eq!((bad[1].0, bad[1].1), (2, Some(9)));
    }

    #[test]
    fn a_truncated_file_keeps_what_came_before() {
        let (bytes, sync) = file(30, 10, apache_avro::Codec::Null);
        let marks = positions(&bytes, &sync);
        let (ok, bad) = events(&bytes[..marks[2] + 30]);
        assert_eq!(ok.len(), 20);
        assert_eq!(bad.len(), 1);
        assert!(bad[0].2.contains("past the end of the file"), "{bad:?}");
    }

    #[test]
    fn a_file_that_is_not_a_container_or_has_another_codec_is_refused() {
        let schema = touchpoint_schema().unwrap();
        let e = read(&b"{\"event_id\":1}"[..], &schema, |_| Ok(())).unwrap_err();
        assert!(matches!(e, ContainerError::Header(_)), "{e}");
        let (bytes, _) = file(3, 10, apache_avro::Codec::Null);
        let mut b = bytes.clone();
        let at = b.windows(10).position(|w| w == b"avro.codec").unwrap();
        let v = at + 10 + 1; // the value's length byte, then "null"
        b.splice(v..v + 4, *b"zstd");
        let e = read(&b[..], &schema, |_| Ok(())).unwrap_err();
        assert!(e.to_string().contains("`zstd` is not supported"), "{e}");
    }

    fn damaged_offsets(bytes: &[u8]) -> Vec<(u64, u64)> {
        let schema = touchpoint_schema().unwrap();
        let mut out = Vec::new();
        read(bytes, &schema, |item| {
            if let Item::Damaged { block, offset, .. } = item {
                out.push((block, offset));
            }
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn a_size_running_past_the_end_costs_only_its_block() {
        let (bytes, sync) = file(100, 10, apache_avro::Codec::Null);
        let marks = positions(&bytes, &sync);
        let block5 = marks[4] + 16;
        // The size (two varint bytes after the one-byte count) made 60 MiB.
        let mut size = Vec::new();
        let v: i64 = 60 << 20;
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        while z >= 0x80 {
            size.push((z as u8) | 0x80);
            z >>= 7;
        }
        size.push(z as u8);
        let mut b = bytes.clone();
        b.splice(block5 + 1..block5 + 3, size);
        let (ok, bad) = events(&b);
        assert_eq!(ok.len(), 90, "{bad:?}");
        assert_eq!((bad.len(), bad[0].0), (1, 5), "{bad:?}");
        assert!(ok.contains(&"e99".to_string()));
    }

    #[test]
    fn a_zero_padded_tail_is_one_report_and_loses_nothing() {
        let (mut bytes, _) = file(30, 10, apache_avro::Codec::Null);
        bytes.extend_from_slice(&[0u8; 100]);
        let (ok, bad) = events(&bytes);
        assert_eq!(ok.len(), 30);
        assert_eq!(bad.len(), 1, "{bad:?}");
    }

    #[test]
    fn a_block_read_again_after_a_resync_reports_its_own_offset() {
        let (bytes, sync) = file(50, 10, apache_avro::Codec::Null);
        let marks = positions(&bytes, &sync);
        let (block2, block3, block5) = (marks[1] + 16, marks[2] + 16, marks[4] + 16);
        let mut b = bytes.clone();
        // Block 5's count made impossible too: its offset shows whether the
        // offsets after the double resync are still right.
        b.splice(block5..block5 + 1, [0xff, 0xff, 0xff, 0xff, 0x7f]);
        // Block 3's count made impossible, then block 2's size made 40
        // bytes longer (it then reads into block 3; block 3 is read again
        // after block 2's own marker is found).
        b.splice(block3..block3 + 1, [0xff, 0xff, 0xff, 0xff, 0x7f]);
        let size2 = &mut b[block2 + 1..block2 + 3];
        let v = ((size2[0] & 0x7f) as i64 | ((size2[1] as i64) << 7)) >> 1;
        let z = ((v + 40) << 1) as u64;
        assert!(z < 1 << 14);
        size2[0] = (z as u8) | 0x80;
        size2[1] = (z >> 7) as u8;
        let (ok, _) = events(&b);
        assert_eq!(ok.len(), 20, "blocks 2, 3 and 5 lost, the rest kept");
        let offsets = damaged_offsets(&b);
        assert_eq!(offsets.len(), 3, "{offsets:?}");
        assert_eq!(offsets[0], (2, block2 as u64));
        assert_eq!(offsets[1], (3, block3 as u64));
        // (Block 5 starts 4 bytes later in the damaged file: block 3's
        // count grew from 1 byte to 5.)
        assert_eq!(offsets[2], (5, block5 as u64 + 4));
    }

    #[test]
    fn a_record_that_reads_but_is_rejected_costs_only_itself() {
        // A writer whose survey enum has a symbol the reader lacks (SPEC 7:
        // an unknown survey symbol is decode_error).
        let text = crate::codec::avro::TOUCHPOINT_SCHEMA.replacen("\"ces\"", "\"ces\", \"pmf\"", 1);
        assert_ne!(text, crate::codec::avro::TOUCHPOINT_SCHEMA);
        let writer = Schema::parse_str(&text).unwrap();
        let mut w = apache_avro::Writer::new(&writer, Vec::new());
        for i in 0..5 {
            let tp = Touchpoint::new(format!("e{i}"), "c", Channel::Web, TouchType::PageView, i);
            let mut v = touchpoint_value(&tp);
            if i == 2 {
                if let apache_avro::types::Value::Record(fields) = &mut v {
                    for (name, value) in fields.iter_mut() {
                        if name == "survey" {
                            *value = apache_avro::types::Value::Union(
                                1,
                                Box::new(apache_avro::types::Value::Enum(3, "pmf".into())),
                            );
                        }
                    }
                }
            }
            w.append(v).unwrap();
        }
        let bytes = w.into_inner().unwrap();
        let (ok, bad) = events(&bytes);
        assert_eq!(ok, ["e0", "e1", "e3", "e4"], "{bad:?}");
        assert_eq!(bad.len(), 1, "{bad:?}");
    }
}
