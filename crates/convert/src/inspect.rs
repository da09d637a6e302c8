//! `slmpack inspect`: metadata, tensor table, type histogram, parameter count and bits per
//! weight of a GGUF, a .safetensors file or a checkpoint folder.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value as Json;
use slmpack_gguf::{GgufFile, Value};

use crate::error::{ConvertError, Result};
use crate::input::{is_gguf, map_file, read_json, read_safetensors_header};

/// Arrays longer than this are summarised (`{"array": "string", "len": 49152}`).
const MAX_ARRAY_ITEMS: usize = 64;

#[derive(Clone, Debug, Serialize)]
pub struct TensorRow {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: String,
    /// outermost first, as PyTorch and gguf-py show shapes
    pub shape: Vec<u64>,
    pub bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct TypeCount {
    #[serde(rename = "type")]
    pub ty: String,
    pub tensors: usize,
    pub params: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub path: PathBuf,
    pub format: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gguf_version: Option<u32>,
    pub file_size: u64,
    pub metadata: serde_json::Map<String, Json>,
    pub tensors: Vec<TensorRow>,
    pub types: Vec<TypeCount>,
    pub n_params: u64,
    pub data_bytes: u64,
    pub bits_per_weight: f64,
}

fn value_json(v: &Value) -> Json {
    match v {
        Value::U8(x) => (*x).into(),
        Value::I8(x) => (*x).into(),
        Value::U16(x) => (*x).into(),
        Value::I16(x) => (*x).into(),
        Value::U32(x) => (*x).into(),
        Value::I32(x) => (*x).into(),
        Value::U64(x) => (*x).into(),
        Value::I64(x) => (*x).into(),
        Value::F32(x) => serde_json::Number::from_f64(*x as f64).map_or(Json::Null, Json::Number),
        Value::F64(x) => serde_json::Number::from_f64(*x).map_or(Json::Null, Json::Number),
        Value::Bool(b) => (*b).into(),
        Value::String(s) => s.clone().into(),
        Value::Array(t, items) => {
            if items.len() > MAX_ARRAY_ITEMS {
                serde_json::json!({"array": t.name(), "len": items.len()})
            } else {
                Json::Array(items.iter().map(value_json).collect())
            }
        }
    }
}

/// Inspect a GGUF file, a .safetensors file or a checkpoint folder.
pub fn inspect(path: &Path) -> Result<Report> {
    if path.is_dir() {
        inspect_checkpoint(path)
    } else if path.is_file() && is_gguf(path) {
        inspect_gguf(path)
    } else if path.is_file()
        && path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("safetensors"))
    {
        let (rows, size) = safetensors_rows(path, None)?;
        Ok(finish(
            path,
            "safetensors",
            None,
            size,
            Default::default(),
            rows,
        ))
    } else if path.is_file() {
        Err(ConvertError::UnknownInput {
            path: path.to_path_buf(),
        })
    } else {
        Err(ConvertError::Read {
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or folder"),
        })
    }
}

fn inspect_gguf(path: &Path) -> Result<Report> {
    let g = GgufFile::open(path)?;
    let metadata = g
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), value_json(v)))
        .collect();
    let rows = g
        .tensors
        .iter()
        .map(|t| TensorRow {
            name: t.name.clone(),
            ty: t.ty.to_string(),
            shape: t.shape_outer_first(),
            bytes: t.n_bytes(),
            file: None,
        })
        .collect();
    Ok(finish(
        path,
        "gguf",
        Some(g.version),
        g.file_size(),
        metadata,
        rows,
    ))
}

fn safetensors_rows(path: &Path, file: Option<String>) -> Result<(Vec<TensorRow>, u64)> {
    let map = map_file(path)?;
    let rows = read_safetensors_header(path, &map)?
        .into_iter()
        .map(|t| TensorRow {
            name: t.name,
            ty: t.dtype,
            shape: t.shape,
            bytes: t.len as u64,
            file: file.clone(),
        })
        .collect();
    Ok((rows, map.len() as u64))
}

