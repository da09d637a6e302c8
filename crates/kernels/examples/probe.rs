use slmpack_kernels::*;
use std::time::Instant;
fn main() {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    pool.install(inner);
}
fn inner() {
    let ty = GgmlType::Q8_0;
    for (cols, rows) in [(576usize, 1536usize), (1536, 576), (576, 576)] {
        let wf: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0)
            .collect();
        let mut wq = vec![0u8; rows * row_bytes(ty, cols)];
        slmpack_quant::quantize(ty, &wf, cols, &mut wq).unwrap();
        let w = Weights::new(ty, rows, cols, &wq).unwrap();
        let ntok = 64;
        let x: Vec<f32> = (0..cols * ntok).map(|i| (i as f32 * 0.37).sin()).collect();
        let mut y = vec![0f32; rows * ntok];
        let mut b1 = f64::MAX;
        for _ in 0..60 {
            let t = Instant::now();
            gemm_isa(Isa::Avx2, &w, &x, ntok, &mut y);
            b1 = b1.min(t.elapsed().as_secs_f64());
        }
        println!(
            "q8_0 {cols}x{rows}: {:.1} GMAC/s",
            (rows * cols * ntok) as f64 / 1e9 / b1
        );
    }
}
