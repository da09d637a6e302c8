//! Quantized dot products and matrix products over ggml block formats.
//!
//! Weights stay in their GGUF encoding (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K,
//! Q6_K); activations are converted once per call to the type ggml pairs with each weight type
//! ([`act_type`]): Q8_0 for Q4_0/Q5_0/Q8_0, Q8_1 for Q4_1/Q5_1 (their `s` field carries the block
//! sum that the weights' offset `m` multiplies), Q8_K for the K-quants, and, as ggml's
//! `vec_dot_f16`/`vec_dot_bf16` do, F16 for F16 weights and BF16 for BF16 weights (F32 stays F32).
//!
//! Every dot product exists as a scalar reference ([`scalar`], written after ggml's generic code in
//! `ggml-cpu/quants.c`, names kept: `vec_dot_q4_0_q8_0` is `ggml_vec_dot_q4_0_q8_0`) and as SIMD
//! versions: on x86_64 AVX2+FMA+F16C, AVX-512 (F/BW/VL) and AVX-512 with VNNI ([`x86`]: one source
//! per kernel compiled for each level; the same bits on every level), NEON and NEON+dotprod on
//! aarch64 ([`arm`]).
//! The instruction set is chosen at run time, once ([`isa`]), and can be forced with the
//! `SLMPACK_ISA` environment variable (`scalar|avx2|avx512|avx512vnni|neon|dotprod`); a request this
//! CPU or this build cannot serve prints a warning to stderr and falls back to the best available
//! set, so no request can lead to an illegal instruction.
//!
//! [`gemv`] (decode, one token) and [`gemm`] (prefill, several tokens) quantize the activations
//! once per call into reusable per-thread scratch memory and split the weight rows over rayon's
//! pool. Where the instruction set has tile kernels ([`TileFn`], AVX2 for every quantized type)
//! they run those (the x86 sets for every quantized type): a tile unpacks each weight block once and multiplies it with several tokens
//! (prefill, [`tile_shape`]), keeping one accumulator per row and token. Decode (one token) and instruction
//! sets without tiles call the one-row [`DotFn`] per row (and token).

#![warn(missing_docs)]

use std::fmt;
use std::sync::OnceLock;

pub use slmpack_gguf::GgmlType;

pub mod act;
#[cfg(target_arch = "aarch64")]
pub mod arm;
pub mod scalar;
pub mod vec;
#[cfg(target_arch = "x86_64")]
pub mod x86;

mod matmul;
pub use matmul::{gemm, gemm_isa, gemv, gemv_isa, KernelError, Weights};
pub mod hugebuf;
pub mod packed;
pub mod pool;

/// The largest tile (weight rows x activation rows) a [`TileFn`] computes.
pub const MAX_TILE: (usize, usize) = (4, 4);

/// An instruction set the kernels can run with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Isa {
    /// Portable Rust, the reference (ggml's generic code).
    Scalar,
    /// x86_64 AVX2 with FMA and F16C.
    Avx2,
    /// x86_64 AVX-512 F/BW/VL (with AVX2, FMA and F16C).
    Avx512,
    /// x86_64 AVX-512 F/BW/VL with VNNI (`vpdpbusd`).
    Avx512Vnni,
    /// aarch64 Advanced SIMD.
    Neon,
    /// aarch64 Advanced SIMD with the dot-product extension (`sdot`).
    Dotprod,
}

impl Isa {
    /// Every instruction set, in the order of preference from least to most capable per arch.
    pub const ALL: [Isa; 6] = [
        Isa::Scalar,
        Isa::Avx2,
        Isa::Avx512,
        Isa::Avx512Vnni,
        Isa::Neon,
        Isa::Dotprod,
    ];

