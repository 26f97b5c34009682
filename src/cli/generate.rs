//! `touchstream generate` (placeholder until the generator lands).

use std::process::ExitCode;

use super::CliError;

/// Options of `generate`.
#[derive(Debug, clap::Args)]
pub struct Opts {}

/// Runs the command.
pub fn run(_opts: Opts) -> Result<ExitCode, CliError> {
    Err(CliError::Usage("generate is not built yet".into()))
}
