//! Attention and activation helpers that reproduce ggml-cpu's arithmetic bit for bit.
//!
//! * [`expf`]: ggml's vectorised `ggml_v_expf` (the Arm optimized-routines polynomial, "max error
//!   1.45 + 0.5 ulp"), which ggml-cpu uses on AVX2 and NEON for softmax and SiLU instead of libm's
//!   `expf`; [`silu`] is `ggml_v_silu`, `x / (1 + expf(-x))` with it.
//! * [`softmax`]: `ggml_vec_soft_max_f32` + the scaling in `ggml_compute_forward_soft_max_f32`:
//!   exponentials by groups of 8, each group summed in f32 in the AVX2 `hsum` order and the group
//!   sums added in f64 (on AVX-512 the exponentials are computed sixteen at a time and summed as
//!   two groups of 8: the same bits, ~25% less time). [`softmax_row_f16`] normalises straight
//!   into the f16 probabilities that P·V reads (decode attention: softmax 0.111 -> 0.085 ms a
//!   token with both, one thread, low tier, ~580 positions).
//! * [`dot_f16`]: the dot product llama.cpp's F16 attention products use on x86 (the llamafile
//!   `tinyBLAS` kernel for F16×F16: one 8-lane FMA accumulator, element `i` in lane `i % 8`, then
//!   the `hsum` above). Inputs whose length is not a multiple of 8 are treated as zero-padded,
//!   as llama.cpp pads its KV cache.
//!
//! Each function has a portable version (plain Rust with `f32::mul_add`, which is exactly what
//! an FMA instruction computes) and an AVX2+FMA+F16C version on x86_64, chosen at run time by
//! [`crate::isa`]; both give identical bits (tested in `tests/vec.rs`). aarch64 uses the
//! portable version (same bits as ggml's NEON code, which uses the same operations).

use crate::Isa;

/// The constants of ggml's `ggml_v_expf`, shared by the portable, AVX2 and AVX-512 versions so
/// that all three compute with the same values: `n = round(x / ln 2)` by adding and removing
/// `SHIFT`, `b = x - n ln 2` in two parts, then a degree-5 polynomial `C1..C5`.
mod expc {
    /// 0x1.8p23
    pub const SHIFT: f32 = f32::from_bits(0x4b40_0000);
    /// 0x1.715476p+0 (1 / ln 2)
    pub const INV_LN2: f32 = f32::from_bits(0x3fb8_aa3b);
    /// 0x1.62e4p-1 (ln 2, high part)
    pub const LN2_HI: f32 = f32::from_bits(0x3f31_7200);
    /// 0x1.7f7d1cp-20 (ln 2, low part)
    pub const LN2_LO: f32 = f32::from_bits(0x35bf_be8e);
    /// 0x1.0e4020p-7
    pub const C5: f32 = f32::from_bits(0x3c07_2010);
    /// 0x1.573e2ep-5
    pub const C4: f32 = f32::from_bits(0x3d2b_9f17);
    /// 0x1.555e66p-3
    pub const C3: f32 = f32::from_bits(0x3e2a_af33);
    /// 0x1.fffdb6p-2
    pub const C2: f32 = f32::from_bits(0x3eff_fedb);
    /// 0x1.ffffecp-1
    pub const C1: f32 = f32::from_bits(0x3f7f_fff6);
    /// The scaled path (`|n| > 126`): the exponent bias taken out for `n <= 0`.
    pub const BIAS_NEG: u32 = 0x8200_0000;
    /// The scaled path: the bits of its scale factor (before the bias).
    pub const SCALE: u32 = 0x7f00_0000;
}

/// ggml's `ggml_v_expf` for one value.
#[inline]
pub fn expf(x: f32) -> f32 {
    let r = expc::SHIFT;
    let z = x.mul_add(expc::INV_LN2, r);
    let n = z - r;
    let b = (-n).mul_add(expc::LN2_LO, (-n).mul_add(expc::LN2_HI, x));
    let e = z.to_bits() << 23;
    let k = f32::from_bits(e.wrapping_add(1f32.to_bits()));
    let c = n.abs() > 126.0;
    let u = b * b;
    let j = expc::C5
        .mul_add(b, expc::C4)
        .mul_add(u, expc::C3.mul_add(b, expc::C2))
        .mul_add(u, expc::C1 * b);
    if !c {
        return j.mul_add(k, k);
    }
    let g: u32 = if n <= 0.0 { expc::BIAS_NEG } else { 0 };
    let s1 = f32::from_bits(g.wrapping_add(expc::SCALE));
    let s2 = f32::from_bits(e.wrapping_sub(g));
    if n.abs() > 192.0 {
        s1 * s1
    } else {
        s2.mul_add(j, s2) * s1
    }
}

/// `ggml_v_silu` for one value.
#[inline]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + expf(-x))
}

/// The AVX2 horizontal sum order (`hsum_float_8`): `((v0+v4)+(v2+v6)) + ((v1+v5)+(v3+v7))`.
#[inline]
fn hsum8(v: &[f32; 8]) -> f32 {
    let t = [v[0] + v[4], v[1] + v[5], v[2] + v[6], v[3] + v[7]];
    (t[0] + t[2]) + (t[1] + t[3])
}

/// `y[i] = silu(gate[i]) * up[i]` (ggml's `ggml_vec_swiglu_f32`), in place in `gate`.
pub fn swiglu(gate: &mut [f32], up: &[f32]) {
    swiglu_isa(crate::isa(), gate, up)
}

/// [`swiglu`] on a given instruction set (for tests).
pub fn swiglu_isa(isa: Isa, gate: &mut [f32], up: &[f32]) {
    assert_eq!(gate.len(), up.len());
    assert!(isa.usable(), "instruction set `{isa}` cannot run here");
    #[cfg(target_arch = "x86_64")]
    if isa.is_x86() {
        // SAFETY: checked by `usable`.
        return unsafe { avx2::swiglu(gate, up) };
    }
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = silu(*g) * u;
    }
}

/// In-place `softmax(x * scale)` as ggml computes it; returns the sum of the exponentials.
pub fn softmax(x: &mut [f32], scale: f32) -> f64 {
    softmax_isa(crate::isa(), x, scale)
}

/// [`softmax`] of the first `x.len()` values of a row of `row_len` whose other values are masked
/// (`-inf`), as ggml computes it: the values past the last full group of 8 of the row use libm's
/// `expf` and are added to the sum one by one.
pub fn softmax_row(x: &mut [f32], scale: f32, row_len: usize) -> f64 {
    softmax_row_isa(crate::isa(), x, scale, row_len)
}

/// [`softmax_row`] on a given instruction set (for tests).
pub fn softmax_row_isa(isa: Isa, x: &mut [f32], scale: f32, row_len: usize) -> f64 {
    softmax_impl(isa, x, scale, row_len, None)
}

/// [`softmax_row`] with the probabilities written to `out` as f16 (the rounding llama.cpp
/// applies before P·V) instead of back to `x`, in the same pass that normalises them; `x` is
/// left holding the exponentials. The same bits as [`softmax_row`] then [`to_f16`].
///
/// # Panics
/// If `out` is shorter than `x`.
pub fn softmax_row_f16(x: &mut [f32], scale: f32, row_len: usize, out: &mut [u16]) -> f64 {
    softmax_row_f16_isa(crate::isa(), x, scale, row_len, out)
}

/// [`softmax_row_f16`] on a given instruction set (for tests).
pub fn softmax_row_f16_isa(
    isa: Isa,
    x: &mut [f32],
    scale: f32,
    row_len: usize,
    out: &mut [u16],
) -> f64 {
    softmax_impl(isa, x, scale, row_len, Some(&mut out[..x.len()]))
}

/// [`softmax`] on a given instruction set (for tests).
pub fn softmax_isa(isa: Isa, x: &mut [f32], scale: f32) -> f64 {
    softmax_impl(isa, x, scale, x.len().next_multiple_of(8), None)
}

/// The softmax of a row of `row_len` (past `x.len()` masked): the exponentials of the row's
/// whole groups of 8 with ggml's [`expf`] (summed by groups), the rest with libm's `expf` (one
/// by one), then normalised into `x` or, given `out`, into `out` as f16.
fn softmax_impl(
    isa: Isa,
    x: &mut [f32],
    scale: f32,
    row_len: usize,
    out: Option<&mut [u16]>,
) -> f64 {
    assert!(isa.usable(), "instruction set `{isa}` cannot run here");
    let max = scale_max(isa, x, scale);
    // ggml's vector loop covers the row's whole groups of 8 (a partial group of `x` inside
    // one of them is padded with the masked zeros); past them libm's `expf`
    let simd = (row_len & !7).min(x.len());
    let (head, tail) = x.split_at_mut(simd);
    let mut sum = exp_sum(isa, head, max);
    for v in tail.iter_mut() {
        *v = (*v - max).exp();
        sum += *v as f64;
    }
    let inv = (1.0 / sum) as f32;
    match out {
        Some(out) => normalise_f16(isa, x, inv, out),
        None => {
            for v in x.iter_mut() {
                *v *= inv;
            }
        }
    }
    sum
}

