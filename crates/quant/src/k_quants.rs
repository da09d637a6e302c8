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

/// `make_qx_quants` for `qw == NULL`, `rmse_type == 1` (the Q6_K path). Scalar reference for
/// the lane version.
#[cfg(test)]
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
/// stores `-min` in `the_min`. `N` is the sub-block length (16 or 32). Straight port, kept as
/// the reference the lane version is tested against.
#[cfg(test)]
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

/// [`make_qkx2_quants`] on `S` sub-blocks at once, one sub-block per lane.
///
/// `xt[i][s]` / `wt[i][s]` are element `i` (and its weight) of sub-block `s`. Every lane runs
/// exactly ggml's sequence for its own sub-block: the candidate loop, the sums over `i` in
/// order, the same expressions; lanes only make independent work run side by side, so there is
/// no speculation and nothing to redo when a winning candidate moves `min`. Writes the quants
/// of sub-block `s` to `l_out[N * s..N * s + N]`, its scale to `scales[s]` and `-min` to
/// `the_min[s]`.
#[inline(always)]
fn make_qkx2_quants_sub<const N: usize, const S: usize>(
    nmax: i32,
    xt: &[[f32; S]; N],
    wt: &[[f32; S]; N],
    l_out: &mut [u8],
    scales: &mut [f32],
    the_min: &mut [f32],
    rmin: f32,
    rdelta: f32,
    nstep: usize,
    use_mad: bool,
) {
    let mut min = xt[0];
    let mut max = xt[0];
    let mut sum_w = wt[0];
    let mut sum_x = [0.0f32; S];
    for s in 0..S {
        sum_x[s] = sum_w[s] * xt[0][s];
    }
    for i in 1..N {
        for s in 0..S {
            let v = xt[i][s];
            if v < min[s] {
                min[s] = v;
            }
            if v > max[s] {
                max[s] = v;
            }
            let w = wt[i][s];
            sum_w[s] += w;
            sum_x[s] += w * v;
        }
    }
    let mut flat = [false; S];
    for s in 0..S {
        if min[s] > 0.0 {
            min[s] = 0.0;
        }
        flat[s] = max[s] == min[s];
    }
    let flat_min = min;
    let nmaxf = nmax as f32;
    let mut iscale = [0.0f32; S];
    let mut scale = [0.0f32; S];
    for s in 0..S {
        iscale[s] = nmaxf / (max[s] - min[s]);
        scale[s] = 1.0 / iscale[s];
    }
    let mut best_error = [0.0f32; S];
    for i in 0..N {
        for s in 0..S {
            let l = nearest_int(iscale[s] * (xt[i][s] - min[s])).clamp(0, nmax) as f32;
            let diff = scale[s] * l + min[s] - xt[i][s];
            let diff = if use_mad { diff.abs() } else { diff * diff };
            best_error[s] += wt[i][s] * diff;
        }
    }
    // the (iscale, min) that produced each lane's current L
    let mut win_iscale = iscale;
    let mut win_min = min;
    for is in 0..=nstep {
        for s in 0..S {
            iscale[s] = (rmin + rdelta * is as f32 + nmaxf) / (max[s] - min[s]);
        }
        let mut sum_l = [0.0f32; S];
        let mut sum_l2 = [0.0f32; S];
        let mut sum_xl = [0.0f32; S];
        for i in 0..N {
            for s in 0..S {
                let l = nearest_int(iscale[s] * (xt[i][s] - min[s])).clamp(0, nmax) as f32;
                let wl = wt[i][s] * l;
                sum_l[s] += wl;
                sum_l2[s] += wl * l;
                sum_xl[s] += wl * xt[i][s];
            }
        }
        let mut d = [0.0f32; S];
        let mut this_scale = [0.0f32; S];
        let mut this_min = [0.0f32; S];
        for s in 0..S {
            d[s] = sum_w[s] * sum_l2[s] - sum_l[s] * sum_l[s];
            let ts = (sum_w[s] * sum_xl[s] - sum_x[s] * sum_l[s]) / d[s];
            let tm = (sum_l2[s] * sum_x[s] - sum_l[s] * sum_xl[s]) / d[s];
            if tm > 0.0 {
                this_min[s] = 0.0;
                this_scale[s] = sum_xl[s] / sum_l2[s];
            } else {
                this_min[s] = tm;
                this_scale[s] = ts;
            }
        }
        let mut cur_error = [0.0f32; S];
        for i in 0..N {
            for s in 0..S {
                let l = nearest_int(iscale[s] * (xt[i][s] - min[s])).clamp(0, nmax) as f32;
                let diff = this_scale[s] * l + this_min[s] - xt[i][s];
                let diff = if use_mad { diff.abs() } else { diff * diff };
                cur_error[s] += wt[i][s] * diff;
            }
        }
        for s in 0..S {
            if d[s] > 0.0 && cur_error[s] < best_error[s] {
                best_error[s] = cur_error[s];
                scale[s] = this_scale[s];
                win_iscale[s] = iscale[s];
                win_min[s] = min[s];
                min[s] = this_min[s];
            }
        }
    }
    for s in 0..S {
        let l = &mut l_out[N * s..N * s + N];
        if flat[s] {
            l.fill(0);
            scales[s] = 0.0;
            the_min[s] = -flat_min[s];
            continue;
        }
        for i in 0..N {
            l[i] = nearest_int(win_iscale[s] * (xt[i][s] - win_min[s])).clamp(0, nmax) as u8;
        }
        scales[s] = scale[s];
        the_min[s] = -min[s];
    }
}

