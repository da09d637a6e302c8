//! File-system helpers: capped reads, atomic writes and a release-folder walk that never follows
//! symlinks.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::{VerifyError, MAX_DEPTH, MAX_FILES};

/// Read a regular file (not following symlinks), refusing it before reading when it is larger
/// than `cap`. The read itself is also bounded, so a file that grows meanwhile is still refused.
pub(crate) fn read_capped(path: &Path, cap: u64) -> Result<Vec<u8>, VerifyError> {
    let io = |source| VerifyError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(VerifyError::MissingMetadata {
                path: path.to_path_buf(),
            })
        }
        Err(e) => return Err(io(e)),
    };
    if meta.file_type().is_symlink() {
        return Err(VerifyError::Symlink {
            path: path.to_path_buf(),
        });
    }
    if !meta.is_file() {
        return Err(VerifyError::NotRegular {
            path: path.to_path_buf(),
        });
    }
    if meta.len() > cap {
        return Err(VerifyError::Oversized {
            path: path.to_path_buf(),
            size: meta.len(),
            cap,
        });
    }
    let file = fs::File::open(path).map_err(io)?;
    let mut buf = Vec::with_capacity(meta.len() as usize);
    file.take(cap + 1).read_to_end(&mut buf).map_err(io)?;
    if buf.len() as u64 > cap {
        return Err(VerifyError::Oversized {
            path: path.to_path_buf(),
            size: buf.len() as u64,
            cap,
        });
    }
    Ok(buf)
}

/// Write `bytes` to `path` atomically: a temporary file in the same folder (mode 0600 on Unix),
/// flushed to disk, then renamed over `path`. Readers see the old file or the new one, never a
/// half-written one. With `no_clobber`, an existing `path` is an error.
pub fn write_atomic(path: &Path, bytes: &[u8], no_clobber: bool) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".slmpack-tmp-")
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    if no_clobber {
        tmp.persist_noclobber(path).map_err(|e| e.error)?;
    } else {
        tmp.persist(path).map_err(|e| e.error)?;
    }
    // Make the rename itself durable; not every platform can open a folder, so best effort.
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// One regular file found in a release folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Found {
    /// Path relative to the release folder, `/`-separated.
    pub rel: String,
    pub size: u64,
}

/// Every regular file under `root`, sorted by relative path. Symlinks (anywhere), sockets, fifos
/// and devices are errors; so are non-UTF-8 names, more than [`MAX_FILES`] entries and folders
/// nested deeper than [`MAX_DEPTH`].
pub(crate) fn list_release_files(root: &Path) -> Result<Vec<Found>, VerifyError> {
    let meta = fs::symlink_metadata(root).map_err(|source| VerifyError::Io {
        path: root.to_path_buf(),
        source,
    })?;
    if meta.file_type().is_symlink() {
        return Err(VerifyError::Symlink {
            path: root.to_path_buf(),
        });
    }
    if !meta.is_dir() {
        return Err(VerifyError::NotRegular {
            path: root.to_path_buf(),
        });
    }
    let mut out = Vec::new();
    walk(root, root, 0, &mut out)?;
    out.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok(out)
}

fn walk(root: &Path, dir: &Path, depth: usize, out: &mut Vec<Found>) -> Result<(), VerifyError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| VerifyError::Io { path, source }
    };
    if depth > MAX_DEPTH {
        return Err(VerifyError::TooMany {
            path: dir.to_path_buf(),
            reason: format!("folders nested deeper than {MAX_DEPTH} levels"),
        });
    }
    for entry in fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let path = entry.path();
        let ft = entry.file_type().map_err(io(&path))?;
        if ft.is_symlink() {
            return Err(VerifyError::Symlink { path });
        }
        if ft.is_dir() {
            walk(root, &path, depth + 1, out)?;
            continue;
        }
        if !ft.is_file() {
            return Err(VerifyError::NotRegular { path });
        }
        let rel =
            relative(root, &path).ok_or_else(|| VerifyError::NotRegular { path: path.clone() })?;
        let size = entry.metadata().map_err(io(&path))?.len();
        out.push(Found { rel, size });
        if out.len() > MAX_FILES {
            return Err(VerifyError::TooMany {
                path: root.to_path_buf(),
                reason: format!("more than {MAX_FILES} files"),
            });
        }
    }
    Ok(())
}

/// `/`-joined UTF-8 path of `path` below `root`.
fn relative(root: &Path, path: &Path) -> Option<String> {
    let rel = path.strip_prefix(root).ok()?;
    let mut parts = Vec::new();
    for c in rel.components() {
        match c {
            std::path::Component::Normal(s) => parts.push(s.to_str()?),
            _ => return None,
        }
    }
    Some(parts.join("/"))
}

/// `root` joined with a checked, `/`-separated relative path.
pub(crate) fn join_rel(root: &Path, rel: &str) -> PathBuf {
    let mut p = root.to_path_buf();
    for part in rel.split('/') {
        p.push(part);
    }
    p
}
