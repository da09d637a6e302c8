//! A memory-mapped GGUF reader that validates everything before it allocates or indexes.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::error::{GgufError, Result};
use crate::types::GgmlType;
use crate::value::{Value, ValueType};
use crate::{GGUF_DEFAULT_ALIGNMENT, GGUF_MAGIC};

/// Limits applied while parsing, before anything is allocated. The defaults are far above any
/// real model (llama.cpp files have a few hundred keys and a few thousand tensors) and far below
/// what would exhaust memory.
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_kv: u64,
    pub max_tensors: u64,
    pub max_string_bytes: u64,
    pub max_array_items: u64,
    pub max_array_depth: u32,
    pub max_name_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_kv: 1 << 16,
            max_tensors: 1 << 20,
            max_string_bytes: 1 << 26,
            max_array_items: 1 << 26,
            max_array_depth: 4,
            max_name_bytes: 1 << 16,
        }
    }
}

/// One tensor-info record.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// Dimensions in ggml order: `dims[0]` is the row length (`ne[0]`).
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// Offset from the start of the data section.
    pub offset: u64,
}

impl TensorInfo {
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Row length (`ne[0]`).
    pub fn row_len(&self) -> u64 {
        self.dims.first().copied().unwrap_or(1)
    }

    /// Number of rows (product of all dims but the first).
    pub fn n_rows(&self) -> u64 {
        self.dims.iter().skip(1).product()
    }

    /// Size of the tensor's data in bytes.
    pub fn n_bytes(&self) -> u64 {
        // validated at parse time: the row length is a multiple of the block size
        self.ty.row_bytes(self.row_len()).unwrap_or(0) * self.n_rows()
    }

    /// Shape in the PyTorch/NumPy order (outermost first), as Hugging Face and gguf-py show it.
    pub fn shape_outer_first(&self) -> Vec<u64> {
        self.dims.iter().rev().copied().collect()
    }
}

/// An open GGUF file: parsed header, metadata and tensor infos, and the mapped bytes.
pub struct GgufFile {
    path: PathBuf,
    map: Mmap,
    pub version: u32,
    /// Metadata in file order.
    pub metadata: Vec<(String, Value)>,
    index: HashMap<String, usize>,
    pub tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    pub alignment: u64,
    /// Absolute offset of the data section.
    pub data_offset: u64,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("n_kv", &self.metadata.len())
            .field("n_tensors", &self.tensors.len())
            .finish()
    }
}