/// `out[i] = f16(x[i] * inv)`.
fn normalise_f16(isa: Isa, x: &[f32], inv: f32, out: &mut [u16]) {
    assert!(out.len() >= x.len());
    #[cfg(target_arch = "x86_64")]
    if isa.is_x86() {
        // SAFETY: the callers checked `isa.usable()`; `out` holds `x.len()` (checked above)
        return unsafe { avx2::normalise_f16(x, inv, out) };
    }
    let _ = isa;
    for (o, &v) in out.iter_mut().zip(x) {
        *o = half::f16::from_f32(v * inv).to_bits();
    }
}

/// `Σ expf(x[i] - max)` with ggml's [`expf`], the exponentials summed by groups of 8 in f32 (the
/// AVX2 `hsum` order) and the group sums in f64, as [`softmax`] sums them, without writing `x`:
/// the normaliser of a softmax over a whole vocabulary (a token's probability), ~10x faster than
/// libm's f64 `exp` per logit.
pub fn exp_sum_of(x: &[f32], max: f32) -> f64 {
    exp_sum_of_isa(crate::isa(), x, max)
}

/// [`exp_sum_of`] on a given instruction set (for tests).
pub fn exp_sum_of_isa(isa: Isa, x: &[f32], max: f32) -> f64 {
    assert!(isa.usable(), "instruction set `{isa}` cannot run here");
    #[cfg(target_arch = "x86_64")]
    if isa.is_x86() {
        // SAFETY: checked by `usable`; a null `out` writes nothing
        return unsafe { x86_exp_sum(isa, x.as_ptr(), x.len(), max, std::ptr::null_mut()) };
    }
    let mut sum = 0f64;
    for c in x.chunks(8) {
        let mut v = [0f32; 8];
        for (o, &i) in v.iter_mut().zip(c) {
            *o = expf(i - max);
        }
        sum += hsum8(&v) as f64;
    }
    sum
}

/// `x *= scale` in place; returns the largest of the scaled values (the first step of a
/// softmax; the products are exact roundings, so every instruction set gives the same bits).
fn scale_max(isa: Isa, x: &mut [f32], scale: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if isa.is_x86() {
        // SAFETY: the callers checked `isa.usable()`.
        return unsafe { avx2::scale_max(x, scale) };
    }
    let _ = isa;
    let mut max = f32::NEG_INFINITY;
    for v in x.iter_mut() {
        *v *= scale;
        max = max.max(*v);
    }
    max
}

/// `x[i] = expf(x[i] - max)`; returns their sum by groups of 8 (as [`exp_sum_of`]).
fn exp_sum(isa: Isa, x: &mut [f32], max: f32) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if isa.is_x86() {
        let p = x.as_mut_ptr();
        // SAFETY: the callers checked `isa.usable()`; `out` is `x` itself
        return unsafe { x86_exp_sum(isa, p, x.len(), max, p) };
    }
    let _ = isa;
    let mut sum = 0f64;
    for c in x.chunks_mut(8) {
        let mut v = [0f32; 8];
        for (o, i) in v.iter_mut().zip(c.iter_mut()) {
            *i = expf(*i - max);
            *o = *i;
        }
        sum += hsum8(&v) as f64;
    }
    sum
}

/// The x86 exponential sums: sixteen lanes at a time on AVX-512 (each half summed as AVX2
/// sums a group of 8, so the same bits), then AVX2 for what is left.
///
/// # Safety
/// `isa` must be an x86 set this CPU runs; `x` must hold `n` values and `out`, unless null,
/// room for `n` (it may be `x`).
#[cfg(target_arch = "x86_64")]
unsafe fn x86_exp_sum(isa: Isa, x: *const f32, n: usize, max: f32, out: *mut f32) -> f64 {
    let (mut i, mut sum) = (0, 0f64);
    if matches!(isa, Isa::Avx512 | Isa::Avx512Vnni) {
        // SAFETY: the caller's
        (i, sum) = unsafe { avx512::exp_sum_raw(x, n, max, out) };
    }
    // SAFETY: the caller's
    unsafe { avx2::exp_sum_raw(x, n, max, out, i, sum) }
}

/// f32 to f16 bits (round to nearest even), the conversion ggml applies to attention inputs.
pub fn to_f16(x: &[f32], out: &mut [u16]) {
    to_f16_isa(crate::isa(), x, out)
}

/// [`to_f16`] on a given instruction set (for tests).
pub fn to_f16_isa(isa: Isa, x: &[f32], out: &mut [u16]) {
    assert_eq!(x.len(), out.len());
    assert!(isa.usable(), "instruction set `{isa}` cannot run here");
    #[cfg(target_arch = "x86_64")]
    if isa.is_x86() {
        // SAFETY: checked by `usable`.
        return unsafe { avx2::to_f16(x, out) };
    }
    for (o, &v) in out.iter_mut().zip(x) {
        *o = half::f16::from_f32(v).to_bits();
    }
}

/// Dot product of two f16 vectors (bits) in tinyBLAS order (see the module documentation).
pub fn dot_f16(a: &[u16], b: &[u16]) -> f32 {
    dot_f16_isa(crate::isa(), a, b)
}

/// [`dot_f16`] on a given instruction set (for tests).
pub fn dot_f16_isa(isa: Isa, a: &[u16], b: &[u16]) -> f32 {
    assert_eq!(a.len(), b.len());
    assert!(isa.usable(), "instruction set `{isa}` cannot run here");
    #[cfg(target_arch = "x86_64")]
    if isa.is_x86() {
        // SAFETY: checked by `usable`.
        return unsafe { avx2::dot_f16(a, b) };
    }
    let mut acc = [0f32; 8];
    for (ca, cb) in a.chunks(8).zip(b.chunks(8)) {
        for ((s, &x), &y) in acc.iter_mut().zip(ca).zip(cb) {
            let (x, y) = (
                half::f16::from_bits(x).to_f32(),
                half::f16::from_bits(y).to_f32(),
            );
            *s = x.mul_add(y, *s);
        }
    }
    hsum8(&acc)
}

/// `ggml_vec_dot_f16` over a row of `n` elements of which `a.len()` are given (the rest zero):
/// four 8-lane FMA accumulators over groups of 32, reduced pairwise then with `hadd`, and the
/// elements past the last group of 32 added one by one in f64.
pub fn dot_f16_ggml(a: &[u16], b: &[u16], n: usize) -> f32 {
    dot_f16_ggml_isa(crate::isa(), a, b, n)
}

/// [`dot_f16_ggml`] on a given instruction set (for tests).
pub fn dot_f16_ggml_isa(isa: Isa, a: &[u16], b: &[u16], n: usize) -> f32 {
    assert_eq!(a.len(), b.len());
    assert!(n >= a.len());
    assert!(isa.usable(), "instruction set `{isa}` cannot run here");
    #[cfg(target_arch = "x86_64")]
    if isa.is_x86() {
        // SAFETY: checked by `isa`.
        return unsafe { avx2::dot_f16_ggml(a, b, n) };
    }
    let np = (n & !31).min(a.len().div_ceil(32) * 32);
    let f = |h: u16| half::f16::from_bits(h).to_f32();
    let mut acc = [[0f32; 8]; 4];
    for i in 0..np.min(a.len()) {
        let (j, l) = ((i % 32) / 8, i % 8);
        acc[j][l] = f(a[i]).mul_add(f(b[i]), acc[j][l]);
    }
    let mut r = [0f32; 8];
    for l in 0..8 {
        r[l] = (acc[0][l] + acc[2][l]) + (acc[1][l] + acc[3][l]);
    }
    let t = [r[0] + r[4], r[1] + r[5], r[2] + r[6], r[3] + r[7]];
    let mut sum = ((t[0] + t[1]) + (t[2] + t[3])) as f64;
    for i in (n & !31)..a.len() {
        sum += (f(a[i]) * f(b[i])) as f64;
    }
    sum as f32
}

/// Checks the shape of a batch of dot products against one vector: row `r` of `b` starts at
/// `r * stride` and holds `len` elements.
fn check_rows(len: usize, b: &[u16], stride: usize, rows: usize) {
    if rows > 0 {
        assert!(
            (rows - 1) * stride + len <= b.len(),
            "{rows} rows of {len} with stride {stride} need more than {} elements",
            b.len()
        );
    }
}

/// `out[r] = dot_f16_ggml(a, &b[r * stride..r * stride + a.len()], n)` for every
/// `r < out.len()`: the `ggml_vec_dot_f16` product of one vector with many rows, the same bits as
/// one call per row.
///
/// # Panics
/// If `b` is too short for `out.len()` rows, or `n < a.len()`.
pub fn dots_f16_ggml(a: &[u16], b: &[u16], stride: usize, n: usize, out: &mut [f32]) {
    dots_f16_ggml_isa(crate::isa(), a, b, stride, n, out)
}

/// [`dots_f16_ggml`] on a given instruction set (for tests).
pub fn dots_f16_ggml_isa(isa: Isa, a: &[u16], b: &[u16], stride: usize, n: usize, out: &mut [f32]) {
    check_rows(a.len(), b, stride, out.len());
    assert!(n >= a.len());
    assert!(isa.usable(), "instruction set `{isa}` cannot run here");
    #[cfg(target_arch = "x86_64")]
    if isa.is_x86() {
        // SAFETY: checked by `usable`; every row is in bounds (checked above).
        return unsafe { avx2::dots_f16_ggml(a, b, stride, n, out) };
    }
    let len = a.len();
    for (r, o) in out.iter_mut().enumerate() {
        *o = dot_f16_ggml_isa(isa, a, &b[r * stride..r * stride + len], n);
    }
}

