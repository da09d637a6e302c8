//! AVX2 tile kernels: `M` weight rows against `N` activation rows in one pass (M, N <= 4).
//!
//! The one-row kernels in [`super`] keep one accumulator and so wait on the FMA latency, and a
//! matrix product built from them unpacks every weight block once per token. A tile kernel
//! loads and unpacks each weight block once (nibbles, high bits, signs, scales), reuses it for
//! the `N` activation rows, and keeps `M * N` independent accumulators, as llamafile's
//! `tinyBLAS_Q0_AVX` (llama.cpp `ggml-cpu/llamafile/sgemm.cpp`) does. Prefill uses them
//! ([`crate::tile_shape`]); decode keeps the one-row kernels (see `crate::matmul`).
//!
//! Every kernel has the signature of [`crate::TileFn`] (the K-quants ignore `sc`: Q8_K blocks
//! carry an f32 scale) and computes, for `i < M`, `j < N`,
//! `out[j * ldo + i] = dot(w + i * ldw, a + j * lda)` over `n` elements: the same sums as the
//! one-row kernels, in a different order (so not bit-identical to them). The scalar reference
//! is [`crate::tile`] on [`crate::Isa::Scalar`] (the one-row scalar dot per element).

// The kernels take `TileFn`'s arguments, and index the `M x N` accumulator arrays by row and
// token as the loops over both run in step.
#![allow(clippy::too_many_arguments, clippy::needless_range_loop)]

use std::arch::x86_64::*;

use super::{
    bytes_from_bits_32, bytes_from_nibbles_32, entry_points, hsum_float_4, hsum_float_8,
    k4_mins_dot, k4_mins_prod, load, mul_sum_us8_pairs, q6_k_offset, rd_f16, Level, Q4K, Q4_0,
    Q4_1, Q5K, Q5_0, Q5_1, Q6K, Q8K, Q8_0, Q8_1,
};
use std::marker::PhantomData;

use crate::{k4_scales_mins, rd_f32, rd_u32, GgmlType, Isa, TileFn};

/// The sum of the eight i32 lanes of `v` (exact).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn hsum_i32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
    _mm_cvtsi128_si32(_mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s)))
}

/// One super-block of llama.cpp's tiled K-quant product (`ggml-cpu/tiled`), for one weight
/// row and token: `res = d_w * s1` (`s1` the block's exact integer dot with the sub-block
/// scales), less `dmin_w * s2` in one rounding (`s2` the mins times the activation sums), then
/// `acc = fma(res, d_y, acc)`.
#[inline(always)]
fn tiled_step(acc: f32, dw: f32, s1: i32, dmin: Option<(f32, i32)>, dy: f32) -> f32 {
    let mut res = dw * s1 as f32;
    if let Some((m, s2)) = dmin {
        res = (-m).mul_add(s2 as f32, res);
    }
    res.mul_add(dy, acc)
}

/// The end of super-block `l` of a Q4_K/Q5_K tile: the integer sums `sumi` (and the mins'
/// `s2`) into the one-row kernel's lane accumulators `acc`, or with `TILED` into the tiled
/// order's scalars `tacc` ([`tiled_step`]).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn k_block_end<const M: usize, const N: usize, const TILED: bool>(
    sumi: &[[__m256i; N]; M],
    dx: &[f32; M],
    dmx: &[f32; M],
    s2: &[[i32; N]; M],
    a: *const u8,
    lda: usize,
    l: usize,
    acc: &mut [[__m256; N]; M],
    tacc: &mut [[f32; N]; M],
) {
    for j in 0..N {
        let yd = rd_f32(a.add(j * lda + l * Q8K));
        for i in 0..M {
            if TILED {
                let s1 = hsum_i32(sumi[i][j]);
                tacc[i][j] = tiled_step(tacc[i][j], dx[i], s1, Some((dmx[i], s2[i][j])), yd);
            } else {
                acc[i][j] = _mm256_fmadd_ps(
                    _mm256_set1_ps(dx[i] * yd),
                    _mm256_cvtepi32_ps(sumi[i][j]),
                    acc[i][j],
                );
            }
        }
    }
}

/// Writes the scalar accumulators of the tiled K-quant order.
#[inline(always)]
unsafe fn store_tiled<const M: usize, const N: usize>(
    acc: &[[f32; N]; M],
    out: *mut f32,
    ldo: usize,
) {
    for i in 0..M {
        for j in 0..N {
            *out.add(j * ldo + i) = acc[i][j];
        }
    }
}

