//! AVX2 versions of the 32-element quantizers (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0), chosen at run
//! time when the CPU has AVX2 (`is_x86_feature_detected!`).
//!
//! Every one computes exactly what the scalar reference in `legacy.rs` computes, byte for byte:
//! the per-element float operations are the same IEEE operations in the same order (`x * id`,
//! then `+ 8.5`, then a truncating conversion that gives `INT_MIN` out of range, as
//! `cvttss2si` does), only eight lanes at a time. The one reduction whose result can depend on
//! the order of the elements is the min/max search: with a NaN in the block, or (for the
//! `min`/`max` of Q4_1/Q5_1) a signed zero or an infinity at the result, the block is handed to
//! the scalar code instead. Ordinary weights never take that path.
//!
//! Tests (`tests.rs`, `simd_matches_scalar_*`) compare both versions byte for byte on random
//! data with ties, zeros, subnormals, huge values, infinities and NaNs.

use std::arch::x86_64::*;

use crate::blocks::*;
use crate::fp::fp32_to_fp16;

/// True when the AVX2 kernels may run (the answer is cached by std).
#[inline]
pub(crate) fn has_avx2() -> bool {
    is_x86_feature_detected!("avx2")
}

/// The 32 floats of one block.
#[target_feature(enable = "avx2")]
#[inline]
fn load32(x: &[f32; 32]) -> [__m256; 4] {
    let p = x.as_ptr();
    // SAFETY: `x` holds 32 floats; unaligned loads.
    unsafe {
        [
            _mm256_loadu_ps(p),
            _mm256_loadu_ps(p.add(8)),
            _mm256_loadu_ps(p.add(16)),
            _mm256_loadu_ps(p.add(24)),
        ]
    }
}

#[target_feature(enable = "avx2")]
#[inline]
fn abs(v: __m256) -> __m256 {
    _mm256_and_ps(v, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff)))
}

/// True if any of the 32 floats is a NaN.
#[target_feature(enable = "avx2")]
#[inline]
fn any_nan(v: &[__m256; 4]) -> bool {
    let u01 = _mm256_or_ps(
        _mm256_cmp_ps::<_CMP_UNORD_Q>(v[0], v[0]),
        _mm256_cmp_ps::<_CMP_UNORD_Q>(v[1], v[1]),
    );
    let u23 = _mm256_or_ps(
        _mm256_cmp_ps::<_CMP_UNORD_Q>(v[2], v[2]),
        _mm256_cmp_ps::<_CMP_UNORD_Q>(v[3], v[3]),
    );
    _mm256_movemask_ps(_mm256_or_ps(u01, u23)) != 0
}

/// Largest lane (no NaNs: then the order of the comparisons does not matter).
#[target_feature(enable = "avx2")]
#[inline]
fn hmax(v: __m256) -> f32 {
    let m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    let m = _mm_max_ss(m, _mm_movehdup_ps(m));
    _mm_cvtss_f32(m)
}

/// Smallest lane (no NaNs).
#[target_feature(enable = "avx2")]
#[inline]
fn hmin(v: __m256) -> f32 {
    let m = _mm_min_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let m = _mm_min_ps(m, _mm_movehl_ps(m, m));
    let m = _mm_min_ss(m, _mm_movehdup_ps(m));
    _mm_cvtss_f32(m)
}

/// `c_f32_to_i32` on eight lanes: `cvttps2dq` already gives `INT_MIN` for NaN and out-of-range
/// values, exactly as the scalar `cvttss2si` does.
#[target_feature(enable = "avx2")]
#[inline]
fn cvtt(v: __m256) -> __m256i {
    _mm256_cvttps_epi32(v)
}

