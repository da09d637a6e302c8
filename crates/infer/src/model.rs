//! A llama-family model read from a GGUF: hyperparameters from `llama.*` metadata, weights left
//! in the memory-mapped file in their GGUF type.

use std::path::{Path, PathBuf};

use slmpack_gguf::{GgmlType, GgufFile, TensorInfo};

use crate::error::{InferError, Result};
use crate::ops::RopeConfig;
use crate::tensor::QTensor;

/// Caps applied before anything is allocated from header values.
const MAX_LAYERS: u64 = 1024;
const MAX_EMBD: u64 = 1 << 16;
const MAX_HEADS: u64 = 1024;
const MAX_FF: u64 = 1 << 18;
const MAX_VOCAB: u64 = 1 << 22;

/// Hyperparameters of a llama-family model.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub n_vocab: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    pub n_ff: usize,
    /// `llama.context_length`: the context the model was trained for.
    pub n_ctx_train: usize,
    pub rms_eps: f32,
    pub rope: RopeConfig,
}

impl Config {
    /// Width of the K and V projections (`n_head_kv * head_dim`).
    pub fn kv_dim(&self) -> usize {
        self.n_head_kv * self.head_dim
    }
    /// Width of the Q projection (`n_head * head_dim`).
    pub fn q_dim(&self) -> usize {
        self.n_head * self.head_dim
    }
}

/// One transformer block's weights.
#[derive(Debug)]
pub struct Layer<'a> {
    pub attn_norm: Vec<f32>,
    pub wq: QTensor<'a>,
    pub wk: QTensor<'a>,
    pub wv: QTensor<'a>,
    pub wo: QTensor<'a>,
    pub bq: Option<Vec<f32>>,
    pub bk: Option<Vec<f32>>,
    pub bv: Option<Vec<f32>>,
    pub bo: Option<Vec<f32>>,
    pub ffn_norm: Vec<f32>,
    pub w_gate: QTensor<'a>,
    pub w_up: QTensor<'a>,
    pub w_down: QTensor<'a>,
}

/// A loaded model: configuration and weights borrowed from the GGUF's memory map. Norm vectors
/// (a few KiB) are converted to f32; matrices are not copied.
#[derive(Debug)]
pub struct Model<'a> {
    pub path: PathBuf,
    pub config: Config,
    pub tok_embd: QTensor<'a>,
    pub output_norm: Vec<f32>,
    /// `output.weight`, or `token_embd.weight` when the output is tied.
    pub output: QTensor<'a>,
    pub tied_output: bool,
    pub rope_freqs: Option<Vec<f32>>,
    pub layers: Vec<Layer<'a>>,
}

fn meta_err(path: &Path, key: &str, msg: impl Into<String>) -> InferError {
    InferError::Metadata {
        path: path.to_owned(),
        key: key.to_owned(),
        msg: msg.into(),
    }
}

fn tensor_err(path: &Path, tensor: &str, msg: impl Into<String>) -> InferError {
    InferError::Tensor {
        path: path.to_owned(),
        tensor: tensor.to_owned(),
        msg: msg.into(),
    }
}

fn req_u64(f: &GgufFile, key: &str, max: u64) -> Result<u64> {
    let v = f.get_u64(key).ok_or_else(|| {
        meta_err(
            f.path(),
            key,
            "is missing or not an integer\n  hint: the file is not a complete llama-family GGUF",
        )
    })?;
    if v == 0 || v > max {
        return Err(meta_err(
            f.path(),
            key,
            format!("is {v}, outside 1..={max}"),
        ));
    }
    Ok(v)
}

