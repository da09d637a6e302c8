//! Our SIMD kernels against ggml-cpu itself. On x86_64, llama.cpp's CPU library as
//! llama-cpp-python builds it into `.venv` (`tests/setup-python.sh`); on aarch64 (under QEMU),
//! the same llama.cpp version's ggml-cpu cross-built by `tests/aarch64.sh`, with `+dotprod`
//! against our dotprod kernels and for plain armv8-a against our NEON ones
//! (`SLMPACK_GGML_CPU_LIB`). Its own activation quantizers and one-row dot products
//! (`ggml_get_type_traits_cpu`) run on the same random rows as ours. Where that build uses AVX2
//! (and not AVX-512, whose sums are grouped otherwise) or NEON, every weight type must give
//! ggml's bits: the same activation bytes and the same f32 dot product, including rows that end
//! in a partial SIMD step (F32/F16/BF16) or an odd number of blocks (NEON sums them in pairs).
//! This is what makes slmpack's logits bit-identical to llama.cpp's (tests/oracle/test_infer.py).

use std::path::PathBuf;

use slmpack_kernels::{
    act_type, quantize_act_isa, row_bytes, vec_dot, GgmlType, Isa, WEIGHT_TYPES,
};

mod common;
use common::values;

/// `struct ggml_type_traits_cpu` (ggml-cpu.h).
#[repr(C)]
struct TraitsCpu {
    from_float: Option<unsafe extern "C" fn(*const f32, *mut u8, i64)>,
    vec_dot:
        Option<unsafe extern "C" fn(i32, *mut f32, usize, *const u8, usize, *const u8, usize, i32)>,
    vec_dot_type: i32,
    nrows: i64,
}