impl GgufFile {
    /// Open and validate a GGUF file with default limits.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile> {
        Self::open_with_limits(path, &Limits::default())
    }

    pub fn open_with_limits(path: impl AsRef<Path>, limits: &Limits) -> Result<GgufFile> {
        Self::open_map(path.as_ref(), limits, false)
    }

    /// [`GgufFile::open`] for running the model: every page of the map is faulted in up front
    /// (`MAP_POPULATE` on Linux, as llama.cpp maps its models), so the first pass over the
    /// weights does not pay for tens of thousands of page faults.
    pub fn open_populated(path: impl AsRef<Path>) -> Result<GgufFile> {
        Self::open_map(path.as_ref(), &Limits::default(), true)
    }

    fn open_map(path: &Path, limits: &Limits, populate: bool) -> Result<GgufFile> {
        let path = path.to_path_buf();
        let file = File::open(&path).map_err(|source| GgufError::Open {
            path: path.clone(),
            source,
        })?;
        let meta = file.metadata().map_err(|source| GgufError::Open {
            path: path.clone(),
            source,
        })?;
        if !meta.is_file() {
            return Err(GgufError::Open {
                path,
                source: std::io::Error::other("not a regular file"),
            });
        }
        // SAFETY: the map is read-only; a concurrent writer truncating the file could fault a
        // read, as with every mmap-based loader (llama.cpp's included). slmpack writes outputs
        // to a temp file and renames, so its own files are never modified in place.
        let mut opts = memmap2::MmapOptions::new();
        if populate {
            opts.populate();
        }
        let map = unsafe { opts.map(&file) }.map_err(|source| GgufError::Open {
            path: path.clone(),
            source,
        })?;
        Self::parse(path, map, limits)
    }

    fn parse(path: PathBuf, map: Mmap, limits: &Limits) -> Result<GgufFile> {
        let mut c = Cursor {
            buf: &map,
            pos: 0,
            path: &path,
        };
        let magic = c.take(4, "magic")?;
        if magic != GGUF_MAGIC {
            return Err(GgufError::BadMagic {
                path: path.clone(),
                found: magic.to_vec(),
            });
        }
        let version = c.u32("version")?;
        if version != 2 && version != 3 {
            return Err(GgufError::Version {
                path: path.clone(),
                version,
            });
        }
        let n_tensors = c.u64("tensor count")?;
        let n_kv = c.u64("metadata count")?;
        if n_tensors > limits.max_tensors {
            return Err(c.malformed(format!(
                "tensor count {n_tensors} is above the limit of {}",
                limits.max_tensors
            )));
        }
        if n_kv > limits.max_kv {
            return Err(c.malformed(format!(
                "metadata count {n_kv} is above the limit of {}",
                limits.max_kv
            )));
        }
        // every kv needs at least 8 (key len) + 4 (type) + 1 bytes; every tensor at least 8+4+8+4+8
        c.need_items(n_kv, 13, "metadata entries")?;

        let mut metadata = Vec::with_capacity(n_kv as usize);
        let mut index = HashMap::with_capacity(n_kv as usize);
        for _ in 0..n_kv {
            let at = c.pos as u64;
            let key = c.string("metadata key", limits.max_name_bytes)?;
            let ty = c.u32("value type")?;
            let ty = ValueType::from_u32(ty)
                .ok_or_else(|| c.malformed(format!("key `{key}` has unknown value type {ty}")))?;
            let v = c.value(ty, limits, 0, &key)?;
            if index.insert(key.clone(), metadata.len()).is_some() {
                return Err(GgufError::Malformed {
                    path: path.clone(),
                    offset: at,
                    msg: format!("duplicate metadata key `{key}`"),
                });
            }
            metadata.push((key, v));
        }

        let alignment = match index.get("general.alignment").map(|&i| &metadata[i].1) {
            None => GGUF_DEFAULT_ALIGNMENT,
            Some(Value::U32(a)) if *a > 0 && a.is_power_of_two() => *a as u64,
            Some(v) => {
                return Err(c.malformed(format!(
                    "`general.alignment` must be a power-of-two u32, found {v:?}"
                )))
            }
        };

        c.need_items(n_tensors, 32, "tensor infos")?;
        let mut tensors = Vec::with_capacity(n_tensors as usize);
        let mut tensor_index = HashMap::with_capacity(n_tensors as usize);
        for _ in 0..n_tensors {
            let name = c.string("tensor name", limits.max_name_bytes)?;
            let n_dims = c.u32("tensor dimension count")?;
            if n_dims == 0 || n_dims > 4 {
                return Err(bad_tensor(
                    &path,
                    &name,
                    format!("has {n_dims} dimensions (ggml allows 1 to 4)"),
                ));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(c.u64("tensor dimension")?);
            }
            let raw_ty = c.u32("tensor type")?;
            let ty = GgmlType::from_u32(raw_ty).ok_or_else(|| {
                bad_tensor(&path, &name, format!("has unknown ggml type {raw_ty}"))
            })?;
            let offset = c.u64("tensor offset")?;
            let mut n: u64 = 1;
            for &d in &dims {
                if d == 0 {
                    return Err(bad_tensor(
                        &path,
                        &name,
                        format!("has a zero dimension {dims:?}"),
                    ));
                }
                n = n.checked_mul(d).ok_or_else(|| {
                    bad_tensor(&path, &name, format!("dimensions {dims:?} overflow"))
                })?;
            }
            if dims[0] % ty.block_size() as u64 != 0 {
                return Err(bad_tensor(
                    &path,
                    &name,
                    format!(
                        "has row length {} which is not a multiple of {}'s block size {}",
                        dims[0],
                        ty,
                        ty.block_size()
                    ),
                ));
            }
            if offset % alignment != 0 {
                return Err(bad_tensor(
                    &path,
                    &name,
                    format!("has offset {offset} which is not aligned to {alignment}"),
                ));
            }
            if tensor_index.insert(name.clone(), tensors.len()).is_some() {
                return Err(bad_tensor(&path, &name, "appears twice".to_string()));
            }
            tensors.push(TensorInfo {
                name,
                dims,
                ty,
                offset,
            });
        }

        let data_offset = align_up(c.pos as u64, alignment);
        let file_len = map.len() as u64;
        if !tensors.is_empty() && data_offset > file_len {
            return Err(GgufError::Truncated {
                path: path.clone(),
                what: "data section".into(),
                offset: data_offset,
                need: 0,
                len: file_len,
            });
        }
        let data_len = file_len.saturating_sub(data_offset);
        // bounds and overlap
        let mut spans: Vec<(u64, u64, usize)> = Vec::with_capacity(tensors.len());
        for (i, t) in tensors.iter().enumerate() {
            let bytes =
                t.ty.row_bytes(t.row_len())
                    .and_then(|r| r.checked_mul(t.n_rows()))
                    .ok_or_else(|| bad_tensor(&path, &t.name, "size overflows".to_string()))?;
            let end = t
                .offset
                .checked_add(bytes)
                .ok_or_else(|| bad_tensor(&path, &t.name, "offset overflows".to_string()))?;
            if end > data_len {
                return Err(GgufError::Truncated {
                    path: path.clone(),
                    what: format!("tensor `{}` data", t.name),
                    offset: data_offset.saturating_add(t.offset),
                    need: bytes,
                    len: file_len,
                });
            }
            spans.push((t.offset, end, i));
        }
        spans.sort_unstable();
        for w in spans.windows(2) {
            if w[1].0 < w[0].1 {
                return Err(bad_tensor(
                    &path,
                    &tensors[w[1].2].name,
                    format!("overlaps tensor `{}`", tensors[w[0].2].name),
                ));
            }
        }

        Ok(GgufFile {
            path,
            map,
            version,
            metadata,
            index,
            tensors,
            tensor_index,
            alignment,
            data_offset,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The whole mapped file.
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// Gives back to the kernel the pages of the map that lie wholly inside `bytes` (a slice of
    /// [`GgufFile::bytes`], e.g. a tensor's data), for a caller that will not read them again
    /// (a runtime that holds a repacked copy): they leave this process's resident memory, and a
    /// later read faults them in again from the file, unchanged. Does nothing for a slice outside
    /// the map, or where the system has no such advice.
    pub fn release(&self, bytes: &[u8]) {
        let base = self.map.as_ptr() as usize;
        let (start, end) = (
            bytes.as_ptr() as usize,
            bytes.as_ptr() as usize + bytes.len(),
        );
        if start < base || end > base + self.map.len() {
            return;
        }
        // 4 KiB pages, or else (the call fails on a misaligned range) 16 or 64 KiB ones, as some
        // aarch64 kernels use
        for page in [4096, 16384, 65536] {
            let from = (start - base).next_multiple_of(page);
            let to = (end - base) / page * page;
            if to <= from {
                return;
            }
            // SAFETY: the map is a read-only mapping of the file, never written through, so the
            // dropped pages read back as the same bytes from the file (or the page cache); no
            // reference is invalidated (the address range stays mapped).
            #[cfg(unix)]
            let done = unsafe {
                self.map
                    .unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, from, to - from)
            }
            .is_ok();
            #[cfg(not(unix))]
            let done = true;
            if done {
                return;
            }
        }
    }

    pub fn file_size(&self) -> u64 {
        self.map.len() as u64
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.index.get(key).map(|&i| &self.metadata[i].1)
    }

    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Value::as_str)
    }

    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(Value::as_u64)
    }

    pub fn get_f64(&self, key: &str) -> Option<f64> {
        self.get(key).and_then(Value::as_f64)
    }

    /// The model architecture (`general.architecture`).
    pub fn architecture(&self) -> Option<&str> {
        self.get_str("general.architecture")
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// The bytes of a tensor's data, borrowed from the map.
    pub fn tensor_data(&self, t: &TensorInfo) -> &[u8] {
        let start = (self.data_offset + t.offset) as usize;
        &self.map[start..start + t.n_bytes() as usize]
    }

    /// Look a tensor up by name and borrow its data.
    pub fn tensor_bytes(&self, name: &str) -> Result<(&TensorInfo, &[u8])> {
        let t = self.tensor(name).ok_or_else(|| GgufError::NoTensor {
            path: self.path.clone(),
            name: name.to_string(),
        })?;
        Ok((t, self.tensor_data(t)))
    }
}

