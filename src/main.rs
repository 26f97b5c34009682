//! The `touchstream` binary: clap subcommands over the library.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use touchstream::cli;

/// mimalloc: the engine allocates many small per-customer lists; it is
/// markedly faster than the system allocator for them (see README
/// "Performance"). librdkafka keeps glibc's `malloc` (mimalloc's
/// `override` was measured and left off: docs/performance.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Omnichannel customer touchpoints in, live per-customer signals out.
#[derive(Parser)]
#[command(name = "touchstream", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service against Kafka (consumer group, changelog-backed state, /metrics).
    Run(cli::run::Opts),
    /// Run the engine over a JSON Lines or Avro file; derived events as JSON lines on stdout.
    Replay(cli::replay::Opts),
    /// Generate realistic synthetic omnichannel touchpoints, seeded and reproducible.
    Generate(cli::generate::Opts),
    /// Fit the BG/NBD churn model (r, alpha, a, b) to a touchpoint history.
    FitChurn(cli::fit_churn::Opts),
}

fn main() -> ExitCode {
    // Before any Avro decoding: the limit is process-wide and set once.
    touchstream::codec::avro::limit_allocations();
    let cli = Cli::parse();
    let result: anyhow::Result<ExitCode> = match cli.command {
        Command::Run(o) => cli::run::run(o).map_err(Into::into),
        Command::Replay(o) => cli::replay::run(o).map_err(Into::into),
        Command::Generate(o) => cli::generate::run(o).map_err(Into::into),
        Command::FitChurn(o) => cli::fit_churn::run(o).map_err(Into::into),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("touchstream: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