fn library() -> PathBuf {
    if let Some(p) = std::env::var_os("SLMPACK_GGML_CPU_LIB") {
        return PathBuf::from(p);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let lib = std::fs::read_dir(root.join(".venv/lib"))
        .ok()
        .into_iter()
        .flatten()
        .flatten()
        .map(|d| d.path().join("site-packages/llama_cpp/lib/libggml-cpu.so"))
        .find(|p| p.exists());
    lib.unwrap_or_else(|| {
        panic!(
            "llama.cpp's libggml-cpu.so is not in {}/.venv\n  hint: run `bash tests/setup-python.sh` \
             (installs llama-cpp-python), or set SLMPACK_GGML_CPU_LIB",
            root.display()
        )
    })
}

/// Little-endian u16 values of `b`.
fn bytemuck_u16(b: &[u8]) -> Vec<u16> {
    b.chunks_exact(2)
        .map(|p| u16::from_le_bytes([p[0], p[1]]))
        .collect()
}

/// Our instruction set that ggml-cpu's build is compared with: AVX2 on x86_64; on aarch64 the
/// best of NEON and dotprod (`SLMPACK_ISA` picks one), against a ggml-cpu built for aarch64 (with
/// or without `+dotprod`) given by `SLMPACK_GGML_CPU_LIB` (tests/aarch64.sh builds both).
fn ours() -> Option<Isa> {
    if cfg!(target_arch = "x86_64") {
        return Isa::Avx2.usable().then_some(Isa::Avx2);
    }
    let isa = slmpack_kernels::isa();
    (isa != Isa::Scalar).then_some(isa)
}

/// llama.cpp's ggml-cpu, loaded, and the set to compare it with; `None` (with a note) where the
/// comparison does not apply: no SIMD set of ours, or on aarch64 no ggml-cpu build given.
fn load() -> Option<(libloading::Library, Isa)> {
    let Some(isa) = ours() else {
        eprintln!("NOT EXERCISED: no AVX2/NEON here; nothing to compare with ggml-cpu's SIMD code");
        return None;
    };
    if cfg!(not(target_arch = "x86_64")) && std::env::var_os("SLMPACK_GGML_CPU_LIB").is_none() {
        eprintln!(
            "NOT EXERCISED: no aarch64 ggml-cpu given (SLMPACK_GGML_CPU_LIB; tests/aarch64.sh builds it)"
        );
        return None;
    }
    let path = library();
    // SAFETY: the library is llama.cpp's ggml-cpu; its symbols are used with their C signatures.
    let lib = unsafe { libloading::Library::new(&path) }
        .unwrap_or_else(|e| panic!("cannot load `{}`: {e}", path.display()));
    eprintln!("comparing our `{isa}` kernels with {}", path.display());
    Some((lib, isa))
}

#[test]
fn simd_kernels_give_ggml_cpus_bits() {
    let Some((lib, isa)) = load() else { return };
    let (traits, avx512) = unsafe {
        let init: libloading::Symbol<unsafe extern "C" fn()> = lib.get(b"ggml_cpu_init").unwrap();
        init();
        let has512: libloading::Symbol<unsafe extern "C" fn() -> i32> =
            lib.get(b"ggml_cpu_has_avx512").unwrap();
        let traits: libloading::Symbol<unsafe extern "C" fn(i32) -> *const TraitsCpu> =
            lib.get(b"ggml_get_type_traits_cpu").unwrap();
        (*traits, has512() != 0)
    };
    let mut checked = 0;
    let mut differ = std::collections::BTreeMap::new();
    for ty in WEIGHT_TYPES {
        let at = act_type(ty).unwrap();
        // SAFETY: ggml returns a pointer to a static table entry for every type id
        let (tw, ta) = unsafe { (&*traits(ty as i32), &*traits(at as i32)) };
        assert_eq!(
            tw.vec_dot_type, at as i32,
            "{ty}: ggml pairs it with another activation type"
        );
        let (from_float, dot) = (ta.from_float.unwrap(), tw.vec_dot.unwrap());
        // F32/BF16/F16 rows also of lengths that leave elements past ggml's steps of 32
        // and for the 32-element block types rows of an odd number of blocks (ggml's NEON code
        // sums blocks in pairs, the last odd one apart)
        let odd: &[(usize, u64)] = match ty.block_size() {
            1 => &[
                (33, 5),
                (100, 6),
                (1000, 7),
                (35, 8),
                (38, 9),
                (39, 10),
                (42, 11),
                (45, 12),
                (47, 13),
                (51, 14),
                (54, 15),
                (58, 16),
                (61, 17),
                (63, 18),
                (3, 19),
                (7, 20),
                (13, 21),
            ],
            32 => &[(96, 22), (288, 23)],
            _ => &[],
        };
        for &(n, seed) in [(256usize, 1u64), (512, 2), (1536, 3), (4096, 4)]
            .iter()
            .chain(odd)
        {
            for case in 0..8u64 {
                let s = seed * 100 + case;
                let w = values(n, s, if case % 2 == 0 { 1.0 } else { 0.02 });
                let mut x = values(n, s + 7, 3.0);
                if case == 7 {
                    // saturated activations
                    x.iter_mut()
                        .enumerate()
                        .for_each(|(i, v)| *v = if i % 3 == 0 { -5.0 } else { 5.0 });
                }
                let mut wq = vec![0u8; row_bytes(ty, n)];
                slmpack_quant::quantize(ty, &w, n, &mut wq).unwrap();
                let mut ours_a = vec![0u8; row_bytes(at, n)];
                let mut ggml_a = vec![0u8; row_bytes(at, n)];
                quantize_act_isa(isa, at, &x, &mut ours_a);
                // SAFETY: buffers of the sizes ggml expects for `n` elements
                unsafe { from_float(x.as_ptr(), ggml_a.as_mut_ptr(), n as i64) };
                if at == GgmlType::Q8_K {
                    // ggml leaves `bsums` of an all-zero block unwritten; none here
                    assert!(x.chunks(256).all(|b| b.iter().any(|&v| v != 0.0)));
                }
                assert!(
                    ours_a == ggml_a,
                    "{ty} n={n} case {case}: activation bytes differ from ggml's"
                );
                let ours = if ty == GgmlType::F16 && isa.is_x86() {
                    // F16 weight products run `ggml_vec_dot_f16`'s order (slmpack_kernels::gemm;
                    // on aarch64 the one-row kernel has it)
                    let (h, xa) = (bytemuck_u16(&wq), bytemuck_u16(&ours_a));
                    let mut o = [0f32];
                    slmpack_kernels::vec::dots_f16_ggml_isa(isa, &xa, &h, n, n, &mut o);
                    o[0]
                } else {
                    vec_dot(isa, ty, n, &wq, &ours_a)
                };
                let mut theirs = f32::NAN;
                // SAFETY: one row of `n` elements each, one output
                unsafe {
                    dot(
                        n as i32,
                        &mut theirs,
                        0,
                        wq.as_ptr(),
                        0,
                        ggml_a.as_ptr(),
                        0,
                        1,
                    )
                };
                let tol = 1e-5 * (1.0 + theirs.abs());
                assert!(
                    (ours - theirs).abs() <= tol,
                    "{ty} n={n} case {case}: {ours} vs ggml {theirs}"
                );
                if ours.to_bits() != theirs.to_bits() {
                    eprintln!("{ty} n={n} case {case}: ours {ours:e}, ggml {theirs:e}");
                    *differ.entry(ty.to_string()).or_insert(0) += 1;
                }
                checked += 1;
            }
        }
    }
    eprintln!("dot products not bit-identical to ggml-cpu's, of 32 per type: {differ:?}");
    assert_eq!(checked, (WEIGHT_TYPES.len() * 4 + 3 * 17 + 5 * 2) * 8);
    if avx512 {
        eprintln!("note: this llama.cpp build uses AVX-512; compared within 1e-5, not bit for bit");
    } else {
        assert!(
            differ.is_empty(),
            "weight types not bit-identical to ggml-cpu: {differ:?}"
        );
    }
}

/// The four-token Q8_K quantizer of llama.cpp's repacked Q4_K (`ggml_quantize_mat_q8_K_4x8`)
/// against ours ([`slmpack_kernels::packed::quantize_q8_k_4x8`]): the same scales and values,
/// including blocks where `+max|x|` and `-max|x|` both occur (where the sign rule differs from
/// `quantize_row_q8_K`'s).
#[test]
fn four_token_q8_k_quantizer_gives_ggml_cpus_bytes() {
    let Some((lib, _)) = load() else { return };
    if cfg!(not(target_arch = "x86_64")) {
        eprintln!("NOT EXERCISED: the four-token Q8_K quantizer is llama.cpp's x86 repack");
        return;
    }
    let quant4: libloading::Symbol<unsafe extern "C" fn(*const f32, *mut u8, i64)> =
        unsafe { lib.get(b"ggml_quantize_mat_q8_K_4x8").unwrap() };
    for (k, seed) in [(256usize, 1u64), (1536, 2)] {
        let mut x = values(4 * k, seed, 2.0);
        // row 1, first block: the largest magnitude as -m before +m
        x[k + 3] = -7.0;
        x[k + 100] = 7.0;
        // row 2: a block of zeros
        x[2 * k..2 * k + 256].iter_mut().for_each(|v| *v = 0.0);
        let nb = k / 256;
        // block_q8_Kx4: d[4] f32, qs[1024] (8-byte chunks of the 4 rows in turn), bsums[64]
        let mut theirs = vec![0u8; nb * (16 + 1024 + 128)];
        // SAFETY: four rows of k floats in, nb blocks of 1168 bytes out
        unsafe { quant4(x.as_ptr(), theirs.as_mut_ptr(), k as i64) };
        for r in 0..4 {
            let mut ours = vec![0u8; nb * 292];
            slmpack_kernels::packed::quantize_q8_k_4x8(&x[r * k..(r + 1) * k], &mut ours);
            for b in 0..nb {
                let t = &theirs[b * 1168..(b + 1) * 1168];
                let o = &ours[b * 292..(b + 1) * 292];
                assert_eq!(
                    &t[4 * r..4 * r + 4],
                    &o[..4],
                    "k={k} row {r} block {b}: scale"
                );
                for e in 0..256 {
                    let te = t[16 + 32 * (e / 8) + 8 * r + e % 8];
                    assert_eq!(te, o[4 + e], "k={k} row {r} block {b} element {e}");
                }
            }
        }
    }
}