    /// Lower-case name, as accepted by `SLMPACK_ISA`.
    pub const fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Avx512Vnni => "avx512vnni",
            Isa::Neon => "neon",
            Isa::Dotprod => "dotprod",
        }
    }

    /// Parses a name as written by [`Isa::name`] (case-insensitive).
    pub fn from_name(s: &str) -> Option<Isa> {
        Isa::ALL
            .into_iter()
            .find(|i| i.name().eq_ignore_ascii_case(s.trim()))
    }

    /// True if this CPU can execute this instruction set.
    pub fn cpu_has(self) -> bool {
        match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                    && std::arch::is_x86_feature_detected!("f16c")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                Isa::Avx2.cpu_has()
                    && std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vl")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => {
                Isa::Avx512.cpu_has() && std::arch::is_x86_feature_detected!("avx512vnni")
            }
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[cfg(target_arch = "aarch64")]
            Isa::Dotprod => {
                std::arch::is_aarch64_feature_detected!("neon")
                    && std::arch::is_aarch64_feature_detected!("dotprod")
            }
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// True if this build has kernels for this instruction set.
    pub const fn has_kernels(self) -> bool {
        match self {
            Isa::Scalar => true,
            Isa::Avx2 | Isa::Avx512 | Isa::Avx512Vnni => cfg!(target_arch = "x86_64"),
            Isa::Neon | Isa::Dotprod => cfg!(target_arch = "aarch64"),
        }
    }

    /// True for the x86_64 sets (AVX2 and the AVX-512 ones): the same kernel sources, the same
    /// summation orders, the same bits; helpers without an AVX-512 version (activation
    /// quantization, f16 conversion, attention's vector helpers) run their AVX2 code there.
    pub const fn is_x86(self) -> bool {
        matches!(self, Isa::Avx2 | Isa::Avx512 | Isa::Avx512Vnni)
    }

    /// True if kernels for this set exist and this CPU runs them.
    pub fn usable(self) -> bool {
        self.has_kernels() && self.cpu_has()
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The instruction sets this CPU supports, whether or not this build has kernels for them.
pub fn detected_isas() -> Vec<Isa> {
    Isa::ALL.into_iter().filter(|i| i.cpu_has()).collect()
}

/// The instruction sets whose kernels can run here, `Scalar` first (for tests and benchmarks).
pub fn available_isas() -> Vec<Isa> {
    Isa::ALL.into_iter().filter(|i| i.usable()).collect()
}

fn best_isa() -> Isa {
    available_isas().into_iter().last().unwrap_or(Isa::Scalar)
}

/// Resolves an `SLMPACK_ISA` request against what can run here: the chosen set and, if the
/// request could not be honoured, the warning to print.
pub fn resolve_isa(request: Option<&str>) -> (Isa, Option<String>) {
    let best = best_isa();
    let Some(req) = request.map(str::trim).filter(|r| !r.is_empty()) else {
        return (best, None);
    };
    match Isa::from_name(req) {
        None => (
            best,
            Some(format!(
                "warning: `SLMPACK_ISA={req}` is not an instruction set; using `{best}`\n  hint: use one of scalar, avx2, avx512, avx512vnni, neon, dotprod"
            )),
        ),
        Some(i) if i.usable() => (i, None),
        Some(i) if i.cpu_has() => (
            best,
            Some(format!(
                "warning: `SLMPACK_ISA={req}`: this build has no `{i}` kernels; using `{best}`"
            )),
        ),
        Some(i) => (
            best,
            Some(format!(
                "warning: `SLMPACK_ISA={req}`: this CPU does not support `{i}`; using `{best}`"
            )),
        ),
    }
}

static ISA: OnceLock<Isa> = OnceLock::new();

/// The instruction set [`gemv`]/[`gemm`] use: the best one available, or the `SLMPACK_ISA`
/// override; decided on the first call and cached.
pub fn isa() -> Isa {
    *ISA.get_or_init(|| {
        let req = std::env::var("SLMPACK_ISA").ok();
        let (isa, warning) = resolve_isa(req.as_deref());
        if let Some(w) = warning {
            eprintln!("{w}");
        }
        isa
    })
}

/// One line for `-v` output and benchmark reports, e.g.
/// `kernels: avx2 (cpu: scalar avx2; forced by SLMPACK_ISA: no)`.
pub fn isa_report() -> String {
    let cpu: Vec<&str> = detected_isas().iter().map(|i| i.name()).collect();
    let forced = std::env::var("SLMPACK_ISA").is_ok();
    format!(
        "kernels: {} (cpu: {}; forced by SLMPACK_ISA: {})",
        isa(),
        cpu.join(" "),
        if forced { "yes" } else { "no" }
    )
}

/// The weight types with dot products here.
pub const WEIGHT_TYPES: [GgmlType; 11] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];

/// True if [`vec_dot`], [`gemv`] and [`gemm`] accept weights of type `ty`.
pub fn supports(ty: GgmlType) -> bool {
    WEIGHT_TYPES.contains(&ty)
}

