//! Per-tensor type selection for the llama architecture, following llama-quantize
//! (`src/llama-quant.cpp`: `tensor_allows_quantization`, `llama_tensor_get_type`,
//! `llama_tensor_get_type_impl`, `tensor_type_fallback`) for the mixes slmpack offers.
//!
//! llama.cpp walks the tensors in its loader's order (non-layer tensors first, then by layer
//! number, then by name) and counts `attn_v` / `ffn_down` tensors as it goes; those counters
//! decide the "use more bits" upgrades. [`choose_types`] walks the same order with the same
//! counters, whatever order the tensors are written in.

use regex::Regex;
use serde::Serialize;
use slmpack_gguf::GgmlType;

use crate::ftype::Ftype;

/// What llama-quantize needs to know about the model to pick types.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelShape {
    pub n_layer: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    /// 0 for dense models (all slmpack reads).
    pub n_expert: usize,
}

impl ModelShape {
    fn n_gqa(&self) -> usize {
        self.n_head.checked_div(self.n_head_kv).unwrap_or(0)
    }

    /// llama.cpp treats an 80-layer GQA llama as its "70B" type (attn_v gets more bits).
    fn is_70b(&self) -> bool {
        self.n_layer == 80 && self.n_head != self.n_head_kv
    }
}

/// A per-tensor override: the first pattern that matches (regex search) sets the type.
#[derive(Clone, Debug)]
pub struct Override {
    pub pattern: Regex,
    pub ty: GgmlType,
}

/// How to pick the types.
#[derive(Clone, Debug)]
pub struct TypeRules {
    pub ftype: Ftype,
    /// `--pure`: every quantizable tensor gets the mix's base type (fallbacks still apply).
    pub pure: bool,
    pub overrides: Vec<Override>,
}

/// A tensor to choose a type for: name, ggml-order dims, and the type it would have if it is
/// not quantized (its input type, F32 for norms from a checkpoint).
#[derive(Clone, Debug)]
pub struct TensorDesc {
    pub name: String,
    pub dims: Vec<u64>,
    pub keep_ty: GgmlType,
}

/// A type that could not be used because the row length does not fit its block size.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Fallback {
    pub tensor: String,
    #[serde(serialize_with = "ser_ty")]
    pub wanted: GgmlType,
    #[serde(serialize_with = "ser_ty")]
    pub used: GgmlType,
    pub reason: String,
}

fn ser_ty<S: serde::Serializer>(t: &GgmlType, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_string())
}

/// The type chosen for one tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Choice {
    pub ty: GgmlType,
    pub fallback: Option<Fallback>,
    /// Set when an override pattern decided the type.
    pub overridden: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Category {
    TokenEmbd,
    AttnQ,
    AttnK,
    AttnV,
    AttnQkv,
    AttnOutput,
    FfnUp,
    FfnGate,
    FfnDown,
    Output,
    Other,
}

pub fn category(name: &str) -> Category {
    if name == "output.weight" {
        Category::Output
    } else if name == "token_embd.weight" {
        Category::TokenEmbd
    } else if name.contains("attn_qkv.weight") {
        Category::AttnQkv
    } else if name.contains("attn_v.weight") {
        Category::AttnV
    } else if name.contains("attn_k.weight") {
        Category::AttnK
    } else if name.contains("attn_q.weight") {
        Category::AttnQ
    } else if name.contains("attn_output.weight") {
        Category::AttnOutput
    } else if name.contains("ffn_up") {
        Category::FfnUp
    } else if name.contains("ffn_gate") {
        Category::FfnGate
    } else if name.contains("ffn_down") {
        Category::FfnDown
    } else {
        Category::Other
    }
}

/// ggml_n_dims: dimensions up to the last one above 1.
fn n_dims(dims: &[u64]) -> usize {
    dims.iter().rposition(|&d| d > 1).map_or(1, |i| i + 1)
}

/// `tensor_allows_quantization` for the tensors a llama model has: 2-D or more, a name ending
/// in `weight`, not a norm, not an expert gate.
pub fn allows_quantization(name: &str, dims: &[u64]) -> bool {
    n_dims(dims) >= 2
        && name.ends_with("weight")
        && !name.contains("_norm.weight")
        && !name.contains("ffn_gate_inp.weight")
        && !name.contains("rope_freqs")
}

fn use_more_bits(i_layer: i64, n_layers: i64) -> bool {
    i_layer < n_layers / 8 || i_layer >= 7 * n_layers / 8 || (i_layer - n_layers / 8) % 3 == 2
}

