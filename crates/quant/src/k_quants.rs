//! The super-block formats (Q2_K .. Q8_K) and IQ4_NL: ports of `quantize_row_*_ref`,
//! `quantize_iq4_nl` (no importance matrix) and `dequantize_row_*` from `ggml-quants.c`.
//!
//! Float expressions keep ggml's association order (`w*l*x` is `(w*l)*x`), so results are
//! bit-identical; Rust never contracts `a*b + c` into a fused multiply-add.

// Index loops are kept so the code reads line by line against ggml-quants.c.
#![allow(clippy::needless_range_loop, clippy::too_many_arguments)]

use crate::blocks::*;
use crate::fp::{fp16_to_fp32, fp32_to_fp16};
use bytemuck::Zeroable;
use slmpack_gguf::GgmlType;

const GROUP_MAX_EPS: f32 = 1e-15;

/// `nearest_int`: round half to even through the 1.5*2^23 trick. Exact for |x| <= 2^22; for
/// larger or non-finite inputs it returns the same bit pattern arithmetic as ggml (no panic).
#[inline(always)]
fn nearest_int(fval: f32) -> i32 {
    let val = fval + 12582912.0;
    (val.to_bits() as i32 & 0x007f_ffff) - 0x0040_0000
}

/// `make_qx_quants` for `qw == NULL`, `rmse_type == 1` (the Q6_K path).
fn make_qx_quants_rmse1(x: &[f32], nmax: i32, l_out: &mut [i8]) -> f32 {
    let n = x.len();
    let mut max = 0.0f32;
    let mut amax = 0.0f32;
    for &v in x {
        let ax = v.abs();
        if ax > amax {
            amax = ax;
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        l_out[..n].fill(0);
        return 0.0;
    }
    let mut iscale = -(nmax as f32) / max;
    let mut sumlx = 0.0f32;
    let mut suml2 = 0.0f32;
    for i in 0..n {
        let l = nearest_int(iscale * x[i]).clamp(-nmax, nmax - 1);
        l_out[i] = (l + nmax) as i8;
        let w = x[i] * x[i];
        sumlx += w * x[i] * l as f32;
        suml2 += w * l as f32 * l as f32;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        iscale = -(nmax as f32 + 0.1 * is as f32) / max;
        sumlx = 0.0;
        suml2 = 0.0;
        for &xi in x {
            let l = nearest_int(iscale * xi).clamp(-nmax, nmax - 1);
            let w = xi * xi;
            sumlx += w * xi * l as f32;
            suml2 += w * l as f32 * l as f32;
        }
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for i in 0..n {
                let l = nearest_int(iscale * x[i]);
                l_out[i] = (nmax + l.clamp(-nmax, nmax - 1)) as i8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// `make_q3_quants` (used by Q3_K with `do_rmse = true`).
fn make_q3_quants(x: &[f32], nmax: i32, l_out: &mut [i8], do_rmse: bool) -> f32 {
    let n = x.len();
    let mut max = 0.0f32;
    let mut amax = 0.0f32;
    for &v in x {
        let ax = v.abs();
        if ax > amax {
            amax = ax;
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        l_out[..n].fill(0);
        return 0.0;
    }
    let iscale = -(nmax as f32) / max;
    if do_rmse {
        let mut sumlx = 0.0f32;
        let mut suml2 = 0.0f32;
        for i in 0..n {
            let l = nearest_int(iscale * x[i]).clamp(-nmax, nmax - 1);
            l_out[i] = l as i8;
            let w = x[i] * x[i];
            sumlx += w * x[i] * l as f32;
            suml2 += w * l as f32 * l as f32;
        }
        for _itry in 0..5 {
            let mut n_changed = 0;
            for i in 0..n {
                let w = x[i] * x[i];
                let li = l_out[i] as f32;
                let mut slx = sumlx - w * x[i] * li;
                if slx > 0.0 {
                    let mut sl2 = suml2 - w * li * li;
                    let new_l = nearest_int(x[i] * sl2 / slx).clamp(-nmax, nmax - 1);
                    if new_l != l_out[i] as i32 {
                        slx += w * x[i] * new_l as f32;
                        sl2 += w * new_l as f32 * new_l as f32;
                        if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                            l_out[i] = new_l as i8;
                            sumlx = slx;
                            suml2 = sl2;
                            n_changed += 1;
                        }
                    }
                }
            }
            if n_changed == 0 {
                break;
            }
        }
        for l in l_out[..n].iter_mut() {
            *l += nmax as i8;
        }
        return if suml2 > 0.0 { sumlx / suml2 } else { 0.0 };
    }
    for i in 0..n {
        let l = nearest_int(iscale * x[i]).clamp(-nmax, nmax - 1);
        l_out[i] = (l + nmax) as i8;
    }
    1.0 / iscale
}

/// `make_qkx2_quants`: asymmetric (scale, min) search for one sub-block. Returns the scale and
/// stores `-min` in `the_min`. `N` is the sub-block length (16 or 32).
#[inline(always)]
fn make_qkx2_quants<const N: usize>(
    nmax: i32,
    x: &[f32; N],
    weights: &[f32; N],
    l_out: &mut [u8; N],
    the_min: &mut f32,
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    use_mad: bool,
) -> f32 {
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..N {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l_out.fill(0);
        *the_min = -min;
        return 0.0;
    }
    let nmaxf = nmax as f32;
    let mut iscale = nmaxf / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0.0f32;
    for i in 0..N {
        let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
        l_out[i] = l as u8;
        let diff = scale * l as f32 + min - x[i];
        let diff = if use_mad { diff.abs() } else { diff * diff };
        best_error += weights[i] * diff;
    }
    if nstep < 1 {
        *the_min = -min;
        return scale;
    }
    let mut laux = [0u8; N];
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmaxf) / (max - min);
        let mut sum_l = 0.0f32;
        let mut sum_l2 = 0.0f32;
        let mut sum_xl = 0.0f32;
        for i in 0..N {
            let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            laux[i] = l as u8;
            let w = weights[i];
            let lf = l as f32;
            sum_l += w * lf;
            sum_l2 += w * lf * lf;
            sum_xl += w * lf * x[i];
        }
        let d = sum_w * sum_l2 - sum_l * sum_l;
        if d > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / d;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / d;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0.0f32;
            for i in 0..N {
                let diff = this_scale * laux[i] as f32 + this_min - x[i];
                let diff = if use_mad { diff.abs() } else { diff * diff };
                cur_error += weights[i] * diff;
            }
            if cur_error < best_error {
                *l_out = laux;
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *the_min = -min;
    scale
}

/// `get_scale_min_k4`: the 6-bit scale and min of sub-block `j` of Q4_K/Q5_K.
#[inline(always)]
pub fn get_scale_min_k4(j: usize, q: &[u8; K_SCALE_SIZE]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xf) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

#[inline(always)]
fn sub<const N: usize>(x: &[f32], j: usize) -> &[f32; N] {
    x[N * j..N * (j + 1)]
        .try_into()
        .expect("sub-block in range")
}

#[inline(always)]
fn sub_mut<const N: usize>(x: &mut [u8], j: usize) -> &mut [u8; N] {
    (&mut x[N * j..N * (j + 1)])
        .try_into()
        .expect("sub-block in range")
}

/// Shared tail of Q4_K and Q5_K: pack 6-bit scales/mins, set `d`/`dmin`, requantize `l`.
/// Returns (d, dmin) as stored.
#[inline(always)]
fn pack_scales_k4(
    scales: &[f32; 8],
    mins: &[f32; 8],
    max_scale: f32,
    max_min: f32,
    out_scales: &mut [u8; K_SCALE_SIZE],
) -> (half::f16, half::f16) {
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    for j in 0..QK_K / 32 {
        let ls = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        let lm = (nearest_int(inv_min * mins[j]) as u8).min(63);
        if j < 4 {
            out_scales[j] = ls;
            out_scales[j + 4] = lm;
        } else {
            out_scales[j + 4] = (ls & 0xf) | ((lm & 0xf) << 4);
            out_scales[j - 4] |= (ls >> 4) << 6;
            out_scales[j] |= (lm >> 4) << 6;
        }
    }
    (fp32_to_fp16(max_scale / 63.0), fp32_to_fp16(max_min / 63.0))
}

/// Sub-block search shared by Q4_K and Q5_K (`make_qkx2_quants` on each 32, with ggml's
/// weights `av_x + |x|`). Returns (max_scale, max_min).
#[inline(always)]
fn kx2_subblocks(
    x: &[f32],
    nmax: i32,
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    l: &mut [u8; QK_K],
    scales: &mut [f32; 8],
    mins: &mut [f32; 8],
) -> (f32, f32) {
    let mut max_scale = 0.0f32;
    let mut max_min = 0.0f32;
    let mut weights = [0.0f32; 32];
    for j in 0..QK_K / 32 {
        let xs: &[f32; 32] = sub(x, j);
        let mut sum_x2 = 0.0f32;
        for &v in xs {
            sum_x2 += v * v;
        }
        let av_x = (sum_x2 / 32.0).sqrt();
        for (w, &v) in weights.iter_mut().zip(xs) {
            *w = av_x + v.abs();
        }
        scales[j] = make_qkx2_quants::<32>(
            nmax,
            xs,
            &weights,
            sub_mut(l, j),
            &mut mins[j],
            rmin,
            rdelta,
            nstep,
            false,
        );
        let scale = scales[j];
        if scale > max_scale {
            max_scale = scale;
        }
        let min = mins[j];
        if min > max_min {
            max_min = min;
        }
    }
    (max_scale, max_min)
}

/// Requantize with the stored 6-bit scales, as the end of `quantize_row_q{4,5}_K_ref` does.
#[inline(always)]
fn requantize_k4(
    x: &[f32],
    d: half::f16,
    dmin: half::f16,
    packed: &[u8; K_SCALE_SIZE],
    nmax: i32,
    l: &mut [u8; QK_K],
) {
    let d_all = fp16_to_fp32(d);
    let m_all = fp16_to_fp32(dmin);
    for j in 0..QK_K / 32 {
        let (sc, m) = get_scale_min_k4(j, packed);
        let d = d_all * sc as f32;
        if d == 0.0 {
            continue;
        }
        let dm = m_all * m as f32;
        for ii in 0..32 {
            let v = nearest_int((x[32 * j + ii] + dm) / d);
            l[32 * j + ii] = v.clamp(0, nmax) as u8;
        }
    }
}

impl BlockFormat for BlockQ4K {
    const BLCK: usize = QK_K;
    const TYPE: GgmlType = GgmlType::Q4_K;

    fn quantize_row(src: &[f32], dst: &mut [Self]) {
        let mut l = [0u8; QK_K];
        let mut mins = [0.0f32; 8];
        let mut scales = [0.0f32; 8];
        for (x, y) in src.chunks_exact(QK_K).zip(dst) {
            let (max_scale, max_min) =
                kx2_subblocks(x, 15, -1.0, 0.1, 20, &mut l, &mut scales, &mut mins);
            let (d, dmin) = pack_scales_k4(&scales, &mins, max_scale, max_min, &mut y.scales);
            y.d = d;
            y.dmin = dmin;
            requantize_k4(x, d, dmin, &y.scales, 15, &mut l);
            for (jj, q) in y.qs.chunks_exact_mut(32).enumerate() {
                let j = jj * 64;
                for (i, qv) in q.iter_mut().enumerate() {
                    *qv = l[j + i] | (l[j + i + 32] << 4);
                }
            }
        }
    }

    fn dequantize_row(src: &[Self], dst: &mut [f32]) {
        for (x, y) in src.iter().zip(dst.chunks_exact_mut(QK_K)) {
            let d = fp16_to_fp32(x.d);
            let min = fp16_to_fp32(x.dmin);
            for (jj, (q, out)) in
                x.qs.chunks_exact(32)
                    .zip(y.chunks_exact_mut(64))
                    .enumerate()
            {
                let is = 2 * jj;
                let (sc, m) = get_scale_min_k4(is, &x.scales);
                let d1 = d * sc as f32;
                let m1 = min * m as f32;
                let (sc, m) = get_scale_min_k4(is + 1, &x.scales);
                let d2 = d * sc as f32;
                let m2 = min * m as f32;
                let (lo, hi) = out.split_at_mut(32);
                for l in 0..32 {
                    lo[l] = d1 * (q[l] & 0xf) as f32 - m1;
                    hi[l] = d2 * (q[l] >> 4) as f32 - m2;
                }
            }
        }
    }
}

impl BlockFormat for BlockQ5K {
    const BLCK: usize = QK_K;
    const TYPE: GgmlType = GgmlType::Q5_K;

    fn quantize_row(src: &[f32], dst: &mut [Self]) {
        let mut l = [0u8; QK_K];
        let mut mins = [0.0f32; 8];
        let mut scales = [0.0f32; 8];
        for (x, y) in src.chunks_exact(QK_K).zip(dst) {
            let (max_scale, max_min) =
                kx2_subblocks(x, 31, -0.5, 0.1, 15, &mut l, &mut scales, &mut mins);
            let (d, dmin) = pack_scales_k4(&scales, &mins, max_scale, max_min, &mut y.scales);
            y.d = d;
            y.dmin = dmin;
            requantize_k4(x, d, dmin, &y.scales, 31, &mut l);
            y.qh = [0; QK_K / 8];
            let mut m1: u8 = 1;
            let mut m2: u8 = 2;
            for (nn, ql) in y.qs.chunks_exact_mut(32).enumerate() {
                let n = nn * 64;
                for j in 0..32 {
                    let mut l1 = l[n + j];
                    if l1 > 15 {
                        l1 -= 16;
                        y.qh[j] |= m1;
                    }
                    let mut l2 = l[n + j + 32];
                    if l2 > 15 {
                        l2 -= 16;
                        y.qh[j] |= m2;
                    }
                    ql[j] = l1 | (l2 << 4);
                }
                m1 <<= 2;
                m2 <<= 2;
            }
        }
    }

    fn dequantize_row(src: &[Self], dst: &mut [f32]) {
        for (x, y) in src.iter().zip(dst.chunks_exact_mut(QK_K)) {
            let d = fp16_to_fp32(x.d);
            let min = fp16_to_fp32(x.dmin);
            let mut u1: u8 = 1;
            let mut u2: u8 = 2;
            for (jj, (ql, out)) in
                x.qs.chunks_exact(32)
                    .zip(y.chunks_exact_mut(64))
                    .enumerate()
            {
                let is = 2 * jj;
                let (sc, m) = get_scale_min_k4(is, &x.scales);
                let d1 = d * sc as f32;
                let m1 = min * m as f32;
                let (sc, m) = get_scale_min_k4(is + 1, &x.scales);
                let d2 = d * sc as f32;
                let m2 = min * m as f32;
                let (lo, hi) = out.split_at_mut(32);
                for l in 0..32 {
                    let h1 = if x.qh[l] & u1 != 0 { 16 } else { 0 };
                    let h2 = if x.qh[l] & u2 != 0 { 16 } else { 0 };
                    lo[l] = d1 * ((ql[l] & 0xf) as i32 + h1) as f32 - m1;
                    hi[l] = d2 * ((ql[l] >> 4) as i32 + h2) as f32 - m2;
                }
                u1 <<= 2;
                u2 <<= 2;
            }
        }
    }
}

impl BlockFormat for BlockQ6K {
    const BLCK: usize = QK_K;
    const TYPE: GgmlType = GgmlType::Q6_K;

    fn quantize_row(src: &[f32], dst: &mut [Self]) {
        let mut l = [0i8; QK_K];
        let mut scales = [0.0f32; QK_K / 16];
        for (x, y) in src.chunks_exact(QK_K).zip(dst) {
            let mut max_scale = 0.0f32;
            let mut max_abs_scale = 0.0f32;
            for ib in 0..QK_K / 16 {
                let scale = make_qx_quants_rmse1(
                    &x[16 * ib..16 * ib + 16],
                    32,
                    &mut l[16 * ib..16 * ib + 16],
                );
                scales[ib] = scale;
                let abs_scale = scale.abs();
                if abs_scale > max_abs_scale {
                    max_abs_scale = abs_scale;
                    max_scale = scale;
                }
            }
            if max_abs_scale < GROUP_MAX_EPS {
                *y = Self::zeroed();
                y.d = fp32_to_fp16(0.0);
                continue;
            }
            let iscale = -128.0 / max_scale;
            y.d = fp32_to_fp16(1.0 / iscale);
            for ib in 0..QK_K / 16 {
                y.scales[ib] = nearest_int(iscale * scales[ib]).min(127) as i8;
            }
            let d_all = fp16_to_fp32(y.d);
            for j in 0..QK_K / 16 {
                let d = d_all * y.scales[j] as f32;
                if d == 0.0 {
                    continue;
                }
                for ii in 0..16 {
                    let v = nearest_int(x[16 * j + ii] / d).clamp(-32, 31);
                    l[16 * j + ii] = (v + 32) as i8;
                }
            }
            for half in 0..2 {
                let j = half * 128;
                let ql = &mut y.ql[half * 64..half * 64 + 64];
                let qh = &mut y.qh[half * 32..half * 32 + 32];
                for i in 0..32 {
                    let q1 = (l[j + i] as u8) & 0xf;
                    let q2 = (l[j + i + 32] as u8) & 0xf;
                    let q3 = (l[j + i + 64] as u8) & 0xf;
                    let q4 = (l[j + i + 96] as u8) & 0xf;
                    ql[i] = q1 | (q3 << 4);
                    ql[i + 32] = q2 | (q4 << 4);
                    qh[i] = ((l[j + i] as u8) >> 4)
                        | (((l[j + i + 32] as u8) >> 4) << 2)
                        | (((l[j + i + 64] as u8) >> 4) << 4)
                        | (((l[j + i + 96] as u8) >> 4) << 6);
                }
            }
        }
    }

    fn dequantize_row(src: &[Self], dst: &mut [f32]) {
        for (x, y) in src.iter().zip(dst.chunks_exact_mut(QK_K)) {
            let d = fp16_to_fp32(x.d);
            for half in 0..2 {
                let ql = &x.ql[half * 64..half * 64 + 64];
                let qh = &x.qh[half * 32..half * 32 + 32];
                let sc = &x.scales[half * 8..half * 8 + 8];
                let y = &mut y[half * 128..half * 128 + 128];
                for l in 0..32 {
                    let is = l / 16;
                    let q1 = ((ql[l] & 0xf) | ((qh[l] & 3) << 4)) as i32 - 32;
                    let q2 = ((ql[l + 32] & 0xf) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                    let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                    let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                    y[l] = d * sc[is] as f32 * q1 as f32;
                    y[l + 32] = d * sc[is + 2] as f32 * q2 as f32;
                    y[l + 64] = d * sc[is + 4] as f32 * q3 as f32;
                    y[l + 96] = d * sc[is + 6] as f32 * q4 as f32;
                }
            }
        }
    }
}

impl BlockFormat for BlockQ8K {
    const BLCK: usize = QK_K;
    const TYPE: GgmlType = GgmlType::Q8_K;

    /// Like `quantize_row_q8_K_ref`, except that an all-zero block also zeroes `bsums` (ggml
    /// leaves them as they were in memory; zero is their correct value).
    fn quantize_row(src: &[f32], dst: &mut [Self]) {
        for (x, y) in src.chunks_exact(QK_K).zip(dst) {
            let mut max = 0.0f32;
            let mut amax = 0.0f32;
            for &v in x {
                let ax = v.abs();
                if ax > amax {
                    amax = ax;
                    max = v;
                }
            }
            if amax == 0.0 {
                *y = Self::zeroed();
                continue;
            }
            let iscale = -127.0 / max;
            for (q, &v) in y.qs.iter_mut().zip(x) {
                *q = nearest_int(iscale * v).min(127) as i8;
            }
            for (j, s) in y.bsums.iter_mut().enumerate() {
                let mut sum: i32 = 0;
                for &q in &y.qs[16 * j..16 * j + 16] {
                    sum += q as i32;
                }
                *s = sum as i16;
            }
            y.d = 1.0 / iscale;
        }
    }

    fn dequantize_row(src: &[Self], dst: &mut [f32]) {
        for (x, y) in src.iter().zip(dst.chunks_exact_mut(QK_K)) {
            for (o, &q) in y.iter_mut().zip(&x.qs) {
                *o = x.d * q as f32;
            }
        }
    }
}

impl BlockFormat for BlockQ2K {
    const BLCK: usize = QK_K;
    const TYPE: GgmlType = GgmlType::Q2_K;

    fn quantize_row(src: &[f32], dst: &mut [Self]) {
        const Q4SCALE: f32 = 15.0;
        let mut l = [0u8; QK_K];
        let mut weights = [0.0f32; 16];
        let mut mins = [0.0f32; QK_K / 16];
        let mut scales = [0.0f32; QK_K / 16];
        for (x, y) in src.chunks_exact(QK_K).zip(dst) {
            let mut max_scale = 0.0f32;
            let mut max_min = 0.0f32;
            for j in 0..QK_K / 16 {
                let xs: &[f32; 16] = sub(x, j);
                for (w, &v) in weights.iter_mut().zip(xs) {
                    *w = v.abs();
                }
                scales[j] = make_qkx2_quants::<16>(
                    3,
                    xs,
                    &weights,
                    sub_mut(&mut l, j),
                    &mut mins[j],
                    -0.5,
                    0.1,
                    15,
                    true,
                );
                let scale = scales[j];
                if scale > max_scale {
                    max_scale = scale;
                }
                let min = mins[j];
                if min > max_min {
                    max_min = min;
                }
            }
            if max_scale > 0.0 {
                let iscale = Q4SCALE / max_scale;
                for j in 0..QK_K / 16 {
                    y.scales[j] = nearest_int(iscale * scales[j]) as u8;
                }
                y.d = fp32_to_fp16(max_scale / Q4SCALE);
            } else {
                y.scales = [0; QK_K / 16];
                y.d = fp32_to_fp16(0.0);
            }
            if max_min > 0.0 {
                let iscale = Q4SCALE / max_min;
                for j in 0..QK_K / 16 {
                    let lm = nearest_int(iscale * mins[j]);
                    y.scales[j] |= (lm << 4) as u8;
                }
                y.dmin = fp32_to_fp16(max_min / Q4SCALE);
            } else {
                y.dmin = fp32_to_fp16(0.0);
            }
            let d_all = fp16_to_fp32(y.d);
            let m_all = fp16_to_fp32(y.dmin);
            for j in 0..QK_K / 16 {
                let d = d_all * (y.scales[j] & 0xf) as f32;
                if d == 0.0 {
                    continue;
                }
                let dm = m_all * (y.scales[j] >> 4) as f32;
                for ii in 0..16 {
                    let v = nearest_int((x[16 * j + ii] + dm) / d).clamp(0, 3);
                    l[16 * j + ii] = v as u8;
                }
            }
            for (jj, q) in y.qs.chunks_exact_mut(32).enumerate() {
                let j = jj * 128;
                for (i, qv) in q.iter_mut().enumerate() {
                    *qv = l[j + i]
                        | (l[j + i + 32] << 2)
                        | (l[j + i + 64] << 4)
                        | (l[j + i + 96] << 6);
                }
            }
        }
    }

    fn dequantize_row(src: &[Self], dst: &mut [f32]) {
        for (x, y) in src.iter().zip(dst.chunks_exact_mut(QK_K)) {
            let d = fp16_to_fp32(x.d);
            let min = fp16_to_fp32(x.dmin);
            let mut is = 0;
            let mut out = 0;
            for q in x.qs.chunks_exact(32) {
                let mut shift = 0;
                for _ in 0..4 {
                    let sc = x.scales[is];
                    is += 1;
                    let dl = d * (sc & 0xf) as f32;
                    let ml = min * (sc >> 4) as f32;
                    for l in 0..16 {
                        y[out] = dl * ((q[l] >> shift) & 3) as f32 - ml;
                        out += 1;
                    }
                    let sc = x.scales[is];
                    is += 1;
                    let dl = d * (sc & 0xf) as f32;
                    let ml = min * (sc >> 4) as f32;
                    for l in 0..16 {
                        y[out] = dl * ((q[l + 16] >> shift) & 3) as f32 - ml;
                        out += 1;
                    }
                    shift += 2;
                }
            }
        }
    }
}

impl BlockFormat for BlockQ3K {
    const BLCK: usize = QK_K;
    const TYPE: GgmlType = GgmlType::Q3_K;

    fn quantize_row(src: &[f32], dst: &mut [Self]) {
        let mut l = [0i8; QK_K];
        let mut scales = [0.0f32; QK_K / 16];
        for (x, y) in src.chunks_exact(QK_K).zip(dst) {
            let mut max_scale = 0.0f32;
            let mut amax = 0.0f32;
            for j in 0..QK_K / 16 {
                scales[j] = make_q3_quants(
                    &x[16 * j..16 * j + 16],
                    4,
                    &mut l[16 * j..16 * j + 16],
                    true,
                );
                let scale = scales[j].abs();
                if scale > amax {
                    amax = scale;
                    max_scale = scales[j];
                }
            }
            y.scales = [0; 12];
            if max_scale != 0.0 {
                let iscale = -32.0 / max_scale;
                for j in 0..QK_K / 16 {
                    // int8_t l = nearest_int(..); l = MAX(-32, MIN(31, l)) + 32;
                    let lv = nearest_int(iscale * scales[j]) as i8;
                    let lv = (lv.clamp(-32, 31) + 32) as u8;
                    if j < 8 {
                        y.scales[j] = lv & 0xf;
                    } else {
                        y.scales[j - 8] |= (lv & 0xf) << 4;
                    }
                    let hi = lv >> 4;
                    y.scales[j % 4 + 8] |= hi << (2 * (j / 4));
                }
                y.d = fp32_to_fp16(1.0 / iscale);
            } else {
                y.d = fp32_to_fp16(0.0);
            }
            let d_all = fp16_to_fp32(y.d);
            for j in 0..QK_K / 16 {
                let lo = if j < 8 {
                    y.scales[j] & 0xf
                } else {
                    y.scales[j - 8] >> 4
                };
                let sc = (lo | (((y.scales[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) as i8 - 32;
                let d = d_all * sc as f32;
                if d == 0.0 {
                    continue;
                }
                for ii in 0..16 {
                    let v = nearest_int(x[16 * j + ii] / d).clamp(-4, 3);
                    l[16 * j + ii] = (v + 4) as i8;
                }
            }
            y.hmask = [0; QK_K / 8];
            let mut m = 0;
            let mut hm: u8 = 1;
            for lj in l.iter_mut() {
                if *lj > 3 {
                    y.hmask[m] |= hm;
                    *lj -= 4;
                }
                m += 1;
                if m == QK_K / 8 {
                    m = 0;
                    hm <<= 1;
                }
            }
            for (jj, q) in y.qs.chunks_exact_mut(32).enumerate() {
                let j = jj * 128;
                for (i, qv) in q.iter_mut().enumerate() {
                    *qv = (l[j + i]
                        | (l[j + i + 32] << 2)
                        | (l[j + i + 64] << 4)
                        | (l[j + i + 96] << 6)) as u8;
                }
            }
        }
    }

    fn dequantize_row(src: &[Self], dst: &mut [f32]) {
        const KMASK1: u32 = 0x0303_0303;
        const KMASK2: u32 = 0x0f0f_0f0f;
        for (x, y) in src.iter().zip(dst.chunks_exact_mut(QK_K)) {
            let d_all = fp16_to_fp32(x.d);
            let mut aux = [0u32; 4];
            for (k, a) in aux.iter_mut().take(3).enumerate() {
                *a = u32::from_le_bytes(x.scales[4 * k..4 * k + 4].try_into().unwrap());
            }
            let tmp = aux[2];
            aux[2] = ((aux[0] >> 4) & KMASK2) | (((tmp >> 4) & KMASK1) << 4);
            aux[3] = ((aux[1] >> 4) & KMASK2) | (((tmp >> 6) & KMASK1) << 4);
            aux[0] = (aux[0] & KMASK2) | ((tmp & KMASK1) << 4);
            aux[1] = (aux[1] & KMASK2) | (((tmp >> 2) & KMASK1) << 4);
            let mut scales = [0i8; 16];
            for (k, a) in aux.iter().enumerate() {
                for (b, byte) in a.to_le_bytes().iter().enumerate() {
                    scales[4 * k + b] = *byte as i8;
                }
            }
            let mut is = 0;
            let mut out = 0;
            let mut m: u8 = 1;
            for q in x.qs.chunks_exact(32) {
                let mut shift = 0;
                for _ in 0..4 {
                    for half in 0..2 {
                        let dl = d_all * (scales[is] as i32 - 32) as f32;
                        is += 1;
                        for l in 16 * half..16 * half + 16 {
                            let hi = if x.hmask[l] & m != 0 { 0 } else { 4 };
                            y[out] = dl * (((q[l] >> shift) & 3) as i32 - hi) as f32;
                            out += 1;
                        }
                    }
                    shift += 2;
                    m <<= 1;
                }
            }
        }
    }
}

/// `best_index_int8` over the 16 sorted IQ4_NL levels: the level `x` rounds to, ties going up
/// (branch-free binary search on doubled midpoints, as current ggml does it).
#[inline(always)]
fn best_index_iq4nl(x: f32) -> u8 {
    let val = &KVALUES_IQ4NL;
    let x2 = x + x;
    let mut idx = 0usize;
    let mut step = 8;
    while step > 0 {
        let j = idx + step;
        if x2 >= (val[j - 1] as i32 + val[j] as i32) as f32 {
            idx = j;
        }
        step >>= 1;
    }
    idx as u8
}

impl BlockFormat for BlockIQ4NL {
    const BLCK: usize = QK4_NL;
    const TYPE: GgmlType = GgmlType::IQ4_NL;

    /// `quantize_iq4_nl(.., quant_weights = NULL)`: `quantize_row_iq4_nl_impl` with
    /// super block = block = 32, 16 levels, `ntry = 7` (what llama-quantize runs).
    fn quantize_row(src: &[f32], dst: &mut [Self]) {
        const NTRY: i32 = 7;
        let values = &KVALUES_IQ4NL;
        let mut weight = [0.0f32; QK4_NL];
        let mut l = [0u8; QK4_NL];
        for (x, y) in src.chunks_exact(QK4_NL).zip(dst) {
            // sigma2 is only used with an importance matrix
            for (w, &v) in weight.iter_mut().zip(x) {
                *w = v * v;
            }
            let mut amax = 0.0f32;
            let mut max = 0.0f32;
            for &v in x {
                let ax = v.abs();
                if ax > amax {
                    amax = ax;
                    max = v;
                }
            }
            let scale;
            if amax < GROUP_MAX_EPS {
                scale = 0.0f32;
            } else {
                let mut d = -max / values[0] as f32;
                let mut id = 1.0 / d;
                let mut sumqx = 0.0f32;
                let mut sumq2 = 0.0f32;
                for j in 0..QK4_NL {
                    let al = id * x[j];
                    let li = best_index_iq4nl(al);
                    l[j] = li;
                    let q = values[li as usize] as f32;
                    let w = weight[j];
                    sumqx += w * q * x[j];
                    sumq2 += w * q * q;
                }
                d = if sumq2 > 0.0 { sumqx / sumq2 } else { 0.0 };
                let mut best = d * sumqx;
                for itry in -NTRY..=NTRY {
                    id = (itry + values[0] as i32) as f32 / max;
                    sumqx = 0.0;
                    sumq2 = 0.0;
                    for j in 0..QK4_NL {
                        let al = id * x[j];
                        let li = best_index_iq4nl(al);
                        let q = values[li as usize] as f32;
                        let w = weight[j];
                        sumqx += w * q * x[j];
                        sumq2 += w * q * q;
                    }
                    if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
                        d = sumqx / sumq2;
                        best = d * sumqx;
                    }
                }
                scale = d;
            }
            y.d = fp32_to_fp16(scale);
            let id = if scale != 0.0 { 1.0 / scale } else { 0.0 };
            for (lj, &v) in l.iter_mut().zip(x) {
                *lj = best_index_iq4nl(id * v);
            }
            for j in 0..16 {
                y.qs[j] = l[j] | (l[16 + j] << 4);
            }
        }
    }

    fn dequantize_row(src: &[Self], dst: &mut [f32]) {
        for (x, y) in src.iter().zip(dst.chunks_exact_mut(QK4_NL)) {
            let d = fp16_to_fp32(x.d);
            for j in 0..QK4_NL / 2 {
                y[j] = d * KVALUES_IQ4NL[(x.qs[j] & 0xf) as usize] as f32;
                y[j + QK4_NL / 2] = d * KVALUES_IQ4NL[(x.qs[j] >> 4) as usize] as f32;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_int_rounds_half_to_even() {
        let cases = [
            (0.5, 0),
            (1.5, 2),
            (2.5, 2),
            (-0.5, 0),
            (-1.5, -2),
            (-2.5, -2),
            (3.7, 4),
            (-3.7, -4),
            (4194303.0, 4194303),
            (-4194303.0, -4194303),
        ];
        for (x, want) in cases {
            assert_eq!(nearest_int(x), want, "{x}");
        }
        // out of ggml's asserted range: garbage, but no panic
        let _ = nearest_int(f32::NAN);
        let _ = nearest_int(f32::INFINITY);
        let _ = nearest_int(1e30);
    }

    #[test]
    fn best_index_picks_nearest_level_ties_up() {
        for (i, &v) in KVALUES_IQ4NL.iter().enumerate() {
            assert_eq!(best_index_iq4nl(v as f32) as usize, i);
        }
        assert_eq!(best_index_iq4nl(-1000.0), 0);
        assert_eq!(best_index_iq4nl(1000.0), 15);
        // midpoint of -10 and 1 is -4.5: ties go to the upper level
        assert_eq!(best_index_iq4nl(-4.5), 8);
        assert_eq!(best_index_iq4nl(-4.51), 7);
        assert_eq!(best_index_iq4nl(0.0), 8);
    }

    #[test]
    fn scale_min_k4_unpacks_what_pack_wrote() {
        let scales = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 63.0];
        let mins = [63.0, 0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0];
        let mut packed = [0u8; K_SCALE_SIZE];
        pack_scales_k4(&scales, &mins, 63.0, 63.0, &mut packed);
        for j in 0..8 {
            assert_eq!(
                get_scale_min_k4(j, &packed),
                (scales[j] as u8, mins[j] as u8),
                "{j}"
            );
        }
    }
}
