//! The 8-row packed layout: the AVX2 kernel gives exactly the bits of the plain-Rust reference
//! of its summation order, and agrees with the one-row scalar kernels to rounding; packed Q4_1,
//! Q5_0, Q5_1 and Q8_0 give the bits of the unpacked kernels as well.

use slmpack_kernels::packed::{gemm_packed, gemm_packed_reference, pack_for, packs};
use slmpack_kernels::{gemm_isa, row_bytes, GgmlType, Isa, Weights};

mod common;
use common::values;

/// Random matrices of the given (type, rows, cols), quantized (seeds from `seed` on).
fn quantized(shapes: &[(GgmlType, usize, usize)], seed: u64) -> Vec<Vec<u8>> {
    shapes
        .iter()
        .enumerate()
        .map(|(i, &(ty, rows, cols))| {
            let wf = values(rows * cols, seed + i as u64, 1.0);
            let mut wq = vec![0u8; rows * row_bytes(ty, cols)];
            slmpack_quant::quantize(ty, &wf, cols, &mut wq).unwrap();
            wq
        })
        .collect()
}

/// [`quantized`]'s matrices as kernel weights.
fn weights<'a>(shapes: &[(GgmlType, usize, usize)], quants: &'a [Vec<u8>]) -> Vec<Weights<'a>> {
    shapes
        .iter()
        .zip(quants)
        .map(|(&(ty, rows, cols), q)| Weights::new(ty, rows, cols, q).unwrap())
        .collect()
}

#[test]
fn packed_kernels_match_their_reference_bit_for_bit_and_the_scalar_kernels_closely() {
    if !Isa::Avx2.usable() {
        // the layout is AVX2-only; elsewhere `pack_for` must decline
        let w = vec![0u8; 8 * row_bytes(GgmlType::Q4_0, 32)];
        let w = Weights::new(GgmlType::Q4_0, 8, 32, &w).unwrap();
        assert!(pack_for(Isa::Scalar, &w).unwrap().is_none());
        return;
    }
    for ty in [
        GgmlType::Q4_0,
        GgmlType::Q4_K,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
    ] {
        for (rows, cols) in [
            (8usize, 32usize),
            (16, 64),
            (24, 576),
            (16, 512),
            (64, 1536),
        ] {
            if !cols.is_multiple_of(ty.block_size()) {
                continue;
            }
            // extreme blocks too: a row of maxima, a row of zeros
            let mut wf = values(rows * cols, (rows * cols) as u64, 1.0);
            wf[..cols].iter_mut().for_each(|v| *v = 3.0);
            wf[cols..2 * cols].iter_mut().for_each(|v| *v = 0.0);
            let mut wq = vec![0u8; rows * row_bytes(ty, cols)];
            slmpack_quant::quantize(ty, &wf, cols, &mut wq).unwrap();
            let w = Weights::new(ty, rows, cols, &wq).unwrap();
            for isa in [Isa::Avx2, Isa::Avx512, Isa::Avx512Vnni] {
                if !isa.usable() {
                    println!("NOT EXERCISED: packed {ty} on {isa} (this CPU does not run it)");
                    continue;
                }
                check_packed(isa, ty, &w, &wq);
            }
        }
    }
}

