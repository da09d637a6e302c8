//! GGUF → Hugging Face checkpoint (`slmpack export`).
//!
//! Reverses llama.cpp's converter for the llama architecture: tensors are dequantized (with
//! `slmpack_quant::dequantize`), the Q/K row permutation of `LlamaModel.permute` is undone,
//! names go back to Hugging Face names, and config.json, generation_config.json, tokenizer.json
//! and tokenizer_config.json are written next to the safetensors shards.
//!
//! Tensors are converted one at a time while a shard is written, so peak memory stays near the
//! largest tensor. Everything is built in a temporary folder next to the output and renamed into
//! place at the end; on any error nothing is left behind.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, View};
use serde_json::{json, Map, Value as Json};
use slmpack_gguf::{GgufError, GgufFile, TensorInfo};
use slmpack_tokenizer::TokenizerError;

fn fmt_hint(h: &str) -> String {
    if h.is_empty() {
        String::new()
    } else {
        format!("\n  hint: {h}")
    }
}

/// Errors of [`export_gguf_to_hf`].
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Gguf(#[from] GgufError),

    #[error("`{}`: unsupported architecture `{arch}`{}", path.display(), fmt_hint(.hint))]
    UnsupportedArch {
        path: PathBuf,
        arch: String,
        hint: String,
    },

    #[error("`{}`: metadata key `{key}` {reason}{}", path.display(), fmt_hint(.hint))]
    Metadata {
        path: PathBuf,
        key: String,
        reason: String,
        hint: String,
    },

    #[error("`{}`: tensor `{tensor}` {reason}{}", path.display(), fmt_hint(.hint))]
    Tensor {
        path: PathBuf,
        tensor: String,
        reason: String,
        hint: String,
    },

    #[error("`{}`: tokenizer: {source}", path.display())]
    Tokenizer {
        path: PathBuf,
        #[source]
        source: Box<TokenizerError>,
    },

    #[error("`{}`: {reason}{}", path.display(), fmt_hint(.hint))]
    Output {
        path: PathBuf,
        reason: String,
        hint: String,
    },

    #[error("`{}`: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("`{}`: writing safetensors: {msg}", path.display())]
    Safetensors { path: PathBuf, msg: String },
}

/// Floating-point type of the exported weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ExportDtype {
    #[default]
    F16,
    BF16,
    F32,
}

impl ExportDtype {
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "f16" | "float16" | "fp16" => Some(Self::F16),
            "bf16" | "bfloat16" => Some(Self::BF16),
            "f32" | "float32" | "fp32" => Some(Self::F32),
            _ => None,
        }
    }
    fn safetensors(self) -> Dtype {
        match self {
            Self::F16 => Dtype::F16,
            Self::BF16 => Dtype::BF16,
            Self::F32 => Dtype::F32,
        }
    }
    fn size(self) -> usize {
        match self {
            Self::F16 | Self::BF16 => 2,
            Self::F32 => 4,
        }
    }
    /// `torch_dtype` in config.json.
    pub fn torch_name(self) -> &'static str {
        match self {
            Self::F16 => "float16",
            Self::BF16 => "bfloat16",
            Self::F32 => "float32",
        }
    }
}

/// Options of [`export_gguf_to_hf`].
#[derive(Clone, Debug)]
pub struct ExportOptions {
    pub dtype: ExportDtype,
    /// Largest shard in bytes (a tensor larger than this gets a shard of its own).
    pub max_shard_size: u64,
    /// Replace a non-empty output folder.
    pub force: bool,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            dtype: ExportDtype::F16,
            max_shard_size: 2_000_000_000,
            force: false,
        }
    }
}

/// What [`export_gguf_to_hf`] wrote.
#[derive(Clone, Debug)]
pub struct ExportSummary {
    pub out_dir: PathBuf,
    pub n_tensors: usize,
    pub shards: Vec<String>,
    pub weight_bytes: u64,
    pub tied_embeddings: bool,
}

