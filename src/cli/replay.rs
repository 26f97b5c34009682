//! `touchstream replay`: the engine over a JSON Lines or Avro object
//! container file, derived events as JSON lines on stdout, bad records
//! reported on stderr with their line (or record) number.
//!
//! The whole file is one partition: one watermark, one engine. At the end
//! the watermark stays where the data put it; nothing fires beyond it.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use super::{parse_time_arg, wall_clock_ms, CliError};
use crate::codec;
use crate::codec::container::{ContainerError, Item};
use crate::config::{Config, EngineConfig};
use crate::engine::{Engine, Outcome};
use crate::model::DerivedEvent;
use crate::validate::{validate, Clock, RawTouchpoint, RejectReason, Rejection};

/// The example replayed when no file is given.
pub const EMBEDDED_EXAMPLE: &str = include_str!("../../examples/touchpoints.jsonl");

pub use super::FileFormat as Format;

/// Options of `replay`.
#[derive(Debug, clap::Args)]
pub struct Opts {
    /// JSON Lines or Avro object container file; `-` for stdin; without it,
    /// the shipped example `examples/touchpoints.jsonl` (embedded).
    pub input: Option<PathBuf>,
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
        self.summary.records += 1;
        let clock = Clock {
            now: self.clock.now(),
            max_future: self.max_future,
        };
        let tp = match decoded.and_then(|raw| validate(raw, clock)) {
            Ok(tp) => tp,
            Err(r) => return self.reject(location, &r),
        };
        let (t, wm) = (tp.timestamp, self.engine.watermark());
        match self.engine.on_touchpoint(&tp, &mut self.buf) {
            Outcome::Accepted { .. } => self.summary.accepted += 1,
            Outcome::Duplicate => self.summary.duplicates += 1,
            Outcome::TooLate => {
                let msg = format!(
                    "timestamp {t} is older than watermark {} minus allowed lateness {} ms",
                    wm.unwrap_or_default(),
                    self.engine.config().allowed_lateness
                );
                self.reject(location, &Rejection::new(RejectReason::TooLate, msg))?;
            }
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
    /// its own records, which are reported (see [`codec::container`]); a
    /// file that cannot be read at all (no container header, a codec this
    /// build does not read) is an error.
    pub fn avro_file<R: Read>(&mut self, input: R) -> io::Result<()> {
        let reader_schema = codec::avro::touchpoint_schema().map_err(io::Error::other)?;
        let mut n = 0u64;
        let result = codec::container::read(input, &reader_schema, |item| match item {
            Item::Record { block, result } => {
                n += 1;
                self.record(&format!("record {n} (block {block})"), result)
            }
            Item::Damaged {
                block,
                offset,
                records,
                message,
            } => {
                let lost = records.unwrap_or(0);
                n += lost;
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
                    "block {block} (byte {offset}): {}: {message} ({what})",
                    RejectReason::DecodeError
                )
            }
        });
        result.map_err(|e| match e {
            ContainerError::Io(e) => e,
            other => io::Error::new(io::ErrorKind::InvalidData, other.to_string()),
        })
    }

    /// Ends the replay: the summary and the engine (for a snapshot).
    pub fn finish(mut self) -> io::Result<(Summary, Engine)> {
        self.flush_events()?;
        self.out.flush()?;
        self.summary.watermark = self.engine.watermark();
        Ok((self.summary, self.engine))
    }
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
    let mut input: Box<dyn BufRead> = match opts.input.as_deref() {
        None => Box::new(EMBEDDED_EXAMPLE.as_bytes()),
        Some(p) if p.as_os_str() == "-" => Box::new(BufReader::with_capacity(1 << 20, io::stdin())),
        Some(p) => {
            let f = File::open(p)
                .map_err(|e| CliError::io(format!("cannot open {}", p.display()), e))?;
            Box::new(BufReader::with_capacity(1 << 20, f))
        }
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
    let fed = match format {
        Format::Json => replay.json_lines(input),
        Format::Avro => replay.avro_file(input),
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
