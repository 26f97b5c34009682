//! `touchstream generate`: synthetic omnichannel touchpoints (see
//! [`crate::generate`]) as JSON Lines or an Avro object container file, to
//! a file or stdout. Seeded and reproducible: the same options give the
//! same bytes, Avro included (its sync marker and header are derived from
//! the seed, not drawn at random).
//!
//! `--bad-fraction` adds malformed or rule-breaking JSON lines between the
//! good ones, for exercising the rejection paths; good touchpoints are never
//! replaced, so a consumer must still accept every one of them.

use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::CliError;
use crate::codec::avro::{touchpoint_schema, touchpoint_value, SchemaError};
use crate::codec::json::encode;
use crate::generate::{stream, GenConfig, DEFAULT_START_MS};
use crate::model::Touchpoint;

pub use super::FileFormat as Format;

/// Options of `generate`.
#[derive(Debug, clap::Args)]
pub struct Opts {
    /// Seed of every random draw: the same seed and options give the same bytes.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Number of customers (`cust-000001`, ...).
    #[arg(long, default_value_t = 1_000)]
    pub customers: u32,
    /// Length of the period in days.
    #[arg(long, default_value_t = 30)]
    pub days: u32,
    /// First instant: RFC 3339 or epoch millis [default: 2026-01-01T00:00:00Z].
    #[arg(long, value_parser = super::parse_time_arg)]
    pub start: Option<i64>,
    /// Marketing campaigns sent per week.
    #[arg(long, default_value_t = 3)]
    pub campaigns_per_week: u32,
    /// Largest out-of-order jitter of a timestamp ("2s", "500ms", or millis).
    #[arg(long, default_value = "2s", value_parser = parse_disorder)]
    pub disorder: i64,
    /// Share of customers flooded with messages for a week (contact fatigue).
    #[arg(long, default_value_t = 0.03)]
    pub heavy_messaged_fraction: f64,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Json)]
    pub format: Format,
    /// Output file, or `-` for stdout.
    #[arg(long, short, default_value = "-")]
    pub output: PathBuf,
    /// Per good line, the chance of an extra malformed or invalid JSON line
    /// before it (JSON only).
    #[arg(long, default_value_t = 0.0)]
    pub bad_fraction: f64,
    /// Produce into this Kafka topic instead of writing a file (key: the
    /// customer id; value: JSON, or Avro in the Confluent wire format).
    #[arg(long)]
    pub topic: Option<String>,
    /// Kafka bootstrap servers for `--topic`.
    #[arg(
        long,
        default_value = "127.0.0.1:9092",
        env = "TOUCHSTREAM_KAFKA__BROKERS"
    )]
    pub brokers: String,
    /// Target records per second for `--topic` (0: as fast as possible).
    #[arg(long, default_value_t = 0.0, requires = "topic")]
    pub rate: f64,
    /// Schema id written in the Confluent frame for `--topic --format avro`.
    #[arg(long, default_value_t = 1, requires = "topic")]
    pub schema_id: u32,
    /// Extra librdkafka setting for `--topic`, `KEY=VALUE` (repeatable).
    #[arg(long = "client", value_name = "KEY=VALUE", requires = "topic")]
    pub client: Vec<String>,
}

fn parse_disorder(s: &str) -> Result<i64, String> {
    match s.parse::<i64>() {
        Ok(ms) if ms >= 0 => Ok(ms),
        Ok(_) => Err("must not be negative".into()),
        Err(_) => crate::config::parse_duration(s).map(|m| m.0),
    }
}

impl Opts {
    /// The generator configuration these options describe.
    pub fn config(&self) -> GenConfig {
        GenConfig {
            seed: self.seed,
            customers: self.customers,
            start_ms: self.start.unwrap_or(DEFAULT_START_MS),
            days: self.days,
            campaigns_per_week: self.campaigns_per_week,
            disorder_ms: self.disorder,
            heavy_messaged_fraction: self.heavy_messaged_fraction,
            ..GenConfig::default()
        }
    }
}

/// What was written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Written {
    /// Good touchpoints.
    pub touchpoints: u64,
    /// Malformed or invalid lines (`--bad-fraction`).
    pub bad: u64,
}