/// The activation type ggml pairs with weight type `w` (its `vec_dot_type`), or `None` if `w` has
/// no kernel here.
pub fn act_type(w: GgmlType) -> Option<GgmlType> {
    Some(match w {
        GgmlType::F32 => GgmlType::F32,
        GgmlType::F16 => GgmlType::F16,
        GgmlType::BF16 => GgmlType::BF16,
        GgmlType::Q8_0 | GgmlType::Q4_0 | GgmlType::Q5_0 => GgmlType::Q8_0,
        GgmlType::Q4_1 | GgmlType::Q5_1 => GgmlType::Q8_1,
        GgmlType::Q4_K | GgmlType::Q5_K | GgmlType::Q6_K => GgmlType::Q8_K,
        _ => return None,
    })
}

/// Bytes of `n` elements of type `ty` (`n` a multiple of its block size).
pub fn row_bytes(ty: GgmlType, n: usize) -> usize {
    ty.row_bytes(n as u64)
        .expect("row length is a multiple of the block size") as usize
}

/// Converts one row of activations `x` to `act` (one of [`act_type`]'s results), writing
/// `row_bytes(act, x.len())` bytes to `dst`.
///
/// # Panics
/// If `act` is not an activation type, `x.len()` is not a multiple of its block size or `dst`
/// has the wrong size.
pub fn quantize_act(act: GgmlType, x: &[f32], dst: &mut [u8]) {
    assert_eq!(dst.len(), row_bytes(act, x.len()), "activation buffer size");
    match act {
        GgmlType::F32 => dst.copy_from_slice(bytemuck::cast_slice(x)),
        GgmlType::F16 => {
            for (d, &v) in dst.chunks_exact_mut(2).zip(x) {
                d.copy_from_slice(&slmpack_quant::fp32_to_fp16(v).to_bits().to_le_bytes());
            }
        }
        GgmlType::BF16 => {
            for (d, &v) in dst.chunks_exact_mut(2).zip(x) {
                d.copy_from_slice(&slmpack_quant::fp32_to_bf16(v).to_bits().to_le_bytes());
            }
        }
        // as ggml-cpu does at run time, which is not the reference rounding (see `act`)
        GgmlType::Q8_0 => act::quantize_row_q8_0(x, dst, act::Rounding::NATIVE),
        GgmlType::Q8_1 => act::quantize_row_q8_1(x, dst, act::Rounding::NATIVE),
        // ggml-cpu uses the reference code for Q8_K on every architecture
        GgmlType::Q8_K => slmpack_quant::quantize_row(act, x, dst).expect("sizes checked above"),
        other => panic!("`{other}` is not an activation type"),
    }
}

/// [`quantize_act`] with the SIMD code of `isa` where there is some (x86: Q8_0 and Q8_1 with
/// AVX2 code on every x86 set), bit
/// for bit the same bytes.
///
/// # Panics
/// As [`quantize_act`], and if `isa` cannot run here.
pub fn quantize_act_isa(isa: Isa, act: GgmlType, x: &[f32], dst: &mut [u8]) {
    assert!(isa.usable(), "instruction set `{isa}` cannot run here");
    #[cfg(target_arch = "x86_64")]
    if isa.is_x86() && matches!(act, GgmlType::Q8_0 | GgmlType::Q8_1) {
        assert_eq!(dst.len(), row_bytes(act, x.len()), "activation buffer size");
        // SAFETY: sizes checked (row_bytes asserts whole blocks); the CPU runs AVX2.
        unsafe { x86::quantize_row_q8(x, dst, act == GgmlType::Q8_1) };
        return;
    }
    quantize_act(act, x, dst)
}

/// A dot-product kernel: `n` elements of weights at `x` against activations at `y`.
///
/// # Safety
/// `x` must point to `row_bytes(w, n)` readable bytes and `y` to `row_bytes(act_type(w), n)`
/// readable bytes (no alignment needed), `n` a multiple of the block size, and the CPU must
/// support the kernel's instruction set.
pub type DotFn = unsafe fn(n: usize, x: *const u8, y: *const u8) -> f32;

