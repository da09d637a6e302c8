//! Element-wise and row operations of the forward pass, written to follow ggml's CPU ops
//! (`ggml_compute_forward_rms_norm_f32`, `ggml_rope_cache_init`/`rope_yarn`, `ggml_vec_soft_max_f32`).

/// `y = x / sqrt(mean(x²) + eps) * w` (as ggml: each square in f32, their sum in f64).
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, y: &mut [f32]) {
    debug_assert_eq!(x.len(), w.len());
    debug_assert_eq!(x.len(), y.len());
    let sum: f64 = x.iter().map(|&v| (v * v) as f64).sum();
    let mean = (sum / x.len() as f64) as f32;
    let scale = 1.0 / (mean + eps).sqrt();
    for ((yi, &xi), &wi) in y.iter_mut().zip(x).zip(w) {
        *yi = xi * scale * wi;
    }
}

/// RoPE settings read from the GGUF (`{arch}.rope.*`).
#[derive(Debug, Clone, PartialEq)]
pub struct RopeConfig {
    /// Rotated dimensions per head (`rope.dimension_count`, default the head size).
    pub n_dims: usize,
    /// `rope.freq_base` (default 10000).
    pub freq_base: f32,
    /// `1 / rope.scaling.factor` for linear scaling, else 1.
    pub freq_scale: f32,
}

/// Fill `cache` (length `n_dims`) with `cos, sin` pairs for position `pos`, as ggml's
/// `ggml_rope_cache_init` does (no YaRN: ext_factor 0, attn_factor 1). `freq_factors` (from a
/// `rope_freqs.weight` tensor, Llama 3 style) divides each pair's angle when present.
pub fn rope_cache(cfg: &RopeConfig, pos: usize, freq_factors: Option<&[f32]>, cache: &mut [f32]) {
    debug_assert_eq!(cache.len(), cfg.n_dims);
    let theta_scale = cfg.freq_base.powf(-2.0 / cfg.n_dims as f32);
    let mut theta = pos as f32;
    for i in 0..cfg.n_dims / 2 {
        let ff = freq_factors.map_or(1.0, |f| f[i]);
        let t = cfg.freq_scale * (theta / ff);
        cache[2 * i] = t.cos();
        cache[2 * i + 1] = t.sin();
        theta *= theta_scale;
    }
}

/// Rotate one head in place, NORM style (adjacent pairs `x[2i], x[2i+1]`), the rotation llama.cpp
/// uses for `llama` (the converter permutes Q/K rows so this matches the HF half-split rotation).
/// Dimensions past `cache.len()` are left as they are.
pub fn rope_norm(head: &mut [f32], cache: &[f32]) {
    // `mul_add` is a call to libm's `fmaf` unless FMA is enabled where it is compiled
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("fma") {
        // SAFETY: FMA is present (checked above)
        return unsafe { rope_norm_fma(head, cache) };
    }
    rope_norm_any(head, cache)
}

/// [`rope_norm`] compiled with FMA, so each `mul_add` is one instruction (the same result as
/// the libm call: both are one fused rounding).
///
/// # Safety
/// The CPU must have FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "fma")]
unsafe fn rope_norm_fma(head: &mut [f32], cache: &[f32]) {
    rope_norm_any(head, cache)
}

#[inline(always)]
fn rope_norm_any(head: &mut [f32], cache: &[f32]) {
    for (pair, cs) in head[..cache.len()]
        .chunks_exact_mut(2)
        .zip(cache.chunks_exact(2))
    {
        let (x0, x1) = (pair[0], pair[1]);
        let (c, s) = (cs[0], cs[1]);
        // `x0*c - x1*s` and `x0*s + x1*c` as GCC compiles ggml's `rotate_pairs` on FMA
        // machines (-ffp-contract=fast): the first product of each line fused with the sum
        pair[0] = x0.mul_add(c, -(x1 * s));
        pair[1] = x0.mul_add(s, x1 * c);
    }
}