/// Runs the command.
pub fn run(opts: Opts) -> Result<ExitCode, CliError> {
    // What is generated must be what touchstream accepts.
    let cfg = opts.config();
    let max = crate::validate::MAX_ABS_TIMESTAMP;
    let end = cfg
        .start_ms
        .saturating_add(i64::from(cfg.days).saturating_mul(crate::model::DAY_MS));
    if cfg.start_ms < -max || end > max {
        return Err(CliError::Usage(
            "--start and --days must keep event times within ±2^43 ms of the epoch \
             (1691-04-06 to 2248-09-26), what touchstream accepts"
                .into(),
        ));
    }
    if !(0.0..=1.0).contains(&opts.bad_fraction) {
        return Err(CliError::Usage(format!(
            "--bad-fraction must lie in [0, 1], got {}",
            opts.bad_fraction
        )));
    }
    if !(0.0..=1.0).contains(&opts.heavy_messaged_fraction) {
        return Err(CliError::Usage(format!(
            "--heavy-messaged-fraction must lie in [0, 1], got {}",
            opts.heavy_messaged_fraction
        )));
    }
    if opts.format == Format::Avro && opts.bad_fraction > 0.0 {
        return Err(CliError::Usage(
            "--bad-fraction needs --format json (an Avro file cannot hold malformed records)"
                .into(),
        ));
    }
    let cfg = opts.config();
    if let Some(topic) = opts.topic.clone() {
        return to_topic(&opts, &cfg, &topic);
    }
    let to_stdout = opts.output.as_os_str() == "-";
    if to_stdout && opts.format == Format::Avro && io::stdout().is_terminal() {
        return Err(CliError::Usage(
            "binary Avro to a terminal: redirect it (`> touchpoints.avro`), use --output FILE, or --format json"
                .into(),
        ));
    }
    let what = if to_stdout {
        "stdout".to_string()
    } else {
        opts.output.display().to_string()
    };
    let out: Box<dyn Write> = if to_stdout {
        Box::new(io::stdout().lock())
    } else {
        Box::new(
            File::create(&opts.output)
                .map_err(|e| CliError::io(format!("cannot create {what}"), e))?,
        )
    };
    let out = BufWriter::with_capacity(1 << 16, out);
    let result = match opts.format {
        Format::Json => write_json(&cfg, opts.bad_fraction, out)
            .map_err(|e| CliError::io(format!("writing {what}"), e)),
        Format::Avro => write_avro(&cfg, out),
    };
    match result {
        Ok(w) => {
            let bad = if w.bad > 0 {
                format!(" and {} bad lines", w.bad)
            } else {
                String::new()
            };
            eprintln!(
                "touchstream: generated {} touchpoints{bad} for {} customers over {} days",
                w.touchpoints, cfg.customers, cfg.days
            );
            Ok(ExitCode::SUCCESS)
        }
        // A closed pipe (`| head`) is the reader's choice, not a failure.
        Err(CliError::Io { source, .. }) if source.kind() == io::ErrorKind::BrokenPipe => {
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Err(e),
    }
}

/// Writes the touchpoints as JSON Lines, with bad lines mixed in when
/// `bad_fraction > 0`.
pub fn write_json<W: Write>(cfg: &GenConfig, bad_fraction: f64, mut out: W) -> io::Result<Written> {
    let mut bad_rng = StdRng::seed_from_u64(cfg.seed ^ 0xBAD0_BAD0_BAD0_BAD0);
    let mut w = Written::default();
    for tp in stream(cfg) {
        if bad_fraction > 0.0 && bad_rng.gen::<f64>() < bad_fraction {
            let line = bad_line(&mut bad_rng, &tp, w.bad);
            out.write_all(line.as_bytes())?;
            out.write_all(b"\n")?;
            w.bad += 1;
        }
        out.write_all(encode(&tp).as_bytes())?;
        out.write_all(b"\n")?;
        w.touchpoints += 1;
    }
    out.flush()?;
    Ok(w)
}

/// One line a consumer must reject, derived from a good touchpoint (with a
/// fresh `event_id`, so it never shadows the good one).
fn bad_line(rng: &mut StdRng, tp: &Touchpoint, n: u64) -> String {
    let mut v = serde_json::to_value(tp).unwrap_or_default();
    let obj = v.as_object_mut();
    let Some(obj) = obj else { return "{".into() };
    obj.insert("event_id".into(), format!("bad-{n}").into());
    match rng.gen_range(0..10u32) {
        // decode_error
        0 => {
            let s = v.to_string();
            let mut cut = s.len() / 2;
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            return s[..cut].to_string();
        }
        1 => return "this is not JSON".into(),
        2 => {
            obj.insert("value".into(), "12.50".into());
        }
        3 => {
            obj.insert("survey".into(), "happiness".into());
            obj.insert("score".into(), 3.into());
        }
        // missing_field
        4 => {
            obj.remove("customer_id");
        }
        5 => {
            obj.insert("event_id".into(), "".into());
        }
        // invalid_customer_id
        6 => {
            obj.insert("customer_id".into(), "x".repeat(300).into());
        }
        // invalid_value
        7 => {
            obj.insert("value".into(), (-12.5).into());
        }
        // invalid_score
        8 => {
            obj.insert("type".into(), "survey_response".into());
            obj.insert("survey".into(), "nps".into());
            obj.insert("score".into(), 11.into());
        }
        // future_timestamp: the year 2100
        _ => {
            obj.insert("timestamp".into(), 4_102_444_800_000i64.into());
        }
    }
    v.to_string()
}

/// Writes the touchpoints as an Avro object container file. The header is
/// written here so that its metadata order and sync marker are fixed.
pub fn write_avro<W: Write>(cfg: &GenConfig, out: W) -> Result<Written, CliError> {
    let schema = touchpoint_schema()?;
    let schema_json = serde_json::to_string(&schema).map_err(|e| encode_error(e.to_string()))?;
    let mut marker = [0u8; 16];
    StdRng::seed_from_u64(cfg.seed ^ 0xA7F0_0000_0000_0000).fill(&mut marker);
    let mut out = Watch {
        inner: out,
        broken_pipe: false,
    };
    out.write_all(&avro_header(&schema_json, &marker))
        .map_err(|e| CliError::io("writing Avro", e))?;
    let mut writer = apache_avro::Writer::builder()
        .schema(&schema)
        .writer(out)
        .marker(marker)
        .has_header(true)
        .build();
    let fail = |writer: &apache_avro::Writer<'_, Watch<W>>, e: apache_avro::Error| {
        if writer.get_ref().broken_pipe {
            CliError::io("writing Avro", io::ErrorKind::BrokenPipe.into())
        } else {
            encode_error(e.to_string())
        }
    };
    let mut w = Written::default();
    for tp in stream(cfg) {
        if let Err(e) = writer.append(touchpoint_value(&tp)) {
            return Err(fail(&writer, e));
        }
        w.touchpoints += 1;
    }
    if let Err(e) = writer.flush() {
        return Err(fail(&writer, e));
    }
    let mut out = writer
        .into_inner()
        .map_err(|e| encode_error(e.to_string()))?;
    out.flush().map_err(|e| CliError::io("writing Avro", e))?;
    Ok(w)
}