/// Cache lines that a later step of the caller reads, fetched while a product runs so that the
/// step finds them in cache: `count` runs of `len` f16 elements, `stride` apart, from the start
/// of `data`. Decode attention fetches a layer's V rows while its K·Q runs: K·Q is mostly
/// arithmetic, so the memory bus has room to fill the cache for P·V, which then waits on
/// nothing (docs/performance.md). Only a hint: on
/// x86 `prefetcht1` (into L2: `prefetcht0` filled the small L1 and slowed K·Q by half),
/// spread evenly over the product's rows; nothing elsewhere.
#[derive(Clone, Copy, Debug)]
pub struct Ahead<'s> {
    data: &'s [u16],
    len: usize,
    stride: usize,
    count: usize,
}

impl<'s> Ahead<'s> {
    /// Nothing to fetch.
    pub const NONE: Ahead<'static> = Ahead {
        data: &[],
        len: 0,
        stride: 0,
        count: 0,
    };

    /// `count` runs of `len` elements of `data`, `stride` apart.
    ///
    /// # Panics
    /// If the last run ends past `data`.
    pub fn new(data: &'s [u16], len: usize, stride: usize, count: usize) -> Self {
        if count > 0 && len > 0 {
            assert!(
                (count - 1) * stride + len <= data.len(),
                "{count} runs of {len} elements {stride} apart do not fit in {}",
                data.len()
            );
        }
        Ahead {
            data,
            len,
            stride,
            count,
        }
    }
}

/// Where [`Ahead`]'s next line is, and how many lines go with each row of a product.
struct AheadCursor {
    p: *const u16,
    len: usize,
    stride: usize,
    /// lines issued per run: one per 32 elements (64 bytes) and one at the run's last element,
    /// for runs that do not start on a line
    per_run: usize,
    run: usize,
    k: usize,
    left: usize,
    step: usize,
}

impl AheadCursor {
    fn new(a: &Ahead, rows: usize) -> Self {
        let per_run = if a.len == 0 {
            0
        } else {
            a.len.div_ceil(32) + 1
        };
        let left = per_run * a.count;
        AheadCursor {
            p: a.data.as_ptr(),
            len: a.len,
            stride: a.stride,
            per_run,
            run: 0,
            k: 0,
            left,
            step: left.div_ceil(rows.max(1)),
        }
    }

    /// Hands up to `n` more lines to `f`, as offsets (in elements) into the array.
    #[inline(always)]
    fn issue_with(&mut self, n: usize, mut f: impl FnMut(usize)) {
        for _ in 0..n.min(self.left) {
            f(self.run * self.stride + (self.k * 32).min(self.len - 1));
            self.k += 1;
            if self.k == self.per_run {
                self.k = 0;
                self.run += 1;
            }
            self.left -= 1;
        }
    }

    /// Fetches up to `n` more lines.
    #[inline(always)]
    fn issue(&mut self, n: usize) {
        let p = self.p;
        self.issue_with(n, |at| prefetch(p.wrapping_add(at)))
    }

    /// The lines that go with one row of the product.
    #[inline(always)]
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    fn row(&mut self) {
        self.issue(self.step)
    }

    /// Every line not issued yet.
    fn rest(&mut self) {
        self.issue(self.left)
    }
}

/// A hint to bring the line holding `p` into cache (`p` is inside an [`Ahead`]'s array).
#[inline(always)]
fn prefetch(p: *const u16) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch reads nothing and cannot fault; SSE is part of x86_64
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T1 }>(p.cast())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// `out[i * ldo + r]` = [`dots_f16_ggml`] of vector `i` (`a[i * lda..][..len]`) with row `r` of
/// `b` (`rows` rows, `stride` apart), for `i < m`: the query heads that share a KV head in
/// attention, against the same keys (or the same V rows). The same bits as one
/// [`dots_f16_ggml`] call per vector; on x86 each row of `b` is widened to f32 once for two or
/// three vectors, which is what bounds the one-vector product.
///
/// # Panics
/// If `a`, `b` or `out` is too short for the shape, `n < len`, or `isa` cannot run here.
#[allow(clippy::too_many_arguments)]
pub fn dots_f16_ggml_group_isa(
    isa: Isa,
    a: &[u16],
    lda: usize,
    m: usize,
    len: usize,
    b: &[u16],
    stride: usize,
    n: usize,
    out: &mut [f32],
    ldo: usize,
    rows: usize,
) {
    if m == 0 || rows == 0 {
        return;
    }
    assert!(
        (m - 1) * ldo + rows <= out.len(),
        "output too short for {m}x{rows}"
    );
    // SAFETY: every output is inside `out` (checked above), which is borrowed mutably
    unsafe {
        dots_f16_ggml_group_ptr(
            isa,
            a,
            lda,
            m,
            len,
            b,
            stride,
            n,
            out.as_mut_ptr(),
            ldo,
            rows,
            Ahead::NONE,
        )
    }
}

/// [`dots_f16_ggml_group_isa`] writing through a pointer, for callers whose tasks share one
/// output array (each writing its own elements), fetching `ahead`'s lines into cache as it goes.
///
/// # Safety
/// `out.add(i * ldo + r)` for `i < m`, `r < rows` must be valid for writes and not accessed by
/// anything else during the call.
///
/// # Panics
/// If `a` or `b` is too short for the shape, or `n < len`.
#[allow(clippy::too_many_arguments)]
pub unsafe fn dots_f16_ggml_group_ptr(
    isa: Isa,
    a: &[u16],
    lda: usize,
    m: usize,
    len: usize,
    b: &[u16],
    stride: usize,
    n: usize,
    out: *mut f32,
    ldo: usize,
    rows: usize,
    ahead: Ahead,
) {
    let mut cur = AheadCursor::new(&ahead, rows);
    if m == 0 || rows == 0 {
        cur.rest();
        return;
    }
    assert!(
        (m - 1) * lda + len <= a.len(),
        "vectors too short for {m}x{len}"
    );
    check_rows(len, b, stride, rows);
    assert!(n >= len);
    assert!(isa.usable(), "instruction set `{isa}` cannot run here");
    #[cfg(target_arch = "x86_64")]
    if isa.is_x86() {
        // SAFETY: checked by `usable`; every vector and row is in bounds (checked above), the
        // outputs by the caller
        let zmm = matches!(isa, Isa::Avx512 | Isa::Avx512Vnni);
        unsafe {
            avx2::dots_f16_ggml_group(zmm, a, lda, m, len, b, stride, n, out, ldo, rows, &mut cur)
        };
        cur.rest();
        return;
    }
    for i in 0..m {
        // SAFETY: the caller's
        let o = unsafe { std::slice::from_raw_parts_mut(out.add(i * ldo), rows) };
        dots_f16_ggml_isa(isa, &a[i * lda..i * lda + len], b, stride, n, o);
    }
}

/// `c[i * ldc + j] = dot_f16(&a[i * lda..][..k], &b[j * ldb..][..k])` for `i < m`, `j < n`: the
/// tinyBLAS-order products of many rows with many rows (batched attention), the same bits as
/// one [`dot_f16`] per element, computed in register tiles.
///
/// # Panics
/// If `a`, `b` or `c` is too short for the shape.
#[allow(clippy::too_many_arguments)]
pub fn gemm_f16(
    a: &[u16],
    lda: usize,
    m: usize,
    b: &[u16],
    ldb: usize,
    n: usize,
    k: usize,
    c: &mut [f32],
    ldc: usize,
) {
    gemm_f16_isa(crate::isa(), a, lda, m, b, ldb, n, k, c, ldc)
}

/// [`gemm_f16`] on a given instruction set (for tests).
#[allow(clippy::too_many_arguments)]
pub fn gemm_f16_isa(
    isa: Isa,
    a: &[u16],
    lda: usize,
    m: usize,
    b: &[u16],
    ldb: usize,
    n: usize,
    k: usize,
    c: &mut [f32],
    ldc: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!((m - 1) * ldc + n <= c.len(), "output too short for {m}x{n}");
    // SAFETY: `c` has every output (checked above) and is borrowed mutably.
    unsafe { gemm_f16_ptr(isa, a, lda, m, b, ldb, n, k, c.as_mut_ptr(), ldc) }
}

/// [`gemm_f16_isa`] writing through a pointer, for callers whose tasks share one output array
/// (each writing its own elements).
///
/// # Safety
/// `c.add(i * ldc + j)` must be valid for writes, and not accessed by anyone else during the
/// call, for every `i < m`, `j < n`.
///
/// # Panics
/// If `a` or `b` is too short for the shape, or `isa` cannot run here.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_f16_ptr(
    isa: Isa,
    a: &[u16],
    lda: usize,
    m: usize,
    b: &[u16],
    ldb: usize,
    n: usize,
    k: usize,
    c: *mut f32,
    ldc: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    check_rows(k, a, lda, m);
    check_rows(k, b, ldb, n);
    assert!(isa.usable(), "instruction set `{isa}` cannot run here");
    #[cfg(target_arch = "x86_64")]
    if isa.is_x86() {
        // SAFETY: checked by `usable`; rows in bounds (checked above); outputs by the caller.
        return avx2::gemm_elem::<avx2::F16>(a, lda, m, b, ldb, n, k, c, ldc);
    }
    for i in 0..m {
        for j in 0..n {
            *c.add(i * ldc + j) =
                dot_f16_isa(isa, &a[i * lda..i * lda + k], &b[j * ldb..j * ldb + k]);
        }
    }
}

