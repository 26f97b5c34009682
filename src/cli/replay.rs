//! `touchstream replay`: the engine over a JSON Lines or Avro object
//! container file, derived events as JSON lines on stdout, bad records
//! reported on stderr with their line (or record) number.
//!
//! The whole file is one partition: one watermark, one engine. At the end
//! the watermark stays where the data put it; nothing fires beyond it.
//! Several files are the inputs of one task (SPEC 8), merged by event
//! time, each decoded on its own thread.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{mpsc, Arc};

use super::{parse_time_arg, wall_clock_ms, CliError};
use crate::codec;
use crate::codec::avro::container::{ContainerError, Item};
use crate::config::{Config, EngineConfig};
use crate::engine::Engine;
use crate::model::{DerivedEvent, Touchpoint};
use crate::pipeline::{self, InputEvent, Verdict};
use crate::time::merge::Merge;
use crate::validate::{Clock, RawTouchpoint, RejectReason, Rejection};

/// The example replayed when no file is given.
pub const EMBEDDED_EXAMPLE: &str = include_str!("../../examples/touchpoints.jsonl");

pub use super::FileFormat as Format;

/// Options of `replay`.
#[derive(Debug, clap::Args)]
pub struct Opts {
    /// JSON Lines or Avro object container files; `-` for stdin; without
    /// any, the shipped example `examples/touchpoints.jsonl` (embedded).
    /// Several files are the inputs of one task, merged by event time
    /// (SPEC 8): each has its own watermark and the task's is their minimum.
    pub inputs: Vec<PathBuf>,
    /// Input format (detected from the file's first bytes when not given).
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Also write one JSON line per customer with its state at the end.
    #[arg(long, value_name = "FILE")]
    pub snapshot: Option<PathBuf>,
    /// TOML configuration (the `[time]`, `[signals]`, `[engagement]` and
    /// `[churn]` sections apply); TOUCHSTREAM_* overrides too.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Exit with status 1 if any record was rejected.
    #[arg(long)]
    pub strict: bool,
    /// Use this instant (epoch millis or RFC 3339) as the wall clock for
    /// the future-timestamp rule, instead of the real clock.
    #[arg(long, value_name = "TIME")]
    pub now: Option<String>,
    /// Do not print the end-of-run summary on stderr.
    #[arg(long)]
    pub quiet: bool,
}

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Records read (blank lines excluded).
    pub records: u64,
    /// Records applied.
    pub accepted: u64,
    /// Duplicates dropped.
    pub duplicates: u64,
    /// Rejections by reason.
    pub rejected: BTreeMap<RejectReason, u64>,
    /// Derived events written.
    pub events: u64,
    /// Final watermark.
    pub watermark: Option<i64>,
}

impl Summary {
    /// Total rejected records.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }
}

/// Where the wall clock comes from.
#[derive(Debug, Clone, Copy)]
pub enum WallClock {
    /// The real clock, read per record.
    System,
    /// A fixed instant (tests, reproducible runs).
    Fixed(i64),
}

impl WallClock {
    fn now(self) -> i64 {
        match self {
            WallClock::System => wall_clock_ms(),
            WallClock::Fixed(t) => t,
        }
    }
}

/// A replay in progress: decode → validate → engine → JSON lines.
pub struct Replay<'w, O: Write, E: Write> {
    engine: Engine,
    clock: WallClock,
    max_future: i64,
    out: &'w mut O,
    err: &'w mut E,
    buf: Vec<DerivedEvent>,
    summary: Summary,
}

impl<'w, O: Write, E: Write> Replay<'w, O, E> {
    /// A replay writing events to `out` and reports to `err`.
    pub fn new(
        cfg: Arc<EngineConfig>,
        clock: WallClock,
        max_future: i64,
        out: &'w mut O,
        err: &'w mut E,
    ) -> Self {
        Replay {
            engine: Engine::new(cfg),
            clock,
            max_future,
            out,
            err,
            buf: Vec::new(),
            summary: Summary::default(),
        }
    }

