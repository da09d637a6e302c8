use slmpack_kernels::{gemm_isa, gemv_isa, isa, GgmlType, Weights};
use std::time::Instant;
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let ty = GgmlType::from_name(&args[1]).unwrap();
    let (cols, rows, toks): (usize, usize, usize) = (
        args[2].parse().unwrap(),
        args[3].parse().unwrap(),
        args[4].parse().unwrap(),
    );
    let mut s = 1u64;
    let mut r = || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2.0
    };
    let wf: Vec<f32> = (0..rows * cols).map(|_| r()).collect();
    let mut wq = vec![0u8; rows * slmpack_kernels::row_bytes(ty, cols)];
    slmpack_quant::quantize(ty, &wf, cols, &mut wq).unwrap();
    let w = Weights::new(ty, rows, cols, &wq).unwrap();
    let xs: Vec<f32> = (0..toks * cols).map(|_| r()).collect();
    let mut ys = vec![0f32; toks * rows];
    let mut best = f64::MAX;
    let iters = std::env::var("ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    for _ in 0..iters {
        let t = Instant::now();
        if toks == 1 {
            gemv_isa(isa(), &w, &xs, &mut ys)
        } else {
            gemm_isa(isa(), &w, &xs, toks, &mut ys)
        }
        best = best.min(t.elapsed().as_secs_f64());
    }
    println!(
        "{} {}x{} x{}: {:.1} us  {:.1} GMAC/s  {:.2} GB/s",
        args[1],
        cols,
        rows,
        toks,
        best * 1e6,
        (rows * cols * toks) as f64 / best / 1e9,
        wq.len() as f64 / best / 1e9
    );
}
