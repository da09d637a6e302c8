//! `slmpack inspect`.

use std::path::PathBuf;

use anyhow::Context;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A .gguf file, a .safetensors file or a Hugging Face checkpoint folder.
    pub path: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let f = slmpack_gguf::GgufFile::open(&a.path)
        .with_context(|| format!("inspecting `{}`", a.path.display()))?;
    println!("{} tensors, {} keys", f.tensors.len(), f.metadata.len());
    Ok(())
}