    fn reject(&mut self, location: &str, r: &Rejection) -> io::Result<()> {
        *self.summary.rejected.entry(r.reason).or_default() += 1;
        writeln!(self.err, "{location}: {}: {}", r.reason, r.message)
    }

    /// Offers one decoded record (or its decode failure).
    pub fn record(
        &mut self,
        location: &str,
        decoded: Result<RawTouchpoint, Rejection>,
    ) -> io::Result<()> {
        match self.check(location, decoded)? {
            Some(tp) => self.offer(location, &tp, None),
            None => Ok(()),
        }
    }

    /// Counts a record and checks the rules of SPEC 2 that need no state;
    /// a record that breaks one is reported here (`None`).
    fn check(
        &mut self,
        location: &str,
        decoded: Result<RawTouchpoint, Rejection>,
    ) -> io::Result<Option<Touchpoint>> {
        self.summary.records += 1;
        let clock = Clock {
            now: self.clock.now(),
            max_future: self.max_future,
        };
        match pipeline::check(decoded, clock) {
            Ok(tp) => Ok(Some(tp)),
            Err(r) => self.reject(location, &r).map(|()| None),
        }
    }

    /// Offers a valid touchpoint to the engine. `merged` is the task's
    /// watermark with it when the task has several inputs (see
    /// [`crate::time::watermark::InputWatermarks`]); `None` for a single input (SPEC 3).
    fn offer(
        &mut self,
        location: &str,
        tp: &Touchpoint,
        merged: Option<Option<i64>>,
    ) -> io::Result<()> {
        self.event(location, InputEvent::Record { tp, merged })
    }

    /// Hands the engine one input event, as the service does: a record
    /// (already checked, see [`pipeline::check`]), an idle advance, a tick
    /// of the wall clock, or the end of the inputs. A record's outcome is
    /// counted; a rejection is reported at `location`.
    pub fn event(&mut self, location: &str, event: InputEvent<'_>) -> io::Result<()> {
        match pipeline::step(&mut self.engine, event, &mut self.buf) {
            Verdict::Accepted { .. } => self.summary.accepted += 1,
            Verdict::Duplicate => self.summary.duplicates += 1,
            Verdict::Rejected(rejection) => self.reject(location, &rejection)?,
            Verdict::Advanced(_) => {}
        }
        self.flush_events()
    }

    fn flush_events(&mut self) -> io::Result<()> {
        for ev in self.buf.drain(..) {
            serde_json::to_writer(&mut *self.out, &ev).map_err(io::Error::from)?;
            self.out.write_all(b"\n")?;
            self.summary.events += 1;
        }
        Ok(())
    }

    /// Replays JSON Lines; blank lines are skipped but counted for line numbers.
    pub fn json_lines<R: BufRead>(&mut self, mut input: R) -> io::Result<()> {
        let mut line = Vec::with_capacity(512);
        let mut n = 0u64;
        loop {
            line.clear();
            if input.read_until(b'\n', &mut line)? == 0 {
                break;
            }
            n += 1;
            let text = line.trim_ascii();
            if text.is_empty() {
                continue;
            }
            let decoded = codec::json::decode(text);
            self.record(&format!("line {n}"), decoded)?;
        }
        Ok(())
    }

    /// Replays an Avro object container file. A damaged block costs only
    /// its own records, which are reported (see [`codec::avro::container`]); a
    /// file that cannot be read at all (no container header, a codec this
    /// build does not read) is an error.
    pub fn avro_file<R: Read>(&mut self, input: R) -> io::Result<()> {
        read_avro(input, |item| match item {
            InputItem::Record { location, decoded } => self.record(&location, decoded),
            InputItem::Damaged {
                block,
                offset,
                records,
                message,
            } => self.damaged("", block, offset, records, &message),
            InputItem::Failed(e) => Err(e),
        })
    }