/// Layer number of `blk.N.*`, or -1 (llama.cpp's loader sort key).
fn layer_of(name: &str) -> i64 {
    name.strip_prefix("blk.")
        .and_then(|r| r.split('.').next())
        .and_then(|n| n.parse::<i64>().ok())
        .unwrap_or(-1)
}

/// Indices of `tensors` in llama.cpp's loader order.
pub fn llama_order(tensors: &[TensorDesc]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..tensors.len()).collect();
    idx.sort_by(|&a, &b| {
        let (la, lb) = (layer_of(&tensors[a].name), layer_of(&tensors[b].name));
        la.cmp(&lb)
            .then_with(|| tensors[a].name.cmp(&tensors[b].name))
    });
    idx
}

struct Counters {
    n_attention_wv: i64,
    i_attention_wv: i64,
    n_layer: i64,
    i_ffn_down: i64,
    tied: bool,
}

/// Choose every tensor's type. The result is in the order of `tensors`.
pub fn choose_types(rules: &TypeRules, model: &ModelShape, tensors: &[TensorDesc]) -> Vec<Choice> {
    let mut c = Counters {
        n_attention_wv: tensors
            .iter()
            .filter(|t| matches!(category(&t.name), Category::AttnV | Category::AttnQkv))
            .count() as i64,
        i_attention_wv: 0,
        n_layer: model.n_layer as i64,
        i_ffn_down: 0,
        tied: !tensors.iter().any(|t| t.name == "output.weight"),
    };
    let mut out: Vec<Option<Choice>> = vec![None; tensors.len()];
    for i in llama_order(tensors) {
        out[i] = Some(choose_one(rules, model, &tensors[i], &mut c));
    }
    out.into_iter().map(|c| c.expect("every tensor")).collect()
}

fn choose_one(rules: &TypeRules, model: &ModelShape, t: &TensorDesc, c: &mut Counters) -> Choice {
    if !allows_quantization(&t.name, &t.dims) {
        return Choice {
            ty: t.keep_ty,
            fallback: None,
            overridden: false,
        };
    }
    let default = rules.ftype.default_type();
    let mut ty = default;
    let manual = rules
        .overrides
        .iter()
        .find(|o| o.pattern.is_match(&t.name))
        .map(|o| o.ty);
    if let Some(m) = manual {
        ty = m;
    } else if default.is_quantized() && !rules.pure {
        ty = mix_rule(rules.ftype, ty, model, t, c);
    }
    let mut fallback = None;
    if ty.is_quantized() {
        let (used, fb) = fit_block(&t.name, t.dims[0], ty);
        ty = used;
        fallback = fb;
    }
    Choice {
        ty,
        fallback,
        overridden: manual.is_some(),
    }
}

/// `tensor_type_fallback`: a row length that is not a multiple of the block size moves to a
/// type with 32-element blocks (or F16 when even that does not fit).
pub fn fit_block(name: &str, ncols: u64, ty: GgmlType) -> (GgmlType, Option<Fallback>) {
    let qk = ty.block_size() as u64;
    if ncols.is_multiple_of(qk) {
        return (ty, None);
    }
    let mut used = match ty {
        GgmlType::Q2_K | GgmlType::Q3_K => GgmlType::Q4_0,
        GgmlType::Q4_K => GgmlType::Q5_0,
        GgmlType::Q5_K => GgmlType::Q5_1,
        GgmlType::Q6_K => GgmlType::Q8_0,
        GgmlType::IQ4_XS => GgmlType::IQ4_NL,
        // llama.cpp has no fallback for 32-blocks and gives up; slmpack keeps the tensor in F16
        _ => GgmlType::F16,
    };
    let mut reason = format!("row length {ncols} is not a multiple of {ty}'s block size {qk}");
    if !ncols.is_multiple_of(used.block_size() as u64) {
        used = GgmlType::F16;
        reason.push_str(" (nor of 32)");
    }
    (
        used,
        Some(Fallback {
            tensor: name.to_string(),
            wanted: ty,
            used,
            reason,
        }),
    )
}