/// `c_roundf_to_i32` on eight lanes, with the scalar version's operations: truncate, take the
/// fraction `x - trunc(x)`, step away from zero on `frac >= 0.5` / `frac <= -0.5`, `INT_MIN`
/// outside (-2^31, 2^31) and for NaN.
#[target_feature(enable = "avx2")]
#[inline]
fn roundf(x: __m256) -> __m256i {
    let t = _mm256_cvttps_epi32(x);
    let frac = _mm256_sub_ps(x, _mm256_cvtepi32_ps(t));
    let up = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_GE_OQ>(frac, _mm256_set1_ps(0.5)));
    let down = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_LE_OQ>(frac, _mm256_set1_ps(-0.5)));
    // masks are -1 where true: t + 1 = t - up, t - 1 = t + down
    let r = _mm256_add_epi32(_mm256_sub_epi32(t, up), down);
    let in_range = _mm256_and_ps(
        _mm256_cmp_ps::<_CMP_GT_OQ>(x, _mm256_set1_ps(-2_147_483_648.0)),
        _mm256_cmp_ps::<_CMP_LT_OQ>(x, _mm256_set1_ps(2_147_483_648.0)),
    );
    _mm256_blendv_epi8(
        _mm256_set1_epi32(i32::MIN),
        r,
        _mm256_castps_si256(in_range),
    )
}

/// `(i32 as i8) as i32`: keep the low byte, sign-extended (what a C `(int8_t)` cast does).
#[target_feature(enable = "avx2")]
#[inline]
fn low_i8(v: __m256i) -> __m256i {
    _mm256_srai_epi32::<24>(_mm256_slli_epi32::<24>(v))
}