/// `make_qx_quants(16, nmax, x, L, rmse_type = 1, qw = NULL)` with the 18 candidate scales
/// evaluated in lanes. Candidates do not depend on each other here, only the choice among them
/// is sequential, so this is a straight reordering of independent float sequences.
#[inline(always)]
fn make_qx_quants_rmse1_lanes<const L: usize>(x: &[f32; 16], nmax: i32, l_out: &mut [i8]) -> f32 {
    // is = -9..=9 without 0 is 18 candidates; L - 18 padding lanes (ignored)
    const { assert!(L >= 18) };
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
        l_out[..16].fill(0);
        return 0.0;
    }
    let nmaxf = nmax as f32;
    let iscale0 = -nmaxf / max;
    let mut sumlx = 0.0f32;
    let mut suml2 = 0.0f32;
    for i in 0..16 {
        let l = nearest_int(iscale0 * x[i]).clamp(-nmax, nmax - 1);
        l_out[i] = (l + nmax) as i8;
        let w = x[i] * x[i];
        sumlx += w * x[i] * l as f32;
        suml2 += w * l as f32 * l as f32;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    let mut iscale = [0.0f32; L];
    for (k, s) in iscale.iter_mut().enumerate() {
        let is = k as i32 - 9 + (k >= 9) as i32; // -9..=-1, 1..=9, then padding 10, 11
        *s = -(nmaxf + 0.1 * is as f32) / max;
    }
    let mut lx = [0.0f32; L];
    let mut l2 = [0.0f32; L];
    for &xi in x {
        let w = xi * xi;
        let wx = w * xi;
        for k in 0..L {
            let l = nearest_int(iscale[k] * xi).clamp(-nmax, nmax - 1) as f32;
            lx[k] += wx * l;
            l2[k] += w * l * l;
        }
    }
    let mut winner = None;
    for k in 0..18 {
        if l2[k] > 0.0 && lx[k] * lx[k] > best * l2[k] {
            scale = lx[k] / l2[k];
            best = scale * lx[k];
            winner = Some(iscale[k]);
        }
    }
    if let Some(is) = winner {
        for i in 0..16 {
            let l = nearest_int(is * x[i]);
            l_out[i] = (nmax + l.clamp(-nmax, nmax - 1)) as i8;
        }
    }
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

/// [`make_qkx2_quants_sub`] on eight sub-blocks: the AVX2 intrinsics when `AVX` (only set by
/// the callers in `mod avx2`, which run after the CPU check), the portable lanes otherwise.
#[inline(always)]
fn qkx2_sub8<const N: usize, const AVX: bool>(
    nmax: i32,
    xt: &[[f32; 8]; N],
    wt: &[[f32; 8]; N],
    l_out: &mut [u8],
    scales: &mut [f32],
    the_min: &mut [f32],
    rmin: f32,
    rdelta: f32,
    nstep: usize,
    use_mad: bool,
) {
    #[cfg(target_arch = "x86_64")]
    if AVX {
        // SAFETY: AVX is only true inside the AVX2 entry points (CPU checked by the caller).
        unsafe {
            avx2::make_qkx2_quants_sub8::<N>(
                nmax, xt, wt, l_out, scales, the_min, rmin, rdelta, nstep, use_mad,
            )
        };
        return;
    }
    make_qkx2_quants_sub::<N, 8>(
        nmax, xt, wt, l_out, scales, the_min, rmin, rdelta, nstep, use_mad,
    )
}

/// Sub-block search shared by Q4_K and Q5_K (`make_qkx2_quants` on each 32, with ggml's
/// weights `av_x + |x|`). Returns (max_scale, max_min).
#[inline(always)]
fn kx2_subblocks<const AVX: bool>(
    x: &[f32],
    nmax: i32,
    rmin: f32,
    rdelta: f32,
    nstep: usize,
    l: &mut [u8; QK_K],
    scales: &mut [f32; 8],
    mins: &mut [f32; 8],
) -> (f32, f32) {
    // element i of sub-block j in lane j
    let mut xt = [[0.0f32; 8]; 32];
    for j in 0..8 {
        for i in 0..32 {
            xt[i][j] = x[32 * j + i];
        }
    }
    let mut sum_x2 = [0.0f32; 8];
    for row in &xt {
        for j in 0..8 {
            sum_x2[j] += row[j] * row[j];
        }
    }
    let mut av_x = [0.0f32; 8];
    for j in 0..8 {
        av_x[j] = (sum_x2[j] / 32.0).sqrt();
    }
    let mut wt = [[0.0f32; 8]; 32];
    for i in 0..32 {
        for j in 0..8 {
            wt[i][j] = av_x[j] + xt[i][j].abs();
        }
    }
    qkx2_sub8::<32, AVX>(nmax, &xt, &wt, l, scales, mins, rmin, rdelta, nstep, false);
    let mut max_scale = 0.0f32;
    let mut max_min = 0.0f32;
    for j in 0..QK_K / 32 {
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

/// `quantize_row_q4_k_ref`, generic over the number of candidate scales evaluated side by
/// side (every choice gives the same bytes; the AVX2 build uses wider lanes).
#[inline(always)]
fn quantize_row_q4_k<const AVX: bool>(src: &[f32], dst: &mut [BlockQ4K]) {
    let mut l = [0u8; QK_K];
    let mut mins = [0.0f32; 8];
    let mut scales = [0.0f32; 8];
    for (x, y) in src.chunks_exact(QK_K).zip(dst) {
        let (max_scale, max_min) =
            kx2_subblocks::<AVX>(x, 15, -1.0, 0.1, 20, &mut l, &mut scales, &mut mins);
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

impl BlockFormat for BlockQ4K {
    const BLCK: usize = QK_K;
    const TYPE: GgmlType = GgmlType::Q4_K;

    fn quantize_row(src: &[f32], dst: &mut [Self]) {
        #[cfg(target_arch = "x86_64")]
        if crate::x86::has_avx2() {
            // SAFETY: the CPU has AVX2 (checked at run time).
            return unsafe { avx2::quantize_row_q4_k(src, dst) };
        }
        quantize_row_q4_k::<false>(src, dst)
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

/// `quantize_row_q5_k_ref`, generic over the number of candidate scales evaluated side by
/// side (every choice gives the same bytes; the AVX2 build uses wider lanes).
#[inline(always)]
fn quantize_row_q5_k<const AVX: bool>(src: &[f32], dst: &mut [BlockQ5K]) {
    let mut l = [0u8; QK_K];
    let mut mins = [0.0f32; 8];
    let mut scales = [0.0f32; 8];
    for (x, y) in src.chunks_exact(QK_K).zip(dst) {
        let (max_scale, max_min) =
            kx2_subblocks::<AVX>(x, 31, -0.5, 0.1, 15, &mut l, &mut scales, &mut mins);
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

impl BlockFormat for BlockQ5K {
    const BLCK: usize = QK_K;
    const TYPE: GgmlType = GgmlType::Q5_K;

    fn quantize_row(src: &[f32], dst: &mut [Self]) {
        #[cfg(target_arch = "x86_64")]
        if crate::x86::has_avx2() {
            // SAFETY: the CPU has AVX2 (checked at run time).
            return unsafe { avx2::quantize_row_q5_k(src, dst) };
        }
        quantize_row_q5_k::<false>(src, dst)
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

/// `quantize_row_q6_k_ref`, generic over the number of candidate scales evaluated side by
/// side (every choice gives the same bytes; the AVX2 build uses wider lanes).
#[inline(always)]
fn quantize_row_q6_k<const L: usize>(src: &[f32], dst: &mut [BlockQ6K]) {
    let mut l = [0i8; QK_K];
    let mut scales = [0.0f32; QK_K / 16];
    for (x, y) in src.chunks_exact(QK_K).zip(dst) {
        let mut max_scale = 0.0f32;
        let mut max_abs_scale = 0.0f32;
        for ib in 0..QK_K / 16 {
            let scale =
                make_qx_quants_rmse1_lanes::<L>(sub(x, ib), 32, &mut l[16 * ib..16 * ib + 16]);
            scales[ib] = scale;
            let abs_scale = scale.abs();
            if abs_scale > max_abs_scale {
                max_abs_scale = abs_scale;
                max_scale = scale;
            }
        }
        if max_abs_scale < GROUP_MAX_EPS {
            *y = BlockQ6K::zeroed();
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

impl BlockFormat for BlockQ6K {
    const BLCK: usize = QK_K;
    const TYPE: GgmlType = GgmlType::Q6_K;

    fn quantize_row(src: &[f32], dst: &mut [Self]) {
        #[cfg(target_arch = "x86_64")]
        if crate::x86::has_avx2() {
            // SAFETY: the CPU has AVX2 (checked at run time).
            return unsafe { avx2::quantize_row_q6_k(src, dst) };
        }
        quantize_row_q6_k::<20>(src, dst)
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
    ///
    /// ggml finds the largest magnitude and its value in one scan that keeps the first value of
    /// each new largest magnitude; here the magnitude is found eight lanes at a time and then
    /// its first value (the same value: NaNs are skipped by both), since decode quantizes its
    /// activations once per K-quant product and the scan's compare-and-branch was ~1.5 µs of
    /// a 1536-wide row.
    fn quantize_row(src: &[f32], dst: &mut [Self]) {
        for (x, y) in src.chunks_exact(QK_K).zip(dst) {
            let mut lanes = [0.0f32; 8];
            for c in x.chunks_exact(8) {
                for (m, &v) in lanes.iter_mut().zip(c) {
                    // `maxps`: a NaN leaves the lane as it was
                    let a = v.abs();
                    *m = if a > *m { a } else { *m };
                }
            }
            let amax = lanes.iter().fold(0.0f32, |m, &v| m.max(v));
            if amax == 0.0 {
                *y = Self::zeroed();
                continue;
            }
            let max = *x
                .iter()
                .find(|v| v.abs() == amax)
                .expect("the largest magnitude is one of the values");
            let iscale = -127.0 / max;
            // each sum of 16 in the same pass
            for ((qs, xs), s) in
                y.qs.chunks_exact_mut(16)
                    .zip(x.chunks_exact(16))
                    .zip(&mut y.bsums)
            {
                let mut sum: i32 = 0;
                for (q, &v) in qs.iter_mut().zip(xs) {
                    *q = nearest_int(iscale * v).min(127) as i8;
                    sum += *q as i32;
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

/// `quantize_row_q2_k_ref`, generic over the number of candidate scales evaluated side by
/// side (every choice gives the same bytes; the AVX2 build uses wider lanes).
#[inline(always)]
fn quantize_row_q2_k<const AVX: bool>(src: &[f32], dst: &mut [BlockQ2K]) {
    const Q4SCALE: f32 = 15.0;
    let mut l = [0u8; QK_K];
    let mut mins = [0.0f32; QK_K / 16];
    let mut scales = [0.0f32; QK_K / 16];
    for (x, y) in src.chunks_exact(QK_K).zip(dst) {
        // sub-blocks 8h..8h+8 side by side: element i of sub-block 8h + s in lane s
        for h in 0..2 {
            let mut xt = [[0.0f32; 8]; 16];
            let mut wt = [[0.0f32; 8]; 16];
            for s in 0..8 {
                for i in 0..16 {
                    let v = x[16 * (8 * h + s) + i];
                    xt[i][s] = v;
                    wt[i][s] = v.abs();
                }
            }
            qkx2_sub8::<16, AVX>(
                3,
                &xt,
                &wt,
                &mut l[128 * h..128 * h + 128],
                &mut scales[8 * h..8 * h + 8],
                &mut mins[8 * h..8 * h + 8],
                -0.5,
                0.1,
                15,
                true,
            );
        }
        let mut max_scale = 0.0f32;
        let mut max_min = 0.0f32;
        for j in 0..QK_K / 16 {
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
                *qv = l[j + i] | (l[j + i + 32] << 2) | (l[j + i + 64] << 4) | (l[j + i + 96] << 6);
            }
        }
    }
}

impl BlockFormat for BlockQ2K {
    const BLCK: usize = QK_K;
    const TYPE: GgmlType = GgmlType::Q2_K;

    fn quantize_row(src: &[f32], dst: &mut [Self]) {
        #[cfg(target_arch = "x86_64")]
        if crate::x86::has_avx2() {
            // SAFETY: the CPU has AVX2 (checked at run time).
            return unsafe { avx2::quantize_row_q2_k(src, dst) };
        }
        quantize_row_q2_k::<false>(src, dst)
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

/// `best_index_int8` over the 16 sorted IQ4_NL levels: the level `x` rounds to, ties going up.
///
/// ggml has two versions: the classic binary search (`x - val[mu-1] < val[mu] - x`, in the
/// llama.cpp that llama-cpp-python 0.3.36 ships) and a newer branch-free search on doubled
/// midpoints. For finite `x` they agree exactly (both differences are exact in f32 for these
/// small integer levels, so both compare 2x with val[j-1] + val[j]); they differ only for NaN,
/// where the classic one returns 15 and the new one 0. We follow the classic one.
#[inline(always)]
fn best_index_iq4nl(x: f32) -> u8 {
    if x.is_nan() {
        return 15;
    }
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

/// The K-quant searches compiled for AVX2: the same code with wider lanes, so LLVM turns the
/// loops over candidate scales into 256-bit operations. Only independent float sequences run
/// side by side (no reassociation, and Rust never fuses `a * b + c`), so the bytes are those of
/// the scalar build.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::*;
    use std::arch::x86_64::*;

    /// `nearest_int` on eight lanes (the same bit trick), then `clamp(0, nmax)`, as f32.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn q_clamped(v: __m256, nmax: __m256i) -> __m256 {
        let val = _mm256_add_ps(v, _mm256_set1_ps(12582912.0));
        let i = _mm256_sub_epi32(
            _mm256_and_si256(_mm256_castps_si256(val), _mm256_set1_epi32(0x007f_ffff)),
            _mm256_set1_epi32(0x0040_0000),
        );
        let i = _mm256_min_epi32(_mm256_max_epi32(i, _mm256_setzero_si256()), nmax);
        _mm256_cvtepi32_ps(i)
    }

    #[target_feature(enable = "avx2")]
    #[inline]
    fn blend(a: __m256, b: __m256, take_b: __m256) -> __m256 {
        _mm256_blendv_ps(a, b, take_b)
    }

    /// [`make_qkx2_quants_sub`] for eight sub-blocks, in AVX2 intrinsics: the same operations
    /// in the same order per lane; branches become blends (both sides are computed, the
    /// condition picks one, as the scalar `if` does).
    #[target_feature(enable = "avx2")]
    #[inline]
    pub(super) fn make_qkx2_quants_sub8<const N: usize>(
        nmax: i32,
        xt: &[[f32; 8]; N],
        wt: &[[f32; 8]; N],
        l_out: &mut [u8],
        scales: &mut [f32],
        the_min: &mut [f32],
        rmin: f32,
        rdelta: f32,
        nstep: usize,
        use_mad: bool,
    ) {
        // SAFETY (all loads): each row holds 8 floats.
        let ld = |r: &[f32; 8]| unsafe { _mm256_loadu_ps(r.as_ptr()) };
        let mut x = [_mm256_setzero_ps(); N];
        let mut w = [_mm256_setzero_ps(); N];
        for i in 0..N {
            x[i] = ld(&xt[i]);
            w[i] = ld(&wt[i]);
        }
        let zero = _mm256_setzero_ps();
        let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
        let nmax_i = _mm256_set1_epi32(nmax);
        let err = |diff: __m256| {
            if use_mad {
                _mm256_and_ps(diff, abs_mask)
            } else {
                _mm256_mul_ps(diff, diff)
            }
        };
        let mut min = x[0];
        let mut max = x[0];
        let mut sum_w = w[0];
        let mut sum_x = _mm256_mul_ps(sum_w, x[0]);
        for i in 1..N {
            // minps(a, b) is `a < b ? a : b`: exactly `if x < min { min = x }`
            min = _mm256_min_ps(x[i], min);
            max = _mm256_max_ps(x[i], max);
            sum_w = _mm256_add_ps(sum_w, w[i]);
            sum_x = _mm256_add_ps(sum_x, _mm256_mul_ps(w[i], x[i]));
        }
        min = blend(min, zero, _mm256_cmp_ps::<_CMP_GT_OQ>(min, zero));
        let flat = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_EQ_OQ>(max, min));
        let flat_min = min;
        let nmaxf = nmax as f32;
        let iscale0 = _mm256_div_ps(_mm256_set1_ps(nmaxf), _mm256_sub_ps(max, min));
        let mut scale = _mm256_div_ps(_mm256_set1_ps(1.0), iscale0);
        let mut best_error = zero;
        for i in 0..N {
            let l = q_clamped(_mm256_mul_ps(iscale0, _mm256_sub_ps(x[i], min)), nmax_i);
            let diff = _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(scale, l), min), x[i]);
            best_error = _mm256_add_ps(best_error, _mm256_mul_ps(w[i], err(diff)));
        }
        let mut win_iscale = iscale0;
        let mut win_min = min;
        for is in 0..=nstep {
            let num = rmin + rdelta * is as f32 + nmaxf;
            let iscale = _mm256_div_ps(_mm256_set1_ps(num), _mm256_sub_ps(max, min));
            let mut sum_l = zero;
            let mut sum_l2 = zero;
            let mut sum_xl = zero;
            let mut l = [zero; N];
            for i in 0..N {
                l[i] = q_clamped(_mm256_mul_ps(iscale, _mm256_sub_ps(x[i], min)), nmax_i);
                let wl = _mm256_mul_ps(w[i], l[i]);
                sum_l = _mm256_add_ps(sum_l, wl);
                sum_l2 = _mm256_add_ps(sum_l2, _mm256_mul_ps(wl, l[i]));
                sum_xl = _mm256_add_ps(sum_xl, _mm256_mul_ps(wl, x[i]));
            }
            let d = _mm256_sub_ps(_mm256_mul_ps(sum_w, sum_l2), _mm256_mul_ps(sum_l, sum_l));
            let ts = _mm256_div_ps(
                _mm256_sub_ps(_mm256_mul_ps(sum_w, sum_xl), _mm256_mul_ps(sum_x, sum_l)),
                d,
            );
            let tm = _mm256_div_ps(
                _mm256_sub_ps(_mm256_mul_ps(sum_l2, sum_x), _mm256_mul_ps(sum_l, sum_xl)),
                d,
            );
            let pos = _mm256_cmp_ps::<_CMP_GT_OQ>(tm, zero);
            let this_min = blend(tm, zero, pos);
            let this_scale = blend(ts, _mm256_div_ps(sum_xl, sum_l2), pos);
            let mut cur_error = zero;
            for i in 0..N {
                let diff = _mm256_sub_ps(
                    _mm256_add_ps(_mm256_mul_ps(this_scale, l[i]), this_min),
                    x[i],
                );
                cur_error = _mm256_add_ps(cur_error, _mm256_mul_ps(w[i], err(diff)));
            }
            let win = _mm256_and_ps(
                _mm256_cmp_ps::<_CMP_GT_OQ>(d, zero),
                _mm256_cmp_ps::<_CMP_LT_OQ>(cur_error, best_error),
            );
            best_error = blend(best_error, cur_error, win);
            scale = blend(scale, this_scale, win);
            win_iscale = blend(win_iscale, iscale, win);
            win_min = blend(win_min, min, win);
            min = blend(min, this_min, win);
        }
        let mut lt = [[0i32; 8]; N];
        for i in 0..N {
            let l = q_clamped(
                _mm256_mul_ps(win_iscale, _mm256_sub_ps(x[i], win_min)),
                nmax_i,
            );
            // SAFETY: 8 i32 into an [i32; 8].
            unsafe { _mm256_storeu_si256(lt[i].as_mut_ptr().cast(), _mm256_cvtps_epi32(l)) };
        }
        let mut sc = [0f32; 8];
        let mut mn = [0f32; 8];
        let mut fm = [0f32; 8];
        // SAFETY: 8 floats into [f32; 8] arrays.
        unsafe {
            _mm256_storeu_ps(sc.as_mut_ptr(), scale);
            _mm256_storeu_ps(mn.as_mut_ptr(), min);
            _mm256_storeu_ps(fm.as_mut_ptr(), flat_min);
        }
        for s in 0..8 {
            let l = &mut l_out[N * s..N * s + N];
            if flat & (1 << s) != 0 {
                l.fill(0);
                scales[s] = 0.0;
                the_min[s] = -fm[s];
                continue;
            }
            for i in 0..N {
                l[i] = lt[i][s] as u8;
            }
            scales[s] = sc[s];
            the_min[s] = -mn[s];
        }
    }

    #[target_feature(enable = "avx2")]
    pub(super) fn quantize_row_q2_k(src: &[f32], dst: &mut [BlockQ2K]) {
        super::quantize_row_q2_k::<true>(src, dst)
    }

    #[target_feature(enable = "avx2")]
    pub(super) fn quantize_row_q4_k(src: &[f32], dst: &mut [BlockQ4K]) {
        super::quantize_row_q4_k::<true>(src, dst)
    }

    #[target_feature(enable = "avx2")]
    pub(super) fn quantize_row_q5_k(src: &[f32], dst: &mut [BlockQ5K]) {
        super::quantize_row_q5_k::<true>(src, dst)
    }

    #[target_feature(enable = "avx2")]
    pub(super) fn quantize_row_q6_k(src: &[f32], dst: &mut [BlockQ6K]) {
        super::quantize_row_q6_k::<24>(src, dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rng(seed: u64) -> impl FnMut() -> f32 {
        let mut s = seed;
        move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        }
    }

    /// Bits of a result, with every NaN alike (which NaN payload survives an addition depends
    /// on operand order, which the compiler may pick differently for vector code).
    fn bits(v: f32) -> u32 {
        if v.is_nan() {
            0x7fc0_0000
        } else {
            v.to_bits()
        }
    }

    /// Runs [`make_qkx2_quants_sub`] on `S` sub-blocks and [`make_qkx2_quants`] on each one.
    fn check_sub<const N: usize, const S: usize>(
        x: &[f32],
        weights: impl Fn(&[f32; N]) -> [f32; N],
        (nmax, rmin, rdelta, nstep, use_mad): (i32, f32, f32, i32, bool),
    ) {
        let mut xt = [[0f32; S]; N];
        let mut wt = [[0f32; S]; N];
        let mut want = Vec::new();
        for s in 0..S {
            let xs: &[f32; N] = x[N * s..N * s + N].try_into().unwrap();
            let w = weights(xs);
            for i in 0..N {
                xt[i][s] = xs[i];
                wt[i][s] = w[i];
            }
            let mut l = [0u8; N];
            let mut m = 0f32;
            let sc =
                make_qkx2_quants::<N>(nmax, xs, &w, &mut l, &mut m, rmin, rdelta, nstep, use_mad);
            want.push((bits(sc), bits(m), l.to_vec()));
        }
        let mut l = vec![0u8; N * S];
        let (mut sc, mut m) = ([0f32; S], [0f32; S]);
        make_qkx2_quants_sub::<N, S>(
            nmax,
            &xt,
            &wt,
            &mut l,
            &mut sc,
            &mut m,
            rmin,
            rdelta,
            nstep as usize,
            use_mad,
        );
        #[cfg(target_arch = "x86_64")]
        if S == 8 && crate::x86::has_avx2() {
            let (mut xt8, mut wt8) = ([[0f32; 8]; N], [[0f32; 8]; N]);
            for i in 0..N {
                xt8[i].copy_from_slice(&xt[i]);
                wt8[i].copy_from_slice(&wt[i]);
            }
            let (xt8, wt8) = (&xt8, &wt8);
            let mut l8 = vec![0u8; N * 8];
            let (mut sc8, mut m8) = ([0f32; 8], [0f32; 8]);
            // SAFETY: AVX2 checked above.
            unsafe {
                avx2::make_qkx2_quants_sub8::<N>(
                    nmax,
                    xt8,
                    wt8,
                    &mut l8,
                    &mut sc8,
                    &mut m8,
                    rmin,
                    rdelta,
                    nstep as usize,
                    use_mad,
                )
            };
            for s in 0..8 {
                let mut got = (bits(sc8[s]), bits(m8[s]), l8[N * s..N * s + N].to_vec());
                if sc8[s].is_nan() || m8[s].is_nan() {
                    got.2 = want[s].2.clone();
                }
                assert_eq!(want[s], got, "AVX2: sub-block {s} of {:?}", &x[..N * S]);
            }
        }
        for s in 0..S {
            let mut got = (bits(sc[s]), bits(m[s]), l[N * s..N * s + N].to_vec());
            if sc[s].is_nan() || m[s].is_nan() {
                // NaN input: the quants then hang on NaN payloads (see the crate docs)
                got.2 = want[s].2.clone();
            }
            assert_eq!(want[s], got, "sub-block {s} of {:?}", &x[..N * S]);
        }
    }

    fn q4k_weights(xs: &[f32; 32]) -> [f32; 32] {
        let mut sum_x2 = 0f32;
        for &v in xs {
            sum_x2 += v * v;
        }
        let av_x = (sum_x2 / 32.0).sqrt();
        xs.map(|v| av_x + v.abs())
    }

    #[test]
    fn lane_searches_equal_the_scalar_ports() {
        let mut r = rng(42);
        for trial in 0..4_000 {
            let mut x = [0f32; 256];
            for (k, v) in x.iter_mut().enumerate() {
                let t = trial * 8 + k / 32;
                let mag = [1.0f32, 0.01, 100.0, 1e-5][t % 4];
                let offset = [0.0f32, 0.5, -0.5, 2.0][(t / 4) % 4];
                *v = (r() + offset * r().abs()) * mag;
            }
            if trial % 7 == 0 {
                x[3] = x[7]; // duplicates
                x[9] = 0.0;
                x[40..72].fill(0.25); // a flat sub-block
                x[100..116].fill(0.0);
            }
            check_sub::<32, 8>(&x, q4k_weights, (15, -1.0, 0.1, 20, false));
            check_sub::<32, 8>(&x, q4k_weights, (31, -0.5, 0.1, 15, false));
            check_sub::<16, 8>(&x[..128], |xs| xs.map(f32::abs), (3, -0.5, 0.1, 15, true));
            check_sub::<16, 4>(
                &x[128..192],
                |xs| xs.map(f32::abs),
                (3, -0.5, 0.1, 15, true),
            );
            let x16: [f32; 16] = x[..16].try_into().unwrap();
            let (mut q1, mut q2) = ([0i8; 16], [0i8; 16]);
            let s1 = make_qx_quants_rmse1(&x16, 32, &mut q1);
            let s2 = make_qx_quants_rmse1_lanes::<20>(&x16, 32, &mut q2);
            assert_eq!((s1.to_bits(), q1), (s2.to_bits(), q2), "trial {trial}");
            let s3 = make_qx_quants_rmse1_lanes::<24>(&x16, 32, &mut q2);
            assert_eq!((s1.to_bits(), q1), (s3.to_bits(), q2), "trial {trial}");
        }
    }

    #[test]
    fn lane_searches_equal_the_scalar_ports_on_awkward_data() {
        for seed in 0..4 {
            let x = crate::tests::awkward_blocks(seed, 4000, 32);
            for x in x.chunks_exact(256) {
                check_sub::<32, 8>(x, q4k_weights, (15, -1.0, 0.1, 20, false));
                check_sub::<32, 8>(x, q4k_weights, (31, -0.5, 0.1, 15, false));
                check_sub::<16, 8>(&x[..128], |xs| xs.map(f32::abs), (3, -0.5, 0.1, 15, true));
            }
        }
    }

    /// Q8_K's two-pass largest magnitude against `quantize_row_q8_K_ref`'s one scan, written
    /// as ggml writes it: the same bytes on random and awkward data, on blocks where a value
    /// and its negation tie for the largest (the first one sets the sign of `d`), and on
    /// blocks with NaNs (skipped by both).
    #[test]
    fn q8_k_rows_equal_ggmls_scan() {
        fn reference(x: &[f32]) -> BlockQ8K {
            let mut y = BlockQ8K::zeroed();
            let (mut max, mut amax) = (0.0f32, 0.0f32);
            for &v in x {
                let ax = v.abs();
                if ax > amax {
                    amax = ax;
                    max = v;
                }
            }
            if amax == 0.0 {
                return y;
            }
            let iscale = -127.0 / max;
            for (q, &v) in y.qs.iter_mut().zip(x) {
                *q = nearest_int(iscale * v).min(127) as i8;
            }
            for (j, s) in y.bsums.iter_mut().enumerate() {
                *s = y.qs[16 * j..16 * j + 16]
                    .iter()
                    .map(|&q| q as i32)
                    .sum::<i32>() as i16;
            }
            y.d = 1.0 / iscale;
            y
        }
        let mut r = rng(3);
        let mut x: Vec<f32> = (0..QK_K * 16).map(|_| r()).collect();
        x.extend(crate::tests::awkward_blocks(5, 512, 32));
        for (b, at) in [(1usize, [3usize, 200]), (2, [250, 7]), (3, [0, 255])] {
            let blk = &mut x[b * QK_K..(b + 1) * QK_K];
            blk[at[0]] = 9.0;
            blk[at[1]] = -9.0;
        }
        x[4 * QK_K + 17] = f32::NAN;
        x[5 * QK_K..6 * QK_K].fill(f32::NAN);
        x[6 * QK_K..7 * QK_K].fill(0.0);
        x[7 * QK_K + 100] = -0.0;
        let mut got = vec![BlockQ8K::zeroed(); x.len() / QK_K];
        BlockQ8K::quantize_row(&x, &mut got);
        for (i, (g, xs)) in got.iter().zip(x.chunks_exact(QK_K)).enumerate() {
            let want = reference(xs);
            assert_eq!(
                bytemuck::bytes_of(g),
                bytemuck::bytes_of(&want),
                "block {i}"
            );
        }
        // the tie: the first of 9 and -9 decides
        assert!(got[1].d < 0.0 && got[2].d > 0.0 && got[3].d < 0.0);
    }

    /// The portable build of each K-quant row (what non-AVX2 CPUs and other architectures run)
    /// against the dispatched one (AVX2 here), on whole rows of random and awkward data.
    #[test]
    fn portable_rows_equal_dispatched_rows() {
        fn same<B: BlockFormat>(x: &[f32], portable: fn(&[f32], &mut [B])) {
            let n = x.len() / QK_K;
            let (mut a, mut b) = (vec![B::zeroed(); n], vec![B::zeroed(); n]);
            portable(x, &mut a);
            B::quantize_row(x, &mut b);
            for i in 0..n {
                let xs = &x[i * QK_K..(i + 1) * QK_K];
                if xs.iter().any(|v| v.is_nan()) {
                    continue; // NaN payloads may differ (crate docs)
                }
                assert_eq!(
                    bytemuck::bytes_of(&a[i]),
                    bytemuck::bytes_of(&b[i]),
                    "{}",
                    B::TYPE
                );
            }
        }
        let mut r = rng(7);
        let mut x: Vec<f32> = (0..QK_K * 64).map(|_| r() * 0.1).collect();
        x.extend(crate::tests::awkward_blocks(11, 2048, 32));
        same::<BlockQ2K>(&x, quantize_row_q2_k::<false>);
        same::<BlockQ4K>(&x, quantize_row_q4_k::<false>);
        same::<BlockQ5K>(&x, quantize_row_q5_k::<false>);
        same::<BlockQ6K>(&x, quantize_row_q6_k::<20>);
    }

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
        assert_eq!(best_index_iq4nl(f32::NAN), 15);
        assert_eq!(best_index_iq4nl(f32::INFINITY), 15);
        assert_eq!(best_index_iq4nl(f32::NEG_INFINITY), 0);
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