/// The kernel for weights `ty` on `isa`, if this build has one.
pub fn kernel(isa: Isa, ty: GgmlType) -> Option<DotFn> {
    match isa {
        Isa::Scalar => scalar::kernel(ty),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx512 | Isa::Avx512Vnni => x86::kernel(isa, ty),
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => arm::kernel(ty, false),
        #[cfg(target_arch = "aarch64")]
        Isa::Dotprod => arm::kernel(ty, true),
        _ => None,
    }
}

/// A tile kernel: the dot products of `m` weight rows with `k` activation rows in one pass
/// (`m`, `k` fixed per kernel, at most [`MAX_TILE`]). For `i < m`, `j < k` it writes
/// `out[j * ldo + i] = dot(w + i * ldw, a + j * lda)` over `n` elements, as the [`DotFn`] of the
/// same type would, up to the order of the float additions. `sc + j * ldsc` holds activation row
/// `j`'s block scales as f32 ([`act_scales`]), so the kernel does not convert them once per
/// weight row.
///
/// # Safety
/// Each of the `m` weight rows at `w + i * ldw` must hold `row_bytes(ty, n)` readable bytes, each
/// of the `k` activation rows at `a + j * lda` `row_bytes(act_type(ty), n)`, every
/// `out + j * ldo + i` must be writable, `n` a multiple of the block size, and the CPU must support
/// the kernel's instruction set.
pub type TileFn = unsafe fn(
    n: usize,
    w: *const u8,
    ldw: usize,
    a: *const u8,
    lda: usize,
    sc: *const f32,
    ldsc: usize,
    out: *mut f32,
    ldo: usize,
);

/// How many f32 scales [`act_scales`] writes for `n` elements of activations of type `act`:
/// one per block for Q8_0, two (every `d`, then every `s`) for Q8_1, none for the others.
pub fn act_scales_len(act: GgmlType, n: usize) -> usize {
    match act {
        GgmlType::Q8_0 => n / 32,
        GgmlType::Q8_1 => 2 * (n / 32),
        _ => 0,
    }
}

/// The f16 block scales of one activation row `a` (type `act`, `n` elements) as f32, for the
/// [`TileFn`]s: Q8_0 `d`s; Q8_1 `d`s then `s`s; nothing for other types.
///
/// # Panics
/// If `a` or `out` has the wrong size.
pub fn act_scales(act: GgmlType, n: usize, a: &[u8], out: &mut [f32]) {
    assert_eq!(a.len(), row_bytes(act, n), "activation row");
    assert_eq!(out.len(), act_scales_len(act, n), "scales");
    let nb = n / 32;
    let bs = act.type_size();
    let h = |i: usize| half::f16::from_le_bytes([a[i], a[i + 1]]).to_f32();
    match act {
        GgmlType::Q8_0 => (0..nb).for_each(|l| out[l] = h(l * bs)),
        GgmlType::Q8_1 => (0..nb).for_each(|l| {
            out[l] = h(l * bs);
            out[nb + l] = h(l * bs + 2);
        }),
        _ => {}
    }
}

/// The tile kernel for `m` weight rows x `k` activation rows of type `ty` on `isa`, if this build
/// has one (the x86 sets: every quantized type; other sets run [`kernel`] per element). Each output is
/// summed as the one-row kernel sums it.
pub fn tile_kernel(isa: Isa, ty: GgmlType, m: usize, k: usize) -> Option<TileFn> {
    tile_kernel_ordered(isa, ty, m, k, false)
}

/// True if a product of `n_tokens` tokens with `ty` weights on `isa` sums as llama.cpp's tiled
/// K-quant matrix product (`ggml-cpu/tiled`), which ggml-cpu uses for Q4_K (unless repacked),
/// Q5_K and Q6_K weights from 8 tokens up: per super-block `res = d_w * s1 - dmin_w * s2`
/// (the exact integer sums; the second term in one rounding), then `acc = fma(res, d_y, acc)`.
/// Elsewhere a product sums as the one-row kernels (ggml's `vec_dot`).
pub fn tiled_order(isa: Isa, ty: GgmlType, n_tokens: usize) -> bool {
    isa.is_x86() && n_tokens >= 8 && matches!(ty, GgmlType::Q4_K | GgmlType::Q5_K | GgmlType::Q6_K)
}

