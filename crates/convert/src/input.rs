//! Model inputs: a Hugging Face checkpoint folder (config.json + safetensors, memory-mapped)
//! or a GGUF file. Both are presented as a list of tensors under llama.cpp's names, with
//! row-level access so the pipeline never holds more than a chunk of a tensor in memory.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use rayon::prelude::*;
use serde_json::Value as Json;
use slmpack_gguf::{GgmlType, GgufFile, Value};

use crate::error::{ConvertError, Result};
use crate::rules::ModelShape;

/// Largest config.json / index.json slmpack reads (real ones are a few KB).
const MAX_JSON_BYTES: u64 = 16 << 20;
/// Caps on config values, far above any small LM, to reject nonsense before allocating.
const MAX_LAYERS: u64 = 1024;
const MAX_DIM: u64 = 1 << 20;
const MAX_VOCAB: u64 = 1 << 24;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputKind {
    Checkpoint,
    Gguf,
}

#[derive(Clone, Debug)]
enum Storage {
    /// `maps[map]` at byte `offset`
    Mapped { map: usize, offset: usize },
    /// computed (e.g. llama3 rope factors), little-endian bytes of `ty`
    Owned(Vec<u8>),
}

/// One tensor of the input under its GGUF name.
#[derive(Clone, Debug)]
pub struct SrcTensor {
    pub name: String,
    /// ggml order, `dims[0]` = row length
    pub dims: Vec<u64>,
    /// type of the stored data
    pub ty: GgmlType,
    /// type the tensor keeps when it is not quantized (F32 for a checkpoint's 1-D tensors)
    pub keep_ty: GgmlType,
    /// name in the source file (for messages)
    pub source_name: String,
    /// rows are permuted per head as llama.cpp's converter does for Q (`n_head`) and K (`n_head_kv`)
    pub permute_heads: Option<usize>,
    data: Storage,
}

impl SrcTensor {
    pub fn row_len(&self) -> usize {
        self.dims[0] as usize
    }
    pub fn n_rows(&self) -> usize {
        self.dims.iter().skip(1).product::<u64>() as usize
    }
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }
    fn src_row_bytes(&self) -> usize {
        self.ty.row_bytes(self.dims[0]).unwrap_or(0) as usize
    }
}

/// An opened input model.
pub struct Input {
    pub path: PathBuf,
    pub kind: InputKind,
    maps: Vec<Mmap>,
    pub tensors: Vec<SrcTensor>,
    /// Metadata for the output (without `general.file_type`, set per output).
    pub metadata: Vec<(String, Value)>,
    pub model: ModelShape,
}

impl std::fmt::Debug for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Input")
            .field("path", &self.path)
            .field("kind", &self.kind)
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

pub(crate) fn is_gguf(path: &Path) -> bool {
    use std::io::Read;
    let mut m = [0u8; 4];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut m))
        .map(|_| &m == b"GGUF")
        .unwrap_or(false)
}