/// The largest tile any kernel here computes.
pub const MAX_M: usize = 4;
/// The largest tile any kernel here computes.
pub const MAX_N: usize = 4;

/// A 32-element weight block that pairs with Q8_0 activations: a scale and 32 signed values.
trait Q0 {
    const SIZE: usize;
    /// The block's scale `d`.
    unsafe fn d(b: *const u8) -> f32;
    /// The 32 quants as signed bytes.
    unsafe fn q(b: *const u8) -> __m256i;
}

struct BQ8_0;
impl Q0 for BQ8_0 {
    const SIZE: usize = Q8_0;
    #[inline(always)]
    unsafe fn d(b: *const u8) -> f32 {
        rd_f16(b)
    }
    #[inline(always)]
    unsafe fn q(b: *const u8) -> __m256i {
        load(b.add(2))
    }
}

struct BQ4_0;
impl Q0 for BQ4_0 {
    const SIZE: usize = Q4_0;
    #[inline(always)]
    unsafe fn d(b: *const u8) -> f32 {
        rd_f16(b)
    }
    #[inline(always)]
    unsafe fn q(b: *const u8) -> __m256i {
        _mm256_sub_epi8(bytes_from_nibbles_32(b.add(2)), _mm256_set1_epi8(8))
    }
}

struct BQ5_0;
impl Q0 for BQ5_0 {
    const SIZE: usize = Q5_0;
    #[inline(always)]
    unsafe fn d(b: *const u8) -> f32 {
        rd_f16(b)
    }
    #[inline(always)]
    unsafe fn q(b: *const u8) -> __m256i {
        let qx = bytes_from_nibbles_32(b.add(6));
        let hi = bytes_from_bits_32(rd_u32(b.add(2)));
        // where the high bit is clear, `q | 0xF0` is `q - 16` as i8
        _mm256_or_si256(qx, _mm256_andnot_si256(hi, _mm256_set1_epi8(0xF0u8 as i8)))
    }
}

/// A 32-element weight block that pairs with Q8_1 activations: scale, offset and 32 unsigned
/// values.
trait Q1 {
    const SIZE: usize;
    /// The 32 quants as unsigned bytes.
    unsafe fn q(b: *const u8) -> __m256i;
}

struct BQ4_1;
impl Q1 for BQ4_1 {
    const SIZE: usize = Q4_1;
    #[inline(always)]
    unsafe fn q(b: *const u8) -> __m256i {
        bytes_from_nibbles_32(b.add(4))
    }
}

struct BQ5_1;
impl Q1 for BQ5_1 {
    const SIZE: usize = Q5_1;
    #[inline(always)]
    unsafe fn q(b: *const u8) -> __m256i {
        let qx = bytes_from_nibbles_32(b.add(8));
        let hi = bytes_from_bits_32(rd_u32(b.add(4)));
        _mm256_or_si256(qx, _mm256_and_si256(hi, _mm256_set1_epi8(0x10)))
    }
}

/// Q4_1 or Q5_1 weights unpacked from [`crate::packed`]'s lane-order layout: `d`, `m` (f16) and
/// the 32 unsigned quants as bytes (36 bytes), which [`tile_q1`] multiplies as it does the packed
/// blocks they came from.
struct BQ1Bytes;
impl Q1 for BQ1Bytes {
    const SIZE: usize = 36;
    #[inline(always)]
    unsafe fn q(b: *const u8) -> __m256i {
        load(b.add(4))
    }
}

/// `x`, hidden from the optimizer: a splat that LLVM cannot see through, so `dx * dy` stays one
/// vector multiply instead of the scalar multiply and broadcast it rewrites a product of two
/// splats into (one instruction more per weight row and token in the innermost loop).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn opaque(mut x: __m256) -> __m256 {
    // SAFETY: an empty asm block; it only claims to change the register.
    std::arch::asm!("/* {0} */", inout(ymm_reg) x, options(pure, nomem, nostack, preserves_flags));
    x
}

/// Writes the horizontal sums of the accumulators (plus `extra`) to `out[j * ldo + i]`.
#[inline(always)]
unsafe fn store<const M: usize, const N: usize>(
    acc: &[[__m256; N]; M],
    extra: &[[f32; N]; M],
    out: *mut f32,
    ldo: usize,
) {
    for i in 0..M {
        for j in 0..N {
            *out.add(j * ldo + i) = hsum_float_8(acc[i][j]) + extra[i][j];
        }
    }
}

