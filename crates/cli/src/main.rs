//! `slmpack`: the command-line front end. Each subcommand lives in `cmd/<name>.rs`; this file
//! parses arguments, runs the command, prints an error once with its chain, and maps errors to
//! exit codes in one place.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cmd;
mod exit;
mod infer_runner;

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
    /// Generate an Ed25519 release key pair (`.key` secret, `.pub` public).
    Keygen(cmd::keygen::Args),
    /// Hash a release folder and write a signed `manifest.json` + `manifest.sig`.
    Sign(cmd::sign::Args),
    /// Verify a signed release folder (device side; exit 3 on any failure).
    Verify(cmd::verify::Args),
    /// Verify a release and print the best tier this device can run (exit 4 if none).
    Select(cmd::select::Args),
    /// Print this device's detected capabilities as YAML.
    Device(cmd::device::Args),
    /// Write a key-rotation statement signed by the old and the new key.
    Rotate(cmd::rotate::Args),
    /// Quantize a checkpoint or GGUF into llama.cpp GGUF files: one per recipe tier, or one --type.
    Quantize(cmd::quantize::Args),
    /// Export a GGUF as a Hugging Face checkpoint (safetensors, config.json, tokenizer.json).
    Export(cmd::export::Args),
    /// Write the logits after every token of a token sequence (.npy or raw f32), for comparisons.
    Logits(cmd::logits::Args),
    /// Generate text with a llama-family GGUF (streamed; `--chat`, confidence, fallback).
    Run(cmd::run::Args),
    /// Benchmark every tier with scenarios (speed, memory, accuracy, energy); `bench compare`
    /// gates CI on regressions.
    Bench(cmd::bench::Args),
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Inspect(a) => cmd::inspect::run(a),
        Command::Keygen(a) => cmd::keygen::run(a),
        Command::Sign(a) => cmd::sign::run(a),
        Command::Verify(a) => cmd::verify::run(a),
        Command::Select(a) => cmd::select::run(a),
        Command::Device(a) => cmd::device::run(a),
        Command::Rotate(a) => cmd::rotate::run(a),
        Command::Quantize(a) => cmd::quantize::run(a),
        Command::Export(a) => cmd::export::run(a),
        Command::Logits(a) => cmd::logits::run(a),
        Command::Run(a) => cmd::run::run(a),
        Command::Bench(a) => cmd::bench::run(a),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => exit::report(&err),
    }
}