fn inspect_checkpoint(dir: &Path) -> Result<Report> {
    let cfg = dir.join("config.json");
    let metadata = if cfg.is_file() {
        match read_json(&cfg)? {
            Json::Object(m) => m,
            _ => return Err(ConvertError::config(&cfg, "is not a JSON object")),
        }
    } else {
        Default::default()
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|source| ConvertError::Read {
            path: dir.to_path_buf(),
            source,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(ConvertError::config(
            dir,
            "has no .safetensors files\n  hint: pass a Hugging Face checkpoint folder, a .safetensors file or a .gguf file",
        ));
    }
    let mut rows = Vec::new();
    let mut size = 0;
    for f in &files {
        let name = f.file_name().map(|s| s.to_string_lossy().into_owned());
        let (r, s) = safetensors_rows(f, name)?;
        rows.extend(r);
        size += s;
    }
    Ok(finish(dir, "checkpoint", None, size, metadata, rows))
}

fn finish(
    path: &Path,
    format: &'static str,
    gguf_version: Option<u32>,
    file_size: u64,
    metadata: serde_json::Map<String, Json>,
    tensors: Vec<TensorRow>,
) -> Report {
    let mut hist: BTreeMap<String, TypeCount> = BTreeMap::new();
    let mut n_params = 0u64;
    let mut data_bytes = 0u64;
    for t in &tensors {
        let n: u64 = t.shape.iter().product();
        n_params += n;
        data_bytes += t.bytes;
        let e = hist.entry(t.ty.clone()).or_insert_with(|| TypeCount {
            ty: t.ty.clone(),
            tensors: 0,
            params: 0,
            bytes: 0,
        });
        e.tensors += 1;
        e.params += n;
        e.bytes += t.bytes;
    }
    let mut types: Vec<TypeCount> = hist.into_values().collect();
    types.sort_by(|a, b| b.params.cmp(&a.params).then(a.ty.cmp(&b.ty)));
    Report {
        path: path.to_path_buf(),
        format,
        gguf_version,
        file_size,
        metadata,
        tensors,
        types,
        n_params,
        data_bytes,
        bits_per_weight: if n_params == 0 {
            0.0
        } else {
            data_bytes as f64 * 8.0 / n_params as f64
        },
    }
}

fn short(v: &Json) -> String {
    match v {
        Json::String(s) if s.chars().count() > 80 => {
            let head: String = s.chars().take(77).collect();
            format!("{head:?}…")
        }
        Json::Array(a) if a.len() > 8 => format!("[{} items]", a.len()),
        other => other.to_string(),
    }
}

/// The report as text: summary, metadata, type histogram, tensor table.
pub fn render_text(r: &Report) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{} ({}{})",
        r.path.display(),
        r.format,
        r.gguf_version.map(|v| format!(" v{v}")).unwrap_or_default()
    );
    let _ = writeln!(
        s,
        "{} tensors, {} parameters, {} bytes of data, file size {} bytes, {:.2} bits per weight",
        r.tensors.len(),
        r.n_params,
        r.data_bytes,
        r.file_size,
        r.bits_per_weight
    );
    if !r.metadata.is_empty() {
        let _ = writeln!(s, "\nmetadata:");
        let w = r.metadata.keys().map(|k| k.len()).max().unwrap_or(0);
        for (k, v) in &r.metadata {
            let _ = writeln!(s, "  {k:<w$}  {}", short(v));
        }
    }
    let _ = writeln!(s, "\ntypes:");
    let _ = writeln!(
        s,
        "  {:<8} {:>7} {:>14} {:>14} {:>6}",
        "type", "tensors", "params", "bytes", "share"
    );
    for t in &r.types {
        let _ = writeln!(
            s,
            "  {:<8} {:>7} {:>14} {:>14} {:>5.1}%",
            t.ty,
            t.tensors,
            t.params,
            t.bytes,
            if r.n_params == 0 {
                0.0
            } else {
                t.params as f64 * 100.0 / r.n_params as f64
            }
        );
    }
    let _ = writeln!(s, "\ntensors:");
    let nw = r
        .tensors
        .iter()
        .map(|t| t.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let _ = writeln!(
        s,
        "  {:<nw$}  {:<6}  {:<20}  {:>12}",
        "name", "type", "shape", "bytes"
    );
    for t in &r.tensors {
        let shape = format!("{:?}", t.shape);
        let _ = writeln!(
            s,
            "  {:<nw$}  {:<6}  {:<20}  {:>12}",
            t.name, t.ty, shape, t.bytes
        );
    }
    s
}