/// Q8_0 / Q4_0 / Q5_0 weights times Q8_0 activations.
#[inline(always)]
unsafe fn tile_q0<L: Level, B: Q0, const M: usize, const N: usize>(
    n: usize,
    w: *const u8,
    ldw: usize,
    a: *const u8,
    lda: usize,
    sc: *const f32,
    ldsc: usize,
    out: *mut f32,
    ldo: usize,
) {
    let nb = n / 32;
    let mut acc = [[_mm256_setzero_ps(); N]; M];
    for l in 0..nb {
        let mut ax = [_mm256_setzero_si256(); M];
        let mut sx = [_mm256_setzero_si256(); M];
        let mut dx = [_mm256_setzero_ps(); M];
        for i in 0..M {
            let b = w.add(i * ldw + l * B::SIZE);
            // the same block of the row `M` rows down (the next tile's): rows are short (a few
            // hundred bytes), so the hardware prefetcher has little time to pick them up
            _mm_prefetch::<_MM_HINT_T0>(b.add(M * ldw).cast());
            let q = B::q(b);
            ax[i] = _mm256_sign_epi8(q, q);
            sx[i] = q;
            dx[i] = opaque(_mm256_set1_ps(B::d(b)));
        }
        for j in 0..N {
            let y = load(a.add(j * lda + l * Q8_0 + 2));
            let dy = _mm256_broadcast_ss(&*sc.add(j * ldsc + l));
            for i in 0..M {
                let p = mul_sum_us8_pairs::<L>(ax[i], _mm256_sign_epi8(y, sx[i]));
                acc[i][j] =
                    _mm256_fmadd_ps(_mm256_mul_ps(dx[i], dy), _mm256_cvtepi32_ps(p), acc[i][j]);
            }
        }
    }
    store(&acc, &[[0f32; N]; M], out, ldo);
}

/// Q4_1 / Q5_1 weights times Q8_1 activations (`m * s` carries the offsets).
#[inline(always)]
unsafe fn tile_q1<L: Level, B: Q1, const M: usize, const N: usize>(
    n: usize,
    w: *const u8,
    ldw: usize,
    a: *const u8,
    lda: usize,
    sc: *const f32,
    ldsc: usize,
    out: *mut f32,
    ldo: usize,
) {
    let nb = n / 32;
    let mut acc = [[_mm256_setzero_ps(); N]; M];
    let mut summs = [[0f32; N]; M];
    for l in 0..nb {
        let mut qx = [_mm256_setzero_si256(); M];
        let mut dx = [_mm256_setzero_ps(); M];
        let mut mx = [0f32; M];
        for i in 0..M {
            let b = w.add(i * ldw + l * B::SIZE);
            _mm_prefetch::<_MM_HINT_T0>(b.add(M * ldw).cast());
            qx[i] = B::q(b);
            dx[i] = _mm256_set1_ps(rd_f16(b));
            mx[i] = rd_f16(b.add(2));
        }
        for j in 0..N {
            let y = load(a.add(j * lda + l * Q8_1 + 4));
            let dy = _mm256_broadcast_ss(&*sc.add(j * ldsc + l));
            let sy = *sc.add(j * ldsc + nb + l);
            for i in 0..M {
                summs[i][j] += mx[i] * sy;
                let p = mul_sum_us8_pairs::<L>(qx[i], y);
                acc[i][j] =
                    _mm256_fmadd_ps(_mm256_mul_ps(dx[i], dy), _mm256_cvtepi32_ps(p), acc[i][j]);
            }
        }
    }
    store(&acc, &summs, out, ldo);
}

