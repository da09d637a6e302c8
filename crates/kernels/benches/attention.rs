//! Decode attention's f16 products on SmolLM2-135M shapes (9 query heads, 3 KV heads of 64
//! dimensions, 30 layers) at 800 cached positions, one thread: K·Q (each query head against
//! every key, `vec::dots_f16_ggml_group_isa` over the three heads of a KV head) and P·V (the
//! probabilities against every row of the transposed V cache), for every instruction set here.
//! The cache is laid out as the runtime's (`slmpack_infer::session`): K by KV head
//! (`[layer][head][position][dim]`, a head's keys one run of memory), V by dimension
//! (`[layer][head][dim][position]`), 1024 cells (the 800 positions rounded up to llama.cpp's
//! steps of 256, as `slmpack run` sizes it).
//!
//! `step` is decode's whole sequence per layer on a cold cache, K·Q then P·V, with K·Q fetching
//! the V columns of its keys into cache as it goes (`ahead`, as the runtime does since this
//! benchmark's commit) or not (`plain`).
//!
//! `kq1`/`pv1` run one layer's K·Q (or P·V) 30 times: its 0.4 MB of K (or V) stays in L2, so
//! they time the kernels' arithmetic and loads without the memory behind them.
//! `warm` runs the 30 layers back to back (their ~18 MB of K and V stay in cache); `cold` reads
//! 64 MiB before each iteration, as the weights stream between layers in a real decode, so the
//! cache lines come from memory. K and V are on huge pages ([`HugeBuf`]), as the runtime keeps
//! its cache (they were on heap pages before 2026-11-27).
//! Throughput is bytes of K (or V) read per second (`step` reads both, twice the bytes counted).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use slmpack_kernels::hugebuf::HugeBuf;
use slmpack_kernels::vec::{dots_f16_ggml_group_isa, dots_f16_ggml_group_ptr, Ahead};
use slmpack_kernels::{available_isas, Isa};

#[path = "../tests/common/mod.rs"]
mod common;
use common::{f16s, values};

const LAYERS: usize = 30;
const HEAD: usize = 64;
const KV_HEADS: usize = 3;
const GROUP: usize = 3;
const KV_DIM: usize = HEAD * KV_HEADS;
const N_CTX: usize = 1024;
const POSITIONS: usize = 800;
/// llama.cpp's row of cells at 800 positions (padded to 256)
const ROW_LEN: usize = 1024;

/// K·Q of one layer (`kl`, its keys): scores of the 9 heads against `POSITIONS` keys; with
/// `v` (the layer's V rows), each call also fetches the V columns of its keys, as the runtime.
fn kq_layer(isa: Isa, kl: &[u16], q: &[u16], scores: &mut [f32], v: Option<&[u16]>) {
    for h in 0..KV_HEADS {
        let fetch = match v {
            Some(vl) => Ahead::new(&vl[h * HEAD * N_CTX..], POSITIONS, N_CTX, HEAD),
            None => Ahead::NONE,
        };
        let s = &mut scores[h * GROUP * N_CTX..];
        assert!(s.len() >= (GROUP - 1) * N_CTX + POSITIONS);
        // SAFETY: the outputs are inside `s` (checked above), borrowed mutably
        unsafe {
            dots_f16_ggml_group_ptr(
                isa,
                &q[h * GROUP * HEAD..],
                HEAD,
                GROUP,
                HEAD,
                &kl[h * N_CTX * HEAD..],
                HEAD,
                HEAD,
                s.as_mut_ptr(),
                N_CTX,
                POSITIONS,
                fetch,
            )
        };
    }
}

/// P·V of one layer (`vl`, its V rows): the 9 heads' outputs from `POSITIONS` probabilities.
fn pv_layer(isa: Isa, vl: &[u16], p: &[u16], out: &mut [f32]) {
    for h in 0..KV_HEADS {
        dots_f16_ggml_group_isa(
            isa,
            &p[h * GROUP * N_CTX..],
            N_CTX,
            GROUP,
            POSITIONS,
            &vl[h * HEAD * N_CTX..],
            N_CTX,
            ROW_LEN,
            &mut out[h * GROUP * HEAD..],
            HEAD,
            HEAD,
        );
    }
}

/// Layer `l`'s slice of a cache.
fn layer(c: &[u16], l: usize) -> &[u16] {
    &c[l * N_CTX * KV_DIM..]
}

