//! `slmpack_kernels::vec`: the SIMD versions give the same bits as the portable ones, and the
//! portable ones compute what they claim.

use slmpack_kernels::{available_isas, vec, Isa};

mod common;
use common::{f16s, values};

#[test]
fn expf_is_within_two_ulp_of_libm_and_handles_the_ends() {
    for x in values(20000, 1, 87.0) {
        let (a, b) = (vec::expf(x), x.exp());
        let ulp = (a.to_bits() as i64 - b.to_bits() as i64).abs();
        assert!(ulp <= 2, "expf({x}) = {a}, libm {b}");
    }
    assert_eq!(vec::expf(0.0), 1.0);
    assert_eq!(vec::expf(f32::NEG_INFINITY), 0.0);
    assert_eq!(vec::expf(-200.0), 0.0);
    assert_eq!(vec::expf(100.0), f32::INFINITY);
    assert!(vec::expf(f32::NAN).is_nan());
    // the scaled path (|n| > 126) stays close to libm
    for x in [-100.0f32, -90.0, 88.5, -87.9] {
        let (a, b) = (vec::expf(x), x.exp());
        assert!(
            (a - b).abs() <= b * 1e-6 || (a == 0.0 && b < 1e-38),
            "{x}: {a} vs {b}"
        );
    }
    assert!((vec::silu(2.0) - 2.0 / (1.0 + (-2f32).exp())).abs() < 1e-6);
}

#[test]
fn simd_versions_give_identical_bits() {
    for isa in available_isas() {
        for n in [1usize, 5, 8, 13, 64, 100, 1537] {
            let a = values(n, n as u64, 3.0);
            let b = values(n, 7 + n as u64, 3.0);
            let (mut ha, mut hb) = (vec![0u16; n], vec![0u16; n]);
            vec::to_f16_isa(isa, &a, &mut ha);
            vec::to_f16_isa(isa, &b, &mut hb);
            let (mut ra, mut rb) = (vec![0u16; n], vec![0u16; n]);
            vec::to_f16_isa(Isa::Scalar, &a, &mut ra);
            vec::to_f16_isa(Isa::Scalar, &b, &mut rb);
            assert_eq!(ha, ra, "{isa} to_f16 n={n}");
            let d = vec::dot_f16_isa(isa, &ha, &hb);
            assert_eq!(
                d.to_bits(),
                vec::dot_f16_isa(Isa::Scalar, &ha, &hb).to_bits(),
                "{isa} n={n}"
            );
            let exact: f64 = ha
                .iter()
                .zip(&hb)
                .map(|(&x, &y)| half::f16::from_bits(x).to_f64() * half::f16::from_bits(y).to_f64())
                .sum();
            assert!(
                (d as f64 - exact).abs() <= 1e-5 * (1.0 + exact.abs()),
                "{d} vs {exact}"
            );

            let mut s1 = values(n, 3 * n as u64, 20.0);
            let mut s2 = s1.clone();
            let sum1 = vec::softmax_isa(isa, &mut s1, 0.125);
            let sum2 = vec::softmax_isa(Isa::Scalar, &mut s2, 0.125);
            assert_eq!(sum1.to_bits(), sum2.to_bits());
            assert_eq!(s1, s2, "{isa} softmax n={n}");
            assert!((s1.iter().map(|&v| v as f64).sum::<f64>() - 1.0).abs() < 1e-5);

            // the softmax normaliser without writing the input: the same sum as `softmax`
            let x = values(n, 5 * n as u64, 20.0);
            let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let e = vec::exp_sum_of_isa(isa, &x, max);
            assert_eq!(
                e.to_bits(),
                vec::exp_sum_of_isa(Isa::Scalar, &x, max).to_bits()
            );
            let mut y = x.clone();
            assert_eq!(
                e.to_bits(),
                vec::softmax_isa(isa, &mut y, 1.0).to_bits(),
                "{isa} n={n}"
            );
            let exact: f64 = x.iter().map(|&v| ((v - max) as f64).exp()).sum();
            assert!(
                (e - exact).abs() <= 1e-6 * exact,
                "{isa} n={n}: {e} vs {exact}"
            );

            let up = values(n, 11 * n as u64, 2.0);
            let mut g1 = values(n, 13 * n as u64, 12.0);
            let mut g2 = g1.clone();
            let want: Vec<f32> = g1
                .iter()
                .zip(&up)
                .map(|(&g, &u)| vec::silu(g) * u)
                .collect();
            vec::swiglu_isa(isa, &mut g1, &up);
            vec::swiglu_isa(Isa::Scalar, &mut g2, &up);
            assert_eq!(g1, g2, "{isa} swiglu n={n}");
            assert_eq!(g2, want);
        }
    }
}

