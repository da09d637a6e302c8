//! An atomic GGUF v3 writer: header, metadata and tensor infos first, then each tensor's data
//! produced on demand (so the caller can quantize one tensor at a time), into a temp file in the
//! target folder that is renamed over the target only when everything was written.

use std::collections::HashMap;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::{GgufError, Result};
use crate::reader::align_up;
use crate::types::GgmlType;
use crate::value::Value;
use crate::{GGUF_DEFAULT_ALIGNMENT, GGUF_MAGIC};

/// A tensor to be written.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorSpec {
    pub name: String,
    /// ggml order: `dims[0]` is the row length.
    pub dims: Vec<u64>,
    pub ty: GgmlType,
}

impl TensorSpec {
    pub fn n_bytes(&self) -> u64 {
        let rows: u64 = self.dims.iter().skip(1).product();
        self.ty.row_bytes(self.dims[0]).unwrap_or(0) * rows
    }
}

/// Collects metadata and tensor specs, then writes the file in one pass.
#[derive(Clone, Debug)]
pub struct GgufWriter {
    alignment: u64,
    kv: Vec<(String, Value)>,
    kv_index: HashMap<String, usize>,
    tensors: Vec<TensorSpec>,
    tensor_index: HashMap<String, usize>,
}

impl Default for GgufWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl GgufWriter {
    pub fn new() -> Self {
        let mut w = GgufWriter {
            alignment: GGUF_DEFAULT_ALIGNMENT,
            kv: Vec::new(),
            kv_index: HashMap::new(),
            tensors: Vec::new(),
            tensor_index: HashMap::new(),
        };
        w.set(
            "general.alignment",
            Value::U32(GGUF_DEFAULT_ALIGNMENT as u32),
        );
        w
    }

    /// Set a metadata key, replacing an earlier value but keeping its position.
    pub fn set(&mut self, key: impl Into<String>, value: impl Into<Value>) {
        let key = key.into();
        let value = value.into();
        if key == "general.alignment" {
            if let Value::U32(a) = value {
                if a > 0 && a.is_power_of_two() {
                    self.alignment = a as u64;
                }
            }
        }
        match self.kv_index.get(&key) {
            Some(&i) => self.kv[i].1 = value,
            None => {
                self.kv_index.insert(key.clone(), self.kv.len());
                self.kv.push((key, value));
            }
        }
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.kv_index.get(key).map(|&i| &self.kv[i].1)
    }

    pub fn remove(&mut self, key: &str) {
        if let Some(i) = self.kv_index.remove(key) {
            self.kv.remove(i);
            for v in self.kv_index.values_mut() {
                if *v > i {
                    *v -= 1;
                }
            }
        }
    }

    pub fn metadata(&self) -> &[(String, Value)] {
        &self.kv
    }

    pub fn tensors(&self) -> &[TensorSpec] {
        &self.tensors
    }

    /// Declare a tensor. Dimensions are in ggml order (`dims[0]` = row length).
    pub fn add_tensor(
        &mut self,
        name: impl Into<String>,
        dims: Vec<u64>,
        ty: GgmlType,
    ) -> Result<()> {
        let name = name.into();
        let bad = |msg: String| GgufError::BadSpec {
            name: name.clone(),
            msg,
        };
        if dims.is_empty() || dims.len() > 4 {
            return Err(bad(format!(
                "{} dimensions (ggml allows 1 to 4)",
                dims.len()
            )));
        }
        if dims.contains(&0) {
            return Err(bad(format!("zero dimension in {dims:?}")));
        }
        if ty.row_bytes(dims[0]).is_none() {
            return Err(bad(format!(
                "row length {} is not a multiple of {}'s block size {}",
                dims[0],
                ty,
                ty.block_size()
            )));
        }
        if name.len() >= 64 {
            // GGML_MAX_NAME is 64 including the terminating NUL
            return Err(bad("name is longer than ggml's 63-byte limit".into()));
        }
        if self.tensor_index.contains_key(&name) {
            return Err(bad("declared twice".into()));
        }
        self.tensor_index.insert(name.clone(), self.tensors.len());
        self.tensors.push(TensorSpec { name, dims, ty });
        Ok(())
    }

    /// Offsets of each tensor in the data section, and the section's total size.
    pub fn layout(&self) -> (Vec<u64>, u64) {
        let mut off = 0u64;
        let mut offs = Vec::with_capacity(self.tensors.len());
        for t in &self.tensors {
            offs.push(off);
            off = align_up(off + t.n_bytes(), self.alignment);
        }
        (offs, off)
    }