    /// Reports a damaged block of an Avro container (its records count as
    /// read and as `decode_error`, unless the damage lost none).
    fn damaged(
        &mut self,
        prefix: &str,
        block: u64,
        offset: u64,
        records: Option<u64>,
        message: &str,
    ) -> io::Result<()> {
        let lost = records.unwrap_or(0);
        self.summary.records += lost;
        if records != Some(0) {
            *self
                .summary
                .rejected
                .entry(RejectReason::DecodeError)
                .or_default() += lost.max(1);
        }
        let what = match records {
            Some(0) => "no record lost".to_string(),
            Some(k) => format!("{k} records lost"),
            None => "records lost".to_string(),
        };
        writeln!(
            self.err,
            "{prefix}block {block} (byte {offset}): {}: {message} ({what})",
            RejectReason::DecodeError
        )
    }

    /// Replays several inputs as the inputs of one task (SPEC 8): the next
    /// record is the earliest among the inputs' next valid records (ties:
    /// the input listed first); a record that breaks a stateless rule is
    /// reported as soon as it is next on its input; each input has its own
    /// watermark and the task's is their minimum; an ended input holds its
    /// watermark, an empty one is left out. At the end the watermark is the
    /// minimum over the inputs of their latest event time −
    /// `max_out_of_orderness`: nothing fires beyond it.
    pub fn merged(&mut self, inputs: Vec<(String, mpsc::Receiver<InputItem>)>) -> io::Result<()> {
        let ooo = self.engine.config().max_out_of_orderness;
        let mut merge = Merge::new(inputs.len(), ooo);
        loop {
            for (i, input) in inputs.iter().enumerate() {
                if merge.wants(i) {
                    self.next_valid(input, i, &mut merge)?;
                }
            }
            let Some(next) = merge.pop() else {
                break;
            };
            let (location, tp) = next.item;
            self.offer(&location, &tp, Some(next.to))?;
        }
        match merge.marks().final_watermark() {
            Some(to) => self.event("end", InputEvent::End { to }),
            None => self.flush_events(),
        }
    }

    /// Reads input `i` up to its next valid record (reporting what breaks a
    /// stateless rule on the way) and hands it to the merge; at the end of
    /// the input, ends it there.
    fn next_valid(
        &mut self,
        (name, rx): &(String, mpsc::Receiver<InputItem>),
        i: usize,
        merge: &mut Merge<(String, Touchpoint)>,
    ) -> io::Result<()> {
        loop {
            match rx.recv() {
                Ok(InputItem::Record { location, decoded }) => {
                    let location = format!("{name}: {location}");
                    if let Some(tp) = self.check(&location, decoded)? {
                        merge.push(i, tp.timestamp, (location, tp));
                        return Ok(());
                    }
                }
                Ok(InputItem::Damaged {
                    block,
                    offset,
                    records,
                    message,
                }) => self.damaged(&format!("{name}: "), block, offset, records, &message)?,
                Ok(InputItem::Failed(e)) => {
                    return Err(io::Error::new(e.kind(), format!("{name}: {e}")))
                }
                Err(mpsc::RecvError) => {
                    merge.end(i);
                    return Ok(());
                }
            }
        }
    }

    /// Ends the replay: the summary and the engine (for a snapshot).
    pub fn finish(mut self) -> io::Result<(Summary, Engine)> {
        self.flush_events()?;
        self.out.flush()?;
        self.summary.watermark = self.engine.watermark();
        Ok((self.summary, self.engine))
    }
}

/// What an input's reader thread hands the merge, in file order.
// Nearly every item is a record: boxing it would cost an allocation each.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum InputItem {
    /// A record, decoded or not, with its place in the file.
    Record {
        /// "line N" or "record N (block B)".
        location: String,
        /// The touchpoint, or why it does not decode.
        decoded: Result<RawTouchpoint, Rejection>,
    },
    /// A damaged Avro container block (see [`codec::avro::container::Item`]).
    Damaged {
        /// Block number.
        block: u64,
        /// Byte offset of the block.
        offset: u64,
        /// Records lost, if known.
        records: Option<u64>,
        /// What was wrong.
        message: String,
    },
    /// The input cannot be read on (it ends here).
    Failed(io::Error),
}