/// One packed matrix on `isa` against its reference and the scalar kernels, 1 to 9 tokens.
fn check_packed(isa: Isa, ty: GgmlType, w: &Weights, wq: &[u8]) {
    let (rows, cols) = (w.rows, w.cols);
    let p = pack_for(isa, w).unwrap().expect("packs");
    assert_eq!(p.isa, isa);
    if ty == GgmlType::Q4_K {
        // the unpacked 6-bit scales and mins: 32 bytes more per super-block of 8 rows
        assert_eq!(p.bytes(), wq.len() + rows / 8 * cols / 256 * 32);
    } else {
        assert_eq!(p.bytes(), wq.len());
    }
    for n_tokens in [1usize, 2, 3, 4, 5, 9] {
        let mut xs = values(n_tokens * cols, 7 + n_tokens as u64, 2.0);
        // a token of saturated activations (every quant at +-127)
        xs[..cols]
            .iter_mut()
            .enumerate()
            .for_each(|(i, v)| *v = if i % 3 == 0 { -5.0 } else { 5.0 });
        let mut got = vec![0f32; n_tokens * rows];
        let mut want = vec![0f32; n_tokens * rows];
        let mut one_row = vec![0f32; n_tokens * rows];
        let mut unpacked = vec![0f32; n_tokens * rows];
        gemm_packed(&p, &xs, n_tokens, &mut got);
        gemm_packed_reference(w, &xs, n_tokens, &mut want);
        gemm_isa(Isa::Scalar, w, &xs, n_tokens, &mut one_row);
        gemm_isa(isa, w, &xs, n_tokens, &mut unpacked);
        for i in 0..got.len() {
            if matches!(
                ty,
                GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q5_1 | GgmlType::Q8_0
            ) {
                // these are packed for speed only: the bits of the unpacked kernels, which sum
                // as llama.cpp does (ggml's `vec_dot`; tinyBLAS for Q5_0 batches)
                assert_eq!(
                    got[i].to_bits(),
                    unpacked[i].to_bits(),
                    "{ty} on {isa} {rows}x{cols} tokens={n_tokens} out {i}: {} vs unpacked {}",
                    got[i],
                    unpacked[i]
                );
            }
            assert_eq!(
                got[i].to_bits(),
                want[i].to_bits(),
                "{ty} on {isa} {rows}x{cols} tokens={n_tokens} out {i}: {} vs {}",
                got[i],
                want[i]
            );
            let tol = 1e-4 * (1.0 + one_row[i].abs());
            assert!(
                (got[i] - one_row[i]).abs() <= tol,
                "{ty} {rows}x{cols} tokens={n_tokens} out {i}: {} vs one-row {}",
                got[i],
                one_row[i]
            );
        }
    }
}

#[test]
fn only_whole_groups_of_supported_types_are_packed() {
    for isa in [Isa::Avx2, Isa::Avx512, Isa::Avx512Vnni] {
        assert_eq!(packs(isa, GgmlType::Q4_0, 576), isa.usable());
        assert_eq!(packs(isa, GgmlType::Q4_K, 576), isa.usable());
        // the lane-order layout keeps ggml's per-lane sums (the bits of the unpacked kernels)
        for ty in [
            GgmlType::Q4_1,
            GgmlType::Q5_0,
            GgmlType::Q5_1,
            GgmlType::Q8_0,
        ] {
            assert_eq!(packs(isa, ty, 576), isa.usable());
        }
    }
    assert!(!packs(Isa::Avx2, GgmlType::Q4_0, 12));
    assert!(!packs(Isa::Avx2, GgmlType::Q8_0, 4));
    assert!(!packs(Isa::Avx2, GgmlType::Q5_0, 20));
    assert!(!packs(Isa::Avx2, GgmlType::Q6_K, 576));
    assert!(!packs(Isa::Avx2, GgmlType::Q5_1, 20));
    assert!(!packs(Isa::Scalar, GgmlType::Q4_0, 576));
    assert!(!packs(Isa::Neon, GgmlType::Q4_0, 576));
    // a weight of the wrong size is an error, not a panic
    let w = Weights {
        ty: GgmlType::Q4_0,
        rows: 8,
        cols: 32,
        data: &[0u8; 10],
    };
    assert!(pack_for(Isa::Avx2, &w).is_err());
    // where the layout does not apply, nothing is packed
    let z = vec![0u8; 12 * row_bytes(GgmlType::Q4_0, 32)];
    let w = Weights::new(GgmlType::Q4_0, 12, 32, &z).unwrap();
    assert!(pack_for(Isa::Avx2, &w).unwrap().is_none());
}

