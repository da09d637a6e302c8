//! Streaming SHA-256 of release files.
//!
//! SHA-256 is sequential within one file, so parallelism comes from two places:
//! - across files: [`hash_files`] hashes the files of a release on the rayon pool;
//! - within a large file: a reader thread reads the next chunks ([`CHUNK`] bytes each, up to
//!   [`READ_AHEAD`] in flight) while the hashing thread digests the current one, so disk reads
//!   and hashing overlap instead of alternating.
//!
//! Reads are bounded by the expected size plus one byte, so a file that is larger than the
//! manifest says is detected without reading all of it.

use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::sync::mpsc;

use rayon::prelude::*;
use sha2::{Digest, Sha256};

/// Read size.
pub const CHUNK: usize = 4 << 20;
/// Chunks read ahead of the hasher for large files.
pub const READ_AHEAD: usize = 4;
/// Files at least this large get a dedicated reader thread.
pub const PIPELINE_MIN: u64 = 64 << 20;

/// Result of hashing one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hashed {
    pub sha256: [u8; 32],
    /// Bytes read: the file's size, or `limit + 1` when it is larger than `limit`.
    pub len: u64,
}

/// Progress callback: called with the number of bytes just hashed.
pub type Progress<'a> = &'a (dyn Fn(u64) + Sync);

/// Hash at most `limit + 1` bytes of `path`.
pub fn hash_file(path: &Path, limit: u64, progress: Progress<'_>) -> std::io::Result<Hashed> {
    let file = File::open(path)?;
    let reader = file.take(limit.saturating_add(1));
    if limit >= PIPELINE_MIN {
        hash_pipelined(reader, progress)
    } else {
        hash_simple(reader, progress)
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn hash_simple(mut r: impl Read, progress: Progress<'_>) -> std::io::Result<Hashed> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = read_full(&mut r, &mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        len += n as u64;
        progress(n as u64);
    }
    Ok(Hashed {
        sha256: h.finalize().into(),
        len,
    })
}

fn hash_pipelined(mut r: impl Read + Send, progress: Progress<'_>) -> std::io::Result<Hashed> {
    let (full_tx, full_rx) = mpsc::sync_channel::<std::io::Result<(Vec<u8>, usize)>>(READ_AHEAD);
    let (empty_tx, empty_rx) = mpsc::channel::<Vec<u8>>();
    for _ in 0..READ_AHEAD + 1 {
        empty_tx.send(vec![0u8; CHUNK]).expect("receiver alive");
    }
    std::thread::scope(|s| {
        s.spawn(move || {
            while let Ok(mut buf) = empty_rx.recv() {
                match read_full(&mut r, &mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if full_tx.send(Ok((buf, n))).is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        let _ = full_tx.send(Err(e));
                        break;
                    }
                }
            }
        });
        let mut h = Sha256::new();
        let mut len = 0u64;
        for item in full_rx {
            let (buf, n) = item?;
            h.update(&buf[..n]);
            len += n as u64;
            progress(n as u64);
            // The reader may have finished already; a failed send just drops the buffer.
            let _ = empty_tx.send(buf);
        }
        drop(empty_tx);
        Ok(Hashed {
            sha256: h.finalize().into(),
            len,
        })
    })
}

/// Hash `(path, limit)` pairs in parallel; results in input order.
pub fn hash_files(
    files: &[(std::path::PathBuf, u64)],
    progress: Progress<'_>,
) -> Vec<std::io::Result<Hashed>> {
    files
        .par_iter()
        .map(|(p, limit)| hash_file(p, *limit, progress))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple_and_pipelined_agree_with_one_shot() {
        let data: Vec<u8> = (0..(CHUNK * 2 + 12345))
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        let want: [u8; 32] = Sha256::digest(&data).into();
        let nop = |_| {};
        let a = hash_simple(&data[..], &nop).unwrap();
        let b = hash_pipelined(&data[..], &nop).unwrap();
        assert_eq!(a.sha256, want);
        assert_eq!(b.sha256, want);
        assert_eq!(a.len, data.len() as u64);
        assert_eq!(b.len, data.len() as u64);
        let empty: [u8; 32] = Sha256::digest(b"").into();
        assert_eq!(hash_pipelined(&b""[..], &nop).unwrap().sha256, empty);
    }

    #[test]
    fn limit_detects_growth_and_reports_progress() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, vec![1u8; 1000]).unwrap();
        let total = std::sync::atomic::AtomicU64::new(0);
        let cb = |n| {
            total.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        };
        let h = hash_file(&p, 10, &cb).unwrap();
        assert_eq!(h.len, 11);
        let h = hash_file(&p, 1000, &cb).unwrap();
        assert_eq!(h.len, 1000);
        assert_eq!(total.load(std::sync::atomic::Ordering::Relaxed), 1011);
    }
}
