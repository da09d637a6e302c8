//! `slmpack run`: generate text with a llama-family GGUF.

/// A rayon pool with `threads` workers (default: rayon's choice, all cores).
pub fn thread_pool(threads: Option<usize>) -> anyhow::Result<rayon::ThreadPool> {
    let mut b = rayon::ThreadPoolBuilder::new();
    if let Some(n) = threads {
        if n == 0 {
            anyhow::bail!("`--threads` must be at least 1");
        }
        b = b.num_threads(n);
    }
    Ok(b.build()?)
}
