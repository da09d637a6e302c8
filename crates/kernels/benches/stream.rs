//! How fast one core reads memory front to back, from 4 KiB pages against 2 MiB pages
//! ([`slmpack_kernels::hugebuf::HugeBuf`], where the runtime keeps repacked weights and the KV
//! cache). The buffer (192 MiB) is six times the L3 of the reference host, so every line comes
//! from memory; the read is a XOR of 64-bit words into eight accumulators, which LLVM turns into
//! 32-byte loads (AVX2) where the CPU has them. Throughput is bytes read per second.
//!
//! ```sh
//! cargo bench -p slmpack-kernels --bench stream
//! ```
//!
//! On the reference host (AMD EPYC, Zen 4, `docs/performance.md`) this is the measurement behind
//! keeping streamed data on huge pages: the hardware prefetchers stop at each 4 KiB page.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use slmpack_kernels::hugebuf::HugeBuf;

const LEN: usize = 192 << 20;

fn xor_all(b: &[u8]) -> u64 {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is present (checked above)
        return unsafe { xor_all_avx2(b) };
    }
    xor_words(b)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn xor_all_avx2(b: &[u8]) -> u64 {
    xor_words(b)
}

#[inline(always)]
fn xor_words(b: &[u8]) -> u64 {
    let mut acc = [0u64; 8];
    for c in b.chunks_exact(64) {
        for (a, w) in acc.iter_mut().zip(c.chunks_exact(8)) {
            *a ^= u64::from_ne_bytes(w.try_into().unwrap());
        }
    }
    acc.iter().fold(0, |x, y| x ^ y)
}

/// A buffer of `LEN` bytes (every page touched) on small pages, or on huge pages.
fn buffer(huge: bool) -> Box<dyn std::ops::Deref<Target = [u8]>> {
    if huge {
        let mut b = HugeBuf::zeroed(LEN).expect("memory");
        b.iter_mut().enumerate().for_each(|(i, v)| *v = i as u8);
        Box::new(b)
    } else {
        let mut m = memmap2::MmapMut::map_anon(LEN).expect("memory");
        #[cfg(target_os = "linux")]
        let _ = m.advise(memmap2::Advice::NoHugePage);
        m.iter_mut().enumerate().for_each(|(i, v)| *v = i as u8);
        Box::new(m)
    }
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("stream-192MiB");
    g.throughput(Throughput::Bytes(LEN as u64));
    g.sample_size(20);
    for (name, huge) in [("4k-pages", false), ("huge-pages", true)] {
        let b = buffer(huge);
        g.bench_function(name, |bn| bn.iter(|| black_box(xor_all(black_box(&b)))));
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