/// `llama_tensor_get_type_impl` for the llama architecture and the mixes in [`Ftype`].
fn mix_rule(
    ftype: Ftype,
    mut ty: GgmlType,
    model: &ModelShape,
    t: &TensorDesc,
    c: &mut Counters,
) -> GgmlType {
    use Ftype as F;
    use GgmlType as G;
    let cat = category(&t.name);
    if cat == Category::Output || (c.tied && cat == Category::TokenEmbd) {
        let nx = t.dims[0];
        let qk = ty.block_size() as u64;
        if !nx.is_multiple_of(qk) {
            ty = G::Q8_0;
        } else if ty != G::Q8_0 {
            ty = G::Q6_K;
        }
    } else if cat == Category::TokenEmbd {
        // no change for these mixes
    } else if matches!(cat, Category::AttnV | Category::AttnQkv) {
        if ftype == F::IQ4_NL && model.n_gqa() >= 4 {
            ty = G::Q5_K;
        } else if matches!(ftype, F::Q4_K_M | F::Q5_K_M)
            && use_more_bits(c.i_attention_wv, c.n_attention_wv)
        {
            ty = G::Q6_K;
        } else if ftype == F::Q4_K_S && c.i_attention_wv < 4 {
            ty = G::Q5_K;
        }
        if model.is_70b() && matches!(ty, G::Q3_K | G::Q4_K) {
            ty = G::Q5_K;
        }
        if model.n_expert == 8 {
            ty = G::Q8_0;
        }
        c.i_attention_wv += 1;
    } else if cat == Category::AttnK {
        if model.n_expert == 8 {
            ty = G::Q8_0;
        }
    } else if cat == Category::FfnDown {
        let (i_layer, n_layer) = (c.i_ffn_down, c.n_layer);
        if ftype == F::Q4_K_M {
            if use_more_bits(i_layer, n_layer) {
                ty = G::Q6_K;
            }
        } else if i_layer < n_layer / 8 && ftype == F::IQ4_NL {
            ty = G::Q5_K;
        } else if ftype == F::Q5_K_M && use_more_bits(i_layer, n_layer) {
            ty = G::Q6_K;
        } else if ftype == F::Q4_K_S && i_layer < n_layer / 8 {
            ty = G::Q5_K;
        }
        c.i_ffn_down += 1;
    } else if cat == Category::AttnOutput
        && model.n_expert == 8
        && matches!(ftype, F::IQ4_NL | F::Q4_K_S | F::Q4_K_M)
    {
        ty = G::Q5_K;
    }
    ty
}

#[cfg(test)]
mod tests {
    use super::*;

    fn llama(n_layer: usize, hidden: u64, ff: u64, vocab: u64, tied: bool) -> Vec<TensorDesc> {
        let mut v = vec![TensorDesc {
            name: "token_embd.weight".into(),
            dims: vec![hidden, vocab],
            keep_ty: GgmlType::F16,
        }];
        for l in 0..n_layer {
            for (n, d) in [
                ("attn_norm", vec![hidden]),
                ("attn_q", vec![hidden, hidden]),
                ("attn_k", vec![hidden, hidden / 4]),
                ("attn_v", vec![hidden, hidden / 4]),
                ("attn_output", vec![hidden, hidden]),
                ("ffn_norm", vec![hidden]),
                ("ffn_gate", vec![hidden, ff]),
                ("ffn_up", vec![hidden, ff]),
                ("ffn_down", vec![ff, hidden]),
            ] {
                v.push(TensorDesc {
                    name: format!("blk.{l}.{n}.weight"),
                    keep_ty: if d.len() == 1 {
                        GgmlType::F32
                    } else {
                        GgmlType::F16
                    },
                    dims: d,
                });
            }
        }
        v.push(TensorDesc {
            name: "output_norm.weight".into(),
            dims: vec![hidden],
            keep_ty: GgmlType::F32,
        });
        if !tied {
            v.push(TensorDesc {
                name: "output.weight".into(),
                dims: vec![hidden, vocab],
                keep_ty: GgmlType::F16,
            });
        }
        v
    }

    fn shape(n_layer: usize) -> ModelShape {
        ModelShape {
            n_layer,
            n_head: 8,
            n_head_kv: 2,
            n_expert: 0,
        }
    }

    fn types(
        ftype: Ftype,
        pure: bool,
        t: &[TensorDesc],
        n_layer: usize,
    ) -> Vec<(String, GgmlType)> {
        let r = TypeRules {
            ftype,
            pure,
            overrides: vec![],
        };
        choose_types(&r, &shape(n_layer), t)
            .into_iter()
            .zip(t)
            .map(|(c, t)| (t.name.clone(), c.ty))
            .collect()
    }

