//! The 32-element formats: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1 (`quantize_row_*_ref` and
//! `dequantize_row_*` of `ggml-quants.c`).

// Index loops are kept so the code reads line by line against ggml-quants.c.
#![allow(clippy::needless_range_loop, clippy::too_many_arguments)]

use crate::blocks::*;
use crate::fp::{fp16_to_fp32, fp32_to_fp16};
use slmpack_gguf::GgmlType;

/// C's float-to-integer conversion as x86-64 performs it (`cvttss2si`): truncation toward zero,
/// and `INT_MIN` for NaN and out-of-range values (where C leaves the result undefined, ggml's
/// builds get this value). Narrowing to 8 bits then wraps, as `(int8_t)`/`(uint8_t)` casts do.
#[inline(always)]
pub(crate) fn c_f32_to_i32(x: f32) -> i32 {
    let t = x as i32;
    if x > -2_147_483_648.0 && x < 2_147_483_648.0 {
        t
    } else {
        i32::MIN
    }
}

/// `fabsf`-maximum and the signed value at it, first occurrence wins (ggml's loop updates on
/// `amax < fabsf(v)`, so NaNs are skipped and an all-zero block keeps `max = +0.0`). Written as
/// a max reduction and a search so that it vectorizes; the result is the same value.
#[inline(always)]
fn signed_absmax(x: &[f32]) -> f32 {
    let mut amax = 0.0f32;
    for &v in x {
        let a = v.abs();
        amax = if amax < a { a } else { amax };
    }
    if amax == 0.0 {
        return 0.0;
    }
    for &v in x {
        if v.abs() == amax {
            return v;
        }
    }
    0.0
}

/// `(int8_t)roundf(x)` as ggml computes it on x86-64: round half away from zero, then the
/// `cvttss2si` conversion (NaN and out-of-range values give `INT_MIN`). Done with integer
/// arithmetic instead of a `roundf` call so that the Q8 loops vectorize.
#[inline(always)]
fn c_roundf_to_i32(x: f32) -> i32 {
    let t = x as i32; // truncation; exact for |x| < 2^31
    let frac = x - t as f32; // exact: t as f32 is x's integer part (or x itself past 2^24)
    let r = t
        .wrapping_add((frac >= 0.5) as i32)
        .wrapping_sub((frac <= -0.5) as i32);
    if x > -2_147_483_648.0 && x < 2_147_483_648.0 {
        r
    } else {
        i32::MIN
    }
}

#[inline(always)]
fn min_max(x: &[f32]) -> (f32, f32) {
    let mut min = f32::MAX;
    let mut max = -f32::MAX;
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    (min, max)
}

#[inline(always)]
fn inv(d: f32) -> f32 {
    if d != 0.0 {
        1.0 / d
    } else {
        0.0
    }
}

/// Q5_0/Q5_1 packing: low nibbles of elements j and j+16 share `qs[j]`; bit 4 of element j
/// goes to bit j of the little-endian `qh` word (ggml builds it with `qh |= ... << j`).
#[inline(always)]
fn pack_q5(q: &[u8; 32], qs: &mut [u8; 16], qh: &mut [u8; 4]) {
    // bit 4 of 8 bytes at a time: isolate it in each byte's bit 0, then one multiply gathers
    // the 8 bits into the top byte (byte k -> bit k)
    for (k, out) in qh.iter_mut().enumerate() {
        let w = u64::from_le_bytes(q[8 * k..8 * k + 8].try_into().expect("8 bytes"));
        let m = (w >> 4) & 0x0101_0101_0101_0101;
        *out = (m.wrapping_mul(0x0102_0408_1020_4080) >> 56) as u8;
    }
    for j in 0..16 {
        qs[j] = (q[j] & 0x0f) | ((q[16 + j] & 0x0f) << 4);
    }
}

/// `quantize_row_q4_0_ref` (the scalar reference; `x86.rs` has the AVX2 version).
pub(crate) fn quantize_row_q4_0_ref(src: &[f32], dst: &mut [BlockQ4_0]) {
    const QK: usize = QK4_0;
    for (x, y) in src.chunks_exact(QK).zip(dst) {
        let max = signed_absmax(x);
        let d = max / -8.0;
        let id = inv(d);
        y.d = fp32_to_fp16(d);
        let mut q = [0u8; QK];
        for (qj, &v) in q.iter_mut().zip(x) {
            *qj = (c_f32_to_i32(v * id + 8.5) as i8).min(15) as u8;
        }
        for j in 0..QK / 2 {
            y.qs[j] = q[j] | (q[QK / 2 + j] << 4);
        }
    }
}