fn encode_error(message: String) -> CliError {
    CliError::Schema(SchemaError::Encode {
        name: "touchpoint".into(),
        message,
    })
}

/// Remembers whether the reader went away, which the Avro writer's error
/// does not tell.
struct Watch<W> {
    inner: W,
    broken_pipe: bool,
}

impl<W: Write> Watch<W> {
    fn note<T>(&mut self, r: io::Result<T>) -> io::Result<T> {
        if r.as_ref()
            .is_err_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
        {
            self.broken_pipe = true;
        }
        r
    }
}

impl<W: Write> Write for Watch<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let r = self.inner.write(buf);
        self.note(r)
    }

    fn flush(&mut self) -> io::Result<()> {
        let r = self.inner.flush();
        self.note(r)
    }
}

/// `Obj\x01`, the metadata map (`avro.codec`, `avro.schema`, in that order)
/// and the sync marker.
fn avro_header(schema_json: &str, marker: &[u8; 16]) -> Vec<u8> {
    fn long(out: &mut Vec<u8>, v: i64) {
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        loop {
            let b = (z & 0x7f) as u8;
            z >>= 7;
            if z == 0 {
                out.push(b);
                break;
            }
            out.push(b | 0x80);
        }
    }
    fn bytes(out: &mut Vec<u8>, b: &[u8]) {
        long(out, b.len() as i64);
        out.extend_from_slice(b);
    }
    let mut h = b"Obj\x01".to_vec();
    long(&mut h, 2);
    bytes(&mut h, b"avro.codec");
    bytes(&mut h, b"null");
    bytes(&mut h, b"avro.schema");
    bytes(&mut h, schema_json.as_bytes());
    long(&mut h, 0);
    h.extend_from_slice(marker);
    h
}