/// Four vectors of i32 lanes, each in -128..=127, as 32 i8 in element order.
#[target_feature(enable = "avx2")]
#[inline]
fn pack_i8(q: [__m256i; 4]) -> __m256i {
    let ab = _mm256_packs_epi32(q[0], q[1]);
    let cd = _mm256_packs_epi32(q[2], q[3]);
    let v = _mm256_packs_epi16(ab, cd);
    // packs work per 128-bit half: dwords come out as a0 b0 c0 d0 a1 b1 c1 d1
    _mm256_permutevar8x32_epi32(v, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
}

/// Four vectors of i32 lanes, each in 0..=255, as 32 u8 in element order.
#[target_feature(enable = "avx2")]
#[inline]
fn pack_u8(q: [__m256i; 4]) -> __m256i {
    let ab = _mm256_packus_epi32(q[0], q[1]);
    let cd = _mm256_packus_epi32(q[2], q[3]);
    let v = _mm256_packus_epi16(ab, cd);
    _mm256_permutevar8x32_epi32(v, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
}

/// `q[j] | (q[16 + j] << 4)` (u8 arithmetic: bits shifted out are lost), for j in 0..16.
#[target_feature(enable = "avx2")]
#[inline]
fn nibbles(q: __m256i, lo_mask: i8) -> [u8; 16] {
    let lo = _mm256_castsi256_si128(q);
    let hi = _mm256_extracti128_si256::<1>(q);
    let lo = _mm_and_si128(lo, _mm_set1_epi8(lo_mask));
    let hi = _mm_and_si128(_mm_slli_epi16::<4>(hi), _mm_set1_epi8(0xf0u8 as i8));
    let mut out = [0u8; 16];
    // SAFETY: 16 bytes into a 16-byte array.
    unsafe { _mm_storeu_si128(out.as_mut_ptr().cast(), _mm_or_si128(lo, hi)) };
    out
}

/// Bit 4 of each of the 32 bytes, element j at bit j (the Q5 `qh` word, little-endian).
#[target_feature(enable = "avx2")]
#[inline]
fn bit4(q: __m256i) -> [u8; 4] {
    // a 16-bit shift by 3 moves bit 4 of every byte to bit 7 of the same byte
    (_mm256_movemask_epi8(_mm256_slli_epi16::<3>(q)) as u32).to_le_bytes()
}

/// `signed_absmax` of the scalar code: the value with the largest `|x|`, first one on ties,
/// `+0.0` for an all-zero block. `None` if the block holds a NaN.
#[target_feature(enable = "avx2")]
#[inline]
fn signed_absmax(x: &[f32; 32], v: &[__m256; 4]) -> Option<f32> {
    if any_nan(v) {
        return None;
    }
    let a = [abs(v[0]), abs(v[1]), abs(v[2]), abs(v[3])];
    let amax = hmax(_mm256_max_ps(
        _mm256_max_ps(a[0], a[1]),
        _mm256_max_ps(a[2], a[3]),
    ));
    if amax == 0.0 {
        return Some(0.0);
    }
    let m = _mm256_set1_ps(amax);
    let mut bits = 0u32;
    for (k, &ak) in a.iter().enumerate() {
        bits |= (_mm256_movemask_ps(_mm256_cmp_ps::<_CMP_EQ_OQ>(ak, m)) as u32) << (8 * k);
    }
    Some(x[bits.trailing_zeros() as usize])
}

/// `min_max` of the scalar code, when its result cannot depend on the order: no NaN in the
/// block and neither result a zero (whose sign depends on which zero came first) nor infinite
/// (the scalar search starts from ±`f32::MAX`).
#[target_feature(enable = "avx2")]
#[inline]
fn min_max(v: &[__m256; 4]) -> Option<(f32, f32)> {
    if any_nan(v) {
        return None;
    }
    let min = hmin(_mm256_min_ps(
        _mm256_min_ps(v[0], v[1]),
        _mm256_min_ps(v[2], v[3]),
    ));
    let max = hmax(_mm256_max_ps(
        _mm256_max_ps(v[0], v[1]),
        _mm256_max_ps(v[2], v[3]),
    ));
    if min == 0.0 || max == 0.0 || min.is_infinite() || max.is_infinite() {
        return None;
    }
    Some((min, max))
}

#[inline(always)]
fn inv(d: f32) -> f32 {
    if d != 0.0 {
        1.0 / d
    } else {
        0.0
    }
}

#[inline(always)]
fn block(x: &[f32]) -> &[f32; 32] {
    x.try_into().expect("32 floats")
}

/// Q8_0: `d = amax / 127`, `q = roundf(x * id)`.
#[target_feature(enable = "avx2")]
pub(crate) fn quantize_q8_0(src: &[f32], dst: &mut [BlockQ8_0]) {
    for (x, y) in src.chunks_exact(QK8_0).zip(dst) {
        let x = block(x);
        let v = load32(x);
        if any_nan(&v) {
            crate::legacy::quantize_row_q8_0_ref(x, std::slice::from_mut(y));
            continue;
        }
        let amax = hmax(_mm256_max_ps(
            _mm256_max_ps(abs(v[0]), abs(v[1])),
            _mm256_max_ps(abs(v[2]), abs(v[3])),
        ));
        let d = amax / 127.0;
        let id = _mm256_set1_ps(inv(d));
        y.d = fp32_to_fp16(d);
        let q = v.map(|vk| low_i8(roundf(_mm256_mul_ps(vk, id))));
        // SAFETY: 32 bytes into the 32-byte `qs`.
        unsafe { _mm256_storeu_si256(y.qs.as_mut_ptr().cast(), pack_i8(q)) };
    }
}

/// Q4_0 (`nmax = 8`) and Q5_0 (`nmax = 16`): `d = max / -nmax`,
/// `q = MIN(nmax*2 - 1, (int8_t)(x * id + nmax + 0.5))`, returned as 32 bytes in element order.
/// `None` when the block must go to the scalar code.
#[target_feature(enable = "avx2")]
#[inline]
fn quants_x_0(x: &[f32; 32], nmax: f32, d_out: &mut f32) -> Option<__m256i> {
    let v = load32(x);
    let max = signed_absmax(x, &v)?;
    let d = max / -nmax;
    let id = _mm256_set1_ps(inv(d));
    *d_out = d;
    let bias = _mm256_set1_ps(nmax + 0.5);
    let top = _mm256_set1_epi32(2 * nmax as i32 - 1);
    let q = v.map(|vk| {
        let t = low_i8(cvtt(_mm256_add_ps(_mm256_mul_ps(vk, id), bias)));
        // `.min(top) as u8`: the signed minimum, then the low byte
        _mm256_and_si256(_mm256_min_epi32(t, top), _mm256_set1_epi32(0xff))
    });
    Some(pack_u8(q))
}

#[target_feature(enable = "avx2")]
pub(crate) fn quantize_q4_0(src: &[f32], dst: &mut [BlockQ4_0]) {
    for (x, y) in src.chunks_exact(QK4_0).zip(dst) {
        let x = block(x);
        let mut d = 0.0;
        match quants_x_0(x, 8.0, &mut d) {
            Some(q) => {
                y.d = fp32_to_fp16(d);
                y.qs = nibbles(q, -1);
            }
            None => crate::legacy::quantize_row_q4_0_ref(x, std::slice::from_mut(y)),
        }
    }
}

#[target_feature(enable = "avx2")]
pub(crate) fn quantize_q5_0(src: &[f32], dst: &mut [BlockQ5_0]) {
    for (x, y) in src.chunks_exact(QK5_0).zip(dst) {
        let x = block(x);
        let mut d = 0.0;
        match quants_x_0(x, 16.0, &mut d) {
            Some(q) => {
                y.d = fp32_to_fp16(d);
                y.qh = bit4(q);
                y.qs = nibbles(q, 0x0f);
            }
            None => crate::legacy::quantize_row_q5_0_ref(x, std::slice::from_mut(y)),
        }
    }
}

/// Q4_1 (`nmax = 15`, clamped) and Q5_1 (`nmax = 31`, not clamped, as in ggml):
/// `d = (max - min) / nmax`, `q = (x - min) * id + 0.5` truncated.
#[target_feature(enable = "avx2")]
#[inline]
fn quants_x_1(x: &[f32; 32], nmax: f32, clamp: bool, dm: &mut (f32, f32)) -> Option<__m256i> {
    let v = load32(x);
    let (min, max) = min_max(&v)?;
    let d = (max - min) / nmax;
    let id = _mm256_set1_ps(inv(d));
    *dm = (d, min);
    let minv = _mm256_set1_ps(min);
    let half = _mm256_set1_ps(0.5);
    let q = v.map(|vk| {
        let t = cvtt(_mm256_add_ps(
            _mm256_mul_ps(_mm256_sub_ps(vk, minv), id),
            half,
        ));
        let t = if clamp {
            _mm256_min_epi32(low_i8(t), _mm256_set1_epi32(nmax as i32))
        } else {
            t
        };
        _mm256_and_si256(t, _mm256_set1_epi32(0xff))
    });
    Some(pack_u8(q))
}

#[target_feature(enable = "avx2")]
pub(crate) fn quantize_q4_1(src: &[f32], dst: &mut [BlockQ4_1]) {
    for (x, y) in src.chunks_exact(QK4_1).zip(dst) {
        let x = block(x);
        let mut dm = (0.0, 0.0);
        match quants_x_1(x, 15.0, true, &mut dm) {
            Some(q) => {
                y.d = fp32_to_fp16(dm.0);
                y.m = fp32_to_fp16(dm.1);
                y.qs = nibbles(q, -1);
            }
            None => crate::legacy::quantize_row_q4_1_ref(x, std::slice::from_mut(y)),
        }
    }
}

#[target_feature(enable = "avx2")]
pub(crate) fn quantize_q5_1(src: &[f32], dst: &mut [BlockQ5_1]) {
    for (x, y) in src.chunks_exact(QK5_1).zip(dst) {
        let x = block(x);
        let mut dm = (0.0, 0.0);
        match quants_x_1(x, 31.0, false, &mut dm) {
            Some(q) => {
                y.d = fp32_to_fp16(dm.0);
                y.m = fp32_to_fp16(dm.1);
                y.qh = bit4(q);
                y.qs = nibbles(q, 0x0f);
            }
            None => crate::legacy::quantize_row_q5_1_ref(x, std::slice::from_mut(y)),
        }
    }
}

/// F16 -> f32 for a whole row with F16C, eight at a time, and whether every value is finite
/// (the conversion is exact, so this is `half`'s result; the check rides along for free).
#[target_feature(enable = "avx2,f16c")]
pub(crate) fn f16_to_f32_finite(src: &[half::f16], dst: &mut [f32]) -> bool {
    let n = src.len().min(dst.len());
    let inf = _mm256_set1_ps(f32::INFINITY);
    let mut ok = _mm256_castsi256_ps(_mm256_set1_epi32(-1));
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: i + 8 <= n elements on both sides; unaligned loads and stores.
        let v = unsafe {
            let h = _mm_loadu_si128(src.as_ptr().add(i).cast());
            _mm256_cvtph_ps(h)
        };
        ok = _mm256_and_ps(ok, _mm256_cmp_ps::<_CMP_LT_OQ>(abs(v), inf));
        // SAFETY: as above.
        unsafe { _mm256_storeu_ps(dst.as_mut_ptr().add(i), v) };
        i += 8;
    }
    let mut all = _mm256_movemask_ps(ok) == 0xff;
    for (d, s) in dst[i..n].iter_mut().zip(&src[i..n]) {
        *d = s.to_f32();
        all &= d.is_finite();
    }
    all
}
