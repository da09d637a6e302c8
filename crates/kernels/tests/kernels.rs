//! Every kernel on every instruction set this CPU (or emulator) runs, against the scalar
//! reference (tight) and an f32 reference (ggml's per-type error budgets), on fresh random data.

use proptest::prelude::*;
use slmpack_kernels::{
    act_type, available_isas, dot_tiled_reference, gemm_isa, gemv_isa, quantize_act,
    quantize_act_isa, row_bytes, tile, tile_kernel, tile_ordered, tiled_order, vec_dot, GgmlType,
    Isa, KernelError, Weights, MAX_TILE, WEIGHT_TYPES,
};

/// ggml's `tests/test-quantize-fns.cpp`: MAX_DOT_PRODUCT_ERROR (every type here; the 0.04
/// "low-bit" budget is for Q2_K/IQ types, which have no kernels here).
const MAX_DOT_PRODUCT_ERROR: f64 = 0.02;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E3779B97F4A7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        z ^ (z >> 31)
    }
    /// uniform in [-1, 1)
    fn uni(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

/// Test rows of several shapes: uniform, gaussian-like, heavy outliers, ggml's cosine pattern,
/// sparse, all-positive (exercises the `m` offsets), tiny magnitudes.
fn gen(dist: u8, n: usize, seed: u64) -> Vec<f32> {
    let mut r = Rng(seed);
    (0..n)
        .map(|i| match dist % 7 {
            0 => r.uni(),
            1 => (r.uni() + r.uni() + r.uni() + r.uni()) * 0.8,
            2 => {
                let v = (r.uni() + r.uni()) * 0.5;
                if r.next().is_multiple_of(100) {
                    v * 25.0
                } else {
                    v
                }
            }
            3 => 0.1 + 2.0 * ((i as f32) + (seed % 7) as f32).cos(),
            4 => {
                if r.next() % 5 < 3 {
                    0.0
                } else {
                    r.uni() * 3.0
                }
            }
            5 => (r.uni() + 1.0) * 1.5,
            _ => r.uni() * 1e-3,
        })
        .collect()
}

fn quantize(ty: GgmlType, x: &[f32]) -> Vec<u8> {
    let mut q = vec![0u8; row_bytes(ty, x.len())];
    slmpack_quant::quantize_row(ty, x, &mut q).unwrap();
    q
}

fn dequantize(ty: GgmlType, q: &[u8], n: usize) -> Vec<f32> {
    let mut d = vec![0f32; n];
    slmpack_quant::dequantize_row(ty, q, &mut d).unwrap();
    d
}

fn act(ty: GgmlType, x: &[f32]) -> Vec<u8> {
    let at = act_type(ty).unwrap();
    let mut a = vec![0u8; row_bytes(at, x.len())];
    quantize_act(at, x, &mut a);
    a
}

fn dot64(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
}

fn amax(a: &[f32]) -> f64 {
    a.iter().fold(0f64, |m, &v| m.max(v.abs() as f64))
}

/// Checks one weight row against one activation row on every ISA; returns the worst
/// normalised f32-reference errors (vs original floats, vs dequantized weights).
fn check_row(ty: GgmlType, w: &[f32], x: &[f32]) -> (f64, f64) {
    let n = w.len();
    let wq = quantize(ty, w);
    let wd = dequantize(ty, &wq, n);
    let a = act(ty, x);
    let reference = vec_dot(Isa::Scalar, ty, n, &wq, &a);
    // magnitude of the sum, for the scalar-vs-SIMD tolerance (summation order differs)
    let mag: f64 = wd
        .iter()
        .zip(x)
        .map(|(&p, &q)| (p as f64 * q as f64).abs())
        .sum();
    // ggml's budget is |result - dot| / n on data of amplitude ~2.1; scale it to this data.
    // Against the dequantized weights only the activations' rounding counts: at most
    // amax(x)/254 per element for Q8 activations, which stays within 0.02 at any length.
    let scale = (amax(w) * amax(x) / (2.1 * 2.1)).max(f64::MIN_POSITIVE);
    let ref_orig = dot64(w, x);
    let ref_deq = dot64(&wd, x);
    let (mut e_orig, mut e_deq) = (0f64, 0f64);
    for isa in available_isas() {
        let got = vec_dot(isa, ty, n, &wq, &a);
        assert!(got.is_finite(), "{ty} {isa}: {got}");
        if isa.is_x86() {
            // the AVX-512 levels give AVX2's bits (mostly the same sources; Q6_K its own)
            let avx2 = vec_dot(Isa::Avx2, ty, n, &wq, &a);
            assert_eq!(
                got.to_bits(),
                avx2.to_bits(),
                "{ty} on {isa}, n={n}: {got} vs avx2 {avx2}"
            );
        }
        let tol = 1e-5 * mag + 1e-30;
        assert!(
            ((got - reference) as f64).abs() <= tol,
            "{ty} on {isa}, n={n}: {got} vs scalar {reference} (tol {tol:e})"
        );
        let eo = (got as f64 - ref_orig).abs() / n as f64 / scale;
        let ed = (got as f64 - ref_deq).abs() / n as f64 / scale;
        // ggml measures at n = 4096; quantization errors add up like a random walk, so the
        // same budget at length n is 0.02 * sqrt(4096 / n) (never below 0.02)
        let budget = MAX_DOT_PRODUCT_ERROR * (4096.0 / n as f64).sqrt().max(1.0);
        assert!(
            eo <= budget,
            "{ty} on {isa}, n={n}: {got} vs f32 dot {ref_orig}: normalised error {eo}"
        );
        assert!(
            ed <= MAX_DOT_PRODUCT_ERROR,
            "{ty} on {isa}, n={n}: {got} vs dequantized dot {ref_deq}: normalised error {ed}"
        );
        e_orig = e_orig.max(eo);
        e_deq = e_deq.max(ed);
    }
    (e_orig, e_deq)
}

fn lengths(ty: GgmlType) -> Vec<usize> {
    if ty.block_size() == 256 {
        vec![256, 512, 768, 1536, 2048]
    } else if ty.block_size() == 32 {
        vec![32, 64, 96, 160, 576, 1536]
    } else {
        vec![1, 7, 31, 33, 64, 100, 576, 1536]
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 96,
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::Direct("tests/kernels.proptest-regressions"),
        )),
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_kernel_matches_references(
        len_pick in 0usize..64, wdist in 0u8..7, xdist in 0u8..7, seed in any::<u64>()
    ) {
        for ty in WEIGHT_TYPES {
            let ls = lengths(ty);
            let n = ls[len_pick % ls.len()];
            let w = gen(wdist, n, seed);
            let x = gen(xdist, n, seed ^ 0x5555_0000_1234);
            check_row(ty, &w, &x);
        }
    }

    #[test]
    fn every_tile_kernel_matches_the_scalar_dot(
        len_pick in 0usize..64, wdist in 0u8..7, xdist in 0u8..7, seed in any::<u64>()
    ) {
        for ty in WEIGHT_TYPES {
            let ls = lengths(ty);
            let n = ls[len_pick % ls.len()];
            check_tiles(ty, n, wdist, xdist, seed);
        }
    }
}