/// How long `generate --topic` waits for a broker to answer at start.
const BROKER_WAIT: std::time::Duration = std::time::Duration::from_secs(15);

/// Produces generated records into a topic at a target rate.
struct TopicSink {
    producer: rdkafka::producer::ThreadedProducer<rdkafka::producer::DefaultProducerContext>,
    topic: String,
    line: Vec<u8>,
    rate: f64,
    started: std::time::Instant,
    sent: u64,
}

impl TopicSink {
    fn produce(&mut self, key: Option<&[u8]>, value: &[u8]) -> io::Result<()> {
        use rdkafka::error::{KafkaError, RDKafkaErrorCode};
        use rdkafka::producer::BaseRecord;
        if self.rate > 0.0 {
            let due = std::time::Duration::from_secs_f64(self.sent as f64 / self.rate);
            if let Some(wait) = due.checked_sub(self.started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        let mut rec: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&self.topic).payload(value);
        if let Some(k) = key {
            rec = rec.key(k);
        }
        loop {
            match self.producer.send(rec) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    rec = r;
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err((e, _)) => return Err(io::Error::other(e)),
            }
        }
        self.sent += 1;
        Ok(())
    }
}

impl Write for TopicSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        for &b in buf {
            if b == b'\n' {
                let line = std::mem::take(&mut self.line);
                let key = serde_json::from_slice::<serde_json::Value>(&line)
                    .ok()
                    .and_then(|v| {
                        v.get("customer_id")
                            .and_then(|c| c.as_str())
                            .map(|s| s.as_bytes().to_vec())
                    });
                self.produce(key.as_deref(), &line)?;
            } else {
                self.line.push(b);
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        use rdkafka::producer::Producer;
        self.producer
            .flush(std::time::Duration::from_secs(60))
            .map_err(io::Error::other)
    }
}