/// Records an input's thread reads ahead of the merge.
const READ_AHEAD: usize = 4096;

/// Opens an input (`-` is stdin) for reading.
fn open(path: &std::path::Path) -> io::Result<Box<dyn BufRead + Send>> {
    if path.as_os_str() == "-" {
        return Ok(Box::new(BufReader::with_capacity(1 << 20, io::stdin())));
    }
    let f = File::open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot open {}: {e}", path.display())))?;
    Ok(Box::new(BufReader::with_capacity(1 << 20, f)))
}

/// Decodes one input on its own thread, handing its items over a bounded
/// channel; the thread ends when the input does or the merge stops.
fn spawn_reader(path: PathBuf, format: Option<Format>) -> mpsc::Receiver<InputItem> {
    let (tx, rx) = mpsc::sync_channel(READ_AHEAD);
    std::thread::spawn(move || {
        let send = |item| tx.send(item).map_err(|_| io::Error::other("merge stopped"));
        let fed = (|| -> io::Result<()> {
            let mut input = open(&path)?;
            let format = match format {
                Some(f) => f,
                None => detect(input.fill_buf()?),
            };
            match format {
                Format::Json => {
                    let mut n = 0u64;
                    for line in input.split(b'\n') {
                        let line = line?;
                        n += 1;
                        let text = line.trim_ascii();
                        if !text.is_empty() {
                            send(InputItem::Record {
                                location: format!("line {n}"),
                                decoded: codec::json::decode(text),
                            })?;
                        }
                    }
                    Ok(())
                }
                Format::Avro => read_avro(input, send),
            }
        })();
        if let Err(e) = fed {
            let _ = tx.send(InputItem::Failed(e));
        }
    });
    rx
}

/// Reads an Avro object container file, handing each record (with its
/// place: "record N (block B)") and each damaged block to `f` in order; a
/// file that cannot be read as a whole is an error.
fn read_avro<R: Read>(input: R, mut f: impl FnMut(InputItem) -> io::Result<()>) -> io::Result<()> {
    let schema = codec::avro::touchpoint_schema().map_err(io::Error::other)?;
    let mut n = 0u64;
    let read = codec::avro::container::read(input, &schema, |item| match item {
        Item::Record { block, result } => {
            n += 1;
            f(InputItem::Record {
                location: format!("record {n} (block {block})"),
                decoded: result,
            })
        }
        Item::Damaged {
            block,
            offset,
            records,
            message,
        } => {
            n += records.unwrap_or(0);
            f(InputItem::Damaged {
                block,
                offset,
                records,
                message,
            })
        }
    });
    read.map_err(|e| match e {
        ContainerError::Io(e) => e,
        other => io::Error::new(io::ErrorKind::InvalidData, other.to_string()),
    })
}

/// Whether stdin is a pipe or a file: data a user meant to replay.
fn stdin_has_data() -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata("/dev/stdin")
        .map(|m| m.file_type().is_fifo() || m.file_type().is_file())
        .unwrap_or(false)
}

fn detect(head: &[u8]) -> Format {
    if head.starts_with(b"Obj\x01") {
        Format::Avro
    } else {
        Format::Json
    }
}

