//! `touchstream fit-churn`: fits the BG/NBD parameters to a business's own
//! purchase history and prints them as a `[churn]` section to paste into
//! the config.
//!
//! Purchases are the valid `order_placed` touchpoints, at most one per
//! customer per UTC day (as the BG/NBD literature counts them). Time is in
//! days. The observation period ends at `--observation-end`, by default at
//! the newest touchpoint in the file.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use super::{parse_time_arg, CliError};
use crate::bgnbd::{fit, Summary};
use crate::codec;
use crate::model::{EventTime, TouchType, DAY_MS};
use crate::validate::{validate, Clock, RawTouchpoint};

/// Options of `fit-churn`.
#[derive(Debug, clap::Args)]
pub struct Opts {
    /// Touchpoint history: JSON Lines or Avro object container file (`-` for stdin).
    pub input: PathBuf,
    /// End of the observation period (epoch millis or RFC 3339); default:
    /// the newest touchpoint's time.
    #[arg(long, value_name = "TIME")]
    pub observation_end: Option<String>,
    /// Print JSON instead of a TOML section.
    #[arg(long)]
    pub json: bool,
}

/// Per-customer purchase days → BG/NBD summaries (x, t_x, T in days).
pub fn summaries(days: &BTreeMap<String, BTreeSet<i64>>, end: EventTime) -> Vec<Summary> {
    days.values()
        .filter_map(|d| {
            let first = *d.first()?;
            let last = *d.last()?;
            let to_days = |ms: i64| ms as f64 / DAY_MS as f64;
            Some(Summary {
                x: (d.len() - 1) as f64,
                t_x: to_days((last - first) * DAY_MS),
                big_t: to_days(end - first * DAY_MS),
            })
        })
        .filter(|s| s.big_t >= s.t_x)
        .collect()
}

/// The decodable touchpoints, and how many records did not decode.
fn read_all(input: Box<dyn BufRead>) -> io::Result<(Vec<RawTouchpoint>, u64)> {
    let mut input = input;
    let head = input.fill_buf()?;
    let mut out = Vec::new();
    let mut bad = 0u64;
    if head.starts_with(b"Obj\x01") {
        let schema = codec::avro::touchpoint_schema().map_err(io::Error::other)?;
        codec::container::read(input, &schema, |item| {
            match item {
                codec::container::Item::Record {
                    result: Ok(raw), ..
                } => out.push(raw),
                codec::container::Item::Record { .. } => bad += 1,
                codec::container::Item::Damaged { records, .. } => bad += records.unwrap_or(1),
            }
            Ok(())
        })
        .map_err(io::Error::other)?;
    } else {
        for line in input.split(b'\n') {
            let line = line?;
            let line = line.trim_ascii();
            if line.is_empty() {
                continue;
            }
            match codec::json::decode(line) {
                Ok(raw) => out.push(raw),
                Err(_) => bad += 1,
            }
        }
    }
    Ok((out, bad))
}

/// Runs the command.
pub fn run(opts: Opts) -> Result<ExitCode, CliError> {
    let input: Box<dyn BufRead> = if opts.input.as_os_str() == "-" {
        Box::new(BufReader::new(io::stdin()))
    } else {
        let f = File::open(&opts.input)
            .map_err(|e| CliError::io(format!("cannot open {}", opts.input.display()), e))?;
        Box::new(BufReader::new(f))
    };
    let (raws, undecodable) = read_all(input).map_err(|e| CliError::io("cannot read input", e))?;
    let clock = Clock {
        now: i64::MAX / 2,
        max_future: 0,
    };
    let mut newest = EventTime::MIN;
    let mut days: BTreeMap<String, BTreeSet<i64>> = BTreeMap::new();
    let mut skipped = undecodable;
    for raw in raws {
        match validate(raw, clock) {
            Ok(tp) => {
                newest = newest.max(tp.timestamp);
                if tp.kind == TouchType::OrderPlaced {
                    days.entry(tp.customer_id)
                        .or_default()
                        .insert(tp.timestamp.div_euclid(DAY_MS));
                }
            }
            Err(_) => skipped += 1,
        }
    }
    let end = match &opts.observation_end {
        Some(s) => parse_time_arg(s).map_err(CliError::Usage)?,
        None => newest,
    };
    if days.is_empty() {
        return Err(CliError::Usage(format!(
            "no valid order_placed touchpoint in the input to fit ({skipped} records did not decode or validate)"
        )));
    }
    let data = summaries(&days, end);
    if data.is_empty() {
        return Err(CliError::Usage(format!(
            "the observation end {} is before every customer's purchases",
            codec::json::format_rfc3339(end)
        )));
    }
    let f = fit(&data)?;
    let purchase_days: usize = days.values().map(BTreeSet::len).sum();
    let mut out = io::stdout().lock();
    let w = |e| CliError::io("stdout", e);
    if opts.json {
        let j = serde_json::json!({
            "r": f.model.r, "alpha": f.model.alpha, "a": f.model.a, "b": f.model.b,
            "log_likelihood": f.log_likelihood, "customers": f.customers,
            "purchase_days": purchase_days, "observation_end": end, "skipped_records": skipped,
        });
        writeln!(out, "{j}").map_err(w)?;
    } else {
        writeln!(
            out,
            "# BG/NBD fit over {} customers ({} purchase days), observation end {}\n# log-likelihood = {:.4} (time unit: days); {} invalid records skipped\n[churn]\nr = {:?}\nalpha = {:?}\na = {:?}\nb = {:?}",
            f.customers,
            purchase_days,
            codec::json::format_rfc3339(end),
            f.log_likelihood,
            skipped,
            f.model.r,
            f.model.alpha,
            f.model.a,
            f.model.b
        )
        .map_err(w)?;
    }
    Ok(ExitCode::SUCCESS)
}