fn bad_tensor(path: &Path, name: &str, msg: String) -> GgufError {
    GgufError::BadTensor {
        path: path.to_path_buf(),
        tensor: name.to_string(),
        msg,
    }
}

pub(crate) fn align_up(v: u64, a: u64) -> u64 {
    v.div_ceil(a) * a
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn malformed(&self, msg: String) -> GgufError {
        GgufError::Malformed {
            path: self.path.to_path_buf(),
            offset: self.pos as u64,
            msg,
        }
    }

    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    /// Fail early when `n` items of at least `min` bytes each cannot fit in what is left.
    fn need_items(&self, n: u64, min: u64, what: &str) -> Result<()> {
        match n.checked_mul(min) {
            Some(b) if b <= self.remaining() => Ok(()),
            _ => Err(GgufError::Truncated {
                path: self.path.to_path_buf(),
                what: format!("{n} {what}"),
                offset: self.pos as u64,
                need: n.saturating_mul(min),
                len: self.buf.len() as u64,
            }),
        }
    }

    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(GgufError::Truncated {
                path: self.path.to_path_buf(),
                what: what.to_string(),
                offset: self.pos as u64,
                need: n,
                len: self.buf.len() as u64,
            });
        }
        let s = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn arr<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let s = self.take(N as u64, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.arr(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.arr(what)?))
    }

    fn string(&mut self, what: &str, max: u64) -> Result<String> {
        let len = self.u64(what)?;
        if len > max {
            return Err(self.malformed(format!(
                "{what} is {len} bytes long, above the limit of {max}"
            )));
        }
        let at = self.pos;
        let bytes = self.take(len, what)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_string()),
            Err(_) => Err(GgufError::Malformed {
                path: self.path.to_path_buf(),
                offset: at as u64,
                msg: format!("{what} is not valid UTF-8"),
            }),
        }
    }

    fn value(&mut self, ty: ValueType, limits: &Limits, depth: u32, key: &str) -> Result<Value> {
        Ok(match ty {
            ValueType::U8 => Value::U8(self.arr::<1>(key)?[0]),
            ValueType::I8 => Value::I8(self.arr::<1>(key)?[0] as i8),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.arr(key)?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.arr(key)?)),
            ValueType::U32 => Value::U32(u32::from_le_bytes(self.arr(key)?)),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.arr(key)?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.arr(key)?)),
            ValueType::U64 => Value::U64(u64::from_le_bytes(self.arr(key)?)),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.arr(key)?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.arr(key)?)),
            ValueType::Bool => {
                let b = self.arr::<1>(key)?[0];
                if b > 1 {
                    return Err(
                        self.malformed(format!("key `{key}`: bool value {b} is not 0 or 1"))
                    );
                }
                Value::Bool(b == 1)
            }
            ValueType::String => Value::String(self.string(key, limits.max_string_bytes)?),
            ValueType::Array => {
                if depth >= limits.max_array_depth {
                    return Err(self.malformed(format!("key `{key}`: arrays nested too deeply")));
                }
                let et = self.u32(key)?;
                let et = ValueType::from_u32(et).ok_or_else(|| {
                    self.malformed(format!("key `{key}`: unknown array element type {et}"))
                })?;
                let n = self.u64(key)?;
                if n > limits.max_array_items {
                    return Err(self.malformed(format!(
                        "key `{key}`: array of {n} items is above the limit of {}",
                        limits.max_array_items
                    )));
                }
                self.need_items(n, et.min_encoded_size(), &format!("items of `{key}`"))?;
                let mut items = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    items.push(self.value(et, limits, depth + 1, key)?);
                }
                Value::Array(et, items)
            }
        })
    }
}