impl Config {
    /// Read the hyperparameters of a `llama` GGUF.
    pub fn from_gguf(f: &GgufFile) -> Result<Config> {
        let path = f.path();
        let arch = f.architecture().unwrap_or("");
        if arch != "llama" {
            return Err(InferError::Architecture {
                path: path.to_owned(),
                arch: if arch.is_empty() {
                    "(none: `general.architecture` is missing)".into()
                } else {
                    arch.to_owned()
                },
            });
        }
        let k = |s: &str| format!("llama.{s}");
        if f.get_u64(&k("expert_count")).unwrap_or(0) > 0 {
            return Err(InferError::Unsupported {
                path: path.to_owned(),
                msg: "mixture-of-experts models (`llama.expert_count` > 0) are not supported"
                    .into(),
            });
        }
        let n_embd = req_u64(f, &k("embedding_length"), MAX_EMBD)? as usize;
        let n_layer = req_u64(f, &k("block_count"), MAX_LAYERS)? as usize;
        let n_head = req_u64(f, &k("attention.head_count"), MAX_HEADS)? as usize;
        let n_head_kv = match f.get(&k("attention.head_count_kv")) {
            Some(_) => req_u64(f, &k("attention.head_count_kv"), MAX_HEADS)? as usize,
            None => n_head,
        };
        let n_ff = req_u64(f, &k("feed_forward_length"), MAX_FF)? as usize;
        let n_ctx_train = f
            .get_u64(&k("context_length"))
            .unwrap_or(2048)
            .clamp(1, 1 << 24) as usize;
        if !n_head.is_multiple_of(n_head_kv) {
            return Err(meta_err(
                path,
                &k("attention.head_count_kv"),
                format!("is {n_head_kv}, which does not divide the head count {n_head}"),
            ));
        }
        let head_dim = match f.get_u64(&k("attention.key_length")) {
            Some(v) if v > 0 && v <= MAX_EMBD => v as usize,
            Some(v) => {
                return Err(meta_err(
                    path,
                    &k("attention.key_length"),
                    format!("is {v}"),
                ));
            }
            None => {
                if !n_embd.is_multiple_of(n_head) {
                    return Err(meta_err(
                        path,
                        &k("attention.head_count"),
                        format!("is {n_head}, which does not divide the embedding length {n_embd}"),
                    ));
                }
                n_embd / n_head
            }
        };
        if let Some(v) = f.get_u64(&k("attention.value_length")) {
            if v as usize != head_dim {
                return Err(InferError::Unsupported {
                    path: path.to_owned(),
                    msg: format!("value head size {v} differs from key head size {head_dim}"),
                });
            }
        }
        let rms_eps = f
            .get_f64(&k("attention.layer_norm_rms_epsilon"))
            .unwrap_or(1e-5) as f32;
        let n_dims = f
            .get_u64(&k("rope.dimension_count"))
            .map(|v| v as usize)
            .unwrap_or(head_dim);
        if n_dims > head_dim || !n_dims.is_multiple_of(2) || n_dims == 0 {
            return Err(meta_err(
                path,
                &k("rope.dimension_count"),
                format!("is {n_dims}; it must be even and at most the head size {head_dim}"),
            ));
        }
        let freq_base = f.get_f64(&k("rope.freq_base")).unwrap_or(10000.0) as f32;
        // as llama.cpp: the factor applies as `1/factor` (linear); YaRN and others are not supported
        let scaling = f.get_str(&k("rope.scaling.type")).unwrap_or("linear");
        let factor = f
            .get_f64(&k("rope.scaling.factor"))
            .or_else(|| f.get_f64(&k("rope.scale_linear")))
            .unwrap_or(0.0);
        if !matches!(scaling, "none" | "linear") {
            return Err(InferError::Unsupported {
                path: path.to_owned(),
                msg: format!("rope scaling `{scaling}` is not supported\n  hint: slmpack supports no scaling and `linear`"),
            });
        }
        let freq_scale = if factor > 0.0 {
            (1.0 / factor) as f32
        } else {
            1.0
        };
        let n_vocab = match f.get_u64(&k("vocab_size")) {
            Some(v) => v,
            None => f
                .get("tokenizer.ggml.tokens")
                .and_then(|v| v.as_array())
                .map(|(_, a)| a.len() as u64)
                .unwrap_or(0),
        };
        if n_vocab == 0 || n_vocab > MAX_VOCAB {
            return Err(meta_err(
                path,
                &k("vocab_size"),
                format!("gives a vocabulary of {n_vocab} tokens"),
            ));
        }
        Ok(Config {
            n_vocab: n_vocab as usize,
            n_embd,
            n_layer,
            n_head,
            n_head_kv,
            head_dim,
            n_ff,
            n_ctx_train,
            rms_eps,
            rope: RopeConfig {
                n_dims,
                freq_base,
                freq_scale,
            },
        })
    }
}

struct Loader<'a> {
    f: &'a GgufFile,
}

