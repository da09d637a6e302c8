//! Quantize / dequantize throughput per type on a 576x1536 tensor (SmolLM2-135M's MLP shape),
//! whole-tensor helpers (rayon over rows). Throughput is in bytes of f32 data (input for
//! quantize, output for dequantize), so MB/s compare across types.
//!
//! `cargo bench -p slmpack-quant --bench quantize`; `RAYON_NUM_THREADS=1` for one core.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use slmpack_quant::{dequantize, quantize, GgmlType};
use std::hint::black_box;
use std::time::Duration;

const ROWS: usize = 576;
const COLS: usize = 1536;

const TYPES: &[GgmlType] = &[
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_1,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::Q8_K,
    GgmlType::IQ4_NL,
];

fn weights() -> Vec<f32> {
    // deterministic, weight-like values (xorshift + sum of uniforms ~ normal)
    let mut s: u32 = 0x1234_5678;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        s as f32 / u32::MAX as f32
    };
    (0..ROWS * COLS)
        .map(|_| (next() + next() + next() - 1.5) * 0.05)
        .collect()
}

fn bench(c: &mut Criterion) {
    let x = weights();
    let bytes = (x.len() * 4) as u64;

    let mut g = c.benchmark_group("quantize");
    g.throughput(Throughput::Bytes(bytes));
    for &ty in TYPES {
        let mut out = vec![0u8; ty.row_bytes(x.len() as u64).unwrap() as usize];
        g.bench_with_input(BenchmarkId::from_parameter(ty), &ty, |b, &ty| {
            b.iter(|| quantize(ty, black_box(&x), COLS, &mut out).unwrap())
        });
    }
    g.finish();

    let mut g = c.benchmark_group("dequantize");
    g.throughput(Throughput::Bytes(bytes));
    for &ty in TYPES {
        let mut q = vec![0u8; ty.row_bytes(x.len() as u64).unwrap() as usize];
        quantize(ty, &x, COLS, &mut q).unwrap();
        let mut y = vec![0f32; x.len()];
        g.bench_with_input(BenchmarkId::from_parameter(ty), &ty, |b, &ty| {
            b.iter(|| dequantize(ty, black_box(&q), &mut y).unwrap())
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