/// Parse a size like `2GB`, `500MB`, `1GiB`, `4096` (bytes). Decimal units as Hugging Face uses.
pub fn parse_size(s: &str) -> Option<u64> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let num: f64 = num.parse().ok()?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    let v = num * mult;
    (v.is_finite() && v >= 1.0).then_some(v as u64)
}

/// The llama hyperparameters export needs.
#[derive(Clone, Debug)]
struct Hparams {
    n_layer: u64,
    n_embd: u64,
    n_ff: u64,
    n_head: u64,
    n_head_kv: u64,
    n_ctx: Option<u64>,
    rms_eps: f64,
    rope_theta: f64,
    head_dim: Option<u64>,
    rope_scaling: Option<Json>,
}

/// f32 metadata as the shortest decimal that reads back to it (1e-5, not 9.99999974e-6).
fn f32_clean(v: f64) -> f64 {
    let f = v as f32;
    format!("{f}").parse::<f64>().unwrap_or(v)
}

fn hparams(f: &GgufFile, path: &Path) -> Result<Hparams, ExportError> {
    let meta_err = |key: &str, reason: &str| ExportError::Metadata {
        path: path.to_path_buf(),
        key: key.to_string(),
        reason: reason.to_string(),
        hint: String::new(),
    };
    let need = |key: &str| -> Result<u64, ExportError> {
        let k = format!("llama.{key}");
        match f.get(&k) {
            None => Err(meta_err(&k, "is missing")),
            Some(v) => match v.as_u64() {
                Some(x) if x > 0 && x < (1 << 32) => Ok(x),
                _ => Err(meta_err(&k, "is not a positive integer")),
            },
        }
    };
    let n_head = need("attention.head_count")?;
    let n_head_kv = match f.get("llama.attention.head_count_kv") {
        None => n_head,
        Some(_) => need("attention.head_count_kv")?,
    };
    let n_embd = need("embedding_length")?;
    if n_head % n_head_kv != 0 {
        return Err(meta_err(
            "llama.attention.head_count_kv",
            &format!("({n_head_kv}) does not divide head_count ({n_head})"),
        ));
    }
    let head_dim = match f.get("llama.attention.key_length") {
        Some(_) => Some(need("attention.key_length")?),
        None => None,
    };
    let rope_scaling = match f.get_str("llama.rope.scaling.type") {
        None | Some("none") => None,
        Some("linear") => {
            let factor = f
                .get_f64("llama.rope.scaling.factor")
                .ok_or_else(|| meta_err("llama.rope.scaling.factor", "is missing"))?;
            Some(json!({"type": "linear", "factor": f32_clean(factor)}))
        }
        Some(other) => {
            return Err(ExportError::Metadata {
                path: path.to_path_buf(),
                key: "llama.rope.scaling.type".into(),
                reason: format!("is `{other}`"),
                hint: "slmpack exports llama models without RoPE scaling or with linear scaling"
                    .into(),
            })
        }
    };
    Ok(Hparams {
        n_layer: need("block_count")?,
        n_embd,
        n_ff: need("feed_forward_length")?,
        n_head,
        n_head_kv,
        n_ctx: f.get_u64("llama.context_length"),
        rms_eps: f32_clean(
            f.get_f64("llama.attention.layer_norm_rms_epsilon")
                .ok_or_else(|| meta_err("llama.attention.layer_norm_rms_epsilon", "is missing"))?,
        ),
        rope_theta: f32_clean(f.get_f64("llama.rope.freq_base").unwrap_or(10000.0)),
        head_dim,
        rope_scaling,
    })
}

/// How a GGUF tensor's rows are reordered on the way out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Unpermute {
    None,
    /// undo `LlamaModel.permute` with this many heads
    Heads(usize),
}

