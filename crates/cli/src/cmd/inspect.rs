//! `slmpack inspect`.

use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A .gguf file, a .safetensors file or a Hugging Face checkpoint folder.
    pub path: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let r = slmpack_convert::inspect::inspect(&a.path)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print!("{}", slmpack_convert::inspect::render_text(&r));
    }
    Ok(())
}
