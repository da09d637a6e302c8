//! `slmpack export`: GGUF → Hugging Face checkpoint (safetensors + config + tokenizer).

use std::path::PathBuf;

use anyhow::Context;
use slmpack_convert::export::{export_gguf_to_hf, parse_size, ExportDtype, ExportOptions};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The GGUF to export (llama architecture; any type slmpack can dequantize).
    pub model: PathBuf,
    /// Output folder for the Hugging Face checkpoint.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Floating-point type of the exported weights.
    #[arg(long, default_value = "f16", value_parser = parse_dtype, value_name = "f16|bf16|f32")]
    pub dtype: ExportDtype,
    /// Largest safetensors shard (e.g. 2GB, 500MB, 1GiB); larger models are split.
    #[arg(long, default_value = "2GB", value_parser = parse_shard_size, value_name = "SIZE")]
    pub max_shard_size: u64,
    /// Replace DIR if it exists and is not empty.
    #[arg(long)]
    pub force: bool,
}

fn parse_dtype(s: &str) -> Result<ExportDtype, String> {
    ExportDtype::parse(s).ok_or_else(|| format!("`{s}` is not f16, bf16 or f32"))
}

fn parse_shard_size(s: &str) -> Result<u64, String> {
    parse_size(s).ok_or_else(|| format!("`{s}` is not a size like 2GB, 500MB or 1GiB"))
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let opts = ExportOptions {
        dtype: a.dtype,
        max_shard_size: a.max_shard_size,
        force: a.force,
    };
    let s = export_gguf_to_hf(&a.model, &a.out, &opts)
        .with_context(|| format!("exporting `{}`", a.model.display()))?;
    println!(
        "exported {} tensors ({:.1} MB {}, {} shard{}{}) to `{}`",
        s.n_tensors,
        s.weight_bytes as f64 / 1e6,
        opts.dtype.torch_name(),
        s.shards.len(),
        if s.shards.len() == 1 { "" } else { "s" },
        if s.tied_embeddings {
            ", tied embeddings"
        } else {
            ""
        },
        s.out_dir.display()
    );
    Ok(())
}