/// [`tile_kernel`], or with `tiled` the kernel that sums as [`tiled_order`] says (`None` for the
/// types that have no such order).
pub fn tile_kernel_ordered(
    isa: Isa,
    ty: GgmlType,
    m: usize,
    k: usize,
    tiled: bool,
) -> Option<TileFn> {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx512 | Isa::Avx512Vnni => x86::tile::tile_kernel(isa, ty, m, k, tiled),
        _ => {
            let _ = (ty, m, k, tiled);
            None
        }
    }
}

/// One output of a product in [`tiled_order`], in plain Rust (tests): the dot product of `n`
/// weights `w` (Q4_K, Q5_K or Q6_K) with Q8_K activations `act`.
///
/// # Panics
/// For other types, or rows of the wrong size.
pub fn dot_tiled_reference(ty: GgmlType, n: usize, w: &[u8], act: &[u8]) -> f32 {
    assert_eq!(w.len(), row_bytes(ty, n));
    assert_eq!(act.len(), row_bytes(GgmlType::Q8_K, n));
    let h =
        |b: &[u8], i: usize| half::f16::from_bits(u16::from_le_bytes([b[i], b[i + 1]])).to_f32();
    let mut acc = 0f32;
    for (l, y) in act.chunks_exact(292).enumerate() {
        let dy = f32::from_le_bytes(y[..4].try_into().expect("4 bytes"));
        let q8 = |i: usize| y[4 + i] as i8 as i32;
        let (mut vals, mut sc, mut mn) = ([0i32; 256], [0i32; 16], [0i32; 8]);
        let (dw, dmin, sub) = match ty {
            GgmlType::Q4_K | GgmlType::Q5_K => {
                let bs = if ty == GgmlType::Q4_K { 144 } else { 176 };
                let x = &w[l * bs..(l + 1) * bs];
                let (s8, m8) = k4_scales_mins(x[4..16].try_into().expect("12 bytes"));
                for j in 0..8 {
                    (sc[j], mn[j]) = (s8[j] as i32, m8[j] as i32);
                }
                let (qh, qs) = if ty == GgmlType::Q4_K {
                    (None, &x[16..])
                } else {
                    (Some(&x[16..48]), &x[48..])
                };
                for p in 0..4 {
                    for e in 0..32 {
                        let b = qs[32 * p + e];
                        let (lo, hi) = ((b & 0xF) as i32, (b >> 4) as i32);
                        let (hl, hh) = qh.map_or((0, 0), |h| {
                            (
                                ((h[e] >> (2 * p)) & 1) as i32 * 16,
                                ((h[e] >> (2 * p + 1)) & 1) as i32 * 16,
                            )
                        });
                        vals[64 * p + e] = lo + hl;
                        vals[64 * p + 32 + e] = hi + hh;
                    }
                }
                (h(x, 0), Some(h(x, 2)), 32)
            }
            GgmlType::Q6_K => {
                let x = &w[l * 210..(l + 1) * 210];
                let (ql, qh, s) = (&x[..128], &x[128..192], &x[192..208]);
                for half in 0..2 {
                    for e in 0..32 {
                        let (a, b, hb) =
                            (ql[64 * half + e], ql[64 * half + 32 + e], qh[32 * half + e]);
                        let o = 128 * half + e;
                        vals[o] = ((a & 0xF) | ((hb & 3) << 4)) as i32 - 32;
                        vals[o + 32] = ((b & 0xF) | (((hb >> 2) & 3) << 4)) as i32 - 32;
                        vals[o + 64] = ((a >> 4) | (((hb >> 4) & 3) << 4)) as i32 - 32;
                        vals[o + 96] = ((b >> 4) | (((hb >> 6) & 3) << 4)) as i32 - 32;
                    }
                }
                for j in 0..16 {
                    sc[j] = s[j] as i8 as i32;
                }
                (h(x, 208), None, 16)
            }
            _ => panic!("no tiled order for `{ty}`"),
        };
        let (mut s1, mut s2) = (0i32, 0i32);
        for j in 0..256 / sub {
            let dot: i32 = (sub * j..sub * (j + 1)).map(|e| vals[e] * q8(e)).sum();
            s1 += sc[j] * dot;
            if dmin.is_some() {
                s2 += mn[j] * (sub * j..sub * (j + 1)).map(q8).sum::<i32>();
            }
        }
        let mut res = dw * s1 as f32;
        if let Some(m) = dmin {
            res = (-m).mul_add(s2 as f32, res);
        }
        acc = res.mul_add(dy, acc);
    }
    acc
}

