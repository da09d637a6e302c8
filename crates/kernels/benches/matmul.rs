//! Matrix-vector (decode) and matrix-matrix (prefill, 64 tokens) throughput per weight type and
//! instruction set on SmolLM2-135M shapes (`cols x rows`: 576x576 attention, 576x1536 up/gate,
//! 1536x576 down, 576x49152 output).
//!
//! gemv reports bytes of weights streamed per second (GB/s); gemm reports "elements" per
//! second, where one element is one floating-point operation (2 * rows * cols * tokens), so
//! `Gelem/s` reads as GFLOP/s.
//!
//! Q4_0, Q4_K, Q4_1, Q5_0, Q5_1 and Q8_0 are also measured in the 8-row packed layout (`avx2-packed`, `avx512-packed`,
//! `avx512vnni-packed`; `slmpack_kernels::packed`), which is what the runtime uses for them on
//! x86. The calling thread
//! is made part of rayon's pool (as in `slmpack run`, which runs inside its pool), so a product
//! does not pay for waking a worker; `RAYON_NUM_THREADS` sets the thread count.
//!
//! `SLMPACK_BENCH_TYPES=q4_0,q8_0` restricts the weight types (default: all),
//! `SLMPACK_BENCH_ISAS=avx2,avx512vnni` the instruction sets (default: every one this CPU runs),
//! `SLMPACK_BENCH_SHAPES=576x1536` the shapes (default: all four);
//! the 576x49152 gemm runs only with `SLMPACK_BENCH_FULL=1` (seconds per iteration on the scalar
//! path). `SLMPACK_TILE=MxN` sets the prefill tile shape (see `slmpack_kernels::tile_shape`).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
#[path = "../tests/common/mod.rs"]
mod common;

use slmpack_kernels::packed::{gemm_packed, pack_for};
use slmpack_kernels::{
    available_isas, gemm_isa, gemv_isa, isa_report, GgmlType, Isa, Weights, WEIGHT_TYPES,
};

const SHAPES: [(usize, usize); 4] = [(576, 576), (576, 1536), (1536, 576), (576, 49152)];
const PREFILL_TOKENS: usize = 64;

/// `n` pseudo-random values in `[-1, 1)`, the same for the same seed.
fn data(n: usize, seed: u64) -> Vec<f32> {
    common::values(n, seed, 1.0)
}

fn types() -> Vec<GgmlType> {
    match std::env::var("SLMPACK_BENCH_TYPES") {
        Ok(list) => list
            .split(',')
            .map(|t| {
                GgmlType::from_name(t.trim())
                    .unwrap_or_else(|| panic!("SLMPACK_BENCH_TYPES: unknown type `{t}`"))
            })
            .collect(),
        Err(_) => WEIGHT_TYPES.to_vec(),
    }
}

fn isas() -> Vec<Isa> {
    let all = available_isas();
    match std::env::var("SLMPACK_BENCH_ISAS") {
        Ok(list) => list
            .split(',')
            .map(|t| {
                let isa = Isa::from_name(t)
                    .unwrap_or_else(|| panic!("SLMPACK_BENCH_ISAS: unknown set `{t}`"));
                assert!(
                    all.contains(&isa),
                    "SLMPACK_BENCH_ISAS: `{isa}` cannot run here"
                );
                isa
            })
            .collect(),
        Err(_) => all,
    }
}

fn bench(c: &mut Criterion) {
    rayon::ThreadPoolBuilder::new()
        .use_current_thread()
        .build_global()
        .expect("the global thread pool is built once, here");
    eprintln!("{}", isa_report());
    let full = std::env::var_os("SLMPACK_BENCH_FULL").is_some();
    for ty in types() {
        for &(cols, rows) in &SHAPES {
            if !cols.is_multiple_of(ty.block_size()) {
                continue; // K-quants need rows of a multiple of 256
            }
            if let Ok(only) = std::env::var("SLMPACK_BENCH_SHAPES") {
                if !only
                    .split(',')
                    .any(|s| s.trim() == format!("{cols}x{rows}"))
                {
                    continue;
                }
            }
            let wf = data(rows * cols, 1);
            let mut wq = vec![0u8; rows * slmpack_kernels::row_bytes(ty, cols)];
            slmpack_quant::quantize(ty, &wf, cols, &mut wq).expect("quantize weights");
            drop(wf);
            let w = Weights::new(ty, rows, cols, &wq).expect("weights");
            let shape = format!("{cols}x{rows}");

            let mut g = c.benchmark_group(format!("gemv/{}", ty.name()));
            g.sample_size(10);
            g.throughput(Throughput::Bytes(wq.len() as u64));
            let x = data(cols, 2);
            let mut y = vec![0f32; rows];
            for isa in isas() {
                g.bench_function(BenchmarkId::new(isa.name(), &shape), |b| {
                    b.iter(|| gemv_isa(isa, &w, black_box(&x), &mut y))
                });
            }
            let packed: Vec<_> = isas()
                .into_iter()
                .filter_map(|isa| pack_for(isa, &w).expect("valid weights"))
                .collect();
            for p in &packed {
                let id = BenchmarkId::new(format!("{}-packed", p.isa), &shape);
                g.bench_function(id, |b| b.iter(|| gemm_packed(p, black_box(&x), 1, &mut y)));
            }
            g.finish();

            if rows > 4096 && !full {
                continue;
            }
            let mut g = c.benchmark_group(format!("gemm{PREFILL_TOKENS}/{}", ty.name()));
            g.sample_size(10);
            g.throughput(Throughput::Elements(
                (2 * rows * cols * PREFILL_TOKENS) as u64,
            ));
            let xs = data(cols * PREFILL_TOKENS, 3);
            let mut ys = vec![0f32; rows * PREFILL_TOKENS];
            for isa in isas() {
                g.bench_function(BenchmarkId::new(isa.name(), &shape), |b| {
                    b.iter(|| gemm_isa(isa, &w, black_box(&xs), PREFILL_TOKENS, &mut ys))
                });
            }
            for p in &packed {
                let id = BenchmarkId::new(format!("{}-packed", p.isa), &shape);
                g.bench_function(id, |b| {
                    b.iter(|| gemm_packed(p, black_box(&xs), PREFILL_TOKENS, &mut ys))
                });
            }
            g.finish();
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