impl<'a> Loader<'a> {
    fn info(&self, name: &str) -> Result<&'a TensorInfo> {
        self.f.tensor(name).ok_or_else(|| {
            tensor_err(
                self.f.path(),
                name,
                "is missing\n  hint: the file is not a complete llama-family GGUF",
            )
        })
    }

    /// A matrix of `rows` x `cols` (ggml dims `[cols, rows]`).
    fn matrix(&self, name: &str, cols: usize, rows: usize) -> Result<QTensor<'a>> {
        let t = self.info(name)?;
        self.matrix_of(t, cols, rows)
    }

    fn matrix_of(&self, t: &'a TensorInfo, cols: usize, rows: usize) -> Result<QTensor<'a>> {
        let want = [cols as u64, rows as u64];
        if t.dims.as_slice() != want {
            return Err(tensor_err(
                self.f.path(),
                &t.name,
                format!("has shape {:?}, expected {:?}", t.dims, want),
            ));
        }
        if !slmpack_quant::can_dequantize(t.ty) {
            return Err(tensor_err(
                self.f.path(),
                &t.name,
                format!("has type {}, which slmpack cannot compute with yet", t.ty),
            ));
        }
        let row_bytes = t.ty.row_bytes(cols as u64).ok_or_else(|| {
            tensor_err(
                self.f.path(),
                &t.name,
                format!(
                    "row length {cols} is not a multiple of the {} block size",
                    t.ty
                ),
            )
        })? as usize;
        let data = self.f.tensor_data(t);
        if data.len() != row_bytes * rows {
            return Err(tensor_err(
                self.f.path(),
                &t.name,
                format!(
                    "has {} bytes of data, expected {}",
                    data.len(),
                    row_bytes * rows
                ),
            ));
        }
        Ok(QTensor {
            name: &t.name,
            ty: t.ty,
            cols,
            rows,
            row_bytes,
            data,
            packed: None,
        })
    }

    /// A vector of `n` values, converted to f32.
    fn vector(&self, name: &str, n: usize) -> Result<Vec<f32>> {
        let t = self.info(name)?;
        self.vector_of(t, n)
    }

    fn opt_vector(&self, name: &str, n: usize) -> Result<Option<Vec<f32>>> {
        match self.f.tensor(name) {
            Some(t) => self.vector_of(t, n).map(Some),
            None => Ok(None),
        }
    }

    fn vector_of(&self, t: &TensorInfo, n: usize) -> Result<Vec<f32>> {
        if t.n_elements() != n as u64 || t.dims.len() > 2 {
            return Err(tensor_err(
                self.f.path(),
                &t.name,
                format!("has shape {:?}, expected [{n}]", t.dims),
            ));
        }
        let mut v = vec![0f32; n];
        slmpack_quant::dequantize_row(t.ty, self.f.tensor_data(t), &mut v)
            .map_err(|e| tensor_err(self.f.path(), &t.name, e.to_string()))?;
        Ok(v)
    }
}

/// Repacks the matrices the kernels have a faster layout for (`slmpack_kernels::packed`: Q4_0
/// and Q4_K on AVX2, as llama.cpp repacks them, and Q4_1, Q5_0, Q5_1, Q8_0, whose layout keeps
/// llama.cpp's sums of the unpacked matrix), once, in parallel, and copies the others as they
/// are into the same huge-page buffer (`pack_or_copy_many`: decode streams every matrix, and
/// one core reads faster from huge pages than from the file's small ones). The output matrix is packed
/// too when it is the tied token embedding: the products read the copy, and the embedding
/// lookups keep reading rows of the file, whose pages come back from the page cache when a
/// lookup touches them (one row per token). `SLMPACK_REPACK=0` keeps every matrix as it is in
/// the file (to compare the two paths).
fn repack<'a>(f: &GgufFile, output: &mut QTensor<'a>, layers: &mut [Layer<'a>]) -> Result<()> {
    if std::env::var("SLMPACK_REPACK").is_ok_and(|v| v.trim() == "0") {
        return Ok(());
    }
    // in the order a forward pass reads them: layer by layer, then the output
    let mut all: Vec<&mut QTensor<'a>> = Vec::with_capacity(7 * layers.len() + 1);
    for l in layers.iter_mut() {
        all.extend([
            &mut l.wq,
            &mut l.wk,
            &mut l.wv,
            &mut l.wo,
            &mut l.w_gate,
            &mut l.w_up,
            &mut l.w_down,
        ]);
    }
    all.push(output);
    let ws: Vec<slmpack_kernels::Weights> = all
        .iter()
        .map(|t| slmpack_kernels::Weights {
            ty: t.ty,
            rows: t.rows,
            cols: t.cols,
            data: t.data,
        })
        .collect();
    for (t, w) in all.iter().zip(&ws) {
        w.validate()
            .map_err(|e| tensor_err(f.path(), t.name, e.to_string()))?;
    }
    // the products read only the copy from now on: the file's pages of a matrix leave resident
    // memory as soon as it is packed, so a repacked model does not hold its weights twice
    // (peak: the file plus the matrices being packed)
    let isa = slmpack_kernels::isa();
    let packed = slmpack_kernels::packed::pack_or_copy_many(isa, &ws, |i| f.release(ws[i].data))
        .map_err(|e| InferError::Invalid(format!("`{}`: {e}", f.path().display())))?;
    for (t, p) in all.into_iter().zip(packed) {
        t.packed = p.map(std::sync::Arc::new);
    }
    Ok(())
}