/// K·Q of every layer.
fn kq(isa: Isa, k: &[u16], q: &[u16], scores: &mut [f32]) {
    for l in 0..LAYERS {
        kq_layer(isa, layer(k, l), q, scores, None);
    }
}

/// P·V of every layer.
fn pv(isa: Isa, v: &[u16], p: &[u16], out: &mut [f32]) {
    for l in 0..LAYERS {
        pv_layer(isa, layer(v, l), p, out);
    }
}

/// Per layer, K·Q of the 9 heads then P·V, the runtime's decode attention without the
/// softmax; with `ahead`, each K·Q call fetches the V columns of its keys.
#[allow(clippy::too_many_arguments)]
fn step(
    isa: Isa,
    k: &[u16],
    v: &[u16],
    q: &[u16],
    p: &[u16],
    scores: &mut [f32],
    out: &mut [f32],
    ahead: bool,
) {
    for l in 0..LAYERS {
        let vl = layer(v, l);
        kq_layer(isa, layer(k, l), q, scores, ahead.then_some(vl));
        pv_layer(isa, vl, p, out);
    }
}

/// `v` copied onto huge pages, where the runtime keeps its KV cache.
fn on_huge_pages(v: &[u16]) -> HugeBuf {
    let mut b = HugeBuf::zeroed(2 * v.len()).expect("memory for the cache");
    b.copy_from_slice(bytemuck::cast_slice(v));
    b
}

fn bench(c: &mut Criterion) {
    let k = on_huge_pages(&f16s(&values(LAYERS * N_CTX * KV_DIM, 1, 0.5)));
    let v = on_huge_pages(&f16s(&values(LAYERS * N_CTX * KV_DIM, 2, 0.5)));
    let (k, v): (&[u16], &[u16]) = (bytemuck::cast_slice(&k), bytemuck::cast_slice(&v));
    let q = f16s(&values(GROUP * KV_HEADS * HEAD, 3, 0.5));
    let p = f16s(&values(GROUP * KV_HEADS * N_CTX, 4, 0.5));
    let mut scores = vec![0f32; GROUP * KV_HEADS * N_CTX];
    let mut out = vec![0f32; GROUP * KV_HEADS * HEAD];
    let mut flush = vec![1u64; (64 << 20) / 8];
    let mut evict = || {
        // a read-modify-write pass, so the compiler cannot drop it
        for x in flush.iter_mut() {
            *x = x.wrapping_add(1);
        }
        black_box(&flush);
    };
    let bytes = (LAYERS * POSITIONS * KV_DIM * 2) as u64;
    let mut g = c.benchmark_group("attention-800");
    g.sample_size(20);
    g.throughput(Throughput::Bytes(bytes));
    for isa in available_isas() {
        let name = isa.name();
        g.bench_function(format!("kq/{name}/warm"), |b| {
            b.iter(|| kq(isa, black_box(k), &q, &mut scores))
        });
        g.bench_function(format!("kq1/{name}/warm"), |b| {
            b.iter(|| {
                for _ in 0..LAYERS {
                    kq_layer(isa, layer(black_box(k), 0), &q, &mut scores, None)
                }
            })
        });
        g.bench_function(format!("pv1/{name}/warm"), |b| {
            b.iter(|| {
                for _ in 0..LAYERS {
                    pv_layer(isa, layer(black_box(v), 0), &p, &mut out)
                }
            })
        });
        g.bench_function(format!("kq/{name}/cold"), |b| {
            b.iter_batched(
                &mut evict,
                |_| kq(isa, black_box(k), &q, &mut scores),
                BatchSize::PerIteration,
            )
        });
        g.bench_function(format!("pv/{name}/warm"), |b| {
            b.iter(|| pv(isa, black_box(v), &p, &mut out))
        });
        g.bench_function(format!("pv/{name}/cold"), |b| {
            b.iter_batched(
                &mut evict,
                |_| pv(isa, black_box(v), &p, &mut out),
                BatchSize::PerIteration,
            )
        });
        for (label, ahead) in [("plain", false), ("ahead", true)] {
            g.bench_function(format!("step/{name}/cold/{label}"), |b| {
                b.iter_batched(
                    &mut evict,
                    |_| step(isa, black_box(k), v, &q, &p, &mut scores, &mut out, ahead),
                    BatchSize::PerIteration,
                )
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