/// The Hugging Face name of a llama GGUF tensor, and the permutation to undo.
fn hf_name(name: &str, h: &Hparams) -> Option<(String, Unpermute)> {
    let fixed = match name {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(n) = fixed {
        return Some((n.to_string(), Unpermute::None));
    }
    let rest = name.strip_prefix("blk.")?;
    let (layer, rest) = rest.split_once('.')?;
    let bid: u64 = layer.parse().ok()?;
    if bid >= h.n_layer || layer != bid.to_string() {
        return None;
    }
    let (base, suffix) = rest.rsplit_once('.')?;
    if suffix != "weight" && suffix != "bias" {
        return None;
    }
    let (hf, perm) = match base {
        "attn_norm" => ("input_layernorm", Unpermute::None),
        "ffn_norm" => ("post_attention_layernorm", Unpermute::None),
        "attn_q" => ("self_attn.q_proj", Unpermute::Heads(h.n_head as usize)),
        "attn_k" => ("self_attn.k_proj", Unpermute::Heads(h.n_head_kv as usize)),
        "attn_v" => ("self_attn.v_proj", Unpermute::None),
        "attn_output" => ("self_attn.o_proj", Unpermute::None),
        "ffn_gate" => ("mlp.gate_proj", Unpermute::None),
        "ffn_up" => ("mlp.up_proj", Unpermute::None),
        "ffn_down" => ("mlp.down_proj", Unpermute::None),
        _ => return None,
    };
    if (base == "attn_norm" || base == "ffn_norm") && suffix == "bias" {
        return None;
    }
    Some((format!("model.layers.{bid}.{hf}.{suffix}"), perm))
}

/// Undo llama.cpp's `permute`: GGUF row `h*hd + 2*i + j` is Hugging Face row `h*hd + j*hd/2 + i`.
fn unpermute_rows(src: &[f32], n_rows: usize, row_len: usize, n_head: usize) -> Vec<f32> {
    let hd = n_rows / n_head;
    let half = hd / 2;
    let mut out = vec![0f32; src.len()];
    for h in 0..n_head {
        for i in 0..half {
            for j in 0..2 {
                let g = h * hd + 2 * i + j;
                let o = h * hd + j * half + i;
                out[o * row_len..(o + 1) * row_len]
                    .copy_from_slice(&src[g * row_len..(g + 1) * row_len]);
            }
        }
    }
    out
}

/// Row length for the Q/K permutation: a bias (1-D) permutes element by element.
fn permute_row_len(info: &TensorInfo) -> usize {
    if info.dims.len() == 1 {
        1
    } else {
        info.row_len() as usize
    }
}

/// One tensor to write: converted lazily when the safetensors writer asks for its bytes.
struct LazyTensor<'a> {
    gguf_name: String,
    info: &'a TensorInfo,
    data: &'a [u8],
    shape: Vec<usize>,
    perm: Unpermute,
    dtype: ExportDtype,
    n_bytes: usize,
    error: &'a RefCell<Option<ExportError>>,
    path: &'a Path,
}

impl LazyTensor<'_> {
    fn convert(&self) -> Result<Vec<u8>, ExportError> {
        let n = self.info.n_elements() as usize;
        let mut f32s = vec![0f32; n];
        slmpack_quant::dequantize(self.info.ty, self.data, &mut f32s).map_err(|e| {
            ExportError::Tensor {
                path: self.path.to_path_buf(),
                tensor: self.gguf_name.clone(),
                reason: format!("cannot be dequantized: {e}"),
                hint: String::new(),
            }
        })?;
        if let Unpermute::Heads(nh) = self.perm {
            let row_len = permute_row_len(self.info);
            let n_rows = n / row_len.max(1);
            f32s = unpermute_rows(&f32s, n_rows, row_len, nh);
        }
        let mut out = Vec::with_capacity(self.n_bytes);
        match self.dtype {
            ExportDtype::F32 => {
                for v in &f32s {
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }
            ExportDtype::F16 => {
                for v in &f32s {
                    out.extend_from_slice(&half::f16::from_f32(*v).to_le_bytes());
                }
            }
            ExportDtype::BF16 => {
                for v in &f32s {
                    out.extend_from_slice(&half::bf16::from_f32(*v).to_le_bytes());
                }
            }
        }
        Ok(out)
    }
}