/// Q4_K weights times Q8_K activations: the one-row kernel's sums, or with `TILED` llama.cpp's
/// tiled product's ([`tiled_step`]).
#[inline(always)]
unsafe fn tile_q4_k<L: Level, const M: usize, const N: usize, const TILED: bool>(
    n: usize,
    w: *const u8,
    ldw: usize,
    a: *const u8,
    lda: usize,
    _sc: *const f32,
    _ldsc: usize,
    out: *mut f32,
    ldo: usize,
) {
    let nb = n / 256;
    let m4 = _mm256_set1_epi8(0xF);
    let mut acc = [[_mm256_setzero_ps(); N]; M];
    // the mins' term in four lanes, as ggml's one-row kernel keeps it
    let mut acc_m = [[_mm_setzero_ps(); N]; M];
    let mut tacc = [[0f32; N]; M];
    for l in 0..nb {
        let mut sc = [[0u8; 8]; M];
        let mut dx = [0f32; M];
        let mut dmx = [0f32; M];
        let mut s2 = [[0i32; N]; M];
        for i in 0..M {
            let bx = w.add(i * ldw + l * Q4K);
            dx[i] = rd_f16(bx);
            dmx[i] = rd_f16(bx.add(2));
            let (scales, mins) = k4_scales_mins(&*bx.add(4).cast::<[u8; 12]>());
            sc[i] = scales;
            for j in 0..N {
                let by = a.add(j * lda + l * Q8K);
                if TILED {
                    s2[i][j] = k4_mins_dot(by.add(260), &mins);
                } else {
                    let prod = _mm_cvtepi32_ps(k4_mins_prod(by.add(260), &mins));
                    let dmin = _mm_set1_ps(-rd_f32(by) * dmx[i]);
                    acc_m[i][j] = _mm_fmadd_ps(dmin, prod, acc_m[i][j]);
                }
            }
        }
        let mut sumi = [[_mm256_setzero_si256(); N]; M];
        for k in 0..4 {
            let mut ql = [_mm256_setzero_si256(); M];
            let mut qh = [_mm256_setzero_si256(); M];
            let mut sl = [_mm256_setzero_si256(); M];
            let mut sh = [_mm256_setzero_si256(); M];
            for i in 0..M {
                let bits = load(w.add(i * ldw + l * Q4K + 16 + 32 * k));
                ql[i] = _mm256_and_si256(bits, m4);
                qh[i] = _mm256_and_si256(_mm256_srli_epi16::<4>(bits), m4);
                sl[i] = _mm256_set1_epi16(sc[i][2 * k] as i16);
                sh[i] = _mm256_set1_epi16(sc[i][2 * k + 1] as i16);
            }
            for j in 0..N {
                let q8 = a.add(j * lda + l * Q8K + 4 + 64 * k);
                let yl = load(q8);
                let yh = load(q8.add(32));
                for i in 0..M {
                    let pl = _mm256_madd_epi16(sl[i], _mm256_maddubs_epi16(ql[i], yl));
                    let ph = _mm256_madd_epi16(sh[i], _mm256_maddubs_epi16(qh[i], yh));
                    sumi[i][j] = _mm256_add_epi32(sumi[i][j], _mm256_add_epi32(pl, ph));
                }
            }
        }
        k_block_end::<M, N, TILED>(&sumi, &dx, &dmx, &s2, a, lda, l, &mut acc, &mut tacc);
    }
    if TILED {
        store_tiled(&tacc, out, ldo);
        return;
    }
    let mut extra = [[0f32; N]; M];
    for i in 0..M {
        for j in 0..N {
            extra[i][j] = hsum_float_4(acc_m[i][j]);
        }
    }
    store(&acc, &extra, out, ldo);
}

