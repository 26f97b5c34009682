//! `touchstream fit-churn`: fits the BG/NBD parameters (purchases and
//! dropout) and the Gamma-Gamma parameters (order value) to a business's
//! own purchase history and prints them as `[churn]` and `[clv]` sections
//! to paste into the config.
//!
//! Purchases are the valid `order_placed` touchpoints, at most one per
//! customer per UTC day (as the BG/NBD literature and lifetimes'
//! `summary_data_from_transaction_data` count them): a day's value is the
//! sum of its orders' values. Time is in days. The observation period ends
//! at `--observation-end`, by default at the newest touchpoint in the
//! file. Gamma-Gamma is fitted on the repeat customers: x repeat purchase
//! days carrying a value, m their mean value (the first day left out).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use super::{parse_time_arg, CliError};
use crate::bgnbd::{fit, Summary};
use crate::clv::{self, GammaGammaFit};
use crate::codec;
use crate::codec::avro::container::{self, Item};
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

/// A customer's purchase days (UTC day number → the day's value, `None`
/// when none of the day's orders carried one).
pub type PurchaseDays = BTreeMap<i64, Option<f64>>;

/// Per-customer purchase days → BG/NBD summaries (x, t_x, T in days).
pub fn summaries(days: &BTreeMap<String, PurchaseDays>, end: EventTime) -> Vec<Summary> {
    days.values()
        .filter_map(|d| {
            let first = *d.first_key_value()?.0;
            let last = *d.last_key_value()?.0;
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

/// Per-customer (x, m) for Gamma-Gamma: the purchase days after the
/// first that carry a value, and their mean value. Customers whose days
/// lie after `end` are left out, as in [`summaries`].
pub fn spend(days: &BTreeMap<String, PurchaseDays>, end: EventTime) -> Vec<(f64, f64)> {
    days.values()
        .filter(|d| d.first_key_value().is_some_and(|(f, _)| f * DAY_MS <= end))
        .filter(|d| d.last_key_value().is_some_and(|(l, _)| l * DAY_MS <= end))
        .map(|d| {
            let values: Vec<f64> = d.values().skip(1).filter_map(|v| *v).collect();
            let x = values.len() as f64;
            let m = if values.is_empty() {
                0.0
            } else {
                values.iter().sum::<f64>() / x
            };
            (x, m)
        })
        .collect()
}

/// Fewer repeat customers than this make a Gamma-Gamma fit a guess.
const FEW_REPEAT_CUSTOMERS: usize = 100;
/// A correlation of frequency and order value beyond this breaks the
/// Gamma-Gamma assumption that they are independent.
const MAX_CORRELATION: f64 = 0.3;

/// What a user should know before pasting the `[clv]` section.
fn gg_warning(gg: &Result<GammaGammaFit, crate::bgnbd::FitError>) -> Option<String> {
    match gg {
        Err(_) => Some(
            "no customer bought again with a value on another day: the Gamma-Gamma order-value model cannot be fitted".into(),
        ),
        Ok(g) if g.customers < FEW_REPEAT_CUSTOMERS => Some(format!(
            "only {} repeat customers with valued orders: the Gamma-Gamma estimates are uncertain (at least {FEW_REPEAT_CUSTOMERS} are advisable)",
            g.customers
        )),
        Ok(g) if g.correlation.is_nan() || g.correlation.abs() > MAX_CORRELATION => Some(format!(
            "repeat purchases and mean order value correlate ({:.3}): the Gamma-Gamma model assumes they are independent, so predicted_clv is biased",
            g.correlation
        )),
        Ok(_) => None,
    }
}

/// The decodable touchpoints, and how many records did not decode.
fn read_all(input: Box<dyn BufRead>) -> io::Result<(Vec<RawTouchpoint>, u64)> {
    let mut input = input;
    let head = input.fill_buf()?;
    let mut out = Vec::new();
    let mut bad = 0u64;
    if head.starts_with(b"Obj\x01") {
        let schema = codec::avro::touchpoint_schema().map_err(io::Error::other)?;
        container::read(input, &schema, |item| {
            match item {
                Item::Record {
                    result: Ok(raw), ..
                } => out.push(raw),
                Item::Record { .. } => bad += 1,
                Item::Damaged { records, .. } => bad += records.unwrap_or(1),
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
    let mut days: BTreeMap<String, PurchaseDays> = BTreeMap::new();
    let mut customers_seen: BTreeSet<String> = BTreeSet::new();
    let mut skipped = undecodable;
    for raw in raws {
        match validate(raw, clock) {
            Ok(tp) => {
                newest = newest.max(tp.timestamp);
                if !customers_seen.contains(&tp.customer_id) {
                    customers_seen.insert(tp.customer_id.clone());
                }
                if tp.kind == TouchType::OrderPlaced {
                    let day = days
                        .entry(tp.customer_id)
                        .or_default()
                        .entry(tp.timestamp.div_euclid(DAY_MS))
                        .or_default();
                    if let Some(v) = tp.value {
                        *day = Some(day.unwrap_or(0.0) + v);
                    }
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
    let gg = clv::fit(&spend(&days, end));
    let purchase_days: usize = days.values().map(BTreeMap::len).sum();
    let buyers = days.len();
    let mut out = io::stdout().lock();
    let w = |e| CliError::io("stdout", e);
    let warning = gg_warning(&gg);
    if opts.json {
        let clv = gg.as_ref().ok().map(|g| {
            serde_json::json!({
                "p": g.model.p, "q": g.model.q, "v": g.model.v,
                "log_likelihood": g.log_likelihood, "customers": g.customers,
                "correlation": g.correlation,
            })
        });
        let j = serde_json::json!({
            "r": f.model.r, "alpha": f.model.alpha, "a": f.model.a, "b": f.model.b,
            "log_likelihood": f.log_likelihood, "customers": f.customers,
            "customers_in_input": customers_seen.len(), "buyers": buyers,
            "purchase_days": purchase_days, "observation_end": end, "skipped_records": skipped,
            "clv": clv, "clv_warning": warning,
        });
        writeln!(out, "{j}").map_err(w)?;
    } else {
        writeln!(
            out,
            "# BG/NBD fit over the {} customers who bought ({} purchase days; {} customers in the input), observation end {}\n# log-likelihood = {:.4} (time unit: days); {} invalid records skipped\n[churn]\nr = {:?}\nalpha = {:?}\na = {:?}\nb = {:?}",
            f.customers,
            purchase_days,
            customers_seen.len(),
            codec::json::format_rfc3339(end),
            f.log_likelihood,
            skipped,
            f.model.r,
            f.model.alpha,
            f.model.a,
            f.model.b
        )
        .map_err(w)?;
        writeln!(out).map_err(w)?;
        if let Some(text) = &warning {
            writeln!(out, "# warning: {text}").map_err(w)?;
        }
        match &gg {
            Ok(g) => writeln!(
                out,
                "# Gamma-Gamma fit over {} repeat customers (log-likelihood = {:.4}; correlation of repeat purchases and mean value = {:.4})\n[clv]\np = {:?}\nq = {:?}\nv = {:?}",
                g.customers, g.log_likelihood, g.correlation, g.model.p, g.model.q, g.model.v
            ),
            Err(_) => writeln!(out, "# [clv] not fitted: keep its defaults"),
        }
        .map_err(w)?;
    }
    if let Some(text) = &warning {
        eprintln!("fit-churn: warning: {text}");
    }
    Ok(ExitCode::SUCCESS)
}