    fn ty_of(v: &[(String, GgmlType)], name: &str) -> GgmlType {
        v.iter().find(|(n, _)| n == name).unwrap().1
    }

    #[test]
    fn use_more_bits_matches_llama_cpp() {
        // n = 16: first 2, last 2, and every third from 2 on
        let more: Vec<i64> = (0..16).filter(|&i| use_more_bits(i, 16)).collect();
        assert_eq!(more, vec![0, 1, 4, 7, 10, 13, 14, 15]);
    }

    #[test]
    fn q4_k_m_upgrades_attn_v_and_ffn_down_by_layer() {
        let t = llama(16, 256, 512, 1000, false);
        let v = types(Ftype::Q4_K_M, false, &t, 16);
        for l in 0..16 {
            let want = if use_more_bits(l, 16) {
                GgmlType::Q6_K
            } else {
                GgmlType::Q4_K
            };
            assert_eq!(
                ty_of(&v, &format!("blk.{l}.attn_v.weight")),
                want,
                "layer {l}"
            );
            assert_eq!(
                ty_of(&v, &format!("blk.{l}.ffn_down.weight")),
                want,
                "layer {l}"
            );
            assert_eq!(ty_of(&v, &format!("blk.{l}.attn_q.weight")), GgmlType::Q4_K);
            assert_eq!(
                ty_of(&v, &format!("blk.{l}.attn_norm.weight")),
                GgmlType::F32
            );
        }
        assert_eq!(ty_of(&v, "output.weight"), GgmlType::Q6_K);
        assert_eq!(ty_of(&v, "token_embd.weight"), GgmlType::Q4_K);
        assert_eq!(ty_of(&v, "output_norm.weight"), GgmlType::F32);
    }

    #[test]
    fn q4_k_s_and_q5_k_m() {
        let t = llama(16, 256, 512, 1000, true);
        let s = types(Ftype::Q4_K_S, false, &t, 16);
        for l in 0..16 {
            let v = if l < 4 {
                GgmlType::Q5_K
            } else {
                GgmlType::Q4_K
            };
            assert_eq!(ty_of(&s, &format!("blk.{l}.attn_v.weight")), v);
            let d = if l < 2 {
                GgmlType::Q5_K
            } else {
                GgmlType::Q4_K
            };
            assert_eq!(ty_of(&s, &format!("blk.{l}.ffn_down.weight")), d);
        }
        // tied: the token embedding is the output
        assert_eq!(ty_of(&s, "token_embd.weight"), GgmlType::Q6_K);
        let m = types(Ftype::Q5_K_M, false, &t, 16);
        assert_eq!(ty_of(&m, "blk.0.attn_v.weight"), GgmlType::Q6_K);
        assert_eq!(ty_of(&m, "blk.2.attn_v.weight"), GgmlType::Q5_K);
        assert_eq!(ty_of(&m, "blk.4.ffn_down.weight"), GgmlType::Q6_K);
        assert_eq!(ty_of(&m, "blk.5.ffn_down.weight"), GgmlType::Q5_K);
    }

    #[test]
    fn plain_mixes_keep_base_type_but_output_gets_q6_k() {
        let t = llama(4, 256, 512, 1000, false);
        for (f, base) in [
            (Ftype::Q4_0, GgmlType::Q4_0),
            (Ftype::Q4_1, GgmlType::Q4_1),
            (Ftype::Q5_0, GgmlType::Q5_0),
            (Ftype::Q5_1, GgmlType::Q5_1),
            (Ftype::Q6_K, GgmlType::Q6_K),
        ] {
            let v = types(f, false, &t, 4);
            assert_eq!(ty_of(&v, "output.weight"), GgmlType::Q6_K, "{f}");
            assert_eq!(ty_of(&v, "token_embd.weight"), base, "{f}");
            assert_eq!(ty_of(&v, "blk.0.attn_v.weight"), base, "{f}");
            assert_eq!(ty_of(&v, "blk.0.ffn_down.weight"), base, "{f}");
        }
        let v = types(Ftype::Q8_0, false, &t, 4);
        assert_eq!(ty_of(&v, "output.weight"), GgmlType::Q8_0);
        let v = types(Ftype::F16, false, &t, 4);
        assert_eq!(ty_of(&v, "output.weight"), GgmlType::F16);
        assert_eq!(ty_of(&v, "blk.0.ffn_norm.weight"), GgmlType::F32);
    }