/// The tile shape (weight rows, activation rows) [`gemm`] uses for `ty` on `isa` when there is
/// more than one token, or `None` where there are no tile kernels. `SLMPACK_TILE=MxN` (e.g.
/// `3x4`, each 1 to 4) overrides it for every type, to tune a new CPU with the benchmarks; the
/// sums, and so the results, do not depend on the shape.
pub fn tile_shape(isa: Isa, ty: GgmlType) -> Option<(usize, usize)> {
    tile_kernel(isa, ty, 1, 1)?;
    if let Some(shape) = tile_override() {
        return Some(shape);
    }
    // measured on SmolLM2 shapes (576x1536, 1536x576, 64 tokens; docs/performance.md): 4-row
    // tiles spill accumulators to the stack with AVX2's 16 registers; with AVX-512's 32 (Xeon,
    // VNNI, one thread) 3x4 led for the 32-blocks (4x4 equal for Q8_0/Q4_0, 7-12% behind for
    // Q4_1/Q5_0) and 2x4 for the K-quants (4x4: 20-28% behind for Q4_K/Q5_K)
    let wide = matches!(isa, Isa::Avx512 | Isa::Avx512Vnni);
    Some(match ty {
        GgmlType::Q4_K | GgmlType::Q5_K | GgmlType::Q6_K if wide => (2, 4),
        _ if wide => (3, 4),
        GgmlType::Q4_K | GgmlType::Q5_K => (2, 3),
        GgmlType::Q6_K => (2, 2),
        _ => (2, 4),
    })
}

/// Parses a `SLMPACK_TILE` value: `MxN` with `1 <= M <= MAX_TILE.0`, `1 <= N <= MAX_TILE.1`.
pub fn parse_tile(s: &str) -> Option<(usize, usize)> {
    let (m, n) = s.trim().split_once(['x', 'X'])?;
    let (m, n) = (m.trim().parse().ok()?, n.trim().parse().ok()?);
    ((1..=MAX_TILE.0).contains(&m) && (1..=MAX_TILE.1).contains(&n)).then_some((m, n))
}

/// `SLMPACK_TILE`, read once; a value that does not parse is reported on stderr and ignored.
fn tile_override() -> Option<(usize, usize)> {
    static TILE: OnceLock<Option<(usize, usize)>> = OnceLock::new();
    *TILE.get_or_init(|| {
        let v = std::env::var("SLMPACK_TILE").ok()?;
        let shape = parse_tile(&v);
        if shape.is_none() {
            eprintln!(
                "warning: `SLMPACK_TILE={v}` is not a tile shape; using the defaults\n  hint: write rows x tokens, e.g. `SLMPACK_TILE=3x4`, each 1 to 4"
            );
        }
        shape
    })
}

/// The dot products of `m` weight rows (`w`, `m * row_bytes(ty, n)` bytes, rows back to back)
/// with `k` activation rows (`act`, type `act_type(ty)`, back to back) on `isa`:
/// `out[j * m + i] = dot(row i, activation j)`, with the tile kernel where there is one and the
/// one-row [`kernel`] per element otherwise (tests, benchmarks).
///
/// # Panics
/// If `ty` has no kernel, `isa` cannot run here, `m` or `k` is 0 or above [`MAX_TILE`], `n` is not
/// a multiple of the block size or a buffer has the wrong size.
#[allow(clippy::too_many_arguments)]
pub fn tile(
    isa: Isa,
    ty: GgmlType,
    n: usize,
    m: usize,
    k: usize,
    w: &[u8],
    act: &[u8],
    out: &mut [f32],
) {
    tile_ordered(isa, ty, n, m, k, false, w, act, out)
}