impl BlockFormat for BlockQ4_0 {
    const BLCK: usize = QK4_0;
    const TYPE: GgmlType = GgmlType::Q4_0;

    fn quantize_row(src: &[f32], dst: &mut [Self]) {
        #[cfg(target_arch = "x86_64")]
        if crate::x86::has_avx2() {
            // SAFETY: the CPU has AVX2 (checked at run time).
            return unsafe { crate::x86::quantize_q4_0(src, dst) };
        }
        quantize_row_q4_0_ref(src, dst)
    }

    fn dequantize_row(src: &[Self], dst: &mut [f32]) {
        const QK: usize = QK4_0;
        for (x, y) in src.iter().zip(dst.chunks_exact_mut(QK)) {
            let d = fp16_to_fp32(x.d);
            for j in 0..QK / 2 {
                let x0 = (x.qs[j] & 0x0f) as i32 - 8;
                let x1 = (x.qs[j] >> 4) as i32 - 8;
                y[j] = x0 as f32 * d;
                y[j + QK / 2] = x1 as f32 * d;
            }
        }
    }
}

/// `quantize_row_q4_1_ref` (the scalar reference; `x86.rs` has the AVX2 version).
pub(crate) fn quantize_row_q4_1_ref(src: &[f32], dst: &mut [BlockQ4_1]) {
    const QK: usize = QK4_1;
    for (x, y) in src.chunks_exact(QK).zip(dst) {
        let (min, max) = min_max(x);
        let d = (max - min) / 15.0;
        let id = inv(d);
        y.d = fp32_to_fp16(d);
        y.m = fp32_to_fp16(min);
        let mut q = [0u8; QK];
        for (qj, &v) in q.iter_mut().zip(x) {
            *qj = (c_f32_to_i32((v - min) * id + 0.5) as i8).min(15) as u8;
        }
        for j in 0..QK / 2 {
            y.qs[j] = q[j] | (q[QK / 2 + j] << 4);
        }
    }
}

impl BlockFormat for BlockQ4_1 {
    const BLCK: usize = QK4_1;
    const TYPE: GgmlType = GgmlType::Q4_1;

    fn quantize_row(src: &[f32], dst: &mut [Self]) {
        #[cfg(target_arch = "x86_64")]
        if crate::x86::has_avx2() {
            // SAFETY: the CPU has AVX2 (checked at run time).
            return unsafe { crate::x86::quantize_q4_1(src, dst) };
        }
        quantize_row_q4_1_ref(src, dst)
    }

    fn dequantize_row(src: &[Self], dst: &mut [f32]) {
        const QK: usize = QK4_1;
        for (x, y) in src.iter().zip(dst.chunks_exact_mut(QK)) {
            let d = fp16_to_fp32(x.d);
            let m = fp16_to_fp32(x.m);
            for j in 0..QK / 2 {
                let x0 = (x.qs[j] & 0x0f) as i32;
                let x1 = (x.qs[j] >> 4) as i32;
                y[j] = x0 as f32 * d + m;
                y[j + QK / 2] = x1 as f32 * d + m;
            }
        }
    }
}

/// `quantize_row_q5_0_ref` (the scalar reference; `x86.rs` has the AVX2 version).
pub(crate) fn quantize_row_q5_0_ref(src: &[f32], dst: &mut [BlockQ5_0]) {
    const QK: usize = QK5_0;
    for (x, y) in src.chunks_exact(QK).zip(dst) {
        let max = signed_absmax(x);
        let d = max / -16.0;
        let id = inv(d);
        y.d = fp32_to_fp16(d);
        let mut q = [0u8; QK];
        for (qj, &v) in q.iter_mut().zip(x) {
            *qj = (c_f32_to_i32(v * id + 16.5) as i8).min(31) as u8;
        }
        pack_q5(&q, &mut y.qs, &mut y.qh);
    }
}

impl BlockFormat for BlockQ5_0 {
    const BLCK: usize = QK5_0;
    const TYPE: GgmlType = GgmlType::Q5_0;

    fn quantize_row(src: &[f32], dst: &mut [Self]) {
        #[cfg(target_arch = "x86_64")]
        if crate::x86::has_avx2() {
            // SAFETY: the CPU has AVX2 (checked at run time).
            return unsafe { crate::x86::quantize_q5_0(src, dst) };
        }
        quantize_row_q5_0_ref(src, dst)
    }