    /// Write the file atomically. `data(i, spec, out)` must write exactly `spec.n_bytes()` bytes
    /// for tensor `i`; tensors are asked for in declaration order.
    pub fn write<F, E>(&self, path: &Path, mut data: F) -> Result<()>
    where
        F: FnMut(usize, &TensorSpec, &mut dyn Write) -> std::result::Result<(), E>,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let werr = |source: io::Error| GgufError::Write {
            path: path.to_path_buf(),
            source,
        };
        let tmp = tempfile::Builder::new()
            .prefix(".slmpack-")
            .suffix(".tmp")
            .tempfile_in(&dir)
            .map_err(werr)?;
        {
            let mut out = Counting {
                inner: BufWriter::with_capacity(1 << 20, tmp.as_file()),
                n: 0,
            };
            self.write_header(&mut out).map_err(werr)?;
            let pad = align_up(out.n, self.alignment) - out.n;
            out.write_all(&vec![0u8; pad as usize]).map_err(werr)?;
            let (offs, _) = self.layout();
            let base = out.n;
            for (i, t) in self.tensors.iter().enumerate() {
                debug_assert_eq!(out.n - base, offs[i]);
                let start = out.n;
                data(i, t, &mut out).map_err(|e| match io_of(e.into()) {
                    Ok(ioe) => werr(ioe),
                    Err(source) => GgufError::Producer {
                        path: path.to_path_buf(),
                        tensor: t.name.clone(),
                        source,
                    },
                })?;
                let got = out.n - start;
                if got != t.n_bytes() {
                    return Err(GgufError::DataSize {
                        path: path.to_path_buf(),
                        tensor: t.name.clone(),
                        got,
                        expected: t.n_bytes(),
                    });
                }
                let pad = align_up(out.n - base, self.alignment) - (out.n - base);
                out.write_all(&vec![0u8; pad as usize]).map_err(werr)?;
            }
            out.inner.flush().map_err(werr)?;
        }
        tmp.as_file().sync_all().map_err(werr)?;
        tmp.persist(path).map_err(|e| werr(e.error))?;
        Ok(())
    }

    fn write_header(&self, w: &mut dyn Write) -> io::Result<()> {
        w.write_all(&GGUF_MAGIC)?;
        w.write_all(&3u32.to_le_bytes())?;
        w.write_all(&(self.tensors.len() as u64).to_le_bytes())?;
        w.write_all(&(self.kv.len() as u64).to_le_bytes())?;
        for (k, v) in &self.kv {
            write_str(w, k)?;
            w.write_all(&(v.value_type() as u32).to_le_bytes())?;
            write_value(w, v)?;
        }
        let (offs, _) = self.layout();
        for (t, off) in self.tensors.iter().zip(offs) {
            write_str(w, &t.name)?;
            w.write_all(&(t.dims.len() as u32).to_le_bytes())?;
            for d in &t.dims {
                w.write_all(&d.to_le_bytes())?;
            }
            w.write_all(&(t.ty as u32).to_le_bytes())?;
            w.write_all(&off.to_le_bytes())?;
        }
        Ok(())
    }
}

fn io_of(
    e: Box<dyn std::error::Error + Send + Sync>,
) -> std::result::Result<io::Error, Box<dyn std::error::Error + Send + Sync>> {
    e.downcast::<io::Error>().map(|b| *b)
}

fn write_str(w: &mut dyn Write, s: &str) -> io::Result<()> {
    w.write_all(&(s.len() as u64).to_le_bytes())?;
    w.write_all(s.as_bytes())
}

fn write_value(w: &mut dyn Write, v: &Value) -> io::Result<()> {
    match v {
        Value::U8(x) => w.write_all(&[*x]),
        Value::I8(x) => w.write_all(&x.to_le_bytes()),
        Value::U16(x) => w.write_all(&x.to_le_bytes()),
        Value::I16(x) => w.write_all(&x.to_le_bytes()),
        Value::U32(x) => w.write_all(&x.to_le_bytes()),
        Value::I32(x) => w.write_all(&x.to_le_bytes()),
        Value::F32(x) => w.write_all(&x.to_le_bytes()),
        Value::Bool(x) => w.write_all(&[*x as u8]),
        Value::String(s) => write_str(w, s),
        Value::U64(x) => w.write_all(&x.to_le_bytes()),
        Value::I64(x) => w.write_all(&x.to_le_bytes()),
        Value::F64(x) => w.write_all(&x.to_le_bytes()),
        Value::Array(et, items) => {
            w.write_all(&(*et as u32).to_le_bytes())?;
            w.write_all(&(items.len() as u64).to_le_bytes())?;
            for it in items {
                if it.value_type() != *et {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!(
                            "array of {} holds a {} item",
                            et.name(),
                            it.value_type().name()
                        ),
                    ));
                }
                write_value(w, it)?;
            }
            Ok(())
        }
    }
}

struct Counting<W: Write> {
    inner: W,
    n: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let k = self.inner.write(buf)?;
        self.n += k as u64;
        Ok(k)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