fn to_topic(opts: &Opts, cfg: &GenConfig, topic: &str) -> Result<ExitCode, CliError> {
    let mut cc = rdkafka::ClientConfig::new();
    cc.set("bootstrap.servers", &opts.brokers)
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "10")
        .set("enable.idempotence", "true");
    for kv in &opts.client {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| CliError::Usage(format!("--client takes KEY=VALUE, got `{kv}`")))?;
        cc.set(k, v);
    }
    let producer: rdkafka::producer::ThreadedProducer<_> = cc
        .create()
        .map_err(|e| CliError::Usage(format!("cannot create a Kafka producer: {e}")))?;
    // Say where the records go, and fail fast, naming the brokers, when
    // none answers (librdkafka would otherwise retry for minutes in silence).
    eprintln!(
        "touchstream: producing to topic {topic} at {}",
        opts.brokers
    );
    {
        use rdkafka::producer::Producer;
        producer
            .client()
            .fetch_metadata(Some(topic), BROKER_WAIT)
            .map_err(|e| {
                CliError::Usage(format!(
                    "no Kafka broker answered at {} within {} s ({e}); start one (scripts/kafka start) or pass --brokers",
                    opts.brokers,
                    BROKER_WAIT.as_secs()
                ))
            })?;
    }
    let mut sink = TopicSink {
        producer,
        topic: topic.to_string(),
        line: Vec::new(),
        rate: opts.rate,
        started: std::time::Instant::now(),
        sent: 0,
    };
    let what = format!("topic {topic} at {}", opts.brokers);
    let written = match opts.format {
        Format::Json => write_json(cfg, opts.bad_fraction, &mut sink)
            .map_err(|e| CliError::io(what.clone(), e))?,
        Format::Avro => {
            let schema = touchpoint_schema()?;
            let mut w = Written::default();
            for tp in stream(cfg) {
                let datum = apache_avro::to_avro_datum(&schema, touchpoint_value(&tp))
                    .map_err(|e| CliError::Usage(format!("Avro encoding failed: {e}")))?;
                let framed = crate::codec::avro::frame(opts.schema_id, &datum);
                sink.produce(Some(tp.customer_id.as_bytes()), &framed)
                    .map_err(|e| CliError::io(what.clone(), e))?;
                w.touchpoints += 1;
            }
            w
        }
    };
    sink.flush().map_err(|e| CliError::io(what.clone(), e))?;
    eprintln!(
        "touchstream: produced {} touchpoints ({} bad) to {topic} in {:.1} s",
        written.touchpoints,
        written.bad,
        sink.started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::{validate, Clock, RejectReason};

    fn cfg() -> GenConfig {
        GenConfig {
            customers: 60,
            days: 14,
            ..GenConfig::default()
        }
    }

    const CLOCK: Clock = Clock {
        now: 1_800_000_000_000,
        max_future: 3_600_000,
    };

    #[test]
    fn json_lines_decode_to_the_generated_touchpoints() {
        let mut buf = Vec::new();
        let w = write_json(&cfg(), 0.0, &mut buf).unwrap();
        let expected = crate::generate::generate(&cfg());
        assert_eq!(
            w,
            Written {
                touchpoints: expected.len() as u64,
                bad: 0
            }
        );
        let text = String::from_utf8(buf).unwrap();
        let got: Vec<Touchpoint> = text
            .lines()
            .map(|l| validate(crate::codec::json::decode(l.as_bytes()).unwrap(), CLOCK).unwrap())
            .collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn bad_lines_are_rejected_and_good_ones_kept() {
        let mut buf = Vec::new();
        let w = write_json(&cfg(), 0.2, &mut buf).unwrap();
        assert!(w.bad > 50, "{w:?}");
        let text = String::from_utf8(buf).unwrap();
        let mut good = 0u64;
        let mut reasons = std::collections::HashSet::new();
        for line in text.lines() {
            match crate::codec::json::decode(line.as_bytes()).and_then(|raw| validate(raw, CLOCK)) {
                Ok(tp) => {
                    assert!(!tp.event_id.starts_with("bad-"), "{line}");
                    good += 1;
                }
                Err(r) => {
                    reasons.insert(r.reason);
                }
            }
        }
        assert_eq!(good, w.touchpoints);
        for r in [
            RejectReason::DecodeError,
            RejectReason::MissingField,
            RejectReason::InvalidCustomerId,
            RejectReason::InvalidValue,
            RejectReason::InvalidScore,
            RejectReason::FutureTimestamp,
        ] {
            assert!(reasons.contains(&r), "no {r:?}");
        }
        // Same seed, same bytes, bad lines included.
        let mut again = Vec::new();
        write_json(&cfg(), 0.2, &mut again).unwrap();
        assert_eq!(text.as_bytes(), &again[..]);
    }

    #[test]
    fn avro_file_reads_back_and_is_reproducible() {
        let mut buf = Vec::new();
        let w = write_avro(&cfg(), &mut buf).unwrap();
        let mut again = Vec::new();
        write_avro(&cfg(), &mut again).unwrap();
        assert_eq!(buf, again);
        crate::codec::avro::limit_allocations();
        let reader = apache_avro::Reader::new(&buf[..]).unwrap();
        let got: Vec<Touchpoint> = reader
            .map(|v| {
                validate(
                    crate::codec::avro::raw_from_value(&v.unwrap()).unwrap(),
                    CLOCK,
                )
                .unwrap()
            })
            .collect();
        assert_eq!(got.len() as u64, w.touchpoints);
        assert_eq!(got, crate::generate::generate(&cfg()));
    }

    #[test]
    fn disorder_parses() {
        assert_eq!(parse_disorder("2s"), Ok(2_000));
        assert_eq!(parse_disorder("750"), Ok(750));
        assert!(parse_disorder("-1").is_err());
    }
}