/// Q5_K weights times Q8_K activations: the one-row kernel's sums, or with `TILED` llama.cpp's
/// tiled product's ([`tiled_step`]).
#[inline(always)]
unsafe fn tile_q5_k<L: Level, const M: usize, const N: usize, const TILED: bool>(
    n: usize,
    w: *const u8,
    ldw: usize,
    a: *const u8,
    lda: usize,
    _sc: *const f32,
    _ldsc: usize,
    out: *mut f32,
    ldo: usize,
) {
    let nb = n / 256;
    let m4 = _mm256_set1_epi8(0xF);
    let m16 = _mm256_set1_epi8(16);
    let mut acc = [[_mm256_setzero_ps(); N]; M];
    let mut acc_m = [[0f32; N]; M];
    let mut tacc = [[0f32; N]; M];
    for l in 0..nb {
        let mut sc = [[0u8; 8]; M];
        let mut dx = [0f32; M];
        let mut dmx = [0f32; M];
        let mut s2 = [[0i32; N]; M];
        for i in 0..M {
            let bx = w.add(i * ldw + l * Q5K);
            dx[i] = rd_f16(bx);
            dmx[i] = rd_f16(bx.add(2));
            let (scales, mins) = k4_scales_mins(&*bx.add(4).cast::<[u8; 12]>());
            sc[i] = scales;
            for j in 0..N {
                let by = a.add(j * lda + l * Q8K);
                s2[i][j] = k4_mins_dot(by.add(260), &mins);
                if !TILED {
                    // ggml's one-row kernel: `summs += dmin * sum`, an FMA as GCC contracts it
                    acc_m[i][j] = (-rd_f32(by) * dmx[i]).mul_add(s2[i][j] as f32, acc_m[i][j]);
                }
            }
        }
        let mut sumi = [[_mm256_setzero_si256(); N]; M];
        for k in 0..4 {
            let mut q0 = [_mm256_setzero_si256(); M];
            let mut q1 = [_mm256_setzero_si256(); M];
            let mut s0 = [_mm256_setzero_si256(); M];
            let mut s1 = [_mm256_setzero_si256(); M];
            let hm0 = _mm256_set1_epi8((1u8 << (2 * k)) as i8);
            let hm1 = _mm256_set1_epi8((1u8 << (2 * k + 1)) as i8);
            for i in 0..M {
                let bx = w.add(i * ldw + l * Q5K);
                let hbits = load(bx.add(16));
                let bits = load(bx.add(48 + 32 * k));
                let h0 = _mm256_cmpeq_epi8(_mm256_and_si256(hbits, hm0), hm0);
                let h1 = _mm256_cmpeq_epi8(_mm256_and_si256(hbits, hm1), hm1);
                q0[i] = _mm256_or_si256(_mm256_and_si256(bits, m4), _mm256_and_si256(h0, m16));
                q1[i] = _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16::<4>(bits), m4),
                    _mm256_and_si256(h1, m16),
                );
                s0[i] = _mm256_set1_epi16(sc[i][2 * k] as i16);
                s1[i] = _mm256_set1_epi16(sc[i][2 * k + 1] as i16);
            }
            for j in 0..N {
                let q8 = a.add(j * lda + l * Q8K + 4 + 64 * k);
                let y0 = load(q8);
                let y1 = load(q8.add(32));
                for i in 0..M {
                    let p0 = _mm256_madd_epi16(s0[i], _mm256_maddubs_epi16(q0[i], y0));
                    let p1 = _mm256_madd_epi16(s1[i], _mm256_maddubs_epi16(q1[i], y1));
                    sumi[i][j] = _mm256_add_epi32(sumi[i][j], _mm256_add_epi32(p0, p1));
                }
            }
        }
        k_block_end::<M, N, TILED>(&sumi, &dx, &dmx, &s2, a, lda, l, &mut acc, &mut tacc);
    }
    if TILED {
        store_tiled(&tacc, out, ldo);
        return;
    }
    store(&acc, &acc_m, out, ldo);
}