#[test]
fn products_of_several_matrices_together_give_each_ones_bits() {
    use slmpack_kernels::packed::{can_share, gemv_packed_many, Packed};
    let isa = Isa::Avx2;
    if !isa.usable() {
        println!("NOT EXERCISED: gemv_packed_many (no AVX2 here)");
        return;
    }
    let make = |ty: GgmlType, rows: usize, cols: usize, seed: u64| -> Packed {
        let wf = values(rows * cols, seed, 1.0);
        let mut wq = vec![0u8; rows * row_bytes(ty, cols)];
        slmpack_quant::quantize(ty, &wf, cols, &mut wq).unwrap();
        let w = Weights::new(ty, rows, cols, &wq).unwrap();
        pack_for(isa, &w).unwrap().expect("packs")
    };
    use GgmlType::*;
    // attention's Q, K, V of a q4_k_m file (Q5_0, Q5_0, Q8_0); Q4_0 with Q8_0 (the corrections);
    // the K-quant and the Q8_1 families
    let sets: [&[(GgmlType, usize)]; 4] = [
        &[(Q5_0, 72), (Q5_0, 24), (Q8_0, 24)],
        &[(Q4_0, 16), (Q8_0, 8)],
        &[(Q4_K, 24), (Q4_K, 8)],
        &[(Q4_1, 8), (Q5_1, 40), (Q4_1, 16)],
    ];
    for (k, set) in sets.iter().enumerate() {
        let cols = if set[0].0 == Q4_K { 512 } else { 96 };
        let ps: Vec<Packed> = set
            .iter()
            .enumerate()
            .map(|(i, &(ty, rows))| make(ty, rows, cols, (10 * k + i) as u64))
            .collect();
        let refs: Vec<&Packed> = ps.iter().collect();
        assert!(can_share(&refs));
        let x = values(cols, 99 + k as u64, 2.0);
        for threads in [1, 2, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let (got, want) = pool.install(|| {
                slmpack_kernels::pool::hot(|| {
                    let mut got: Vec<Vec<f32>> = ps.iter().map(|p| vec![0f32; p.rows]).collect();
                    let mut outs: Vec<&mut [f32]> = got.iter_mut().map(|v| &mut v[..]).collect();
                    gemv_packed_many(&refs, &x, &mut outs);
                    let want: Vec<Vec<f32>> = ps
                        .iter()
                        .map(|p| {
                            let mut y = vec![0f32; p.rows];
                            gemm_packed(p, &x, 1, &mut y);
                            y
                        })
                        .collect();
                    (got, want)
                })
            });
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                for r in 0..g.len() {
                    assert_eq!(
                        g[r].to_bits(),
                        w[r].to_bits(),
                        "set {k} matrix {i} row {r}, {threads} threads: {} vs {}",
                        g[r],
                        w[r]
                    );
                }
            }
        }
    }
    // activations of another type or length do not go together
    let a = make(Q4_1, 8, 96, 1);
    let b = make(Q5_0, 8, 96, 2);
    let c = make(Q5_0, 8, 64, 3);
    assert!(!can_share(&[&a, &b]));
    assert!(!can_share(&[&b, &c]));
    assert!(!can_share(&[&b, &b, &b, &b, &b]));
}

#[test]
fn matrices_packed_together_give_the_bits_of_each_packed_alone() {
    use slmpack_kernels::packed::pack_many;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use GgmlType::*;
    let isa = [Isa::Avx512Vnni, Isa::Avx512, Isa::Avx2]
        .into_iter()
        .find(|i| i.usable());
    // a mix as a forward pass reads it: packed types, a type the layout does not take (Q6_K),
    // a row count that is not a whole number of groups, and a matrix of over 2 MiB
    let shapes = [
        (Q5_0, 64, 576),
        (Q8_0, 24, 576),
        (Q6_K, 16, 512),
        (Q4_0, 12, 64),
        (Q4_K, 16, 1536),
        (Q4_1, 8, 96),
        (Q8_0, 4096, 576),
        (Q5_1, 40, 96),
    ];
    let quants = quantized(&shapes, 500);
    let ws = weights(&shapes, &quants);
    let Some(isa) = isa else {
        // no x86 packing here: nothing is packed and nothing is reported done
        let calls = AtomicUsize::new(0);
        let ps = pack_many(Isa::Scalar, &ws, |_| {
            calls.fetch_add(1, Ordering::Relaxed);
        })
        .unwrap();
        assert!(ps.iter().all(Option::is_none));
        assert_eq!(calls.into_inner(), 0);
        return;
    };
    let done: Vec<AtomicUsize> = ws.iter().map(|_| AtomicUsize::new(0)).collect();
    let ps = pack_many(isa, &ws, |i| {
        done[i].fetch_add(1, Ordering::Relaxed);
    })
    .unwrap();
    assert_eq!(ps.len(), ws.len());
    for (i, (w, p)) in ws.iter().zip(&ps).enumerate() {
        let alone = pack_for(isa, w).unwrap();
        assert_eq!(p.is_some(), packs(isa, w.ty, w.rows), "matrix {i}");
        assert_eq!(p.is_some(), alone.is_some(), "matrix {i}");
        assert_eq!(
            done[i].load(Ordering::Relaxed),
            usize::from(p.is_some()),
            "matrix {i}"
        );
        let (Some(p), Some(alone)) = (p, alone) else {
            continue;
        };
        assert_eq!(p.bytes(), alone.bytes(), "matrix {i}");
        let n_tokens = 3;
        let xs = values(n_tokens * w.cols, 900 + i as u64, 2.0);
        let (mut got, mut want) = (vec![0f32; n_tokens * w.rows], vec![0f32; n_tokens * w.rows]);
        for n in [1, n_tokens] {
            gemm_packed(p, &xs[..n * w.cols], n, &mut got[..n * w.rows]);
            gemm_packed(&alone, &xs[..n * w.cols], n, &mut want[..n * w.rows]);
            let same = got
                .iter()
                .zip(&want)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "matrix {i} ({}), {n} tokens", w.ty);
        }
    }
    // a matrix that is not valid is reported before anything is packed
    let bad = Weights {
        ty: Q4_0,
        rows: 8,
        cols: 32,
        data: &[0u8; 10],
    };
    let calls = AtomicUsize::new(0);
    let r = pack_many(isa, &[ws[0], bad], |_| {
        calls.fetch_add(1, Ordering::Relaxed);
    });
    assert!(r.is_err());
    assert_eq!(calls.into_inner(), 0);
}