#[test]
fn softmax_masks_and_scales() {
    let mut x = [1.0f32, 2.0, f32::NEG_INFINITY, 3.0];
    vec::softmax_isa(Isa::Scalar, &mut x, 2.0);
    assert_eq!(x[2], 0.0);
    let e = [(-4f64).exp(), (-2f64).exp(), 1.0];
    let s: f64 = e.iter().sum();
    assert!((x[0] as f64 - e[0] / s).abs() < 1e-6 && (x[3] as f64 - 1.0 / s).abs() < 1e-6);
}

#[test]
fn ggml_order_dot_and_masked_softmax_rows() {
    for isa in available_isas() {
        for (len, n) in [
            (1usize, 1usize),
            (5, 13),
            (13, 13),
            (31, 40),
            (64, 64),
            (70, 95),
            (100, 129),
        ] {
            let a = values(len, len as u64, 2.0);
            let b = values(len, 5 + len as u64, 2.0);
            let (ha, hb) = (f16s(&a), f16s(&b));
            let d = vec::dot_f16_ggml_isa(isa, &ha, &hb, n);
            let r = vec::dot_f16_ggml_isa(Isa::Scalar, &ha, &hb, n);
            assert_eq!(d.to_bits(), r.to_bits(), "{isa} len={len} n={n}");
            let exact: f64 = ha
                .iter()
                .zip(&hb)
                .map(|(&x, &y)| half::f16::from_bits(x).to_f64() * half::f16::from_bits(y).to_f64())
                .sum();
            assert!(
                (d as f64 - exact).abs() <= 1e-5 * (1.0 + exact.abs()),
                "{d} vs {exact}"
            );
        }
    }
    // a row of 13 with 10 visible values: 8 through ggml's exp, 2 through libm's
    let x = values(10, 99, 5.0);
    let mut got = x.clone();
    vec::softmax_row(&mut got, 0.5, 13);
    let m = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v * 0.5));
    let e: Vec<f32> = x
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            if i < 8 {
                vec::expf(v * 0.5 - m)
            } else {
                (v * 0.5 - m).exp()
            }
        })
        .collect();
    let s = e[..8].iter().map(|&v| v as f64).sum::<f64>()
        + e[8..].iter().map(|&v| v as f64).sum::<f64>();
    for (g, w) in got.iter().zip(&e) {
        assert!((*g as f64 - *w as f64 / s).abs() < 1e-6);
    }
    // a row whose length is a multiple of 8 is the plain softmax
    let mut a = x.clone();
    let mut b = x.clone();
    vec::softmax_row(&mut a, 0.5, 16);
    vec::softmax(&mut b, 0.5);
    assert_eq!(a, b);
}

#[test]
fn softmax_rows_to_f16_match_softmax_then_rounding_on_every_isa() {
    // (visible values, row length): decode rows (a cache padded to 256), rows ending in a
    // partial group of 8 (libm's tail), short rows
    for (len, row_len) in [
        (1usize, 1usize),
        (10, 13),
        (13, 13),
        (16, 768),
        (37, 40),
        (40, 45),
        (516, 768),
        (580, 768),
        (1537, 1540),
    ] {
        // ±3.75 after scaling, and ±190 (exponentials past ggml's scaled and zero cut-offs)
        for amp in [30.0, 1520.0] {
            let x = values(len, 17 + len as u64, amp);
            let mut want = x.clone();
            let want_sum = vec::softmax_row_isa(Isa::Scalar, &mut want, 0.125, row_len);
            let mut want_h = vec![0u16; len];
            vec::to_f16_isa(Isa::Scalar, &want, &mut want_h);
            for isa in available_isas() {
                let mut a = x.clone();
                let sum = vec::softmax_row_isa(isa, &mut a, 0.125, row_len);
                assert_eq!(sum.to_bits(), want_sum.to_bits(), "{isa} {len}/{row_len}");
                assert_eq!(a, want, "{isa} {len}/{row_len}: probabilities");
                let mut b = x.clone();
                let mut h = vec![0u16; len + 3];
                let sum = vec::softmax_row_f16_isa(isa, &mut b, 0.125, row_len, &mut h);
                assert_eq!(sum.to_bits(), want_sum.to_bits(), "{isa} {len}/{row_len}");
                assert_eq!(
                    &h[..len],
                    &want_h[..],
                    "{isa} {len}/{row_len}: f16 probabilities"
                );
                assert_eq!(&h[len..], &[0; 3], "{isa}: wrote past the row");
            }
        }
    }
}