    #[test]
    fn pure_gives_every_matrix_the_base_type() {
        let t = llama(8, 256, 512, 1000, false);
        let v = types(Ftype::Q4_K_M, true, &t, 8);
        for (n, ty) in &v {
            if n.contains("norm") {
                assert_eq!(*ty, GgmlType::F32);
            } else {
                assert_eq!(*ty, GgmlType::Q4_K, "{n}");
            }
        }
    }

    #[test]
    fn narrow_rows_fall_back_and_say_so() {
        // 576 = 18 * 32, not a multiple of 256 (SmolLM2-135M)
        let t = llama(4, 576, 1536, 1000, true);
        let r = TypeRules {
            ftype: Ftype::Q4_K_M,
            pure: false,
            overrides: vec![],
        };
        let c = choose_types(&r, &shape(4), &t);
        let get = |n: &str| &c[t.iter().position(|x| x.name == n).unwrap()];
        // tied embedding: Q8_0 straight from the output rule (nx % 256 != 0), no block fallback
        assert_eq!(get("token_embd.weight").ty, GgmlType::Q8_0);
        assert_eq!(get("blk.1.attn_q.weight").ty, GgmlType::Q5_0);
        let fb = get("blk.1.attn_q.weight").fallback.clone().unwrap();
        assert_eq!((fb.wanted, fb.used), (GgmlType::Q4_K, GgmlType::Q5_0));
        // attn_v of layer 2 (of 4) wants Q6_K -> Q8_0
        assert_eq!(get("blk.2.attn_v.weight").ty, GgmlType::Q8_0);
        // ffn_down rows are 1536 = 6 * 256: no fallback
        assert_eq!(get("blk.1.ffn_down.weight").ty, GgmlType::Q4_K);
        assert!(get("blk.1.ffn_down.weight").fallback.is_none());
        // Q4_0: tied embedding wants Q6_K (576 % 32 == 0), falls back to Q8_0
        let r = TypeRules {
            ftype: Ftype::Q4_0,
            pure: false,
            overrides: vec![],
        };
        let c = choose_types(&r, &shape(4), &t);
        let e = &c[0];
        assert_eq!(e.ty, GgmlType::Q8_0);
        assert_eq!(e.fallback.as_ref().unwrap().wanted, GgmlType::Q6_K);
        // rows not a multiple of 32 at all
        assert_eq!(fit_block("x", 48, GgmlType::Q4_K).0, GgmlType::F16);
        assert_eq!(fit_block("x", 48, GgmlType::Q8_0).0, GgmlType::F16);
    }

    #[test]
    fn overrides_win_first_match_and_still_fall_back() {
        let t = llama(4, 576, 1536, 1000, true);
        let r = TypeRules {
            ftype: Ftype::Q4_K_M,
            pure: false,
            overrides: vec![
                Override {
                    pattern: Regex::new(r"ffn_down").unwrap(),
                    ty: GgmlType::Q8_0,
                },
                Override {
                    pattern: Regex::new(r"ffn_.*").unwrap(),
                    ty: GgmlType::Q4_0,
                },
                Override {
                    pattern: Regex::new(r"attn_q").unwrap(),
                    ty: GgmlType::Q6_K,
                },
            ],
        };
        let c = choose_types(&r, &shape(4), &t);
        let get = |n: &str| &c[t.iter().position(|x| x.name == n).unwrap()];
        assert_eq!(get("blk.0.ffn_down.weight").ty, GgmlType::Q8_0);
        assert_eq!(get("blk.0.ffn_up.weight").ty, GgmlType::Q4_0);
        assert_eq!(get("blk.0.attn_q.weight").ty, GgmlType::Q8_0);
        assert!(get("blk.0.attn_q.weight").overridden);
        // norms are never quantized, whatever the pattern
        assert_eq!(get("blk.0.ffn_norm.weight").ty, GgmlType::F32);
    }

    #[test]
    fn loader_order_is_numeric_by_layer() {
        let t = llama(12, 256, 512, 100, false);
        let o = llama_order(&t);
        let names: Vec<&str> = o.iter().map(|&i| t[i].name.as_str()).collect();
        assert_eq!(
            &names[..3],
            &["output.weight", "output_norm.weight", "token_embd.weight"]
        );
        let p2 = names.iter().position(|n| n.starts_with("blk.2.")).unwrap();
        let p10 = names.iter().position(|n| n.starts_with("blk.10.")).unwrap();
        assert!(p2 < p10);
    }
}