/// Tolerance for a SIMD sum against the scalar one (the float additions run in another order):
/// 1e-5 of the sum of the magnitudes of the terms that are added. For the types with a min
/// (`w = d * q + m`, q unsigned) those are `d * q * x` and `m * x`, which can be far larger
/// than `w * x` and cancel (a block of weights far from zero): `|d * q| <= |w| + |m|`, and
/// `|m|` is at most the block's largest `|w|` (its smallest weight is `m`), so each element
/// counts `(|w| + 2 max|w| of its 32-block) * |x|`.
fn tolerance(ty: GgmlType, wd: &[f32], x: &[f32]) -> f64 {
    let has_min = matches!(
        ty,
        GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4_K | GgmlType::Q5_K
    );
    let mut sum = 0f64;
    for (wb, xb) in wd.chunks(32).zip(x.chunks(32)) {
        let m = if has_min {
            wb.iter().fold(0f64, |a, &w| a.max((w as f64).abs()))
        } else {
            0.0
        };
        for (&w, &v) in wb.iter().zip(xb) {
            sum += ((w as f64).abs() + 2.0 * m) * (v as f64).abs();
        }
    }
    1e-5 * sum + 1e-30
}

/// Every tile shape up to `MAX_TILE` on every ISA, every output element against the scalar
/// one-row dot of its weight row and activation row (fresh rows for each element position).
fn check_tiles(ty: GgmlType, n: usize, wdist: u8, xdist: u8, seed: u64) {
    let (mmax, kmax) = MAX_TILE;
    let ws: Vec<Vec<f32>> = (0..mmax)
        .map(|i| gen(wdist.wrapping_add(i as u8), n, seed.wrapping_add(i as u64)))
        .collect();
    let xs: Vec<Vec<f32>> = (0..kmax)
        .map(|j| gen(xdist.wrapping_add(j as u8), n, seed ^ (0x5555 + j as u64)))
        .collect();
    let wq: Vec<Vec<u8>> = ws.iter().map(|w| quantize(ty, w)).collect();
    let wd: Vec<Vec<f32>> = wq.iter().map(|q| dequantize(ty, q, n)).collect();
    let aq: Vec<Vec<u8>> = xs.iter().map(|x| act(ty, x)).collect();
    for isa in available_isas() {
        for m in 1..=mmax {
            for k in 1..=kmax {
                let w: Vec<u8> = wq[..m].concat();
                let a: Vec<u8> = aq[..k].concat();
                let mut out = vec![f32::NAN; m * k];
                tile(isa, ty, n, m, k, &w, &a, &mut out);
                // llama.cpp's tiled K-quant order (8 tokens and more): its reference, bit for bit
                if tiled_order(isa, ty, 8) {
                    let mut tiled = vec![f32::NAN; m * k];
                    tile_ordered(isa, ty, n, m, k, true, &w, &a, &mut tiled);
                    for j in 0..k {
                        for i in 0..m {
                            let want = dot_tiled_reference(ty, n, &wq[i], &aq[j]);
                            assert_eq!(
                                tiled[j * m + i].to_bits(),
                                want.to_bits(),
                                "{ty} tiled order on {isa}, tile {m}x{k}, n={n}, row {i} token {j}"
                            );
                        }
                    }
                }
                for j in 0..k {
                    for i in 0..m {
                        let want = vec_dot(Isa::Scalar, ty, n, &wq[i], &aq[j]);
                        let got = out[j * m + i];
                        // the x86 sets follow ggml-cpu's sums for the quantized types (tinyBLAS and
                        // the one-row kernels sum each output alike): a tile gives the one-row bits
                        if isa.is_x86() && ty.is_quantized() {
                            let one = vec_dot(isa, ty, n, &wq[i], &aq[j]);
                            assert_eq!(
                                got.to_bits(),
                                one.to_bits(),
                                "{ty} on {isa}, tile {m}x{k}, n={n}, row {i} token {j}: {got} vs one-row {one}"
                            );
                        }
                        let tol = tolerance(ty, &wd[i], &xs[j]);
                        assert!(
                            got.is_finite() && ((got - want) as f64).abs() <= tol,
                            "{ty} on {isa}, tile {m}x{k}, n={n}, row {i} token {j}: {got} vs scalar {want} (tol {tol:e})"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn simd_activation_quantization_is_bit_identical() {
    for ty in WEIGHT_TYPES {
        let at = act_type(ty).unwrap();
        for dist in 0..8u8 {
            for n in [32usize, 64, 576, 1536] {
                if n % at.block_size() != 0 {
                    continue;
                }
                let mut x = gen(dist.min(6), n, dist as u64 * 31 + n as u64);
                if dist == 6 {
                    x[3] = f32::INFINITY; // a non-finite block takes the scalar path
                }
                if dist == 7 {
                    // exact halves with amax 127 (id = 1): ties, which must round to even
                    for (i, v) in x.iter_mut().enumerate() {
                        *v = if i % 32 == 0 {
                            127.0
                        } else {
                            (i % 61) as f32 - 30.5
                        };
                    }
                }
                let mut want = vec![0u8; row_bytes(at, n)];
                quantize_act(at, &x, &mut want);
                for isa in available_isas() {
                    let mut got = vec![0u8; want.len()];
                    quantize_act_isa(isa, at, &x, &mut got);
                    assert_eq!(got, want, "{at} on {isa}, dist {dist}, n={n}");
                }
            }
        }
    }
}

#[test]
fn tile_kernels_exist_for_every_quantized_type_on_x86() {
    if !Isa::Avx2.usable() {
        println!("NOT EXERCISED: no AVX2 here");
        return;
    }
    for isa in [Isa::Avx2, Isa::Avx512, Isa::Avx512Vnni] {
        for ty in WEIGHT_TYPES {
            let want = !matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16);
            for m in 1..=MAX_TILE.0 {
                for k in 1..=MAX_TILE.1 {
                    assert_eq!(
                        tile_kernel(isa, ty, m, k).is_some(),
                        want,
                        "{ty} {m}x{k} on {isa}"
                    );
                }
            }
        }
    }
}

#[test]
fn ggml_test_quantize_fns_budget() {
    // test-quantize-fns.cpp: test_size = 32*128, data 0.1 + 2cos(i + offset), offsets 0 and 1
    let n = 32 * 128;
    let w: Vec<f32> = (0..n).map(|i| 0.1 + 2.0 * (i as f32).cos()).collect();
    let x: Vec<f32> = (0..n).map(|i| 0.1 + 2.0 * (i as f32 + 1.0).cos()).collect();
    let isas: Vec<&str> = available_isas().iter().map(|i| i.name()).collect();
    println!("dot-product error |vec_dot - f32 dot| / n on ggml's test data (budget {MAX_DOT_PRODUCT_ERROR}), ISAs {isas:?}");
    for ty in WEIGHT_TYPES {
        let wq = quantize(ty, &w);
        let a = act(ty, &x);
        let want = dot64(&w, &x);
        let mut line = format!("  {:<5}", ty.name());
        for isa in available_isas() {
            let got = vec_dot(isa, ty, n, &wq, &a);
            let e = (got as f64 - want).abs() / n as f64;
            line.push_str(&format!("  {isa}: {e:.6}"));
            assert!(e <= MAX_DOT_PRODUCT_ERROR, "{ty} on {isa}: {e}");
        }
        println!("{line}");
    }
}

#[test]
fn unaligned_buffers_give_the_same_result() {
    for ty in WEIGHT_TYPES {
        let n = if ty.block_size() == 256 { 512 } else { 576 };
        let w = gen(1, n, 7);
        let x = gen(0, n, 8);
        let wq = quantize(ty, &w);
        let a = act(ty, &x);
        let mut wbuf = vec![0u8; wq.len() + 1];
        wbuf[1..].copy_from_slice(&wq);
        let mut abuf = vec![0u8; a.len() + 3];
        abuf[3..].copy_from_slice(&a);
        for isa in available_isas() {
            let aligned = vec_dot(isa, ty, n, &wq, &a);
            let odd = vec_dot(isa, ty, n, &wbuf[1..], &abuf[3..]);
            assert_eq!(aligned.to_bits(), odd.to_bits(), "{ty} on {isa}");
        }
    }
}

#[test]
fn gemv_and_gemm_check_every_output_element() {
    for ty in WEIGHT_TYPES {
        let cols = if ty.block_size() == 256 { 512 } else { 576 };
        for rows in [1usize, 3, 37, 300] {
            let wf = gen(1, rows * cols, rows as u64);
            let wq = quantize(ty, &wf);
            let w = Weights::new(ty, rows, cols, &wq).unwrap();
            let rb = row_bytes(ty, cols);
            for n_tokens in [1usize, 2, 5, 13] {
                let xs = gen(0, n_tokens * cols, 99 + n_tokens as u64);
                let mut avx2_ys = None;
                for isa in available_isas() {
                    let mut ys = vec![f32::NAN; n_tokens * rows];
                    if n_tokens == 1 {
                        gemv_isa(isa, &w, &xs, &mut ys);
                    } else {
                        gemm_isa(isa, &w, &xs, n_tokens, &mut ys);
                    }
                    // every x86 set gives AVX2's bits, F32/F16/BF16 included
                    if isa == Isa::Avx2 {
                        avx2_ys = Some(ys.clone());
                    } else if isa.is_x86() {
                        let want = avx2_ys.as_ref().expect("avx2 runs before avx512");
                        for (i, (g, w)) in ys.iter().zip(want).enumerate() {
                            assert_eq!(
                                g.to_bits(),
                                w.to_bits(),
                                "{ty} {isa} rows={rows} tokens={n_tokens} out {i}: {g} vs avx2 {w}"
                            );
                        }
                    }
                    for t in 0..n_tokens {
                        let x = &xs[t * cols..(t + 1) * cols];
                        let a = act(ty, x);
                        for r in 0..rows {
                            let wr = &wq[r * rb..(r + 1) * rb];
                            let want = vec_dot(Isa::Scalar, ty, cols, wr, &a);
                            let got = ys[t * rows + r];
                            let tol = tolerance(ty, &dequantize(ty, wr, cols), x);
                            assert!(
                                got.is_finite() && ((got - want) as f64).abs() <= tol,
                                "{ty} {isa} rows={rows} tokens={n_tokens} token {t} row {r}: {got} vs scalar {want} (tol {tol:e})"
                            );
                            // the x86 sets sum as llama.cpp does: whatever the path (one row,
                            // tiles, decode tiles), the bits of the one-row kernel or, for
                            // K-quant batches of 8 and more, of the tiled order
                            // F32/BF16 batches whose rows come in fours: tinyBLAS's order, as
                            // llama.cpp; elsewhere the one-row kernel's (ggml's `vec_dot`)
                            let tiny = n_tokens >= 2 && rows % 4 == 0 && cols % 8 == 0;
                            if isa.is_x86() && matches!(ty, GgmlType::F32 | GgmlType::BF16) {
                                let exact = if tiny {
                                    let wd = dequantize(ty, wr, cols);
                                    let xd = dequantize(act_type(ty).unwrap(), &a, cols);
                                    tiny_blas_reference(&wd, &xd)
                                } else {
                                    vec_dot(isa, ty, cols, wr, &a)
                                };
                                assert_eq!(
                                    got.to_bits(),
                                    exact.to_bits(),
                                    "{ty} rows={rows} tokens={n_tokens} token {t} row {r}: {got} vs {exact} (tinyBLAS order: {tiny})"
                                );
                            }
                            if isa.is_x86() && ty.is_quantized() {
                                let exact = if tiled_order(isa, ty, n_tokens) {
                                    dot_tiled_reference(ty, cols, wr, &a)
                                } else {
                                    vec_dot(isa, ty, cols, wr, &a)
                                };
                                assert_eq!(
                                    got.to_bits(),
                                    exact.to_bits(),
                                    "{ty} rows={rows} tokens={n_tokens} token {t} row {r}: {got} vs {exact}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}

/// One output of tinyBLAS's F32/BF16/F16 product (`llamafile/sgemm.cpp` on AVX2), in plain
/// Rust: element `l` into lane `l % 8` by FMA, then the halves added, then `(r0 + r2) + (r1 + r3)`.
fn tiny_blas_reference(w: &[f32], x: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    for (l, (&a, &b)) in x.iter().zip(w).enumerate() {
        lanes[l % 8] = a.mul_add(b, lanes[l % 8]);
    }
    let r: Vec<f32> = (0..4).map(|k| lanes[k + 4] + lanes[k]).collect();
    (r[0] + r[2]) + (r[1] + r[3])
}

#[test]
fn weights_are_validated() {
    let data = vec![0u8; 18 * 2];
    assert!(Weights::new(GgmlType::Q4_0, 2, 32, &data).is_ok());
    assert_eq!(
        Weights::new(GgmlType::Q4_0, 2, 33, &data).unwrap_err(),
        KernelError::RowLength {
            ty: GgmlType::Q4_0,
            block: 32,
            cols: 33
        }
    );
    let e = Weights::new(GgmlType::Q4_0, 3, 32, &data).unwrap_err();
    assert!(e.to_string().contains("take 54 bytes, got 36"), "{e}");
    let e = Weights::new(GgmlType::Q2_K, 1, 256, &data).unwrap_err();
    assert!(e.to_string().contains("no matmul kernel for `Q2_K`"), "{e}");
}

/// Prints the exercised instruction sets; when `SLMPACK_EXPECT_ISAS` is set (tests/aarch64.sh
/// sets it per QEMU_CPU), they must be exactly that set.
#[test]
fn exercised_isas_are_the_expected_ones() {
    let got: Vec<&str> = available_isas().iter().map(|i| i.name()).collect();
    println!("kernels exercised on this CPU: {}", got.join(", "));
    let not_run: Vec<&str> = slmpack_kernels::detected_isas()
        .into_iter()
        .filter(|i| !i.has_kernels())
        .map(|i| i.name())
        .collect();
    if !not_run.is_empty() {
        println!("NOTE: this CPU has {not_run:?} but this build has no kernels for them");
    }
    if cfg!(target_arch = "x86_64") {
        for isa in [Isa::Avx512, Isa::Avx512Vnni] {
            if !isa.usable() {
                println!("NOT EXERCISED: {isa} kernels (this CPU does not run {isa})");
            }
        }
    }
    if let Ok(want) = std::env::var("SLMPACK_EXPECT_ISAS") {
        let want: Vec<&str> = want.split(',').map(str::trim).collect();
        assert_eq!(
            got, want,
            "instruction sets available here vs SLMPACK_EXPECT_ISAS"
        );
    }
    assert_eq!(got[0], "scalar");
}