impl<'a> Model<'a> {
    /// Check and borrow the weights of a `llama` GGUF.
    pub fn load(f: &'a GgufFile) -> Result<Model<'a>> {
        let config = Config::from_gguf(f)?;
        let c = &config;
        let l = Loader { f };
        let tok_embd = l.matrix("token_embd.weight", c.n_embd, c.n_vocab)?;
        let output_norm = l.vector("output_norm.weight", c.n_embd)?;
        let (output, tied_output) = match f.tensor("output.weight") {
            Some(t) => (l.matrix_of(t, c.n_embd, c.n_vocab)?, false),
            None => (tok_embd.clone(), true),
        };
        let rope_freqs = l.opt_vector("rope_freqs.weight", c.rope.n_dims / 2)?;
        let mut layers = Vec::with_capacity(c.n_layer);
        for i in 0..c.n_layer {
            let n = |s: &str| format!("blk.{i}.{s}");
            layers.push(Layer {
                attn_norm: l.vector(&n("attn_norm.weight"), c.n_embd)?,
                wq: l.matrix(&n("attn_q.weight"), c.n_embd, c.q_dim())?,
                wk: l.matrix(&n("attn_k.weight"), c.n_embd, c.kv_dim())?,
                wv: l.matrix(&n("attn_v.weight"), c.n_embd, c.kv_dim())?,
                wo: l.matrix(&n("attn_output.weight"), c.q_dim(), c.n_embd)?,
                bq: l.opt_vector(&n("attn_q.bias"), c.q_dim())?,
                bk: l.opt_vector(&n("attn_k.bias"), c.kv_dim())?,
                bv: l.opt_vector(&n("attn_v.bias"), c.kv_dim())?,
                bo: l.opt_vector(&n("attn_output.bias"), c.n_embd)?,
                ffn_norm: l.vector(&n("ffn_norm.weight"), c.n_embd)?,
                w_gate: l.matrix(&n("ffn_gate.weight"), c.n_embd, c.n_ff)?,
                w_up: l.matrix(&n("ffn_up.weight"), c.n_embd, c.n_ff)?,
                w_down: l.matrix(&n("ffn_down.weight"), c.n_ff, c.n_embd)?,
            });
        }
        let mut output = output;
        repack(f, &mut output, &mut layers)?;
        Ok(Model {
            path: f.path().to_owned(),
            config,
            tok_embd,
            output_norm,
            output,
            tied_output,
            rope_freqs,
            layers,
        })
    }

    /// Parameter count (elements of every matrix and vector used).
    pub fn n_params(&self) -> u64 {
        let m = |t: &QTensor| (t.rows * t.cols) as u64;
        let mut n = m(&self.tok_embd) + self.output_norm.len() as u64;
        if !self.tied_output {
            n += m(&self.output);
        }
        for l in &self.layers {
            n += [&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down]
                .iter()
                .map(|t| m(t))
                .sum::<u64>();
            n += (l.attn_norm.len() + l.ffn_norm.len()) as u64;
        }
        n
    }

    /// How many matrices were repacked at load time into the 8-row interleaved layout, and
    /// their bytes (a copy held in memory).
    pub fn packed(&self) -> (usize, usize) {
        self.placed(true)
    }

    /// How many matrices were copied as they are into the repacked ones' buffer (types without
    /// a packed layout), and their bytes.
    pub fn copied(&self) -> (usize, usize) {
        self.placed(false)
    }

    fn placed(&self, interleaved: bool) -> (usize, usize) {
        self.products()
            .iter()
            .filter_map(|t| t.packed.as_ref())
            .filter(|p| p.interleaved == interleaved)
            .fold((0, 0), |(n, b), p| (n + 1, b + p.bytes()))
    }

    /// Bytes of the repacked weights' buffer on huge pages now (`None` if nothing is packed or
    /// the system does not say; see [`slmpack_kernels::hugebuf::HugeBuf::huge_bytes`]).
    pub fn packed_huge_bytes(&self) -> Option<usize> {
        // the matrices are packed together into one buffer (`repack`)
        self.products()
            .iter()
            .find_map(|t| t.packed.as_ref())?
            .huge_bytes()
    }

    /// The matrices the products multiply by: the output, then each layer's seven.
    fn products(&self) -> Vec<&QTensor<'a>> {
        let mut all = vec![&self.output];
        for l in &self.layers {
            all.extend([&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down]);
        }
        all
    }

    /// Weight types and how many matrices use each, e.g. `Q4_1 x210, Q8_0 x1`.
    pub fn weight_types(&self) -> Vec<(GgmlType, usize)> {
        let mut v: Vec<(GgmlType, usize)> = Vec::new();
        let mut add = |t: &QTensor| match v.iter_mut().find(|(ty, _)| *ty == t.ty) {
            Some((_, n)) => *n += 1,
            None => v.push((t.ty, 1)),
        };
        add(&self.tok_embd);
        if !self.tied_output {
            add(&self.output);
        }
        for l in &self.layers {
            for t in [&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down] {
                add(t);
            }
        }
        v
    }
}
