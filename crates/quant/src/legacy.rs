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
    if x > -2_147_483_648.0 && x < 2_147_483_648.0 {
        x as i32
    } else {
        i32::MIN
    }
}

/// `fabsf`-maximum and the signed value at it, first occurrence wins (`amax < fabsf(v)`).
#[inline(always)]
fn signed_absmax(x: &[f32]) -> f32 {
    let mut amax = 0.0f32;
    let mut max = 0.0f32;
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    max
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

impl BlockFormat for BlockQ4_0 {
    const BLCK: usize = QK4_0;
    const TYPE: GgmlType = GgmlType::Q4_0;

    fn quantize_row(src: &[f32], dst: &mut [Self]) {
        const QK: usize = QK4_0;
        for (x, y) in src.chunks_exact(QK).zip(dst) {
            let max = signed_absmax(x);
            let d = max / -8.0;
            let id = inv(d);
            y.d = fp32_to_fp16(d);
            for j in 0..QK / 2 {
                let x0 = x[j] * id;
                let x1 = x[QK / 2 + j] * id;
                let xi0 = (c_f32_to_i32(x0 + 8.5) as i8).min(15) as u8;
                let xi1 = (c_f32_to_i32(x1 + 8.5) as i8).min(15) as u8;
                y.qs[j] = xi0 | (xi1 << 4);
            }
        }
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

impl BlockFormat for BlockQ4_1 {
    const BLCK: usize = QK4_1;
    const TYPE: GgmlType = GgmlType::Q4_1;

    fn quantize_row(src: &[f32], dst: &mut [Self]) {
        const QK: usize = QK4_1;
        for (x, y) in src.chunks_exact(QK).zip(dst) {
            let (min, max) = min_max(x);
            let d = (max - min) / 15.0;
            let id = inv(d);
            y.d = fp32_to_fp16(d);
            y.m = fp32_to_fp16(min);
            for j in 0..QK / 2 {
                let x0 = (x[j] - min) * id;
                let x1 = (x[QK / 2 + j] - min) * id;
                let xi0 = (c_f32_to_i32(x0 + 0.5) as i8).min(15) as u8;
                let xi1 = (c_f32_to_i32(x1 + 0.5) as i8).min(15) as u8;
                y.qs[j] = xi0 | (xi1 << 4);
            }
        }
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

impl BlockFormat for BlockQ5_0 {
    const BLCK: usize = QK5_0;
    const TYPE: GgmlType = GgmlType::Q5_0;

    fn quantize_row(src: &[f32], dst: &mut [Self]) {
        const QK: usize = QK5_0;
        for (x, y) in src.chunks_exact(QK).zip(dst) {
            let max = signed_absmax(x);
            let d = max / -16.0;
            let id = inv(d);
            y.d = fp32_to_fp16(d);
            let mut qh: u32 = 0;
            for j in 0..QK / 2 {
                let x0 = x[j] * id;
                let x1 = x[QK / 2 + j] * id;
                let xi0 = (c_f32_to_i32(x0 + 16.5) as i8).min(31) as u8;
                let xi1 = (c_f32_to_i32(x1 + 16.5) as i8).min(31) as u8;
                y.qs[j] = (xi0 & 0x0f) | ((xi1 & 0x0f) << 4);
                qh |= (((xi0 & 0x10) as u32) >> 4) << j;
                qh |= (((xi1 & 0x10) as u32) >> 4) << (j + QK / 2);
            }
            y.qh = qh.to_le_bytes();
        }
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

impl BlockFormat for BlockQ5_1 {
    const BLCK: usize = QK5_1;
    const TYPE: GgmlType = GgmlType::Q5_1;

    fn quantize_row(src: &[f32], dst: &mut [Self]) {
        const QK: usize = QK5_1;
        for (x, y) in src.chunks_exact(QK).zip(dst) {
            let (min, max) = min_max(x);
            let d = (max - min) / 31.0;
            let id = inv(d);
            y.d = fp32_to_fp16(d);
            y.m = fp32_to_fp16(min);
            let mut qh: u32 = 0;
            for j in 0..QK / 2 {
                let x0 = (x[j] - min) * id;
                let x1 = (x[QK / 2 + j] - min) * id;
                // no MIN(31, ..) here in ggml either
                let xi0 = c_f32_to_i32(x0 + 0.5) as u8;
                let xi1 = c_f32_to_i32(x1 + 0.5) as u8;
                y.qs[j] = (xi0 & 0x0f) | ((xi1 & 0x0f) << 4);
                qh |= (((xi0 & 0x10) as u32) >> 4) << j;
                qh |= (((xi1 & 0x10) as u32) >> 4) << (j + QK / 2);
            }
            y.qh = qh.to_le_bytes();
        }
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

impl BlockFormat for BlockQ8_0 {
    const BLCK: usize = QK8_0;
    const TYPE: GgmlType = GgmlType::Q8_0;

    fn quantize_row(src: &[f32], dst: &mut [Self]) {
        for (x, y) in src.chunks_exact(QK8_0).zip(dst) {
            let (d, id) = q8_scale(x);
            y.d = fp32_to_fp16(d);
            for (q, &v) in y.qs.iter_mut().zip(x) {
                *q = c_f32_to_i32((v * id).round()) as i8;
            }
        }
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
                y.qs[j] = c_f32_to_i32(v0.round()) as i8;
                y.qs[QK / 2 + j] = c_f32_to_i32(v1.round()) as i8;
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
