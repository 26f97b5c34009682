//! `touchstream run --config FILE`: the service against Kafka, with
//! `/metrics`, `/healthz` and `/readyz` on `http.listen`. SIGTERM or SIGINT
//! stops fetching, checkpoints, leaves the group and exits 0.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::CliError;
use crate::config::Config;
use crate::http::{self, Health};
use crate::metrics::Metrics;

/// Options of `run`.
#[derive(Debug, clap::Args)]
pub struct Opts {
    /// TOML configuration; every key can be overridden by
    /// `TOUCHSTREAM_<SECTION>__<KEY>` environment variables.
    #[arg(long, value_name = "FILE", env = "TOUCHSTREAM_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log format: `json` (default when stderr is not a terminal) or `text`
    /// (colours only on a terminal).
    #[arg(long, value_name = "FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
}

/// How `run` writes its log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable lines.
    Text,
}

/// Sets up `tracing`: JSON in containers, human-readable on a terminal,
/// filtered by `RUST_LOG` (default `info`).
pub fn init_logging(format: Option<LogFormat>) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let terminal = std::io::stderr().is_terminal();
    let json = match format {
        Some(f) => f == LogFormat::Json,
        None => !terminal,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(terminal)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Runs the command.
pub fn run(opts: Opts) -> Result<ExitCode, CliError> {
    init_logging(opts.log_format);
    let config = Config::load(opts.config.as_deref())?;
    tracing::info!(
        config = %opts.config.as_deref().map_or("<none: defaults and TOUCHSTREAM_* variables>".into(), |p| p.display().to_string()),
        brokers = %config.kafka.brokers,
        input_topics = ?config.kafka.input_topics,
        "Starting."
    );
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::with_stall_timeout(
        config.http.stall_timeout.0.max(0) as u64,
    ));
    let addr = http::spawn(&config.http.listen, metrics.clone(), health.clone())
        .map_err(|e| CliError::Usage(e.to_string()))?;
    tracing::info!(%addr, "HTTP listening (/metrics, /healthz, /readyz).");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| CliError::io("tokio runtime", e))?;
    let shutdown = Arc::new(AtomicBool::new(false));
    {
        let shutdown = shutdown.clone();
        rt.spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                return;
            };
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
            tracing::info!("Signal received: draining.");
            shutdown.store(true, Ordering::Relaxed);
        });
    }
    match crate::kafka::run(config, metrics, health, shutdown, rt.handle().clone()) {
        Ok(()) => {
            tracing::info!("Stopped cleanly.");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            tracing::error!(error = %e, "touchstream stopped on an error.");
            Ok(ExitCode::from(1))
        }
    }
}