/// Runs the command.
pub fn run(opts: Opts) -> Result<ExitCode, CliError> {
    let config = Config::load(opts.config.as_deref())?;
    let engine_cfg = Arc::new(config.engine()?);
    let clock = match &opts.now {
        Some(s) => WallClock::Fixed(parse_time_arg(s).map_err(CliError::Usage)?),
        None => WallClock::System,
    };
    if opts.inputs.iter().filter(|p| p.as_os_str() == "-").count() > 1 {
        return Err(CliError::Usage("`-` (stdin) can be given once".into()));
    }
    if opts.inputs.is_empty() && stdin_has_data() {
        return Err(CliError::Usage(
            "stdin is a pipe or a file, but no input was named: pass `-` to replay stdin \
             (without any input, replay replays the shipped example)"
                .into(),
        ));
    }
    let mut input: Box<dyn BufRead> = match opts.inputs.as_slice() {
        [] => Box::new(EMBEDDED_EXAMPLE.as_bytes()),
        [p] if p.as_os_str() == "-" => Box::new(BufReader::with_capacity(1 << 20, io::stdin())),
        [p] => {
            let f = File::open(p)
                .map_err(|e| CliError::io(format!("cannot open {}", p.display()), e))?;
            Box::new(BufReader::with_capacity(1 << 20, f))
        }
        _ => Box::new(io::empty()),
    };
    let format = match opts.format {
        Some(f) => f,
        None => detect(
            input
                .fill_buf()
                .map_err(|e| CliError::io("cannot read input", e))?,
        ),
    };
    let stdout = io::stdout();
    let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
    let stderr = io::stderr();
    let mut err = BufWriter::new(stderr.lock());
    let mut replay = Replay::new(
        engine_cfg,
        clock,
        config.time.max_future.0,
        &mut out,
        &mut err,
    );
    let io_err = |e| CliError::io("replay", e);
    // The reader of the events went away (`touchstream replay | head`): as
    // for any Unix filter that ends the output and is not an error, unless
    // a snapshot was asked for, which then is not written.
    let closed = |e: &io::Error| e.kind() == io::ErrorKind::BrokenPipe && opts.snapshot.is_none();
    let fed = if opts.inputs.len() > 1 {
        let inputs = opts
            .inputs
            .iter()
            .map(|p| {
                (
                    p.display().to_string(),
                    spawn_reader(p.clone(), opts.format),
                )
            })
            .collect();
        replay.merged(inputs)
    } else {
        match format {
            Format::Json => replay.json_lines(input),
            Format::Avro => replay.avro_file(input),
        }
    };
    match fed {
        Err(e) if closed(&e) => return Ok(ExitCode::SUCCESS),
        r => r.map_err(io_err)?,
    }
    let (summary, engine) = match replay.finish() {
        Err(e) if closed(&e) => return Ok(ExitCode::SUCCESS),
        r => r.map_err(io_err)?,
    };
    if let Some(path) = &opts.snapshot {
        write_snapshot(&engine, path)?;
    }
    if !opts.quiet {
        let reasons: Vec<String> = summary
            .rejected
            .iter()
            .map(|(r, n)| format!("{r}={n}"))
            .collect();
        writeln!(
            err,
            "replay: {} records, {} accepted, {} duplicates, {} rejected [{}], {} derived events, {} customers, final watermark {}",
            summary.records,
            summary.accepted,
            summary.duplicates,
            summary.rejected_total(),
            reasons.join(" "),
            summary.events,
            engine.customers(),
            summary.watermark.map_or("none".to_string(), codec::json::format_rfc3339),
        )
        .map_err(io_err)?;
    }
    err.flush().map_err(io_err)?;
    Ok(if opts.strict && summary.rejected_total() > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Writes one JSON line per customer.
pub fn write_snapshot(engine: &Engine, path: &std::path::Path) -> Result<(), CliError> {
    let f = File::create(path)
        .map_err(|e| CliError::io(format!("cannot create {}", path.display()), e))?;
    let mut w = BufWriter::new(f);
    for row in engine.snapshot() {
        serde_json::to_writer(&mut w, &row)
            .map_err(|e| CliError::io("snapshot", io::Error::from(e)))?;
        w.write_all(b"\n")
            .map_err(|e| CliError::io("snapshot", e))?;
    }
    w.flush().map_err(|e| CliError::io("snapshot", e))
}