pub(crate) fn map_file(path: &Path) -> Result<Mmap> {
    let f = File::open(path).map_err(|source| ConvertError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    // SAFETY: read-only map of an input file; slmpack never writes its inputs.
    let map = unsafe { Mmap::map(&f) }.map_err(|source| ConvertError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    #[cfg(unix)]
    let _ = map.advise(memmap2::Advice::Sequential);
    Ok(map)
}

pub(crate) fn read_json(path: &Path) -> Result<Json> {
    let len = std::fs::metadata(path)
        .map_err(|source| ConvertError::Read {
            path: path.to_path_buf(),
            source,
        })?
        .len();
    if len > MAX_JSON_BYTES {
        return Err(ConvertError::config(
            path,
            format!("file is {len} bytes, above the {MAX_JSON_BYTES}-byte limit"),
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|source| ConvertError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text)
        .map_err(|e| ConvertError::config(path, format!("is not valid JSON: {e}")))
}

/// A safetensors tensor record after validation.
#[derive(Clone, Debug)]
pub(crate) struct StTensor {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<u64>,
    pub offset: usize,
    pub len: usize,
}

/// Validate a safetensors file (header capped at 100 MB by the `safetensors` crate, offsets
/// contiguous, in range and matching shape x dtype) and list its tensors in file order.
pub(crate) fn read_safetensors_header(path: &Path, bytes: &[u8]) -> Result<Vec<StTensor>> {
    let st =
        safetensors::SafeTensors::deserialize(bytes).map_err(|e| ConvertError::Safetensors {
            path: path.to_path_buf(),
            msg: e.to_string(),
        })?;
    let base = bytes.as_ptr() as usize;
    let mut out: Vec<StTensor> = st
        .tensors()
        .into_iter()
        .map(|(name, v)| StTensor {
            name,
            dtype: format!("{:?}", v.dtype()),
            shape: v.shape().iter().map(|&d| d as u64).collect(),
            offset: v.data().as_ptr() as usize - base,
            len: v.data().len(),
        })
        .collect();
    out.sort_by_key(|t| t.offset);
    Ok(out)
}

fn dtype_type(dtype: &str) -> Option<GgmlType> {
    match dtype {
        "F16" => Some(GgmlType::F16),
        "BF16" => Some(GgmlType::BF16),
        "F32" => Some(GgmlType::F32),
        _ => None,
    }
}

/// The parts of config.json slmpack uses, validated.
#[derive(Clone, Debug)]
pub struct LlamaConfig {
    pub hidden_size: u64,
    pub intermediate_size: u64,
    pub n_layer: u64,
    pub n_head: u64,
    pub n_head_kv: u64,
    pub head_dim: u64,
    pub vocab_size: u64,
    pub context_length: u64,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub tie_word_embeddings: bool,
    pub rope: RopeScaling,
}

#[derive(Clone, Debug)]
pub enum RopeScaling {
    None,
    Linear {
        factor: f64,
    },
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_context: f64,
    },
}

impl LlamaConfig {
    pub fn parse(path: &Path, j: &Json) -> Result<LlamaConfig> {
        let obj = j
            .as_object()
            .ok_or_else(|| ConvertError::config(path, "is not a JSON object"))?;
        let arch = match obj.get("architectures") {
            Some(Json::Array(a)) if !a.is_empty() => a
                .iter()
                .map(|v| v.as_str().unwrap_or("?").to_string())
                .collect::<Vec<_>>()
                .join(", "),
            _ => {
                return Err(ConvertError::config(
                    path,
                    "has no `architectures` list\n  hint: a Hugging Face config.json names its model class, e.g. [\"LlamaForCausalLM\"]",
                ))
            }
        };
        if arch != "LlamaForCausalLM" {
            return Err(ConvertError::UnsupportedArch {
                path: path.to_path_buf(),
                found: arch,
            });
        }
        let req = |k: &str, max: u64| -> Result<u64> {
            match obj.get(k) {
                None | Some(Json::Null) => Err(ConvertError::config(
                    path,
                    format!("missing key `{k}`\n  hint: config.json of a LlamaForCausalLM checkpoint has `{k}`"),
                )),
                Some(v) => match v.as_u64() {
                    Some(n) if n > 0 && n <= max => Ok(n),
                    _ => Err(ConvertError::config(
                        path,
                        format!("`{k}` is {v}, expected a positive integer up to {max}"),
                    )),
                },
            }
        };
        let opt_u = |k: &str, max: u64, def: u64| -> Result<u64> {
            match obj.get(k) {
                None | Some(Json::Null) => Ok(def),
                Some(_) => req(k, max),
            }
        };
        let opt_f = |k: &str, def: f64| -> Result<f64> {
            match obj.get(k) {
                None | Some(Json::Null) => Ok(def),
                Some(v) => match v.as_f64() {
                    Some(x) if x.is_finite() && x > 0.0 => Ok(x),
                    _ => Err(ConvertError::config(
                        path,
                        format!("`{k}` is {v}, expected a positive number"),
                    )),
                },
            }
        };
        let hidden_size = req("hidden_size", MAX_DIM)?;
        let intermediate_size = req("intermediate_size", MAX_DIM)?;
        let n_layer = req("num_hidden_layers", MAX_LAYERS)?;
        let n_head = req("num_attention_heads", MAX_DIM)?;
        let n_head_kv = opt_u("num_key_value_heads", MAX_DIM, n_head)?;
        let vocab_size = req("vocab_size", MAX_VOCAB)?;
        let context_length = opt_u("max_position_embeddings", 1 << 24, 2048)?;
        let rms_norm_eps = match obj.get("rms_norm_eps") {
            None | Some(Json::Null) => {
                return Err(ConvertError::config(path, "missing key `rms_norm_eps`"))
            }
            Some(_) => opt_f("rms_norm_eps", 1e-6)?,
        };
        let rope_theta = opt_f("rope_theta", 10000.0)?;
        let tie_word_embeddings = match obj.get("tie_word_embeddings") {
            None | Some(Json::Null) => false,
            Some(Json::Bool(b)) => *b,
            Some(v) => {
                return Err(ConvertError::config(
                    path,
                    format!("`tie_word_embeddings` is {v}, expected true or false"),
                ))
            }
        };
        if hidden_size % n_head != 0 && obj.get("head_dim").is_none_or(|v| v.is_null()) {
            return Err(ConvertError::config(
                path,
                format!("`hidden_size` {hidden_size} is not divisible by `num_attention_heads` {n_head}"),
            ));
        }
        let head_dim = opt_u("head_dim", MAX_DIM, hidden_size / n_head.max(1))?;
        if n_head % n_head_kv != 0 {
            return Err(ConvertError::config(
                path,
                format!("`num_attention_heads` {n_head} is not divisible by `num_key_value_heads` {n_head_kv}"),
            ));
        }
        if head_dim % 2 != 0 {
            return Err(ConvertError::config(
                path,
                format!("head dimension {head_dim} is odd; rotary embeddings need an even one"),
            ));
        }
        let rope = match obj.get("rope_scaling") {
            None | Some(Json::Null) => RopeScaling::None,
            Some(Json::Object(r)) => {
                let ty = r
                    .get("rope_type")
                    .or_else(|| r.get("type"))
                    .and_then(|v| v.as_str())
                    .unwrap_or("")
                    .to_ascii_lowercase();
                let f = |k: &str, def: f64| r.get(k).and_then(|v| v.as_f64()).unwrap_or(def);
                match ty.as_str() {
                    "linear" => RopeScaling::Linear {
                        factor: f("factor", 1.0),
                    },
                    "llama3" => RopeScaling::Llama3 {
                        factor: f("factor", 8.0),
                        low_freq_factor: f("low_freq_factor", 1.0),
                        high_freq_factor: f("high_freq_factor", 4.0),
                        original_context: f("original_max_position_embeddings", 8192.0),
                    },
                    "default" | "" if r.get("factor").is_none() => RopeScaling::None,
                    other => {
                        return Err(ConvertError::config(
                            path,
                            format!("`rope_scaling` type `{other}` is not supported\n  hint: slmpack converts no scaling, `linear` and `llama3`"),
                        ))
                    }
                }
            }
            Some(v) => {
                return Err(ConvertError::config(
                    path,
                    format!("`rope_scaling` is {v}, expected an object or null"),
                ))
            }
        };
        Ok(LlamaConfig {
            hidden_size,
            intermediate_size,
            n_layer,
            n_head,
            n_head_kv,
            head_dim,
            vocab_size,
            context_length,
            rms_norm_eps,
            rope_theta,
            tie_word_embeddings,
            rope,
        })
    }

    /// llama3 rope factors, as llama.cpp's converter computes them (`rope_freqs.weight`).
    fn llama3_rope_factors(&self) -> Option<Vec<f32>> {
        let RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_context,
        } = self.rope
        else {
            return None;
        };
        let dim = self.head_dim as f32;
        let base = self.rope_theta as f32;
        let low_wl = original_context / low_freq_factor;
        let high_wl = original_context / high_freq_factor;
        Some(
            (0..self.head_dim)
                .step_by(2)
                .map(|i| {
                    let freq = 1.0f32 / base.powf(i as f32 / dim);
                    let wavelen = 2.0 * std::f64::consts::PI / freq as f64;
                    if wavelen < high_wl {
                        1.0
                    } else if wavelen > low_wl {
                        factor as f32
                    } else {
                        let smooth = (original_context / wavelen - low_freq_factor)
                            / (high_freq_factor - low_freq_factor);
                        (1.0 / ((1.0 - smooth) / factor + smooth)) as f32
                    }
                })
                .collect(),
        )
    }
}

/// Map a Hugging Face llama tensor name to (GGUF name, expected HF shape, permute heads).
fn map_name(cfg: &LlamaConfig, name: &str) -> Option<(String, Vec<u64>, Option<usize>)> {
    let h = cfg.hidden_size;
    let q = cfg.n_head * cfg.head_dim;
    let kv = cfg.n_head_kv * cfg.head_dim;
    let ff = cfg.intermediate_size;
    match name {
        "model.embed_tokens.weight" => {
            return Some(("token_embd.weight".into(), vec![cfg.vocab_size, h], None))
        }
        "model.norm.weight" => return Some(("output_norm.weight".into(), vec![h], None)),
        "lm_head.weight" => return Some(("output.weight".into(), vec![cfg.vocab_size, h], None)),
        _ => {}
    }
    let rest = name.strip_prefix("model.layers.")?;
    let (l, rest) = rest.split_once('.')?;
    if l.len() > 1 && l.starts_with('0') {
        return None;
    }
    let l: u64 = l.parse().ok()?;
    if l >= cfg.n_layer {
        return None;
    }
    let (g, shape, perm) = match rest {
        "input_layernorm.weight" => ("attn_norm", vec![h], None),
        "self_attn.q_proj.weight" => ("attn_q", vec![q, h], Some(cfg.n_head as usize)),
        "self_attn.k_proj.weight" => ("attn_k", vec![kv, h], Some(cfg.n_head_kv as usize)),
        "self_attn.v_proj.weight" => ("attn_v", vec![kv, h], None),
        "self_attn.o_proj.weight" => ("attn_output", vec![h, q], None),
        "post_attention_layernorm.weight" => ("ffn_norm", vec![h], None),
        "mlp.gate_proj.weight" => ("ffn_gate", vec![ff, h], None),
        "mlp.up_proj.weight" => ("ffn_up", vec![ff, h], None),
        "mlp.down_proj.weight" => ("ffn_down", vec![h, ff], None),
        _ => return None,
    };
    Some((format!("blk.{l}.{g}.weight"), shape, perm))
}

/// The safetensors files of a checkpoint folder: `model.safetensors`, or the shards named by
/// `model.safetensors.index.json`.
fn checkpoint_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
    let single = dir.join("model.safetensors");
    if index.is_file() {
        let j = read_json(&index)?;
        let map = j
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| ConvertError::config(&index, "has no `weight_map` object"))?;
        let mut files: Vec<String> = Vec::new();
        for (t, f) in map {
            let f = f.as_str().ok_or_else(|| {
                ConvertError::config(&index, format!("`weight_map`.`{t}` is not a file name"))
            })?;
            if f.contains('/')
                || f.contains('\\')
                || f.starts_with('.')
                || !f.ends_with(".safetensors")
            {
                return Err(ConvertError::config(
                    &index,
                    format!("`weight_map`.`{t}` names `{f}`, which is not a .safetensors file in the folder"),
                ));
            }
            if !files.iter().any(|x| x == f) {
                files.push(f.to_string());
            }
        }
        files.sort();
        Ok(files.into_iter().map(|f| dir.join(f)).collect())
    } else if single.is_file() {
        Ok(vec![single])
    } else {
        Err(ConvertError::config(
            dir,
            "has neither `model.safetensors` nor `model.safetensors.index.json`\n  hint: slmpack reads safetensors checkpoints; convert .bin checkpoints with `transformers` first",
        ))
    }
}