#[test]
fn matrices_copied_as_they_are_give_the_bits_of_the_file_layout() {
    use slmpack_kernels::packed::pack_or_copy_many;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use GgmlType::*;
    // packed types, the K-quants without a layout (Q6_K, Q5_K), rows not in whole groups, and
    // an F16 matrix (left in the file: its kernel is bound by arithmetic)
    let shapes = [
        (Q5_0, 16, 64),
        (Q6_K, 16, 512),
        (Q4_0, 12, 64),
        (Q5_K, 5, 256),
        (F16, 8, 64),
        (Q8_0, 8, 96),
    ];
    let quants = quantized(&shapes, 700);
    let ws = weights(&shapes, &quants);
    let isa = [
        Isa::Avx512Vnni,
        Isa::Avx512,
        Isa::Avx2,
        Isa::Neon,
        Isa::Scalar,
    ]
    .into_iter()
    .find(|i| i.usable())
    .unwrap();
    let done: Vec<AtomicUsize> = ws.iter().map(|_| AtomicUsize::new(0)).collect();
    let ps = pack_or_copy_many(isa, &ws, |i| {
        done[i].fetch_add(1, Ordering::Relaxed);
    })
    .unwrap();
    assert_eq!(ps.len(), ws.len());
    for (i, (w, p)) in ws.iter().zip(&ps).enumerate() {
        // x86: every quantized matrix placed, interleaved where `packs` says so; elsewhere none
        let placed = isa.is_x86() && w.ty.is_quantized();
        assert_eq!(p.is_some(), placed, "matrix {i} ({})", w.ty);
        assert_eq!(
            done[i].load(Ordering::Relaxed),
            usize::from(placed),
            "matrix {i}"
        );
        let Some(p) = p else { continue };
        assert_eq!(
            p.interleaved,
            packs(isa, w.ty, w.rows),
            "matrix {i} ({})",
            w.ty
        );
        if p.interleaved {
            continue;
        }
        assert_eq!(p.bytes(), w.data.len(), "matrix {i}");
        let n_tokens = 3;
        let xs = values(n_tokens * w.cols, 950 + i as u64, 2.0);
        let (mut got, mut want) = (vec![0f32; n_tokens * w.rows], vec![0f32; n_tokens * w.rows]);
        for n in [1, n_tokens] {
            gemm_packed(p, &xs[..n * w.cols], n, &mut got[..n * w.rows]);
            gemm_isa(isa, w, &xs[..n * w.cols], n, &mut want[..n * w.rows]);
            let same = got
                .iter()
                .zip(&want)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "matrix {i} ({}), {n} tokens", w.ty);
        }
    }
}