/// [`tile`], with `tiled` in llama.cpp's tiled K-quant order ([`tiled_order`]; the tile kernel
/// must exist then).
///
/// # Panics
/// As [`tile`].
#[allow(clippy::too_many_arguments)]
pub fn tile_ordered(
    isa: Isa,
    ty: GgmlType,
    n: usize,
    m: usize,
    k: usize,
    tiled: bool,
    w: &[u8],
    act: &[u8],
    out: &mut [f32],
) {
    let at = act_type(ty).unwrap_or_else(|| panic!("no dot product for `{ty}` weights"));
    assert!(isa.usable(), "instruction set `{isa}` cannot run here");
    assert!(
        (1..=MAX_TILE.0).contains(&m) && (1..=MAX_TILE.1).contains(&k),
        "tile {m}x{k}"
    );
    assert_eq!(
        n % ty.block_size(),
        0,
        "`n` is a multiple of the block size"
    );
    let (ldw, lda) = (row_bytes(ty, n), row_bytes(at, n));
    assert_eq!(w.len(), m * ldw, "weight rows");
    assert_eq!(act.len(), k * lda, "activation rows");
    assert_eq!(out.len(), m * k, "outputs");
    let ldsc = act_scales_len(at, n);
    let mut sc = vec![0f32; k * ldsc];
    for j in 0..k {
        act_scales(
            at,
            n,
            &act[j * lda..(j + 1) * lda],
            &mut sc[j * ldsc..(j + 1) * ldsc],
        );
    }
    match tile_kernel_ordered(isa, ty, m, k, tiled) {
        // SAFETY: sizes checked above, CPU support checked by `usable`.
        Some(f) => unsafe {
            f(
                n,
                w.as_ptr(),
                ldw,
                act.as_ptr(),
                lda,
                sc.as_ptr(),
                ldsc,
                out.as_mut_ptr(),
                m,
            )
        },
        None => {
            assert!(!tiled, "no tiled-order kernel for `{ty}` on `{isa}`");
            let f = kernel(isa, ty).expect("usable isa has every kernel");
            for j in 0..k {
                for i in 0..m {
                    // SAFETY: as above.
                    out[j * m + i] =
                        unsafe { f(n, w[i * ldw..].as_ptr(), act[j * lda..].as_ptr()) };
                }
            }
        }
    }
}

/// Dot product of `n` weights `w` (type `ty`) with activations `act` (type `act_type(ty)`,
/// e.g. from [`quantize_act`]) on instruction set `isa`.
///
/// # Panics
/// If `ty` has no kernel, `isa` cannot run here ([`Isa::usable`]), `n` is not a multiple of the
/// block size or a buffer is too short.
pub fn vec_dot(isa: Isa, ty: GgmlType, n: usize, w: &[u8], act: &[u8]) -> f32 {
    let at = act_type(ty).unwrap_or_else(|| panic!("no dot product for `{ty}` weights"));
    assert!(isa.usable(), "instruction set `{isa}` cannot run here");
    assert_eq!(
        n % ty.block_size(),
        0,
        "`n` is a multiple of the block size"
    );
    assert!(w.len() >= row_bytes(ty, n), "weight row too short");
    assert!(act.len() >= row_bytes(at, n), "activation row too short");
    let f = kernel(isa, ty).expect("usable isa has every kernel");
    // SAFETY: buffer lengths checked above, CPU support checked by `usable`.
    unsafe { f(n, w.as_ptr(), act.as_ptr()) }
}

/// Decodes ggml's packed 6-bit scales and mins of Q4_K/Q5_K (the `utmp` dance in ggml).
#[inline(always)]
pub(crate) fn k4_scales_mins(s: &[u8; 12]) -> ([u8; 8], [u8; 8]) {
    const KMASK1: u32 = 0x3f3f3f3f;
    const KMASK2: u32 = 0x0f0f0f0f;
    const KMASK3: u32 = 0x03030303;
    let mut utmp = [
        u32::from_le_bytes([s[0], s[1], s[2], s[3]]),
        u32::from_le_bytes([s[4], s[5], s[6], s[7]]),
        u32::from_le_bytes([s[8], s[9], s[10], s[11]]),
        0,
    ];
    utmp[3] = ((utmp[2] >> 4) & KMASK2) | (((utmp[1] >> 6) & KMASK3) << 4);
    let uaux = utmp[1] & KMASK1;
    utmp[1] = (utmp[2] & KMASK2) | (((utmp[0] >> 6) & KMASK3) << 4);
    utmp[2] = uaux;
    utmp[0] &= KMASK1;
    let a = utmp[0].to_le_bytes();
    let b = utmp[1].to_le_bytes();
    let c = utmp[2].to_le_bytes();
    let d = utmp[3].to_le_bytes();
    (
        [a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3]],
        [c[0], c[1], c[2], c[3], d[0], d[1], d[2], d[3]],
    )
}

