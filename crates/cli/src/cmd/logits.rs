//! `slmpack logits`: the logits after every token of a given token sequence, for comparing
//! slmpack's forward pass with other runtimes (llama.cpp's `logits_all`).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use slmpack_gguf::GgufFile;
use slmpack_infer::{Model, Session};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A llama-family .gguf model.
    pub model: PathBuf,
    /// Comma-separated token ids, e.g. `1,2,3`.
    #[arg(long, value_delimiter = ',', required = true, num_args = 1..)]
    pub tokens: Vec<u32>,
    /// Output file: `.npy` (float32, shape [tokens, vocab]) or raw little-endian f32 otherwise.
    #[arg(long, short)]
    pub out: PathBuf,
    /// Threads for the forward pass (default: all cores).
    #[arg(long, short = 't')]
    pub threads: Option<usize>,
    /// Prompt tokens processed per batch.
    #[arg(long, short = 'b', default_value_t = slmpack_infer::session::DEFAULT_BATCH)]
    pub batch_size: usize,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let f = GgufFile::open_populated(&a.model)
        .with_context(|| format!("loading `{}`", a.model.display()))?;
    let pool = super::run::thread_pool(a.threads)?;
    let model = pool.install(|| Model::load(&f))?;
    let logits = pool.install(|| -> anyhow::Result<Vec<f32>> {
        let mut s = Session::new(&model, a.tokens.len(), a.batch_size)?;
        Ok(s.eval_all(&a.tokens)?)
    })?;
    write_f32(&a.out, &logits, [a.tokens.len(), model.config.n_vocab])
}

/// Write `data` (shape `[rows, cols]`) as .npy or raw f32, atomically.
pub fn write_f32(path: &Path, data: &[f32], shape: [usize; 2]) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        bail!(
            "cannot write `{}`: folder `{}` does not exist",
            path.display(),
            dir.display()
        );
    }
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("cannot write to folder `{}`", dir.display()))?;
    let mut w = std::io::BufWriter::new(tmp.as_file_mut());
    if path.extension().is_some_and(|e| e == "npy") {
        let mut header = format!(
            "{{'descr': '<f4', 'fortran_order': False, 'shape': ({}, {}), }}",
            shape[0], shape[1]
        );
        // magic (6) + version (2) + length (2) + header, padded with spaces to 64 bytes, '\n'
        let total = (10 + header.len() + 1).div_ceil(64) * 64;
        while 10 + header.len() + 1 < total {
            header.push(' ');
        }
        header.push('\n');
        w.write_all(b"\x93NUMPY\x01\x00")?;
        w.write_all(&(header.len() as u16).to_le_bytes())?;
        w.write_all(header.as_bytes())?;
    }
    for v in data {
        w.write_all(&v.to_le_bytes())?;
    }
    w.flush()?;
    drop(w);
    tmp.persist(path)
        .with_context(|| format!("cannot write `{}`", path.display()))?;
    Ok(())
}