impl Input {
    /// Open a checkpoint folder or a GGUF file.
    pub fn open(path: &Path) -> Result<Input> {
        if path.is_dir() {
            Self::open_checkpoint(path)
        } else if path.is_file() && is_gguf(path) {
            Self::open_gguf(path)
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

    fn open_checkpoint(dir: &Path) -> Result<Input> {
        let cfg_path = dir.join("config.json");
        if !cfg_path.is_file() {
            return Err(ConvertError::config(
                dir,
                "has no `config.json`\n  hint: pass a Hugging Face checkpoint folder",
            ));
        }
        let cfg = LlamaConfig::parse(&cfg_path, &read_json(&cfg_path)?)?;
        if !dir.join("tokenizer.json").is_file() {
            return Err(ConvertError::MissingTokenizer {
                path: dir.to_path_buf(),
            });
        }
        let files = checkpoint_files(dir)?;
        let mut maps = Vec::with_capacity(files.len());
        let mut found: HashMap<String, SrcTensor> = HashMap::new();
        for (fi, f) in files.iter().enumerate() {
            let map = map_file(f)?;
            for t in read_safetensors_header(f, &map)? {
                if t.name.ends_with("rotary_emb.inv_freq") {
                    continue;
                }
                let ty = dtype_type(&t.dtype).ok_or_else(|| ConvertError::Dtype {
                    path: f.clone(),
                    tensor: t.name.clone(),
                    dtype: t.dtype.clone(),
                })?;
                let (gname, shape, perm) =
                    map_name(&cfg, &t.name).ok_or_else(|| ConvertError::UnknownTensor {
                        path: f.clone(),
                        tensor: t.name.clone(),
                    })?;
                if t.shape != shape {
                    return Err(ConvertError::Shape {
                        path: f.clone(),
                        tensor: t.name.clone(),
                        found: t.shape.clone(),
                        expected: shape,
                    });
                }
                let dims: Vec<u64> = shape.iter().rev().copied().collect();
                let keep_ty = if dims.len() == 1 { GgmlType::F32 } else { ty };
                let st = SrcTensor {
                    name: gname.clone(),
                    dims,
                    ty,
                    keep_ty,
                    source_name: t.name.clone(),
                    permute_heads: perm,
                    data: Storage::Mapped {
                        map: fi,
                        offset: t.offset,
                    },
                };
                if found.insert(gname, st).is_some() {
                    return Err(ConvertError::DuplicateTensor {
                        path: f.clone(),
                        tensor: t.name.clone(),
                    });
                }
            }
            maps.push(map);
        }
        // converter order: embeddings, rope factors, layers, final norm, output
        let mut order = vec!["token_embd.weight".to_string()];
        let layer = [
            "attn_norm",
            "attn_q",
            "attn_k",
            "attn_v",
            "attn_output",
            "ffn_norm",
            "ffn_gate",
            "ffn_up",
            "ffn_down",
        ];
        for l in 0..cfg.n_layer {
            for n in layer {
                order.push(format!("blk.{l}.{n}.weight"));
            }
        }
        order.push("output_norm.weight".into());
        let has_output = found.contains_key("output.weight");
        if has_output {
            order.push("output.weight".into());
        } else if !cfg.tie_word_embeddings {
            return Err(ConvertError::MissingTensor {
                path: dir.to_path_buf(),
                tensor: "lm_head.weight".into(),
            });
        }
        let mut tensors = Vec::with_capacity(order.len() + 1);
        for n in &order {
            let t = found.remove(n).ok_or_else(|| ConvertError::MissingTensor {
                path: dir.to_path_buf(),
                tensor: hf_name_of(n),
            })?;
            tensors.push(t);
            if n == "token_embd.weight" {
                if let Some(f) = cfg.llama3_rope_factors() {
                    let bytes = f.iter().flat_map(|x| x.to_le_bytes()).collect();
                    tensors.push(SrcTensor {
                        name: "rope_freqs.weight".into(),
                        dims: vec![f.len() as u64],
                        ty: GgmlType::F32,
                        keep_ty: GgmlType::F32,
                        source_name: "rope_scaling (llama3)".into(),
                        permute_heads: None,
                        data: Storage::Owned(bytes),
                    });
                }
            }
        }
        let metadata = checkpoint_metadata(dir, &cfg)?;
        Ok(Input {
            path: dir.to_path_buf(),
            kind: InputKind::Checkpoint,
            maps,
            tensors,
            metadata,
            model: ModelShape {
                n_layer: cfg.n_layer as usize,
                n_head: cfg.n_head as usize,
                n_head_kv: cfg.n_head_kv as usize,
                n_expert: 0,
            },
        })
    }

    fn open_gguf(path: &Path) -> Result<Input> {
        let mut g = GgufFile::open(path)?;
        let arch = g.architecture().unwrap_or("(none)").to_string();
        if arch != "llama" {
            return Err(ConvertError::UnsupportedArch {
                path: path.to_path_buf(),
                found: arch,
            });
        }
        let need = |k: &str| -> Result<u64> {
            g.get_u64(k)
                .ok_or_else(|| ConvertError::config(path, format!("metadata has no integer `{k}`")))
        };
        let n_layer = need("llama.block_count")?;
        let n_head = need("llama.attention.head_count")?;
        let n_head_kv = g.get_u64("llama.attention.head_count_kv").unwrap_or(n_head);
        if n_layer == 0 || n_layer > MAX_LAYERS || n_head == 0 || n_head_kv == 0 {
            return Err(ConvertError::config(
                path,
                "`llama.block_count` / `llama.attention.head_count(_kv)` are out of range",
            ));
        }
        // the data through a map of our own, so pages can be released tensor by tensor
        let map = map_file(path)?;
        let tensors = g
            .tensors
            .iter()
            .map(|t| SrcTensor {
                name: t.name.clone(),
                dims: t.dims.clone(),
                ty: t.ty,
                keep_ty: t.ty,
                source_name: t.name.clone(),
                permute_heads: None,
                data: Storage::Mapped {
                    map: 0,
                    offset: (g.data_offset + t.offset) as usize,
                },
            })
            .collect();
        let n_expert = g.get_u64("llama.expert_count").unwrap_or(0) as usize;
        let drop_keys = ["split.no", "split.count", "split.tensors.count"];
        let metadata = std::mem::take(&mut g.metadata)
            .into_iter()
            .filter(|(k, _)| !drop_keys.contains(&k.as_str()))
            .collect();
        Ok(Input {
            path: path.to_path_buf(),
            kind: InputKind::Gguf,
            maps: vec![map],
            model: ModelShape {
                n_layer: n_layer as usize,
                n_head: n_head as usize,
                n_head_kv: n_head_kv as usize,
                n_expert,
            },
            tensors,
            metadata,
        })
    }

    fn data<'a>(&'a self, t: &'a SrcTensor) -> &'a [u8] {
        match &t.data {
            Storage::Mapped { map, offset } => {
                let n = t.src_row_bytes() * t.n_rows();
                &self.maps[*map][*offset..*offset + n]
            }
            Storage::Owned(b) => b,
        }
    }

    /// Drop the mapped pages of rows `start..start+n` (all rows of a permuted tensor) from this
    /// process's resident set once they are converted: the file stays in the page cache, but
    /// peak RSS stays near one chunk instead of growing to the model size.
    pub fn release_rows(&self, t: &SrcTensor, start: usize, n: usize) {
        #[cfg(unix)]
        if let Storage::Mapped { map, offset } = &t.data {
            let rb = t.src_row_bytes();
            let (from, len) = if t.permute_heads.is_some() {
                if start + n < t.n_rows() {
                    return;
                }
                (*offset, rb * t.n_rows())
            } else {
                (*offset + start * rb, rb * n)
            };
            // whole pages inside the range only: a neighbour's first or last page stays
            let page = 4096;
            let lo = from.div_ceil(page) * page;
            let hi = (from + len) / page * page;
            if hi > lo {
                // SAFETY: read-only file mapping; DONTNEED only drops resident pages, which
                // the kernel reads back from the unchanged file if they are touched again.
                // No slice into this range is alive here.
                unsafe {
                    let _ = self.maps[*map].unchecked_advise_range(
                        memmap2::UncheckedAdvice::DontNeed,
                        lo,
                        hi - lo,
                    );
                }
            }
        }
        #[cfg(not(unix))]
        let _ = (t, start, n);
    }

    /// Source row of output row `r` (the Q/K permutation).
    fn src_row(t: &SrcTensor, r: usize) -> usize {
        match t.permute_heads {
            None => r,
            Some(nh) => {
                let hd = t.n_rows() / nh;
                let (h, w) = (r / hd, r % hd);
                h * hd + (w % 2) * (hd / 2) + w / 2
            }
        }
    }

    /// Append the stored bytes of output rows `start..start+n` to `dst`.
    pub fn read_rows_raw(&self, t: &SrcTensor, start: usize, n: usize, dst: &mut Vec<u8>) {
        let data = self.data(t);
        let rb = t.src_row_bytes();
        if t.permute_heads.is_none() {
            dst.extend_from_slice(&data[start * rb..(start + n) * rb]);
        } else {
            for r in start..start + n {
                let s = Self::src_row(t, r);
                dst.extend_from_slice(&data[s * rb..(s + 1) * rb]);
            }
        }
    }

    /// Output rows `start..start+n` converted to f32 and quantized to `ty` into `dst`
    /// (`n * ty.row_bytes(row_len)` bytes), in parallel over groups of rows. Each row is
    /// converted into a small per-task buffer right before it is quantized, so the f32 copy
    /// stays in the core's cache instead of making a round trip through memory.
    pub fn quantize_rows(
        &self,
        t: &SrcTensor,
        start: usize,
        ty: GgmlType,
        dst: &mut [u8],
    ) -> Result<()> {
        let data = self.data(t);
        let rb = t.src_row_bytes();
        let rl = t.row_len();
        let ob = ty.row_bytes(rl as u64).unwrap_or(0) as usize;
        if ob == 0 || dst.is_empty() {
            return Ok(());
        }
        // at least ~16K elements per task: tiny rows would drown in scheduling overhead
        let rows_per_task = (16384 / rl).max(1);
        dst.par_chunks_mut(ob * rows_per_task)
            .enumerate()
            .try_for_each_init(Vec::<f32>::new, |buf, (k, out)| {
                buf.resize(rl, 0.0);
                for (i, orow) in out.chunks_exact_mut(ob).enumerate() {
                    let s = Self::src_row(t, start + k * rows_per_task + i);
                    let src = &data[s * rb..(s + 1) * rb];
                    let finite = match (t.ty, bytemuck::try_cast_slice::<u8, half::f16>(src)) {
                        // the common case, in one pass
                        (GgmlType::F16, Ok(h)) => slmpack_quant::f16_to_f32_finite(h, buf),
                        _ => {
                            convert_row(t.ty, src, buf).map_err(|msg| ConvertError::Quant {
                                tensor: t.name.clone(),
                                msg,
                            })?;
                            all_finite(buf)
                        }
                    };
                    if !finite {
                        return Err(ConvertError::NonFinite {
                            tensor: t.source_name.clone(),
                        });
                    }
                    slmpack_quant::quantize_row(ty, buf, orow).map_err(|e| {
                        ConvertError::Quant {
                            tensor: t.name.clone(),
                            msg: e.to_string(),
                        }
                    })?;
                }
                Ok(())
            })
    }
}

/// No NaN or infinity in `x` (a branch-free fold, so it vectorizes).
fn all_finite(x: &[f32]) -> bool {
    x.chunks(256)
        .all(|c| c.iter().fold(true, |ok, v| ok & (v.abs() < f32::INFINITY)))
}

fn convert_row(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> std::result::Result<(), String> {
    use half::slice::HalfFloatSliceExt;
    match ty {
        GgmlType::F32 => match bytemuck::try_cast_slice::<u8, f32>(src) {
            Ok(s) => dst.copy_from_slice(s),
            Err(_) => {
                for (d, c) in dst.iter_mut().zip(src.chunks_exact(4)) {
                    *d = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                }
            }
        },
        GgmlType::F16 => match bytemuck::try_cast_slice::<u8, half::f16>(src) {
            Ok(s) => s.convert_to_f32_slice(dst),
            Err(_) => {
                for (d, c) in dst.iter_mut().zip(src.chunks_exact(2)) {
                    *d = half::f16::from_le_bytes([c[0], c[1]]).to_f32();
                }
            }
        },
        GgmlType::BF16 => match bytemuck::try_cast_slice::<u8, half::bf16>(src) {
            Ok(s) => s.convert_to_f32_slice(dst),
            Err(_) => {
                for (d, c) in dst.iter_mut().zip(src.chunks_exact(2)) {
                    *d = half::bf16::from_le_bytes([c[0], c[1]]).to_f32();
                }
            }
        },
        other => slmpack_quant::dequantize_row(other, src, dst).map_err(|e| e.to_string())?,
    }
    Ok(())
}

fn hf_name_of(gguf: &str) -> String {
    let fixed: BTreeMap<&str, &str> = [
        ("token_embd.weight", "model.embed_tokens.weight"),
        ("output_norm.weight", "model.norm.weight"),
        ("output.weight", "lm_head.weight"),
    ]
    .into_iter()
    .collect();
    if let Some(n) = fixed.get(gguf) {
        return n.to_string();
    }
    let Some(rest) = gguf.strip_prefix("blk.") else {
        return gguf.to_string();
    };
    let Some((l, part)) = rest.split_once('.') else {
        return gguf.to_string();
    };
    let hf = match part {
        "attn_norm.weight" => "input_layernorm.weight",
        "attn_q.weight" => "self_attn.q_proj.weight",
        "attn_k.weight" => "self_attn.k_proj.weight",
        "attn_v.weight" => "self_attn.v_proj.weight",
        "attn_output.weight" => "self_attn.o_proj.weight",
        "ffn_norm.weight" => "post_attention_layernorm.weight",
        "ffn_gate.weight" => "mlp.gate_proj.weight",
        "ffn_up.weight" => "mlp.up_proj.weight",
        "ffn_down.weight" => "mlp.down_proj.weight",
        _ => part,
    };
    format!("model.layers.{l}.{hf}")
}

/// general.* and llama.* keys as llama.cpp's converter writes them, then the tokenizer's.
fn checkpoint_metadata(dir: &Path, cfg: &LlamaConfig) -> Result<Vec<(String, Value)>> {
    let name = dir
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "model".into());
    let mut m: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String("llama".into())),
        ("general.type".into(), Value::String("model".into())),
        ("general.name".into(), Value::String(name)),
        ("llama.block_count".into(), Value::U32(cfg.n_layer as u32)),
        (
            "llama.context_length".into(),
            Value::U32(cfg.context_length as u32),
        ),
        (
            "llama.embedding_length".into(),
            Value::U32(cfg.hidden_size as u32),
        ),
        (
            "llama.feed_forward_length".into(),
            Value::U32(cfg.intermediate_size as u32),
        ),
        (
            "llama.attention.head_count".into(),
            Value::U32(cfg.n_head as u32),
        ),
        (
            "llama.attention.head_count_kv".into(),
            Value::U32(cfg.n_head_kv as u32),
        ),
        (
            "llama.rope.freq_base".into(),
            Value::F32(cfg.rope_theta as f32),
        ),
        (
            "llama.attention.layer_norm_rms_epsilon".into(),
            Value::F32(cfg.rms_norm_eps as f32),
        ),
    ];
    if cfg.head_dim * cfg.n_head != cfg.hidden_size {
        m.push((
            "llama.attention.key_length".into(),
            Value::U32(cfg.head_dim as u32),
        ));
        m.push((
            "llama.attention.value_length".into(),
            Value::U32(cfg.head_dim as u32),
        ));
    }
    m.push(("llama.vocab_size".into(), Value::U32(cfg.vocab_size as u32)));
    m.push((
        "llama.rope.dimension_count".into(),
        Value::U32(cfg.head_dim as u32),
    ));
    if let RopeScaling::Linear { factor } = cfg.rope {
        m.push((
            "llama.rope.scaling.type".into(),
            Value::String("linear".into()),
        ));
        m.push((
            "llama.rope.scaling.factor".into(),
            Value::F32(factor as f32),
        ));
    }
    let opts = slmpack_tokenizer::HfTokenizerOptions {
        vocab_size: Some(cfg.vocab_size as usize),
        ..Default::default()
    };
    let tok = slmpack_tokenizer::gguf_metadata_from_hf(dir, &opts).map_err(|e| {
        ConvertError::Tokenizer {
            path: dir.to_path_buf(),
            msg: e.to_string(),
        }
    })?;
    m.extend(tok);
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutation_matches_hand_computed_case() {
        // 2 heads of dim 4 -> rows per head [0,1,2,3] become [0,2,1,3]
        let t = SrcTensor {
            name: "blk.0.attn_q.weight".into(),
            dims: vec![1, 8],
            ty: GgmlType::F32,
            keep_ty: GgmlType::F32,
            source_name: String::new(),
            permute_heads: Some(2),
            data: Storage::Owned((0..8).flat_map(|i| (i as f32).to_le_bytes()).collect()),
        };
        let rows: Vec<usize> = (0..8).map(|r| Input::src_row(&t, r)).collect();
        assert_eq!(rows, vec![0, 2, 1, 3, 4, 6, 5, 7]);
        // head dim 6: [0,1,2,3,4,5] -> reshape (2,3) swap -> [0,3,1,4,2,5]
        let t6 = SrcTensor {
            dims: vec![1, 6],
            permute_heads: Some(1),
            ..t
        };
        let rows: Vec<usize> = (0..6).map(|r| Input::src_row(&t6, r)).collect();
        assert_eq!(rows, vec![0, 3, 1, 4, 2, 5]);
    }

