//! Plan (types, sizes, metadata) then write: tensor by tensor, rows in chunks, each chunk
//! converted to f32 and quantized in parallel over rows, so memory stays at a few chunks.

use std::io::Write;
use std::path::Path;

use slmpack_gguf::{GgmlType, GgufWriter, Value};

use crate::error::{ConvertError, Result};
use crate::ftype::Ftype;
use crate::input::{Input, SrcTensor};
use crate::rules::{choose_types, Fallback, TensorDesc, TypeRules};

/// Elements converted and quantized per chunk: enough work per chunk for every thread, small
/// enough that memory stays flat (f32 copies exist only one row per thread at a time).
const CHUNK_ELEMS: usize = 1 << 20;

/// `GGML_QNT_VERSION`
pub const QUANTIZATION_VERSION: u32 = 2;

#[derive(Clone, Debug)]
pub struct QuantizeOptions {
    pub rules: TypeRules,
    /// Allow 4/5-bit (and other non-Q8_0 quantized) sources to be requantized.
    pub allow_requantize: bool,
    /// `general.name` to write (keeps the input's when `None`).
    pub name: Option<String>,
    /// `general.version` to write, if any.
    pub version: Option<String>,
}

impl QuantizeOptions {
    pub fn new(ftype: Ftype) -> Self {
        QuantizeOptions {
            rules: TypeRules {
                ftype,
                pure: false,
                overrides: Vec::new(),
            },
            allow_requantize: false,
            name: None,
            version: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct PlannedTensor {
    pub name: String,
    pub dims: Vec<u64>,
    pub src_ty: GgmlType,
    pub ty: GgmlType,
    pub bytes: u64,
}

/// What will be written: every tensor's type, the fallbacks, the exact file size.
#[derive(Clone, Debug)]
pub struct Plan {
    pub ftype: Ftype,
    pub tensors: Vec<PlannedTensor>,
    pub fallbacks: Vec<Fallback>,
    /// Exact size of the output file in bytes.
    pub file_size: u64,
    pub n_params: u64,
    pub data_bytes: u64,
    writer: GgufWriter,
}

impl Plan {
    /// Bits per weight over all tensors (data bytes * 8 / parameters), as llama.cpp reports.
    pub fn bits_per_weight(&self) -> f64 {
        if self.n_params == 0 {
            0.0
        } else {
            self.data_bytes as f64 * 8.0 / self.n_params as f64
        }
    }
}

/// Callbacks while writing; the CLI draws a bar or prints lines.
pub trait Progress: Sync {
    fn start(&self, _n_tensors: usize, _total_bytes: u64) {}
    fn tensor_done(&self, _index: usize, _name: &str, _ty: GgmlType, _bytes: u64) {}
    fn finish(&self) {}
}

pub struct NoProgress;
impl Progress for NoProgress {}

fn value_len(v: &Value) -> u64 {
    match v {
        Value::U8(_) | Value::I8(_) | Value::Bool(_) => 1,
        Value::U16(_) | Value::I16(_) => 2,
        Value::U32(_) | Value::I32(_) | Value::F32(_) => 4,
        Value::U64(_) | Value::I64(_) | Value::F64(_) => 8,
        Value::String(s) => 8 + s.len() as u64,
        Value::Array(_, items) => 12 + items.iter().map(value_len).sum::<u64>(),
    }
}

/// Size of a GGUF v3 file `w` writes: header, metadata, tensor infos, padding, data.
fn file_size(w: &GgufWriter) -> u64 {
    let mut n = 4 + 4 + 8 + 8;
    for (k, v) in w.metadata() {
        n += 8 + k.len() as u64 + 4 + value_len(v);
    }
    for t in w.tensors() {
        n += 8 + t.name.len() as u64 + 4 + 8 * t.dims.len() as u64 + 4 + 8;
    }
    let align = w
        .get("general.alignment")
        .and_then(|v| v.as_u64())
        .unwrap_or(32);
    let (_, data) = w.layout();
    n.div_ceil(align) * align + data
}

/// Choose types and build the output's metadata and tensor table.
pub fn plan(input: &Input, opts: &QuantizeOptions) -> Result<Plan> {
    let descs: Vec<TensorDesc> = input
        .tensors
        .iter()
        .map(|t| TensorDesc {
            name: t.name.clone(),
            dims: t.dims.clone(),
            keep_ty: t.keep_ty,
        })
        .collect();
    let choices = choose_types(&opts.rules, &input.model, &descs);
    let mut w = GgufWriter::new();
    for (k, v) in &input.metadata {
        if k == "general.alignment" {
            continue;
        }
        w.set(k.clone(), v.clone());
    }
    if let Some(n) = &opts.name {
        w.set("general.name", Value::String(n.clone()));
    }
    if let Some(v) = &opts.version {
        w.set("general.version", Value::String(v.clone()));
    }
    w.set(
        "general.file_type",
        Value::U32(opts.rules.ftype.llama_ftype()),
    );
    w.set(
        "general.quantization_version",
        Value::U32(QUANTIZATION_VERSION),
    );
    let mut tensors = Vec::with_capacity(choices.len());
    let mut fallbacks = Vec::new();
    let mut n_params = 0u64;
    for (t, c) in input.tensors.iter().zip(choices) {
        if c.ty != t.ty {
            check_convertible(t, c.ty, opts.allow_requantize)?;
        }
        w.add_tensor(t.name.clone(), t.dims.clone(), c.ty)
            .map_err(ConvertError::from)?;
        let bytes = c.ty.row_bytes(t.dims[0]).unwrap_or(0) * t.n_rows() as u64;
        n_params += t.n_elements();
        if let Some(f) = c.fallback {
            fallbacks.push(f);
        }
        tensors.push(PlannedTensor {
            name: t.name.clone(),
            dims: t.dims.clone(),
            src_ty: t.ty,
            ty: c.ty,
            bytes,
        });
    }
    let data_bytes = tensors.iter().map(|t| t.bytes).sum();
    Ok(Plan {
        ftype: opts.rules.ftype,
        file_size: file_size(&w),
        tensors,
        fallbacks,
        n_params,
        data_bytes,
        writer: w,
    })
}

fn check_convertible(t: &SrcTensor, to: GgmlType, allow_requantize: bool) -> Result<()> {
    let from = t.ty;
    let plain = matches!(from, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16);
    if !plain && from != GgmlType::Q8_0 && !allow_requantize {
        return Err(ConvertError::Requantize {
            tensor: t.name.clone(),
            ty: from,
        });
    }
    if !plain && !slmpack_quant::can_dequantize(from) {
        return Err(ConvertError::Quant {
            tensor: t.name.clone(),
            msg: format!("slmpack cannot read {from} data yet"),
        });
    }
    if !slmpack_quant::can_quantize(to) {
        return Err(ConvertError::Quant {
            tensor: t.name.clone(),
            msg: format!("slmpack cannot write {to} yet"),
        });
    }
    Ok(())
}

/// Write the planned file atomically (temp file in `out`'s folder, renamed at the end).
pub fn write(input: &Input, plan: &Plan, out: &Path, progress: &dyn Progress) -> Result<()> {
    progress.start(plan.tensors.len(), plan.data_bytes);
    let mut out_buf: Vec<u8> = Vec::new();
    let res = plan.writer.write(out, |i, spec, w: &mut dyn Write| {
        let t = &input.tensors[i];
        write_tensor(input, t, spec.ty, w, &mut out_buf)?;
        progress.tensor_done(i, &t.name, spec.ty, spec.n_bytes());
        Ok::<(), ConvertError>(())
    });
    progress.finish();
    match res {
        Ok(()) => {
            readable(out);
            Ok(())
        }
        Err(slmpack_gguf::GgufError::Producer { source, .. }) => {
            match source.downcast::<ConvertError>() {
                Ok(e) => match *e {
                    ConvertError::Write { path, source } if path.as_os_str().is_empty() => {
                        Err(ConvertError::Write {
                            path: out.to_path_buf(),
                            source,
                        })
                    }
                    e => Err(e),
                },
                Err(other) => Err(ConvertError::Quant {
                    tensor: String::new(),
                    msg: other.to_string(),
                }),
            }
        }
        Err(e) => Err(e.into()),
    }
}

fn write_tensor(
    input: &Input,
    t: &SrcTensor,
    ty: GgmlType,
    w: &mut dyn Write,
    out_buf: &mut Vec<u8>,
) -> Result<()> {
    let rl = t.row_len();
    let nrows = t.n_rows();
    let rows_per_chunk = (CHUNK_ELEMS / rl).max(1);
    // the path is filled in by `write`
    let werr = |source: std::io::Error| ConvertError::Write {
        path: std::path::PathBuf::new(),
        source,
    };
    let mut r = 0;
    while r < nrows {
        let n = rows_per_chunk.min(nrows - r);
        out_buf.clear();
        if ty == t.ty {
            input.read_rows_raw(t, r, n, out_buf);
        } else {
            let ob = ty.row_bytes(rl as u64).expect("planned") as usize * n;
            out_buf.resize(ob, 0);
            input.quantize_rows(t, r, ty, out_buf)?;
        }
        w.write_all(out_buf).map_err(werr)?;
        input.release_rows(t, r, n);
        r += n;
    }
    Ok(())
}

/// Temp files are created 0600; a published model should be readable like any other file.
pub(crate) fn readable(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644));
    }
    #[cfg(not(unix))]
    let _ = path;
}