    fn dequantize_row(src: &[Self], dst: &mut [f32]) {
        const QK: usize = QK5_0;
        for (x, y) in src.iter().zip(dst.chunks_exact_mut(QK)) {
            let d = fp16_to_fp32(x.d);
            let qh = u32::from_le_bytes(x.qh);
            for j in 0..QK / 2 {
                let xh_0 = (((qh >> j) << 4) & 0x10) as u8;
                let xh_1 = ((qh >> (j + 12)) & 0x10) as u8;
                let x0 = ((x.qs[j] & 0x0f) | xh_0) as i32 - 16;
                let x1 = ((x.qs[j] >> 4) | xh_1) as i32 - 16;
                y[j] = x0 as f32 * d;
                y[j + QK / 2] = x1 as f32 * d;
            }
        }
    }
}

/// `quantize_row_q5_1_ref` (the scalar reference; `x86.rs` has the AVX2 version).
pub(crate) fn quantize_row_q5_1_ref(src: &[f32], dst: &mut [BlockQ5_1]) {
    const QK: usize = QK5_1;
    for (x, y) in src.chunks_exact(QK).zip(dst) {
        let (min, max) = min_max(x);
        let d = (max - min) / 31.0;
        let id = inv(d);
        y.d = fp32_to_fp16(d);
        y.m = fp32_to_fp16(min);
        let mut q = [0u8; QK];
        for (qj, &v) in q.iter_mut().zip(x) {
            // no MIN(31, ..) here in ggml either
            *qj = c_f32_to_i32((v - min) * id + 0.5) as u8;
        }
        pack_q5(&q, &mut y.qs, &mut y.qh);
    }
}

impl BlockFormat for BlockQ5_1 {
    const BLCK: usize = QK5_1;
    const TYPE: GgmlType = GgmlType::Q5_1;

    fn quantize_row(src: &[f32], dst: &mut [Self]) {
        #[cfg(target_arch = "x86_64")]
        if crate::x86::has_avx2() {
            // SAFETY: the CPU has AVX2 (checked at run time).
            return unsafe { crate::x86::quantize_q5_1(src, dst) };
        }
        quantize_row_q5_1_ref(src, dst)
    }

    fn dequantize_row(src: &[Self], dst: &mut [f32]) {
        const QK: usize = QK5_1;
        for (x, y) in src.iter().zip(dst.chunks_exact_mut(QK)) {
            let d = fp16_to_fp32(x.d);
            let m = fp16_to_fp32(x.m);
            let qh = u32::from_le_bytes(x.qh);
            for j in 0..QK / 2 {
                let xh_0 = (((qh >> j) << 4) & 0x10) as u8;
                let xh_1 = ((qh >> (j + 12)) & 0x10) as u8;
                let x0 = ((x.qs[j] & 0x0f) | xh_0) as i32;
                let x1 = ((x.qs[j] >> 4) | xh_1) as i32;
                y[j] = x0 as f32 * d + m;
                y[j + QK / 2] = x1 as f32 * d + m;
            }
        }
    }
}

/// `amax / 127` and its inverse, as Q8_0 and Q8_1 compute them.
#[inline(always)]
fn q8_scale(x: &[f32]) -> (f32, f32) {
    let mut amax = 0.0f32;
    for &v in x {
        // MAX(amax, fabsf(v)) = (amax > |v|) ? amax : |v|
        let a = v.abs();
        amax = if amax > a { amax } else { a };
    }
    let d = amax / 127.0;
    (d, inv(d))
}

/// `quantize_row_q8_0_ref` (the scalar reference; `x86.rs` has the AVX2 version).
pub(crate) fn quantize_row_q8_0_ref(src: &[f32], dst: &mut [BlockQ8_0]) {
    for (x, y) in src.chunks_exact(QK8_0).zip(dst) {
        let (d, id) = q8_scale(x);
        y.d = fp32_to_fp16(d);
        for (q, &v) in y.qs.iter_mut().zip(x) {
            *q = c_roundf_to_i32(v * id) as i8;
        }
    }
}

impl BlockFormat for BlockQ8_0 {
    const BLCK: usize = QK8_0;
    const TYPE: GgmlType = GgmlType::Q8_0;

