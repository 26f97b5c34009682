//! The subcommands: one module each, with its clap `Opts` and a `run`.

pub mod fit_churn;
pub mod generate;
pub mod replay;
pub mod run;

use thiserror::Error;

/// A touchpoint file format (replay input, generate output).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FileFormat {
    /// One JSON object per line.
    Json,
    /// An Avro object container file (schema `schemas/touchpoint.avsc`).
    Avro,
}

/// Why a command failed (bad records are not errors: they are reported and
/// counted).
#[derive(Debug, Error)]
pub enum CliError {
    /// Reading or writing a file or stream failed.
    #[error("{what}")]
    Io {
        /// What was being read or written.
        what: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// A schema is invalid.
    #[error(transparent)]
    Schema(#[from] crate::codec::avro::SchemaError),
    /// The arguments make no sense together.
    #[error("{0}")]
    Usage(String),
    /// Fitting failed.
    #[error(transparent)]
    Fit(#[from] crate::bgnbd::FitError),
}

impl CliError {
    /// An I/O error with context.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        CliError::Io {
            what: what.into(),
            source,
        }
    }
}

pub use crate::validate::wall_clock_ms;

/// Parses `--now`-style arguments: epoch millis or RFC 3339.
pub fn parse_time_arg(s: &str) -> Result<i64, String> {
    match s.parse::<i64>() {
        Ok(ms) => Ok(ms),
        Err(_) => crate::codec::json::parse_rfc3339(s),
    }
}