/// The elements `from..n` of an f32 dot product added to `sumf` as GCC compiles ggml's scalar
/// tail loop (`sumf += x[i]*y[i]` in f32) on x86_64 and aarch64: its vectorised part rounds
/// each product and adds them in order, four at a time, and the last 0-3 are contracted to FMAs.
///
/// # Safety
/// `x` and `y` must hold `n` readable f32 each (unaligned is fine).
#[inline(always)]
pub(crate) unsafe fn f32_tail_as_gcc(
    x: *const f32,
    y: *const f32,
    from: usize,
    n: usize,
    mut sumf: f32,
) -> f32 {
    let mut i = from;
    let vec_end = i + (n - i) / 4 * 4;
    while i < vec_end {
        sumf += x.add(i).read_unaligned() * y.add(i).read_unaligned();
        i += 1;
    }
    while i < n {
        sumf = x
            .add(i)
            .read_unaligned()
            .mul_add(y.add(i).read_unaligned(), sumf);
        i += 1;
    }
    sumf
}

#[inline(always)]
#[cfg_attr(not(target_arch = "aarch64"), allow(dead_code))]
pub(crate) unsafe fn rd_f16(p: *const u8) -> f32 {
    half::f16::from_bits(u16::from_le_bytes(p.cast::<[u8; 2]>().read_unaligned())).to_f32()
}

#[inline(always)]
pub(crate) unsafe fn rd_f32(p: *const u8) -> f32 {
    f32::from_le_bytes(p.cast::<[u8; 4]>().read_unaligned())
}

#[inline(always)]
pub(crate) unsafe fn rd_u32(p: *const u8) -> u32 {
    u32::from_le_bytes(p.cast::<[u8; 4]>().read_unaligned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isa_names_round_trip() {
        for i in Isa::ALL {
            assert_eq!(Isa::from_name(i.name()), Some(i));
        }
        assert_eq!(Isa::from_name(" AVX2 "), Some(Isa::Avx2));
        assert_eq!(Isa::from_name("sse"), None);
    }

    #[test]
    fn resolve_isa_falls_back_with_warnings() {
        let best = *available_isas().last().unwrap();
        assert_eq!(resolve_isa(None), (best, None));
        assert_eq!(resolve_isa(Some("")), (best, None));
        assert_eq!(resolve_isa(Some("scalar")), (Isa::Scalar, None));
        let (i, w) = resolve_isa(Some("mmx"));
        assert_eq!(i, best);
        assert!(w
            .unwrap()
            .contains("`SLMPACK_ISA=mmx` is not an instruction set"));
        // avx512 runs where the CPU has it; neon/dotprod never on x86 and vice versa.
        let (i, w) = resolve_isa(Some("avx512"));
        if Isa::Avx512.usable() {
            assert_eq!((i, w), (Isa::Avx512, None));
        } else {
            assert_eq!(i, best);
            assert!(w.is_some());
        }
        let foreign = if cfg!(target_arch = "x86_64") {
            "neon"
        } else {
            "avx2"
        };
        let (i, w) = resolve_isa(Some(foreign));
        assert_eq!(i, best);
        assert!(w.unwrap().contains("does not support"));
        assert!(isa_report().starts_with("kernels: "));
    }

    #[test]
    fn tile_shapes_parse() {
        assert_eq!(parse_tile("3x4"), Some((3, 4)));
        assert_eq!(parse_tile(" 1X1 "), Some((1, 1)));
        for bad in ["", "4", "0x2", "5x1", "2x5", "ax2", "2x"] {
            assert_eq!(parse_tile(bad), None, "{bad}");
        }
    }

    #[test]
    fn k4_scale_decoding_matches_get_scale_min_k4() {
        let mut s = [0u8; 12];
        for seed in 0..64u32 {
            for (i, b) in s.iter_mut().enumerate() {
                *b = (seed.wrapping_mul(2654435761).rotate_left(i as u32 * 3) >> 7) as u8;
            }
            let (sc, m) = k4_scales_mins(&s);
            for j in 0..8 {
                let (a, b) = slmpack_quant::get_scale_min_k4(j, &s);
                assert_eq!((sc[j], m[j]), (a, b), "seed {seed} j {j}");
            }
        }
    }
}