/// Q6_K weights times Q8_K activations. The `-32` offset of the quants is subtracted per block
/// from the lanes ggml's one-row kernel takes it from (`32 * bsums * scales`).
/// With `TILED`, llama.cpp's tiled product's sums instead ([`tiled_step`]).
#[inline(always)]
unsafe fn tile_q6_k<L: Level, const M: usize, const N: usize, const TILED: bool>(
    n: usize,
    w: *const u8,
    ldw: usize,
    a: *const u8,
    lda: usize,
    _sc: *const f32,
    _ldsc: usize,
    out: *mut f32,
    ldo: usize,
) {
    let nb = n / 256;
    let m4 = _mm256_set1_epi8(0xF);
    let m2 = _mm256_set1_epi8(3);
    let mut acc = [[_mm256_setzero_ps(); N]; M];
    let mut tacc = [[0f32; N]; M];
    for l in 0..nb {
        let mut sumi = [[_mm256_setzero_si256(); N]; M];
        // 8 groups of 32 quants: group g of half h uses ql[h*64 + (g&1)*32], shift (g>>1)*4,
        // qh[h*32] >> 2g, scales 8h + 2g and 8h + 2g + 1
        for h in 0..2 {
            for g in 0..4 {
                let mut q = [_mm256_setzero_si256(); M];
                let mut s = [_mm256_setzero_si256(); M];
                for i in 0..M {
                    let bx = w.add(i * ldw + l * Q6K);
                    let ql = load(bx.add(64 * h + 32 * (g & 1)));
                    let ql = if g >= 2 {
                        _mm256_and_si256(_mm256_srli_epi16::<4>(ql), m4)
                    } else {
                        _mm256_and_si256(ql, m4)
                    };
                    let qhb = load(bx.add(128 + 32 * h));
                    let qh = match g {
                        0 => qhb,
                        1 => _mm256_srli_epi16::<2>(qhb),
                        2 => _mm256_srli_epi16::<4>(qhb),
                        _ => _mm256_srli_epi16::<6>(qhb),
                    };
                    let qh = _mm256_slli_epi16::<4>(_mm256_and_si256(qh, m2));
                    q[i] = _mm256_or_si256(ql, qh);
                    s[i] = super::scale_pair(bx.add(192), 8 * h + 2 * g);
                }
                for j in 0..N {
                    let y = load(a.add(j * lda + l * Q8K + 4 + 128 * h + 32 * g));
                    for i in 0..M {
                        let p = _mm256_maddubs_epi16(q[i], y);
                        sumi[i][j] = _mm256_add_epi32(sumi[i][j], _mm256_madd_epi16(s[i], p));
                    }
                }
            }
        }
        for i in 0..M {
            let d = rd_f16(w.add(i * ldw + l * Q6K + 208));
            for j in 0..N {
                let yd = rd_f32(a.add(j * lda + l * Q8K));
                let off = q6_k_offset(
                    a.add(j * lda + l * Q8K + 260),
                    w.add(i * ldw + l * Q6K + 192),
                );
                sumi[i][j] = _mm256_sub_epi32(sumi[i][j], off);
                if TILED {
                    tacc[i][j] = tiled_step(tacc[i][j], d, hsum_i32(sumi[i][j]), None, yd);
                } else {
                    acc[i][j] = _mm256_fmadd_ps(
                        _mm256_set1_ps(d * yd),
                        _mm256_cvtepi32_ps(sumi[i][j]),
                        acc[i][j],
                    );
                }
            }
        }
    }
    if TILED {
        store_tiled(&tacc, out, ldo);
        return;
    }
    store(&acc, &[[0f32; N]; M], out, ldo);
}