/// The element types of [`gemm_tiles`].
#[cfg(target_arch = "x86_64")]
pub(crate) use avx2::{Bf16, F16, F32};

/// [`gemm_f16_ptr`]'s tinyBLAS-order products on the x86 kernels for f16, f32 or bf16 rows
/// (`E` = [`F16`], [`F32`] or [`Bf16`]: tinyBLAS's F16 x F16, F32 x F32 and BF16 x BF16 orders,
/// an 8-lane FMA accumulator per output over steps of 8, bf16 widened by a shift, then the same
/// horizontal sum), for `crate::matmul`.
///
/// # Safety
/// As [`gemm_f16_ptr`]; the CPU runs AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_tiles<E: avx2::Elem>(
    a: &[E::T],
    lda: usize,
    m: usize,
    b: &[E::T],
    ldb: usize,
    n: usize,
    k: usize,
    c: *mut f32,
    ldc: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!((m - 1) * lda + k <= a.len() && (n - 1) * ldb + k <= b.len());
    avx2::gemm_elem::<E>(a, lda, m, b, ldb, n, k, c, ldc)
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn hsum(x: __m256) -> f32 {
        let mut r = _mm_add_ps(_mm256_extractf128_ps(x, 1), _mm256_castps256_ps128(x));
        r = _mm_add_ps(r, _mm_movehl_ps(r, r));
        r = _mm_add_ss(r, _mm_movehdup_ps(r));
        _mm_cvtss_f32(r)
    }

    /// `ggml_v_expf`, AVX2.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn expf(x: __m256) -> __m256 {
        let r = _mm256_set1_ps(super::expc::SHIFT);
        let z = _mm256_fmadd_ps(x, _mm256_set1_ps(super::expc::INV_LN2), r);
        let n = _mm256_sub_ps(z, r);
        let b = _mm256_fnmadd_ps(
            n,
            _mm256_set1_ps(super::expc::LN2_LO),
            _mm256_fnmadd_ps(n, _mm256_set1_ps(super::expc::LN2_HI), x),
        );
        let e = _mm256_slli_epi32(_mm256_castps_si256(z), 23);
        let k = _mm256_castsi256_ps(_mm256_add_epi32(
            e,
            _mm256_castps_si256(_mm256_set1_ps(1.0)),
        ));
        let absn = _mm256_andnot_ps(_mm256_set1_ps(-0.0), n);
        let c = _mm256_cmp_ps(absn, _mm256_set1_ps(126.0), _CMP_GT_OQ);
        let u = _mm256_mul_ps(b, b);
        let j = _mm256_fmadd_ps(
            _mm256_fmadd_ps(
                _mm256_fmadd_ps(
                    _mm256_set1_ps(super::expc::C5),
                    b,
                    _mm256_set1_ps(super::expc::C4),
                ),
                u,
                _mm256_fmadd_ps(
                    _mm256_set1_ps(super::expc::C3),
                    b,
                    _mm256_set1_ps(super::expc::C2),
                ),
            ),
            u,
            _mm256_mul_ps(_mm256_set1_ps(super::expc::C1), b),
        );
        if _mm256_movemask_ps(c) == 0 {
            return _mm256_fmadd_ps(j, k, k);
        }
        let g = _mm256_and_si256(
            _mm256_castps_si256(_mm256_cmp_ps(n, _mm256_setzero_ps(), _CMP_LE_OQ)),
            _mm256_set1_epi32(super::expc::BIAS_NEG as i32),
        );
        let s1 = _mm256_castsi256_ps(_mm256_add_epi32(
            g,
            _mm256_set1_epi32(super::expc::SCALE as i32),
        ));
        let s2 = _mm256_castsi256_ps(_mm256_sub_epi32(e, g));
        let d = _mm256_cmp_ps(absn, _mm256_set1_ps(192.0), _CMP_GT_OQ);
        _mm256_or_ps(
            _mm256_and_ps(d, _mm256_mul_ps(s1, s1)),
            _mm256_andnot_ps(
                d,
                _mm256_or_ps(
                    _mm256_and_ps(c, _mm256_mul_ps(_mm256_fmadd_ps(s2, j, s2), s1)),
                    _mm256_andnot_ps(c, _mm256_fmadd_ps(k, j, k)),
                ),
            ),
        )
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn swiglu(gate: &mut [f32], up: &[f32]) {
        let n = gate.len();
        let mut i = 0;
        while i + 8 <= n {
            let x = _mm256_loadu_ps(gate.as_ptr().add(i));
            let e = expf(_mm256_sub_ps(_mm256_setzero_ps(), x));
            let s = _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0), e));
            let y = _mm256_mul_ps(s, _mm256_loadu_ps(up.as_ptr().add(i)));
            _mm256_storeu_ps(gate.as_mut_ptr().add(i), y);
            i += 8;
        }
        for k in i..n {
            gate[k] = super::silu(gate[k]) * up[k];
        }
    }

    /// `Σ expf(x[i] - max)` over `n` values from `x[i0]` on, by groups of 8 as
    /// [`super::exp_sum`], added to `sum`; the exponentials are also written to `out` unless it
    /// is null (it may be `x`).
    ///
    /// # Safety
    /// AVX2, FMA and F16C must be present; `x` must hold `n` values and `out`, unless null,
    /// room for `n`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn exp_sum_raw(
        x: *const f32,
        n: usize,
        max: f32,
        out: *mut f32,
        i0: usize,
        mut sum: f64,
    ) -> f64 {
        let vmax = _mm256_set1_ps(max);
        let mut i = i0;
        while i + 8 <= n {
            let v = expf(_mm256_sub_ps(_mm256_loadu_ps(x.add(i)), vmax));
            if !out.is_null() {
                _mm256_storeu_ps(out.add(i), v);
            }
            sum += hsum(v) as f64;
            i += 8;
        }
        if i < n {
            // the last, partial group: lanes past `n` are zero, as the portable version's
            let mut v = [0f32; 8];
            for (k, e) in v.iter_mut().enumerate().take(n - i) {
                *e = super::expf(*x.add(i + k) - max);
                if !out.is_null() {
                    *out.add(i + k) = *e;
                }
            }
            sum += super::hsum8(&v) as f64;
        }
        sum
    }

    /// `out[i] = f16(x[i] * inv)`.
    ///
    /// # Safety
    /// AVX2, FMA and F16C must be present; `out` must hold `x.len()`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn normalise_f16(x: &[f32], inv: f32, out: &mut [u16]) {
        let n = x.len();
        let vinv = _mm256_set1_ps(inv);
        let mut i = 0;
        while i + 8 <= n {
            let v = _mm256_mul_ps(_mm256_loadu_ps(x.as_ptr().add(i)), vinv);
            let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v);
            _mm_storeu_si128(out.as_mut_ptr().add(i).cast(), h);
            i += 8;
        }
        for k in i..n {
            out[k] = half::f16::from_f32(x[k] * inv).to_bits();
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn scale_max(x: &mut [f32], scale: f32) -> f32 {
        let n = x.len();
        let vs = _mm256_set1_ps(scale);
        let mut vmax = _mm256_set1_ps(f32::NEG_INFINITY);
        let mut i = 0;
        while i + 8 <= n {
            let v = _mm256_mul_ps(_mm256_loadu_ps(x.as_ptr().add(i)), vs);
            _mm256_storeu_ps(x.as_mut_ptr().add(i), v);
            vmax = _mm256_max_ps(vmax, v);
            i += 8;
        }
        let mut lanes = [0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), vmax);
        let mut max = lanes.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        for v in &mut x[i..] {
            *v *= scale;
            max = max.max(*v);
        }
        max
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn to_f16(x: &[f32], out: &mut [u16]) {
        let n = x.len();
        let mut i = 0;
        while i + 8 <= n {
            let h =
                _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm256_loadu_ps(x.as_ptr().add(i)));
            _mm_storeu_si128(out.as_mut_ptr().add(i).cast(), h);
            i += 8;
        }
        for k in i..n {
            out[k] = half::f16::from_f32(x[k]).to_bits();
        }
    }

    /// One row of [`super::dots_f16_ggml`].
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn dots_f16_ggml_one(a: &[u16], b: &[u16], n: usize, out: &mut [f32; 1]) {
        let len = a.len();
        let np = n & !31;
        let ends = np.min(len.div_ceil(32) * 32);
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let z = _mm256_setzero_ps();
        let (mut x0, mut x1, mut x2, mut x3) = (z, z, z, z);
        let mut i = 0;
        while i < ends {
            x0 = _mm256_fmadd_ps(ld8(pa, i, len), ld8(pb, i, len), x0);
            x1 = _mm256_fmadd_ps(ld8(pa, i + 8, len), ld8(pb, i + 8, len), x1);
            x2 = _mm256_fmadd_ps(ld8(pa, i + 16, len), ld8(pb, i + 16, len), x2);
            x3 = _mm256_fmadd_ps(ld8(pa, i + 24, len), ld8(pb, i + 24, len), x3);
            i += 32;
        }
        let mut s = crate::x86::reduce4_hadd([x0, x1, x2, x3]) as f64;
        if np < len {
            let mut t = [0f32; 32];
            tail_products(pa, pb, np, len, &mut t);
            for &v in &t[..len - np] {
                s += v as f64;
            }
        }
        out[0] = s as f32;
    }

    /// An element type of [`gemm`]: eight values from `p[i..]` widened to f32, all in bounds
    /// (`full8`) or zero past `len` (`pad8`).
    pub(crate) trait Elem {
        type T: Copy;
        unsafe fn full8(p: *const Self::T, i: usize) -> __m256;
        unsafe fn pad8(p: *const Self::T, i: usize, len: usize) -> __m256;
    }

    /// IEEE half (F16C).
    pub(crate) struct F16;
    impl Elem for F16 {
        type T = u16;
        #[inline(always)]
        unsafe fn full8(p: *const u16, i: usize) -> __m256 {
            _mm256_cvtph_ps(_mm_loadu_si128(p.add(i).cast()))
        }
        #[inline(always)]
        unsafe fn pad8(p: *const u16, i: usize, len: usize) -> __m256 {
            ld8(p, i, len)
        }
    }

    /// bfloat16 (widened by a shift, as tinyBLAS's `load(const ggml_bf16_t *)`).
    pub(crate) struct Bf16;
    impl Elem for Bf16 {
        type T = u16;
        #[inline(always)]
        unsafe fn full8(p: *const u16, i: usize) -> __m256 {
            let v = _mm256_cvtepu16_epi32(_mm_loadu_si128(p.add(i).cast()));
            _mm256_castsi256_ps(_mm256_slli_epi32::<16>(v))
        }
        #[inline(always)]
        unsafe fn pad8(p: *const u16, i: usize, len: usize) -> __m256 {
            let mut t = [0u16; 8];
            if i < len {
                std::ptr::copy_nonoverlapping(p.add(i), t.as_mut_ptr(), (len - i).min(8));
            }
            Self::full8(t.as_ptr(), 0)
        }
    }

    /// f32.
    pub(crate) struct F32;
    impl Elem for F32 {
        type T = f32;
        #[inline(always)]
        unsafe fn full8(p: *const f32, i: usize) -> __m256 {
            _mm256_loadu_ps(p.add(i))
        }
        #[inline(always)]
        unsafe fn pad8(p: *const f32, i: usize, len: usize) -> __m256 {
            let mut t = [0f32; 8];
            if i < len {
                std::ptr::copy_nonoverlapping(p.add(i), t.as_mut_ptr(), (len - i).min(8));
            }
            _mm256_loadu_ps(t.as_ptr())
        }
    }

    /// Eight f16 values from `p[i..]` as f32 (all eight in bounds).
    macro_rules! full8 {
        ($p:expr, $i:expr, $len:expr) => {
            _mm256_cvtph_ps(_mm_loadu_si128($p.add($i).cast()))
        };
    }

    /// Eight f16 values from `p[i..]` as f32, zero past `len` (the last, partial chunk).
    macro_rules! pad8 {
        ($p:expr, $i:expr, $len:expr) => {
            ld8($p, $i, $len)
        };
    }

    /// Eight f16 values from `p[i..]` as f32, zero past `len`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn ld8(p: *const u16, i: usize, len: usize) -> __m256 {
        if i + 8 <= len {
            _mm256_cvtph_ps(_mm_loadu_si128(p.add(i).cast()))
        } else {
            let mut t = [0u16; 8];
            if i < len {
                std::ptr::copy_nonoverlapping(p.add(i), t.as_mut_ptr(), len - i);
            }
            _mm256_cvtph_ps(_mm_loadu_si128(t.as_ptr().cast()))
        }
    }

    /// The f32 products `a[i] * b[i]` for `i` in `from..len` (exact: f16 times f16 fits f32),
    /// in `out[..len - from]`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn tail_products(
        a: *const u16,
        b: *const u16,
        from: usize,
        len: usize,
        out: &mut [f32; 32],
    ) {
        let mut i = from;
        let mut k = 0;
        while i < len {
            let p = _mm256_mul_ps(ld8(a, i, len), ld8(b, i, len));
            _mm256_storeu_ps(out.as_mut_ptr().add(k), p);
            i += 8;
            k += 8;
        }
    }

    /// One `RM x RN` tile of [`gemm`]: an 8-lane accumulator per output, element `l` of a row
    /// in lane `l % 8`, zero past `k`, then [`hsum`].
    #[inline(always)]
    #[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
    unsafe fn tile<E: Elem, const RM: usize, const RN: usize>(
        a: *const E::T,
        lda: usize,
        b: *const E::T,
        ldb: usize,
        k: usize,
        c: *mut f32,
        ldc: usize,
    ) {
        let mut acc = [[_mm256_setzero_ps(); RN]; RM];
        // one chunk of 8 elements at `l`, loaded whole or zero-padded
        macro_rules! chunk {
            ($l:expr, $ld:expr) => {{
                let mut x = [_mm256_setzero_ps(); RM];
                for i in 0..RM {
                    x[i] = $ld(a.add(i * lda), $l);
                }
                for j in 0..RN {
                    let y = $ld(b.add(j * ldb), $l);
                    for i in 0..RM {
                        acc[i][j] = _mm256_fmadd_ps(x[i], y, acc[i][j]);
                    }
                }
            }};
        }
        let mut l = 0;
        while l + 8 <= k {
            chunk!(l, |p, l| E::full8(p, l));
            l += 8;
        }
        if l < k {
            chunk!(l, |p, l| E::pad8(p, l, k));
        }
        for i in 0..RM {
            for j in 0..RN {
                *c.add(i * ldc + j) = hsum(acc[i][j]);
            }
        }
    }

    /// tinyBLAS's products (`llamafile/sgemm.cpp`, `tinyBLAS<8, __m256, ...>`) of `m` rows of
    /// `a` with `n` rows of `b` in 3x4 tiles (12 accumulators, 3 rows of `a` and one of `b`
    /// live), with smaller tiles at the edges; every output summed alike whatever its tile.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn gemm<E: Elem>(
        pa: *const E::T,
        lda: usize,
        m: usize,
        pb: *const E::T,
        ldb: usize,
        n: usize,
        k: usize,
        pc: *mut f32,
        ldc: usize,
    ) {
        macro_rules! row_of_tiles {
            ($rm:literal, $i:expr) => {{
                let i = $i;
                let mut j = 0;
                while j + 4 <= n {
                    tile::<E, $rm, 4>(
                        pa.add(i * lda),
                        lda,
                        pb.add(j * ldb),
                        ldb,
                        k,
                        pc.add(i * ldc + j),
                        ldc,
                    );
                    j += 4;
                }
                while j < n {
                    tile::<E, $rm, 1>(
                        pa.add(i * lda),
                        lda,
                        pb.add(j * ldb),
                        ldb,
                        k,
                        pc.add(i * ldc + j),
                        ldc,
                    );
                    j += 1;
                }
            }};
        }
        let mut i = 0;
        while i + 3 <= m {
            row_of_tiles!(3, i);
            i += 3;
        }
        while i < m {
            row_of_tiles!(1, i);
            i += 1;
        }
    }

    /// [`gemm`] on f16, bf16 or f32 rows (`E` = [`F16`], [`Bf16`] or [`F32`]).
    #[target_feature(enable = "avx2,fma,f16c")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn gemm_elem<E: Elem>(
        a: &[E::T],
        lda: usize,
        m: usize,
        b: &[E::T],
        ldb: usize,
        n: usize,
        k: usize,
        pc: *mut f32,
        ldc: usize,
    ) {
        gemm::<E>(a.as_ptr(), lda, m, b.as_ptr(), ldb, n, k, pc, ldc)
    }

    thread_local! {
        /// [`dots_f16_ggml_group_isa`]'s vectors widened to f32 (exact), zero-padded to whole groups
        /// of 32; kept per thread and reused, so decoding allocates nothing once it is sized.
        static WIDE: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    }

    /// [`super::dots_f16_ggml_group_isa`]: the vectors widened once, then two or three of them at a
    /// time against each row (one vector alone takes the two-row [`dots_f16_ggml`]); with `zmm`
    /// (AVX-512 F/BW/VL present) the rows go through [`super::avx512::group_rows`].
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dots_f16_ggml_group(
        zmm: bool,
        a: &[u16],
        lda: usize,
        m: usize,
        len: usize,
        b: &[u16],
        stride: usize,
        n: usize,
        out: *mut f32,
        ldo: usize,
        rows: usize,
        cur: &mut super::AheadCursor,
    ) {
        let np = n & !31;
        let ends = np.min(len.div_ceil(32) * 32);
        let mut wide = WIDE.with(|w| std::mem::take(&mut *w.borrow_mut()));
        let lw = ends.max(1);
        if wide.len() < m * lw {
            wide.resize(m * lw, 0.0);
        }
        for i in 0..m {
            let (src, dst) = (
                &a[i * lda..i * lda + len.min(ends)],
                &mut wide[i * lw..(i + 1) * lw],
            );
            let mut k = 0;
            while k + 8 <= src.len() {
                _mm256_storeu_ps(dst.as_mut_ptr().add(k), full8!(src.as_ptr(), k, len));
                k += 8;
            }
            for (d, &h) in dst[k..src.len()].iter_mut().zip(&src[k..]) {
                *d = half::f16::from_bits(h).to_f32();
            }
            dst[src.len()..].fill(0.0);
        }
        let mut i = 0;
        while i < m {
            let g = if m - i == 4 { 2 } else { (m - i).min(3) };
            let pa = a.as_ptr().add(i * lda);
            let pw = wide.as_ptr().add(i * lw);
            let po = out.add(i * ldo);
            let pb = b.as_ptr();
            match g {
                3 if zmm => super::avx512::group_rows::<3>(
                    pw, lw, pa, lda, len, pb, stride, n, po, ldo, rows, cur,
                ),
                2 if zmm => super::avx512::group_rows::<2>(
                    pw, lw, pa, lda, len, pb, stride, n, po, ldo, rows, cur,
                ),
                3 => group_rows::<3>(pw, lw, pa, lda, len, pb, stride, n, po, ldo, rows, cur),
                2 => group_rows::<2>(pw, lw, pa, lda, len, pb, stride, n, po, ldo, rows, cur),
                _ => dots_f16_ggml(
                    &a[i * lda..i * lda + len],
                    b,
                    stride,
                    n,
                    std::slice::from_raw_parts_mut(po, rows),
                ),
            }
            i += g;
        }
        WIDE.with(|w| *w.borrow_mut() = wide);
    }

    /// How many rows ahead [`group_rows`] prefetches, rows `stride` elements apart: four, and
    /// for short rows as many as make 8 KiB. Decode's K·Q reads a head's keys as one run of
    /// 128-byte rows, where four rows (512 bytes) ahead is less than memory's latency covers;
    /// 2 KiB ahead took one-thread K·Q from 0.62 to 0.55 ms a token (q4_0 SmolLM2, ~600
    /// positions), and 8 KiB from 0.38-0.40 to 0.36-0.37 on a host with faster memory
    /// (docs/performance.md). V rows (a row of the cache each) stay at four or five.
    pub(super) fn pf_rows(stride: usize) -> usize {
        (8192 / (2 * stride).max(1)).max(4)
    }

    /// `M` widened vectors (`w`, `lw` apart, zero past `len` to whole groups) against `rows`
    /// rows of `b`, each product in `ggml_vec_dot_f16`'s order (four 8-lane accumulators over
    /// groups of 32, [`crate::x86::reduce4_hadd`], then the elements past the last group in f64,
    /// as [`dots_f16_ggml_one`]).
    #[allow(clippy::too_many_arguments)]
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn group_rows<const M: usize>(
        w: *const f32,
        lw: usize,
        a: *const u16,
        lda: usize,
        len: usize,
        b: *const u16,
        stride: usize,
        n: usize,
        out: *mut f32,
        ldo: usize,
        rows: usize,
        cur: &mut super::AheadCursor,
    ) {
        let np = n & !31;
        let full = np.min(len) & !31;
        let ends = np.min(len.div_ceil(32) * 32);
        let pf = pf_rows(stride);
        // ggml's four accumulators of each vector's product with row `pb`
        let row = |pb: *const u16| {
            let mut acc = [[_mm256_setzero_ps(); 4]; M];
            let mut i = 0;
            while i < full {
                // the same line a few rows on: rows are short and (V) far apart, too short for
                // the hardware prefetcher to follow each from its start
                _mm_prefetch::<_MM_HINT_T0>(pb.wrapping_add(pf * stride + i).cast());
                for k in 0..4 {
                    let y = full8!(pb, i + 8 * k, len);
                    for (h, acc) in acc.iter_mut().enumerate() {
                        let x = _mm256_loadu_ps(w.add(h * lw + i + 8 * k));
                        acc[k] = _mm256_fmadd_ps(x, y, acc[k]);
                    }
                }
                i += 32;
            }
            if i < ends {
                for k in 0..4 {
                    let y = pad8!(pb, i + 8 * k, len);
                    for (h, acc) in acc.iter_mut().enumerate() {
                        let x = _mm256_loadu_ps(w.add(h * lw + i + 8 * k));
                        acc[k] = _mm256_fmadd_ps(x, y, acc[k]);
                    }
                }
            }
            acc
        };
        let mut r = 0;
        if np >= len {
            // no elements past the last group (K·Q, a head's 64 or 128 dimensions; P·V, whose
            // rows llama.cpp pads to whole groups): eight rows at a time, their horizontal sums
            // done together
            while r + 8 <= rows {
                let mut x0 = [[_mm256_setzero_ps(); 8]; M];
                for j in 0..8 {
                    cur.row();
                    let acc = row(b.add((r + j) * stride));
                    for (x0, a) in x0.iter_mut().zip(&acc) {
                        x0[j] = _mm256_add_ps(_mm256_add_ps(a[0], a[2]), _mm256_add_ps(a[1], a[3]));
                    }
                }
                for (h, x0) in x0.iter().enumerate() {
                    _mm256_storeu_ps(out.add(h * ldo + r), reduce8_hadd(x0));
                }
                r += 8;
            }
        }
        for r in r..rows {
            cur.row();
            let pb = b.add(r * stride);
            let acc = row(pb);
            for (h, acc) in acc.iter().enumerate() {
                let mut s = crate::x86::reduce4_hadd(*acc) as f64;
                if np < len {
                    let mut t = [0f32; 32];
                    tail_products(a.add(h * lda), pb, np, len, &mut t);
                    for &v in &t[..len - np] {
                        s += v as f64;
                    }
                }
                *out.add(h * ldo + r) = s as f32;
            }
        }
    }

    /// The horizontal sums of [`crate::x86::reduce4_hadd`]'s last steps for eight vectors at
    /// once: lane `j` of the result is `(t0 + t1) + (t2 + t3)` with `t_i = v_j[i] + v_j[i + 4]`,
    /// the same additions `reduce4_hadd` makes for `v_j` (its `x0`), in 15 instructions instead
    /// of eight times five.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn reduce8_hadd(v: &[__m256; 8]) -> __m256 {
        // lanes 0-3: t of v[k]; lanes 4-7: t of v[k + 4]
        let t: [__m256; 4] = std::array::from_fn(|k| {
            _mm256_add_ps(
                _mm256_permute2f128_ps::<0x20>(v[k], v[k + 4]),
                _mm256_permute2f128_ps::<0x31>(v[k], v[k + 4]),
            )
        });
        // (t0 + t1, t2 + t3) of v[0], v[1] | v[4], v[5]; then of v[2], v[3] | v[6], v[7]
        let h01 = _mm256_hadd_ps(t[0], t[1]);
        let h23 = _mm256_hadd_ps(t[2], t[3]);
        _mm256_hadd_ps(h01, h23)
    }

    /// Two rows of [`super::dots_f16_ggml`] at a time, each in ggml's order.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dots_f16_ggml(a: &[u16], b: &[u16], stride: usize, n: usize, out: &mut [f32]) {
        let len = a.len();
        let np = n & !31;
        // groups of 32 wholly inside `a`, then the group `a` ends in (zero-padded) if ggml
        // still counts it as a group
        let full = np.min(len) & !31;
        let ends = np.min(len.div_ceil(32) * 32);
        let pa = a.as_ptr();
        let mut r = 0;
        while r + 2 <= out.len() {
            let (p0, p1) = (b.as_ptr().add(r * stride), b.as_ptr().add((r + 1) * stride));
            let z = _mm256_setzero_ps();
            let (mut x0, mut x1, mut x2, mut x3) = (z, z, z, z);
            let (mut y0, mut y1, mut y2, mut y3) = (z, z, z, z);
            let mut i = 0;
            // one group of 32 at `i`, loaded with `full8` or `pad8`
            macro_rules! group {
                ($ld:ident) => {{
                    let q0 = $ld!(pa, i, len);
                    let q1 = $ld!(pa, i + 8, len);
                    let q2 = $ld!(pa, i + 16, len);
                    let q3 = $ld!(pa, i + 24, len);
                    x0 = _mm256_fmadd_ps(q0, $ld!(p0, i, len), x0);
                    y0 = _mm256_fmadd_ps(q0, $ld!(p1, i, len), y0);
                    x1 = _mm256_fmadd_ps(q1, $ld!(p0, i + 8, len), x1);
                    y1 = _mm256_fmadd_ps(q1, $ld!(p1, i + 8, len), y1);
                    x2 = _mm256_fmadd_ps(q2, $ld!(p0, i + 16, len), x2);
                    y2 = _mm256_fmadd_ps(q2, $ld!(p1, i + 16, len), y2);
                    x3 = _mm256_fmadd_ps(q3, $ld!(p0, i + 24, len), x3);
                    y3 = _mm256_fmadd_ps(q3, $ld!(p1, i + 24, len), y3);
                }};
            }
            while i < full {
                group!(full8);
                i += 32;
            }
            if i < ends {
                group!(pad8);
            }
            let mut s0 = crate::x86::reduce4_hadd([x0, x1, x2, x3]) as f64;
            let mut s1 = crate::x86::reduce4_hadd([y0, y1, y2, y3]) as f64;
            if np < len {
                // ggml adds the elements past the last group one by one in f64
                let (mut t0, mut t1) = ([0f32; 32], [0f32; 32]);
                tail_products(pa, p0, np, len, &mut t0);
                tail_products(pa, p1, np, len, &mut t1);
                for k in 0..len - np {
                    s0 += t0[k] as f64;
                    s1 += t1[k] as f64;
                }
            }
            out[r] = s0 as f32;
            out[r + 1] = s1 as f32;
            r += 2;
        }
        if r < out.len() {
            out[r] = dot_f16_ggml(
                a,
                std::slice::from_raw_parts(b.as_ptr().add(r * stride), len),
                n,
            );
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_f16_ggml(a: &[u16], b: &[u16], n: usize) -> f32 {
        let mut out = [0f32; 1];
        dots_f16_ggml_one(a, b, n, &mut out);
        out[0]
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_f16(a: &[u16], b: &[u16]) -> f32 {
        let n = a.len();
        let mut acc = _mm256_setzero_ps();
        let mut i = 0;
        while i + 8 <= n {
            let x = _mm256_cvtph_ps(_mm_loadu_si128(a.as_ptr().add(i).cast()));
            let y = _mm256_cvtph_ps(_mm_loadu_si128(b.as_ptr().add(i).cast()));
            acc = _mm256_fmadd_ps(x, y, acc);
            i += 8;
        }
        if i < n {
            let (mut ta, mut tb) = ([0u16; 8], [0u16; 8]);
            ta[..n - i].copy_from_slice(&a[i..]);
            tb[..n - i].copy_from_slice(&b[i..]);
            let x = _mm256_cvtph_ps(_mm_loadu_si128(ta.as_ptr().cast()));
            let y = _mm256_cvtph_ps(_mm_loadu_si128(tb.as_ptr().cast()));
            acc = _mm256_fmadd_ps(x, y, acc);
        }
        hsum(acc)
    }
}

/// AVX-512 forms of the attention products that keep ggml's AVX2 summation order: a 16-lane
/// register holds two of `ggml_vec_dot_f16`'s four 8-lane accumulators side by side (elements
/// `i..i + 16` of a group of 32 are accumulators 0 and 1, `i + 16..i + 32` accumulators 2 and
/// 3), so every lane adds the same products in the same order as on AVX2, with half the
/// conversions and multiply-adds.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::avx2::{pf_rows, reduce8_hadd, tail_products};
    use std::arch::x86_64::*;

    /// [`super::avx2::expf`] on sixteen lanes: the same operations lane by lane, so the same
    /// bits.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
    unsafe fn expf(x: __m512) -> __m512 {
        let r = _mm512_set1_ps(super::expc::SHIFT);
        let z = _mm512_fmadd_ps(x, _mm512_set1_ps(super::expc::INV_LN2), r);
        let n = _mm512_sub_ps(z, r);
        let b = _mm512_fnmadd_ps(
            n,
            _mm512_set1_ps(super::expc::LN2_LO),
            _mm512_fnmadd_ps(n, _mm512_set1_ps(super::expc::LN2_HI), x),
        );
        let e = _mm512_slli_epi32::<23>(_mm512_castps_si512(z));
        let k = _mm512_castsi512_ps(_mm512_add_epi32(
            e,
            _mm512_castps_si512(_mm512_set1_ps(1.0)),
        ));
        let absn = _mm512_abs_ps(n);
        let c = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(absn, _mm512_set1_ps(126.0));
        let u = _mm512_mul_ps(b, b);
        let j = _mm512_fmadd_ps(
            _mm512_fmadd_ps(
                _mm512_fmadd_ps(
                    _mm512_set1_ps(super::expc::C5),
                    b,
                    _mm512_set1_ps(super::expc::C4),
                ),
                u,
                _mm512_fmadd_ps(
                    _mm512_set1_ps(super::expc::C3),
                    b,
                    _mm512_set1_ps(super::expc::C2),
                ),
            ),
            u,
            _mm512_mul_ps(_mm512_set1_ps(super::expc::C1), b),
        );
        let plain = _mm512_fmadd_ps(j, k, k);
        if c == 0 {
            return plain;
        }
        let g = _mm512_maskz_mov_epi32(
            _mm512_cmp_ps_mask::<_CMP_LE_OQ>(n, _mm512_setzero_ps()),
            _mm512_set1_epi32(super::expc::BIAS_NEG as i32),
        );
        let s1 = _mm512_castsi512_ps(_mm512_add_epi32(
            g,
            _mm512_set1_epi32(super::expc::SCALE as i32),
        ));
        let s2 = _mm512_castsi512_ps(_mm512_sub_epi32(e, g));
        let d = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(absn, _mm512_set1_ps(192.0));
        let scaled = _mm512_mask_mov_ps(plain, c, _mm512_mul_ps(_mm512_fmadd_ps(s2, j, s2), s1));
        _mm512_mask_mov_ps(scaled, d, _mm512_mul_ps(s1, s1))
    }

    /// The whole groups of sixteen of [`super::avx2::exp_sum_raw`]: each group's two halves
    /// summed as that function sums a group of 8, the low half first. Returns where it stopped
    /// and the sum so far.
    ///
    /// # Safety
    /// AVX-512 F/BW/VL, AVX2, FMA and F16C must be present; `x` must hold `n` values and `out`,
    /// unless null, room for `n`.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn exp_sum_raw(
        x: *const f32,
        n: usize,
        max: f32,
        out: *mut f32,
    ) -> (usize, f64) {
        let vmax = _mm512_set1_ps(max);
        let mut sum = 0f64;
        let mut i = 0;
        while i + 16 <= n {
            let v = expf(_mm512_sub_ps(_mm512_loadu_ps(x.add(i)), vmax));
            if !out.is_null() {
                _mm512_storeu_ps(out.add(i), v);
            }
            sum += super::avx2::hsum(_mm512_castps512_ps256(v)) as f64;
            sum += super::avx2::hsum(_mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(
                _mm512_castps_pd(v),
            ))) as f64;
            i += 16;
        }
        (i, sum)
    }

    /// Sixteen f16 values from `p[i..]` as f32 (all sixteen in bounds).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
    unsafe fn full16(p: *const u16, i: usize) -> __m512 {
        _mm512_cvtph_ps(_mm256_loadu_si256(p.add(i).cast()))
    }

    /// Sixteen f16 values from `p[i..]` as f32, zero at `len` and past it (a masked load, which
    /// reads nothing past `len`).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
    unsafe fn pad16(p: *const u16, i: usize, len: usize) -> __m512 {
        let k = len.saturating_sub(i).min(16);
        let mask = ((1u32 << k) - 1) as __mmask16;
        _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mask, p.add(i).cast()))
    }

    /// ggml's `(a0 + a2) + (a1 + a3)` of the four 8-lane accumulators held as `(a0 | a1)` and
    /// `(a2 | a3)`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
    unsafe fn fold(acc: [__m512; 2]) -> __m256 {
        let s = _mm512_add_ps(acc[0], acc[1]);
        _mm256_add_ps(
            _mm512_castps512_ps256(s),
            _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(s))),
        )
    }

    /// The last steps of [`crate::x86::reduce4_hadd`] on its `x0`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn hadd_x0(x0: __m256) -> f32 {
        let t0 = _mm_add_ps(_mm256_castps256_ps128(x0), _mm256_extractf128_ps::<1>(x0));
        let t1 = _mm_hadd_ps(t0, t0);
        _mm_cvtss_f32(_mm_hadd_ps(t1, t1))
    }

    /// [`super::avx2`]'s `group_rows` on 16-lane registers, bit for bit the same results: `M`
    /// widened vectors (`w`, `lw` apart, zero past `len` to whole groups) against `rows` rows
    /// of `b`, each product in `ggml_vec_dot_f16`'s order. Rows of 32, 64 or 128 elements in
    /// whole groups (K·Q) go through [`keys`], the vectors held in registers; other rows go four
    /// at a time (two for what is left), each widened element loaded once for them (P·V from
    /// L2 was bound by those loads, six of 64 bytes for six FMAs a group; criterion `pv1`
    /// 384 -> ~300 µs with two rows; in the model, one thread, low tier, ~580 positions, P·V
    /// from cache 0.163 -> 0.136 ms a token with four).
    ///
    /// # Safety
    /// AVX-512 F/BW/VL, AVX2, FMA and F16C must be present; `w` must hold `M` vectors of
    /// `lw >= min(n & !31, len rounded up to 32)` f32, `a` (the same vectors as f16, `lda` apart)
    /// `len` elements each, `b` `rows` rows of `len` elements `stride` apart, and
    /// `out.add(h * ldo + r)` must be writable for `h < M`, `r < rows`.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn group_rows<const M: usize>(
        w: *const f32,
        lw: usize,
        a: *const u16,
        lda: usize,
        len: usize,
        b: *const u16,
        stride: usize,
        n: usize,
        out: *mut f32,
        ldo: usize,
        rows: usize,
        cur: &mut super::AheadCursor,
    ) {
        let np = n & !31;
        let full = np.min(len) & !31;
        let ends = np.min(len.div_ceil(32) * 32);
        let pf = pf_rows(stride);
        const RB: usize = 4;
        if np >= len && full == len {
            match len {
                32 => return keys::<M, 1>(w, lw, b, stride, out, ldo, rows, cur),
                64 => return keys::<M, 2>(w, lw, b, stride, out, ldo, rows, cur),
                128 => return keys::<M, 4>(w, lw, b, stride, out, ldo, rows, cur),
                _ => {}
            }
        }
        let rows_at =
            |pb: [*const u16; 2]| accumulate::<M, 2>(w, lw, pb, len, full, ends, pf * stride);
        let row = |pb: *const u16| accumulate::<M, 1>(w, lw, [pb], len, full, ends, pf * stride)[0];
        // one row's outputs from its accumulators
        let finish = |r: usize, acc: [[__m512; 2]; M]| {
            let pb = b.add(r * stride);
            for (h, acc) in acc.into_iter().enumerate() {
                let mut s = hadd_x0(fold(acc)) as f64;
                if np < len {
                    let mut t = [0f32; 32];
                    tail_products(a.add(h * lda), pb, np, len, &mut t);
                    for &v in &t[..len - np] {
                        s += v as f64;
                    }
                }
                *out.add(h * ldo + r) = s as f32;
            }
        };
        let mut r = 0;
        if np >= len {
            // no elements past the last group: eight rows at a time, their horizontal sums
            // together
            while r + 8 <= rows {
                let mut x0 = [[_mm256_setzero_ps(); 8]; M];
                for j in (0..8).step_by(RB) {
                    let pbs: [*const u16; RB] = std::array::from_fn(|q| {
                        cur.row();
                        b.add((r + j + q) * stride)
                    });
                    let acc = accumulate::<M, RB>(w, lw, pbs, len, full, ends, pf * stride);
                    for h in 0..M {
                        for q in 0..RB {
                            x0[h][j + q] = fold(acc[q][h]);
                        }
                    }
                }
                for (h, x0) in x0.iter().enumerate() {
                    _mm256_storeu_ps(out.add(h * ldo + r), reduce8_hadd(x0));
                }
                r += 8;
            }
        }
        // two rows at a time: each widened element loaded once for both
        while r + 2 <= rows {
            cur.row();
            cur.row();
            let [a0, a1] = rows_at([b.add(r * stride), b.add((r + 1) * stride)]);
            finish(r, a0);
            finish(r + 1, a1);
            r += 2;
        }
        if r < rows {
            cur.row();
            finish(r, row(b.add(r * stride)));
        }
    }

    /// The accumulators of [`group_rows`] for the `R` rows at `pb`: `(a0 | a1)` and `(a2 | a3)`
    /// of `ggml_vec_dot_f16` for each of the `M` vectors, over the whole groups below `full`
    /// and the zero-padded one up to `ends`; each widened element is loaded once for the `R`
    /// rows, and each row's line `ahead` elements on is fetched into cache.
    ///
    /// # Safety
    /// As [`group_rows`], for the rows at `pb`.
    // index loops: the iterator adapters were left as calls, spilling the accumulators
    #[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
    unsafe fn accumulate<const M: usize, const R: usize>(
        w: *const f32,
        lw: usize,
        pb: [*const u16; R],
        len: usize,
        full: usize,
        ends: usize,
        ahead: usize,
    ) -> [[[__m512; 2]; M]; R] {
        let mut acc = [[[_mm512_setzero_ps(); 2]; M]; R];
        let mut y = [_mm512_setzero_ps(); R];
        let mut i = 0;
        while i < full {
            for q in 0..R {
                _mm_prefetch::<_MM_HINT_T0>(pb[q].wrapping_add(ahead + i).cast());
            }
            // one half of the group at a time: R widened values live, not 2R
            for k in 0..2 {
                for q in 0..R {
                    y[q] = full16(pb[q], i + 16 * k);
                }
                for h in 0..M {
                    let x = _mm512_loadu_ps(w.add(h * lw + i + 16 * k));
                    for q in 0..R {
                        acc[q][h][k] = _mm512_fmadd_ps(x, y[q], acc[q][h][k]);
                    }
                }
            }
            i += 32;
        }
        if i < ends {
            for k in 0..2 {
                for q in 0..R {
                    y[q] = pad16(pb[q], i + 16 * k, len);
                }
                for h in 0..M {
                    let x = _mm512_loadu_ps(w.add(h * lw + i + 16 * k));
                    for q in 0..R {
                        acc[q][h][k] = _mm512_fmadd_ps(x, y[q], acc[q][h][k]);
                    }
                }
            }
        }
        acc
    }

    /// [`group_rows`] for rows of `32 * G` elements, whole groups only (decode's K·Q at head
    /// sizes 32, 64 and 128): the `M` widened vectors stay in registers for every row, where
    /// the general loop reloads them from memory for each row, and the eight rows of a step
    /// end in one [`reduce8_hadd`] per vector. The same operations on the same values in the
    /// same order as [`group_rows`], so the same bits.
    ///
    /// # Safety
    /// As [`group_rows`] with `len = n & !31 = 32 * G` (`w`: `M` vectors of `32 * G` f32).
    // index loops: the iterator adapters were left as calls, spilling the accumulators
    #[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
    unsafe fn keys<const M: usize, const G: usize>(
        w: *const f32,
        lw: usize,
        b: *const u16,
        stride: usize,
        out: *mut f32,
        ldo: usize,
        rows: usize,
        cur: &mut super::AheadCursor,
    ) {
        let pf = pf_rows(stride);
        let mut wr = [[[_mm512_setzero_ps(); 2]; G]; M];
        for h in 0..M {
            for g in 0..G {
                for k in 0..2 {
                    wr[h][g][k] = _mm512_loadu_ps(w.add(h * lw + 32 * g + 16 * k));
                }
            }
        }
        let row = |pb: *const u16| {
            let mut acc = [[_mm512_setzero_ps(); 2]; M];
            for g in 0..G {
                _mm_prefetch::<_MM_HINT_T0>(pb.wrapping_add(pf * stride + 32 * g).cast());
                let y = [full16(pb, 32 * g), full16(pb, 32 * g + 16)];
                for h in 0..M {
                    for k in 0..2 {
                        acc[h][k] = _mm512_fmadd_ps(wr[h][g][k], y[k], acc[h][k]);
                    }
                }
            }
            acc
        };
        let mut r = 0;
        while r + 8 <= rows {
            let mut x0 = [[_mm256_setzero_ps(); 8]; M];
            for j in 0..8 {
                cur.row();
                let acc = row(b.add((r + j) * stride));
                for (x0, a) in x0.iter_mut().zip(acc) {
                    x0[j] = fold(a);
                }
            }
            for (h, x0) in x0.iter().enumerate() {
                _mm256_storeu_ps(out.add(h * ldo + r), reduce8_hadd(x0));
            }
            r += 8;
        }
        for r in r..rows {
            cur.row();
            let acc = row(b.add(r * stride));
            for (h, acc) in acc.into_iter().enumerate() {
                *out.add(h * ldo + r) = hadd_x0(fold(acc));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Ahead, AheadCursor};
    use std::collections::BTreeSet;

    #[test]
    fn ahead_fetches_every_line_of_every_run_spread_over_the_rows() {
        // (len, stride, count, rows, start): decode's V columns (128 keys of 64 V rows), one
        // long run, short runs that start inside a line, one row for everything
        for (len, stride, count, rows, start) in [
            (128usize, 768usize, 64usize, 128usize, 0usize),
            (610, 0, 1, 16, 5),
            (5, 9, 3, 2, 3),
            (33, 40, 7, 1, 31),
            (1, 1, 50, 7, 17),
        ] {
            let data = vec![0u16; start + (count - 1) * stride + len];
            let runs = &data[start..];
            let ahead = Ahead::new(runs, len, stride, count);
            let mut cur = AheadCursor::new(&ahead, rows);
            let mut offsets = Vec::new();
            for _ in 0..rows {
                let (before, step) = (offsets.len(), cur.step);
                cur.issue_with(step, |at| offsets.push(at));
                assert!(offsets.len() - before <= step);
            }
            assert_eq!(
                cur.left, 0,
                "len={len} count={count}: lines left after the rows"
            );
            let line = |at: usize| (runs.as_ptr() as usize + 2 * at) / 64;
            let fetched: BTreeSet<usize> = offsets.iter().map(|&at| line(at)).collect();
            for &at in &offsets {
                assert!(at < runs.len(), "offset {at} past the array");
            }
            for r in 0..count {
                for e in 0..len {
                    let at = r * stride + e;
                    assert!(
                        fetched.contains(&line(at)),
                        "len={len} stride={stride}: element {e} of run {r} not fetched"
                    );
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "do not fit")]
    fn ahead_refuses_runs_past_the_array() {
        let data = [0u16; 100];
        Ahead::new(&data, 11, 30, 4);
    }
}