#[test]
fn batched_dots_match_one_call_per_row() {
    for isa in available_isas() {
        for (len, n, rows, stride) in [
            (64usize, 64usize, 7usize, 192usize),
            (64, 64, 1, 64),
            (5, 13, 4, 9),
            (31, 40, 3, 31),
            (33, 33, 5, 40),
            (70, 95, 6, 128),
            (300, 300, 9, 512),
            (96, 129, 2, 96),
        ] {
            let a = values(len, len as u64, 2.0);
            let b = values((rows - 1) * stride + len, 11 + rows as u64, 2.0);
            let (ha, hb) = (f16s(&a), f16s(&b));
            let mut got = vec![0f32; rows];
            let mut tiny = vec![0f32; rows];
            vec::dots_f16_ggml_isa(isa, &ha, &hb, stride, n, &mut got);
            vec::gemm_f16_isa(isa, &ha, len, 1, &hb, stride, rows, len, &mut tiny, rows);
            for r in 0..rows {
                let row = &hb[r * stride..r * stride + len];
                let want = vec::dot_f16_ggml_isa(Isa::Scalar, &ha, row, n);
                assert_eq!(
                    got[r].to_bits(),
                    want.to_bits(),
                    "{isa} ggml len={len} n={n} row {r}"
                );
                let want = vec::dot_f16_isa(Isa::Scalar, &ha, row);
                assert_eq!(
                    tiny[r].to_bits(),
                    want.to_bits(),
                    "{isa} tinyBLAS len={len} row {r}"
                );
            }
        }
    }
}

#[test]
fn grouped_dots_match_one_call_per_vector() {
    // (vectors, len, n, rows, stride): attention's query heads per KV head (1 to 8) against
    // keys (len = n = head size) and against V rows (len = cells used, n = cells in the row,
    // with and without elements past the last group of 32; whole groups go eight rows at a time)
    for isa in available_isas() {
        for (m, len, n, rows, stride) in [
            (3usize, 64usize, 64usize, 37usize, 192usize),
            (2, 64, 64, 11, 200),
            (3, 64, 64, 5, 64),
            (2, 128, 128, 17, 384),
            (3, 128, 128, 9, 128),
            (3, 32, 32, 19, 40),
            (3, 64, 100, 13, 70),
            (3, 700, 768, 64, 1024),
            (3, 160, 256, 21, 300),
            (2, 516, 768, 19, 768),
            (2, 641, 641, 5, 700),
            (4, 96, 129, 9, 130),
            (5, 33, 40, 3, 33),
            (8, 17, 20, 4, 17),
            (1, 300, 300, 3, 300),
            (3, 5, 13, 2, 9),
        ] {
            let lda = len + 7;
            let ldo = rows + 3;
            let a = values((m - 1) * lda + len, (m * len) as u64, 2.0);
            let b = values((rows - 1) * stride + len, (rows + n) as u64, 2.0);
            let (ha, hb) = (f16s(&a), f16s(&b));
            let mut got = vec![f32::NAN; (m - 1) * ldo + rows];
            vec::dots_f16_ggml_group_isa(
                isa, &ha, lda, m, len, &hb, stride, n, &mut got, ldo, rows,
            );
            for i in 0..m {
                for r in 0..rows {
                    let want = vec::dot_f16_ggml_isa(
                        Isa::Scalar,
                        &ha[i * lda..i * lda + len],
                        &hb[r * stride..r * stride + len],
                        n,
                    );
                    assert_eq!(
                        got[i * ldo + r].to_bits(),
                        want.to_bits(),
                        "{isa} m={m} len={len} n={n}: vector {i} row {r}"
                    );
                }
            }
        }
    }
}

#[test]
#[should_panic(expected = "need more than")]
fn batched_dots_refuse_rows_past_the_end() {
    let a = vec![0u16; 8];
    let b = vec![0u16; 20];
    let mut out = vec![0f32; 3];
    vec::dots_f16_ggml_isa(Isa::Scalar, &a, &b, 8, 8, &mut out);
}

#[test]
fn tiled_f16_products_match_one_dot_per_element() {
    for isa in available_isas() {
        for (m, n, k) in [
            (1usize, 1usize, 64usize),
            (3, 4, 64),
            (7, 9, 64),
            (16, 37, 5),
            (5, 130, 512),
            (4, 64, 203),
        ] {
            let (lda, ldb, ldc) = (k + 3, k + 5, n + 2);
            let a = values(m * lda, (m * n) as u64, 2.0);
            let b = values(n * ldb, (n + k) as u64, 2.0);
            let (ha, hb) = (f16s(&a), f16s(&b));
            let mut c = vec![f32::NAN; m * ldc];
            vec::gemm_f16_isa(isa, &ha, lda, m, &hb, ldb, n, k, &mut c, ldc);
            for i in 0..m {
                for j in 0..n {
                    let want = vec::dot_f16_isa(
                        Isa::Scalar,
                        &ha[i * lda..i * lda + k],
                        &hb[j * ldb..j * ldb + k],
                    );
                    assert_eq!(
                        c[i * ldc + j].to_bits(),
                        want.to_bits(),
                        "{isa} {m}x{n}x{k} at ({i}, {j})"
                    );
                }
                // the padding between rows of `c` is left alone
                assert!(c[i * ldc + n].is_nan());
            }
        }
    }
}