/// A tile kernel body ([`TileFn`]'s arguments), compiled per level by [`tile_for`].
trait Tile {
    /// # Safety
    /// As [`TileFn`], on a CPU that runs level `L`.
    unsafe fn tile<L: Level>(
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
}

entry_points!(
    Tile::tile,
    tile_for,
    TileFn,
    fn(
        n: usize,
        w: *const u8,
        ldw: usize,
        a: *const u8,
        lda: usize,
        sc: *const f32,
        ldsc: usize,
        out: *mut f32,
        ldo: usize,
    )
);

/// [`tile_q0`] with block `B` as a [`Tile`].
struct TQ0<B, const M: usize, const N: usize>(PhantomData<B>);
/// [`tile_q1`] with block `B` as a [`Tile`].
struct TQ1<B, const M: usize, const N: usize>(PhantomData<B>);
/// [`tile_q4_k`] as a [`Tile`].
struct TQ4K<const M: usize, const N: usize, const TILED: bool>;
/// [`tile_q5_k`] as a [`Tile`].
struct TQ5K<const M: usize, const N: usize, const TILED: bool>;
/// [`tile_q6_k`] as a [`Tile`].
struct TQ6K<const M: usize, const N: usize, const TILED: bool>;

/// Implements [`Tile`] for `$ty` (generics `$g`) by calling `$f::<L, $args>`.
macro_rules! tile_body {
    ($ty:ty, [$($g:tt)*], $f:ident, [$($args:tt)*]) => {
        impl<$($g)*> Tile for $ty {
            #[inline(always)]
            unsafe fn tile<L: Level>(
                n: usize,
                w: *const u8,
                ldw: usize,
                a: *const u8,
                lda: usize,
                sc: *const f32,
                ldsc: usize,
                out: *mut f32,
                ldo: usize,
            ) {
                $f::<L, $($args)*>(n, w, ldw, a, lda, sc, ldsc, out, ldo)
            }
        }
    };
}

tile_body!(TQ0<B, M, N>, [B: Q0, const M: usize, const N: usize], tile_q0, [B, M, N]);
tile_body!(TQ1<B, M, N>, [B: Q1, const M: usize, const N: usize], tile_q1, [B, M, N]);
tile_body!(TQ4K<M, N, T>, [const M: usize, const N: usize, const T: bool], tile_q4_k, [M, N, T]);
tile_body!(TQ5K<M, N, T>, [const M: usize, const N: usize, const T: bool], tile_q5_k, [M, N, T]);
tile_body!(TQ6K<M, N, T>, [const M: usize, const N: usize, const T: bool], tile_q6_k, [M, N, T]);

/// Picks the entry point of a generic tile body for a run-time `(m, n)` and level.
macro_rules! pick {
    ($isa:expr, $m:expr, $n:expr, $k:ident [$($pre:tt)*] [$($post:tt)*]) => {
        match ($m, $n) {
            (1, 1) => tile_for::<$k<$($pre)* 1, 1 $($post)*>>($isa),
            (1, 2) => tile_for::<$k<$($pre)* 1, 2 $($post)*>>($isa),
            (1, 3) => tile_for::<$k<$($pre)* 1, 3 $($post)*>>($isa),
            (1, 4) => tile_for::<$k<$($pre)* 1, 4 $($post)*>>($isa),
            (2, 1) => tile_for::<$k<$($pre)* 2, 1 $($post)*>>($isa),
            (2, 2) => tile_for::<$k<$($pre)* 2, 2 $($post)*>>($isa),
            (2, 3) => tile_for::<$k<$($pre)* 2, 3 $($post)*>>($isa),
            (2, 4) => tile_for::<$k<$($pre)* 2, 4 $($post)*>>($isa),
            (3, 1) => tile_for::<$k<$($pre)* 3, 1 $($post)*>>($isa),
            (3, 2) => tile_for::<$k<$($pre)* 3, 2 $($post)*>>($isa),
            (3, 3) => tile_for::<$k<$($pre)* 3, 3 $($post)*>>($isa),
            (3, 4) => tile_for::<$k<$($pre)* 3, 4 $($post)*>>($isa),
            (4, 1) => tile_for::<$k<$($pre)* 4, 1 $($post)*>>($isa),
            (4, 2) => tile_for::<$k<$($pre)* 4, 2 $($post)*>>($isa),
            (4, 3) => tile_for::<$k<$($pre)* 4, 3 $($post)*>>($isa),
            (4, 4) => tile_for::<$k<$($pre)* 4, 4 $($post)*>>($isa),
            _ => return None,
        }
    };
}

/// The tile kernel on `isa` for `m` x `n` tiles of Q4_1/Q5_1 rows unpacked to 36-byte blocks
/// (`d`, `m`, 32 unsigned quants; [`crate::packed`]'s batches), against Q8_1 activations.
pub fn tile_kernel_q1_bytes(isa: Isa, m: usize, n: usize) -> Option<TileFn> {
    Some(pick!(isa, m, n, TQ1[BQ1Bytes,][]))
}

/// The tile kernel on `isa` (`Avx2`, `Avx512` or `Avx512Vnni`) for weights `ty` computing `m`
/// rows x `n` activation rows (`1 <= m <= MAX_M`, `1 <= n <= MAX_N`), if there is one; for
/// Q4_K/Q5_K/Q6_K with `tiled`, the one that sums as llama.cpp's tiled K-quant product.
pub fn tile_kernel(isa: Isa, ty: GgmlType, m: usize, n: usize, tiled: bool) -> Option<TileFn> {
    if tiled {
        return Some(match ty {
            GgmlType::Q4_K => pick!(isa, m, n, TQ4K[][, true]),
            GgmlType::Q5_K => pick!(isa, m, n, TQ5K[][, true]),
            GgmlType::Q6_K => pick!(isa, m, n, TQ6K[][, true]),
            _ => return None,
        });
    }
    Some(match ty {
        GgmlType::Q8_0 => pick!(isa, m, n, TQ0[BQ8_0,][]),
        GgmlType::Q4_0 => pick!(isa, m, n, TQ0[BQ4_0,][]),
        GgmlType::Q5_0 => pick!(isa, m, n, TQ0[BQ5_0,][]),
        GgmlType::Q4_1 => pick!(isa, m, n, TQ1[BQ4_1,][]),
        GgmlType::Q5_1 => pick!(isa, m, n, TQ1[BQ5_1,][]),
        GgmlType::Q4_K => pick!(isa, m, n, TQ4K[][, false]),
        GgmlType::Q5_K => pick!(isa, m, n, TQ5K[][, false]),
        GgmlType::Q6_K => pick!(isa, m, n, TQ6K[][, false]),
        _ => return None,
    })
}