    fn quantize_row(src: &[f32], dst: &mut [Self]) {
        #[cfg(target_arch = "x86_64")]
        if crate::x86::has_avx2() {
            // SAFETY: the CPU has AVX2 (checked at run time).
            return unsafe { crate::x86::quantize_q8_0(src, dst) };
        }
        quantize_row_q8_0_ref(src, dst)
    }

    fn dequantize_row(src: &[Self], dst: &mut [f32]) {
        for (x, y) in src.iter().zip(dst.chunks_exact_mut(QK8_0)) {
            let d = fp16_to_fp32(x.d);
            for (o, &q) in y.iter_mut().zip(&x.qs) {
                *o = q as f32 * d;
            }
        }
    }
}

impl BlockFormat for BlockQ8_1 {
    const BLCK: usize = QK8_1;
    const TYPE: GgmlType = GgmlType::Q8_1;

    fn quantize_row(src: &[f32], dst: &mut [Self]) {
        const QK: usize = QK8_1;
        for (x, y) in src.chunks_exact(QK).zip(dst) {
            let (d, id) = q8_scale(x);
            y.d = fp32_to_fp16(d);
            let mut sum: i32 = 0;
            for j in 0..QK / 2 {
                let v0 = x[j] * id;
                let v1 = x[QK / 2 + j] * id;
                y.qs[j] = c_roundf_to_i32(v0) as i8;
                y.qs[QK / 2 + j] = c_roundf_to_i32(v1) as i8;
                sum += y.qs[j] as i32;
                sum += y.qs[QK / 2 + j] as i32;
            }
            y.s = fp32_to_fp16(sum as f32 * d);
        }
    }

    /// ggml has no `dequantize_row_q8_1`; this is the Q8_0 rule (`s` is derived data).
    fn dequantize_row(src: &[Self], dst: &mut [f32]) {
        for (x, y) in src.iter().zip(dst.chunks_exact_mut(QK8_1)) {
            let d = fp16_to_fp32(x.d);
            for (o, &q) in y.iter_mut().zip(&x.qs) {
                *o = q as f32 * d;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundf_emulation_matches_roundf() {
        let mut x: u32 = 0x9e37_79b9;
        let check = |v: f32| {
            let want = c_f32_to_i32(v.round());
            assert_eq!(c_roundf_to_i32(v), want, "{v} ({:#x})", v.to_bits());
        };
        for v in [
            0.5,
            -0.5,
            1.5,
            -1.5,
            2.5,
            0.49999997,
            -0.49999997,
            126.5,
            -127.5,
            0.0,
            -0.0,
        ] {
            check(v);
        }
        for v in [
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            2147483648.0,
            -2147483648.0,
        ] {
            check(v);
        }
        for v in [
            2147483520.0,
            -2147483520.0,
            16777217.0,
            8388608.5,
            1e30,
            -1e30,
        ] {
            check(v);
        }
        for _ in 0..2_000_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            check(f32::from_bits(x));
            check((x as f32 / u32::MAX as f32 - 0.5) * 300.0);
        }
    }

    #[test]
    fn pack_q5_matches_the_bit_loop() {
        let mut r: u32 = 7;
        for _ in 0..100_000 {
            let mut q = [0u8; 32];
            for v in q.iter_mut() {
                r ^= r << 13;
                r ^= r >> 17;
                r ^= r << 5;
                *v = (r >> 3) as u8; // any byte: Q5_1 has no clamp
            }
            let (mut qs, mut qh) = ([0u8; 16], [0u8; 4]);
            pack_q5(&q, &mut qs, &mut qh);
            let mut h: u32 = 0;
            for (j, &v) in q.iter().enumerate() {
                h |= (((v & 0x10) as u32) >> 4) << j;
            }
            assert_eq!(qh, h.to_le_bytes(), "{q:?}");
            for j in 0..16 {
                assert_eq!(qs[j], (q[j] & 0x0f) | ((q[16 + j] & 0x0f) << 4));
            }
        }
    }

    #[test]
    fn signed_absmax_is_first_largest() {
        assert_eq!(signed_absmax(&[0.0, -0.0, 0.0]).to_bits(), 0.0f32.to_bits());
        assert_eq!(signed_absmax(&[1.0, -2.0, 2.0]), -2.0);
        assert_eq!(signed_absmax(&[f32::NAN, -3.0, 1.0]), -3.0);
        assert_eq!(signed_absmax(&[f32::NAN, f32::NAN]), 0.0);
        assert_eq!(
            signed_absmax(&[1.0, f32::NEG_INFINITY, f32::INFINITY]),
            f32::NEG_INFINITY
        );
    }
}