    #[test]
    fn config_errors_name_the_key() {
        let p = Path::new("config.json");
        let base = serde_json::json!({
            "architectures": ["LlamaForCausalLM"], "hidden_size": 64, "intermediate_size": 128,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "vocab_size": 100, "rms_norm_eps": 1e-5
        });
        assert!(LlamaConfig::parse(p, &base).is_ok());
        let with = |k: &str, v: Json| {
            let mut j = base.clone();
            j[k] = v;
            LlamaConfig::parse(p, &j).unwrap_err().to_string()
        };
        assert!(with("num_attention_heads", 5.into()).contains("not divisible"));
        assert!(with("num_key_value_heads", 3.into()).contains("not divisible"));
        assert!(
            with("architectures", serde_json::json!(["GPT2LMHeadModel"]))
                .contains("unsupported architecture `GPT2LMHeadModel`")
        );
        assert!(with(
            "rope_scaling",
            serde_json::json!({"type": "yarn", "factor": 4.0})
        )
        .contains("`yarn`"));
        let mut j = base.clone();
        j.as_object_mut().unwrap().remove("hidden_size");
        assert!(LlamaConfig::parse(p, &j)
            .unwrap_err()
            .to_string()
            .contains("missing key `hidden_size`"));
    }

    #[test]
    fn llama3_rope_factors_follow_the_converter() {
        let p = Path::new("config.json");
        let j = serde_json::json!({
            "architectures": ["LlamaForCausalLM"], "hidden_size": 2048, "intermediate_size": 8192,
            "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8,
            "vocab_size": 128256, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
            "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                             "original_max_position_embeddings": 8192, "rope_type": "llama3"}
        });
        let c = LlamaConfig::parse(p, &j).unwrap();
        let f = c.llama3_rope_factors().unwrap();
        assert_eq!(f.len(), 32);
        assert_eq!(f[0], 1.0);
        assert_eq!(f[31], 32.0);
        assert!(f.windows(2).all(|w| w[0] <= w[1]));
    }
}
