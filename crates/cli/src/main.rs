//! `slmpack`: the command-line front end. Each subcommand lives in `cmd/<name>.rs`; this file
//! parses arguments, runs the command, prints an error once with its chain, and maps errors to
//! exit codes in one place.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cmd;
mod exit;

/// Quantize, sign, verify and benchmark small language models for devices.
#[derive(Parser, Debug)]
#[command(name = "slmpack", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Show metadata, tensors, types and bits per weight of a GGUF, safetensors file or checkpoint.
    Inspect(cmd::inspect::Args),
    /// Write the logits after every token of a token sequence (.npy or raw f32), for comparisons.
    Logits(cmd::logits::Args),
    /// Generate text with a llama-family GGUF (streamed; `--chat`, confidence, fallback).
    Run(cmd::run::Args),
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Inspect(a) => cmd::inspect::run(a),
        Command::Logits(a) => cmd::logits::run(a),
        Command::Run(a) => cmd::run::run(a),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => exit::report(&err),
    }
}