impl View for &LazyTensor<'_> {
    fn dtype(&self) -> Dtype {
        self.dtype.safetensors()
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        match self.convert() {
            Ok(v) => Cow::Owned(v),
            Err(e) => {
                // View cannot fail: remember the error, keep the byte count, fail after writing.
                self.error.borrow_mut().get_or_insert(e);
                Cow::Owned(vec![0u8; self.n_bytes])
            }
        }
    }
    fn data_len(&self) -> usize {
        self.n_bytes
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ExportError + '_ {
    move |source| ExportError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Check the output folder before any work: its parent must exist and be a folder, and the
/// folder itself must be absent, empty, or replaceable with `force`.
fn check_out(out: &Path, force: bool) -> Result<PathBuf, ExportError> {
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !parent.is_dir() {
        return Err(ExportError::Output {
            path: out.to_path_buf(),
            reason: format!("parent `{}` is not an existing folder", parent.display()),
            hint: "create the parent folder first, or pick another --out".into(),
        });
    }
    if out.exists() {
        if !out.is_dir() {
            return Err(ExportError::Output {
                path: out.to_path_buf(),
                reason: "exists and is not a folder".into(),
                hint: "pick another --out".into(),
            });
        }
        let non_empty = fs::read_dir(out).map_err(io_err(out))?.next().is_some();
        if non_empty && !force {
            return Err(ExportError::Output {
                path: out.to_path_buf(),
                reason: "folder is not empty".into(),
                hint: "pass --force to replace it, or pick another --out".into(),
            });
        }
    }
    Ok(parent)
}

fn write_json(path: &Path, v: &Json) -> Result<(), ExportError> {
    let mut s = serde_json::to_string_pretty(v).map_err(|e| ExportError::Io {
        path: path.to_path_buf(),
        source: e.into(),
    })?;
    s.push('\n');
    fs::write(path, s).map_err(io_err(path))
}

/// Export a llama-architecture GGUF as a Hugging Face checkpoint folder `out`.
pub fn export_gguf_to_hf(
    gguf_path: &Path,
    out: &Path,
    opts: &ExportOptions,
) -> Result<ExportSummary, ExportError> {
    let parent = check_out(out, opts.force)?;
    let f = GgufFile::open(gguf_path)?;
    let path = gguf_path;
    let arch = f.architecture().unwrap_or("").to_string();
    if arch != "llama" {
        return Err(ExportError::UnsupportedArch {
            path: path.to_path_buf(),
            arch: if arch.is_empty() { "(none)".into() } else { arch },
            hint: "slmpack exports the llama architecture (Llama, SmolLM, TinyLlama, Mistral-style) only".into(),
        });
    }
    let h = hparams(&f, path)?;

    // every tensor: HF name, shape, permutation; all checked before anything is written
    let tensor_err = |t: &str, reason: String, hint: &str| ExportError::Tensor {
        path: path.to_path_buf(),
        tensor: t.to_string(),
        reason,
        hint: hint.to_string(),
    };
    let error = RefCell::new(None);
    let mut lazy: Vec<LazyTensor<'_>> = Vec::with_capacity(f.tensors.len());
    let mut seen: HashMap<String, ()> = HashMap::new();
    for info in &f.tensors {
        if info.name == "rope_freqs.weight" {
            return Err(tensor_err(
                &info.name,
                "holds Llama 3 RoPE frequency factors".into(),
                "exporting `rope_scaling` of type llama3 is not supported yet",
            ));
        }
        let (name, perm) = hf_name(&info.name, &h).ok_or_else(|| {
            tensor_err(
                &info.name,
                "has no Hugging Face llama name".into(),
                "slmpack exports plain llama tensors (token_embd, blk.N.attn_*/ffn_*, output_norm, output)",
            )
        })?;
        if !slmpack_quant::can_dequantize(info.ty) {
            return Err(tensor_err(
                &info.name,
                format!("has type {}, which slmpack cannot dequantize", info.ty),
                "slmpack reads f32, f16, bf16, q4_0..q8_1, q2_K..q8_K and iq4_nl",
            ));
        }
        let shape: Vec<usize> = info
            .shape_outer_first()
            .iter()
            .map(|&d| d as usize)
            .collect();
        if let Unpermute::Heads(nh) = perm {
            let rows = info.n_elements() as usize / permute_row_len(info).max(1);
            if nh == 0 || !rows.is_multiple_of(nh) || !(rows / nh).is_multiple_of(2) {
                return Err(tensor_err(
                    &info.name,
                    format!("has {rows} rows, which do not split into {nh} heads of even size"),
                    "the GGUF's head counts do not match its attention tensors",
                ));
            }
        }
        if seen.insert(name.clone(), ()).is_some() {
            return Err(tensor_err(
                &info.name,
                format!("maps to `{name}` twice"),
                "",
            ));
        }
        let n_bytes = (info.n_elements() as usize)
            .checked_mul(opts.dtype.size())
            .ok_or_else(|| tensor_err(&info.name, "is too large".into(), ""))?;
        lazy.push(LazyTensor {
            gguf_name: info.name.clone(),
            info,
            data: f.tensor_data(info),
            shape,
            perm,
            dtype: opts.dtype,
            n_bytes,
            error: &error,
            path,
        });
    }
    let embd = f
        .tensor("token_embd.weight")
        .ok_or_else(|| tensor_err("token_embd.weight", "is missing".into(), ""))?;
    let n_vocab = embd.dims.get(1).copied().unwrap_or(0);
    if embd.dims.first().copied() != Some(h.n_embd) {
        return Err(tensor_err(
            "token_embd.weight",
            format!(
                "has rows of {} but embedding_length is {}",
                embd.dims[0], h.n_embd
            ),
            "",
        ));
    }
    let tied = f.tensor("output.weight").is_none();
    let attention_bias = f.tensor("blk.0.attn_q.bias").is_some();

    let tok =
        slmpack_tokenizer::hf_tokenizer_from_gguf(&f).map_err(|source| ExportError::Tokenizer {
            path: path.to_path_buf(),
            source: Box::new(source),
        })?;

    // shards, in GGUF order
    let mut shards: Vec<Vec<usize>> = Vec::new();
    let mut cur_bytes = 0u64;
    for (i, t) in lazy.iter().enumerate() {
        let b = t.n_bytes as u64;
        if shards.is_empty() || (cur_bytes > 0 && cur_bytes + b > opts.max_shard_size) {
            shards.push(Vec::new());
            cur_bytes = 0;
        }
        shards.last_mut().unwrap().push(i);
        cur_bytes += b;
    }
    let n_shards = shards.len();
    let shard_name = |k: usize| {
        if n_shards == 1 {
            "model.safetensors".to_string()
        } else {
            format!("model-{:05}-of-{n_shards:05}.safetensors", k + 1)
        }
    };

    let tmp = tempfile::Builder::new()
        .prefix(".slmpack-export-")
        .tempdir_in(&parent)
        .map_err(|e| ExportError::Output {
            path: out.to_path_buf(),
            reason: format!(
                "cannot create a temporary folder in `{}`: {e}",
                parent.display()
            ),
            hint: "check that the output location is writable".into(),
        })?;
    let td = tmp.path();

    let mut weight_map = Map::new();
    let mut total = 0u64;
    let mut shard_names = Vec::new();
    for (k, idx) in shards.iter().enumerate() {
        let file = shard_name(k);
        let fpath = td.join(&file);
        let items: Vec<(String, &LazyTensor<'_>)> = idx
            .iter()
            .map(|&i| {
                let t = &lazy[i];
                let (name, _) = hf_name(&t.gguf_name, &h).expect("checked above");
                (name, t)
            })
            .collect();
        for (name, t) in &items {
            weight_map.insert(name.clone(), json!(file));
            total += t.n_bytes as u64;
        }
        let mut info = HashMap::new();
        info.insert("format".to_string(), "pt".to_string());
        safetensors::serialize_to_file(items, Some(info), &fpath).map_err(|e| {
            ExportError::Safetensors {
                path: fpath.clone(),
                msg: e.to_string(),
            }
        })?;
        if let Some(e) = error.borrow_mut().take() {
            return Err(e);
        }
        shard_names.push(file);
    }
    if n_shards > 1 {
        write_json(
            &td.join("model.safetensors.index.json"),
            &json!({"metadata": {"total_size": total}, "weight_map": weight_map}),
        )?;
    }

    let tc = &tok.tokenizer_config_json;
    let special_id = |key: &str| f.get_u64(key).filter(|&v| v < n_vocab);
    let bos = special_id("tokenizer.ggml.bos_token_id");
    let eos = special_id("tokenizer.ggml.eos_token_id");
    let pad = special_id("tokenizer.ggml.padding_token_id");
    let mut config = Map::new();
    config.insert("architectures".into(), json!(["LlamaForCausalLM"]));
    config.insert("model_type".into(), json!("llama"));
    config.insert("hidden_size".into(), json!(h.n_embd));
    config.insert("intermediate_size".into(), json!(h.n_ff));
    config.insert("num_attention_heads".into(), json!(h.n_head));
    config.insert("num_key_value_heads".into(), json!(h.n_head_kv));
    config.insert("num_hidden_layers".into(), json!(h.n_layer));
    if let Some(hd) = h.head_dim {
        config.insert("head_dim".into(), json!(hd));
    }
    config.insert("hidden_act".into(), json!("silu"));
    config.insert("rms_norm_eps".into(), json!(h.rms_eps));
    config.insert("rope_theta".into(), json!(h.rope_theta));
    config.insert(
        "rope_scaling".into(),
        h.rope_scaling.clone().unwrap_or(Json::Null),
    );
    config.insert(
        "max_position_embeddings".into(),
        json!(h.n_ctx.unwrap_or(2048)),
    );
    config.insert("vocab_size".into(), json!(n_vocab));
    config.insert("tie_word_embeddings".into(), json!(tied));
    config.insert("attention_bias".into(), json!(attention_bias));
    config.insert("mlp_bias".into(), json!(false));
    config.insert("attention_dropout".into(), json!(0.0));
    config.insert("initializer_range".into(), json!(0.02));
    config.insert("pretraining_tp".into(), json!(1));
    config.insert("use_cache".into(), json!(true));
    config.insert("torch_dtype".into(), json!(opts.dtype.torch_name()));
    for (k, v) in [
        ("bos_token_id", bos),
        ("eos_token_id", eos),
        ("pad_token_id", pad),
    ] {
        if let Some(v) = v {
            config.insert(k.into(), json!(v));
        }
    }
    write_json(&td.join("config.json"), &Json::Object(config))?;
    let mut gen = Map::new();
    gen.insert("_from_model_config".into(), json!(true));
    for (k, v) in [
        ("bos_token_id", bos),
        ("eos_token_id", eos),
        ("pad_token_id", pad),
    ] {
        if let Some(v) = v {
            gen.insert(k.into(), json!(v));
        }
    }
    write_json(&td.join("generation_config.json"), &Json::Object(gen))?;
    write_json(&td.join("tokenizer.json"), &tok.tokenizer_json)?;
    write_json(&td.join("tokenizer_config.json"), tc)?;

    // move into place
    let keep = tmp.keep();
    let finish = || -> Result<(), ExportError> {
        if out.exists() {
            // empty (or --force): move the old folder aside, then remove it once the new one is in
            let old = tempfile::Builder::new()
                .prefix(".slmpack-old-")
                .tempdir_in(&parent)
                .map_err(io_err(&parent))?
                .keep();
            let aside = old.join("old");
            fs::rename(out, &aside).map_err(io_err(out))?;
            if let Err(e) = fs::rename(&keep, out) {
                let _ = fs::rename(&aside, out);
                return Err(io_err(out)(e));
            }
            let _ = fs::remove_dir_all(&old);
        } else {
            fs::rename(&keep, out).map_err(io_err(out))?;
        }
        Ok(())
    };
    if let Err(e) = finish() {
        let _ = fs::remove_dir_all(&keep);
        return Err(e);
    }
    Ok(ExportSummary {
        out_dir: out.to_path_buf(),
        n_tensors: lazy.len(),
        shards: shard_names,
        weight_bytes: total,
        tied_embeddings: tied,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// llama.cpp's `LlamaModel.permute`, written as its numpy reshape/swapaxes.
    fn permute(w: &[f32], n_rows: usize, row_len: usize, n_head: usize) -> Vec<f32> {
        let half = n_rows / n_head / 2;
        let mut out = vec![0f32; w.len()];
        // out.reshape(n_head, half, 2, cols)[h, i, j] = w.reshape(n_head, 2, half, cols)[h, j, i]
        for h in 0..n_head {
            for i in 0..half {
                for j in 0..2 {
                    let dst = (h * half * 2) + i * 2 + j;
                    let src = (h * 2 * half) + j * half + i;
                    out[dst * row_len..(dst + 1) * row_len]
                        .copy_from_slice(&w[src * row_len..(src + 1) * row_len]);
                }
            }
        }
        out
    }

    #[test]
    fn unpermute_inverts_llama_cpp_permute() {
        for (rows, cols, heads) in [(8, 3, 2), (24, 5, 3), (64, 1, 4), (12, 2, 1)] {
            let w: Vec<f32> = (0..rows * cols).map(|x| x as f32).collect();
            let p = permute(&w, rows, cols, heads);
            assert_ne!(p, w);
            assert_eq!(unpermute_rows(&p, rows, cols, heads), w);
        }
    }

    #[test]
    fn names_map_to_hf() {
        let h = Hparams {
            n_layer: 2,
            n_embd: 8,
            n_ff: 16,
            n_head: 4,
            n_head_kv: 2,
            n_ctx: None,
            rms_eps: 1e-5,
            rope_theta: 1e4,
            head_dim: None,
            rope_scaling: None,
        };
        let n = |s: &str| hf_name(s, &h);
        assert_eq!(
            n("token_embd.weight").unwrap().0,
            "model.embed_tokens.weight"
        );
        assert_eq!(n("output.weight").unwrap().0, "lm_head.weight");
        assert_eq!(n("output_norm.weight").unwrap().0, "model.norm.weight");
        assert_eq!(
            n("blk.1.attn_q.weight").unwrap(),
            (
                "model.layers.1.self_attn.q_proj.weight".into(),
                Unpermute::Heads(4)
            )
        );
        assert_eq!(
            n("blk.0.attn_k.weight").unwrap(),
            (
                "model.layers.0.self_attn.k_proj.weight".into(),
                Unpermute::Heads(2)
            )
        );
        assert_eq!(
            n("blk.0.attn_k.bias").unwrap().0,
            "model.layers.0.self_attn.k_proj.bias"
        );
        assert_eq!(
            n("blk.0.ffn_norm.weight").unwrap().0,
            "model.layers.0.post_attention_layernorm.weight"
        );
        assert_eq!(
            n("blk.1.ffn_down.weight").unwrap().0,
            "model.layers.1.mlp.down_proj.weight"
        );
        assert!(n("blk.2.attn_q.weight").is_none(), "layer past block_count");
        assert!(n("blk.01.attn_q.weight").is_none());
        assert!(n("blk.0.attn_norm.bias").is_none());
        assert!(n("blk.0.ffn_gate_exps.weight").is_none());
        assert!(n("rope_freqs.weight").is_none());
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("2GB"), Some(2_000_000_000));
        assert_eq!(parse_size("500MB"), Some(500_000_000));
        assert_eq!(parse_size("1GiB"), Some(1 << 30));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("1.5kb"), Some(1500));
        assert_eq!(parse_size("0"), None);
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_size("12XB"), None);
    }

    #[test]
    fn dtype_names() {
        assert_eq!(ExportDtype::parse("BF16"), Some(ExportDtype::BF16));
        assert_eq!(ExportDtype::parse("f32"), Some(ExportDtype::F32));
        assert_eq!(ExportDtype::parse("q8_0"), None);
        assert_eq!(ExportDtype::F16.torch_name(), "float16");
    }
}