/// f32 dot product with eight independent accumulators (lets the compiler vectorize).
#[inline]
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0f32; 8];
    let ca = a.chunks_exact(8);
    let cb = b.chunks_exact(8);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use slmpack_kernels::vec::{silu, softmax};

    #[test]
    fn rms_norm_matches_definition() {
        let x = [1.0f32, -2.0, 3.0, 0.5];
        let w = [1.0f32, 2.0, 0.5, -1.0];
        let mut y = [0f32; 4];
        rms_norm(&x, &w, 1e-5, &mut y);
        let ms = (1.0 + 4.0 + 9.0 + 0.25) / 4.0;
        let s = 1.0 / (ms + 1e-5f64).sqrt();
        for i in 0..4 {
            assert!((y[i] as f64 - x[i] as f64 * s * w[i] as f64).abs() < 1e-6);
        }
        // a zero row stays finite thanks to eps
        let mut z = [1f32; 4];
        rms_norm(&[0.0; 4], &w, 1e-5, &mut z);
        assert!(z.iter().all(|v| *v == 0.0));
    }

    #[test]
    fn rope_position_zero_is_identity_and_rotation_preserves_norm() {
        let cfg = RopeConfig {
            n_dims: 8,
            freq_base: 10000.0,
            freq_scale: 1.0,
        };
        let mut cache = vec![0f32; 8];
        rope_cache(&cfg, 0, None, &mut cache);
        let orig: Vec<f32> = (0..10).map(|i| i as f32 * 0.3 - 1.0).collect();
        let mut h = orig.clone();
        rope_norm(&mut h, &cache);
        assert_eq!(h, orig);

        rope_cache(&cfg, 7, None, &mut cache);
        rope_norm(&mut h, &cache);
        // pair 0 rotates by 7 radians exactly (theta_scale^0 = 1)
        let (c, s) = (7f32.cos(), 7f32.sin());
        assert!((h[0] - (orig[0] * c - orig[1] * s)).abs() < 1e-6);
        assert!((h[1] - (orig[0] * s + orig[1] * c)).abs() < 1e-6);
        // pair 1 rotates by 7 * base^(-2/8)
        let t = 7.0 * 10000f32.powf(-0.25);
        assert!((h[2] - (orig[2] * t.cos() - orig[3] * t.sin())).abs() < 1e-5);
        for (p, q) in h.chunks(2).zip(orig.chunks(2)) {
            let n1 = p.iter().map(|v| v * v).sum::<f32>();
            let n0 = q.iter().map(|v| v * v).sum::<f32>();
            assert!((n1 - n0).abs() < 1e-4);
        }
        // dimensions past n_dims pass through
        assert_eq!(&h[8..], &orig[8..]);
    }

    #[test]
    fn rope_relative_positions() {
        // <rope(q, m), rope(k, n)> depends on m - n only
        let cfg = RopeConfig {
            n_dims: 16,
            freq_base: 10000.0,
            freq_scale: 1.0,
        };
        let q: Vec<f32> = (0..16).map(|i| ((i * 7) % 5) as f32 - 2.0).collect();
        let k: Vec<f32> = (0..16).map(|i| ((i * 3) % 7) as f32 * 0.5 - 1.0).collect();
        let dot_at = |m: usize, n: usize| {
            let mut c = vec![0f32; 16];
            let (mut a, mut b) = (q.clone(), k.clone());
            rope_cache(&cfg, m, None, &mut c);
            rope_norm(&mut a, &c);
            rope_cache(&cfg, n, None, &mut c);
            rope_norm(&mut b, &c);
            dot_f32(&a, &b)
        };
        assert!((dot_at(5, 2) - dot_at(13, 10)).abs() < 1e-3);
    }

    #[test]
    fn softmax_sums_to_one_and_is_shift_invariant() {
        let mut a = [1.0f32, 2.0, 3.0, -1000.0];
        let mut b = [1001.0f32, 1002.0, 1003.0, 0.0];
        // the runtime's softmax and SiLU are ggml's, in `slmpack_kernels::vec`
        softmax(&mut a, 1.0);
        softmax(&mut b, 1.0);
        assert!((a.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-6);
        }
        assert!(a[2] > a[1] && a[1] > a[0]);
        assert_eq!(a[3], 0.0);
        let e = [1f32.exp(), 2f32.exp(), 3f32.exp()];
        let s: f32 = e.iter().sum();
        assert!((a[0] - e[0] / s).abs() < 1e-6);
    }

    #[test]
    fn dot_handles_remainders() {
        let a: Vec<f32> = (0..19).map(|i| i as f32).collect();
        let b: Vec<f32> = (0..19).map(|i| (i % 3) as f32).collect();
        let want: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert_eq!(dot_f32(&a, &b), want);
        assert!((silu(0.0)).abs() < 1e-9 && (silu(10.0) - 10.0).abs() < 1e-3);
    }
}
