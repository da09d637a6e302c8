#!/usr/bin/env python3
"""Outside oracle for crates/quant: gguf-py's quantizers and llama.cpp's own ggml.

Driven by crates/quant/tests/oracle.rs. Modes:

  quantize TYPE in.f32 out.bin            gguf.quants.quantize (gguf-py)
  dequantize TYPE in.bin ROWLEN out.f32   gguf.quants.dequantize (gguf-py)
  ggml-quantize TYPE in.f32 ROWLEN out.bin   ggml_quantize_chunk(.., imatrix=NULL) from the
                                             libggml-base that llama-cpp-python ships, i.e.
                                             exactly what llama-quantize runs without --imatrix
  ggml-dequantize TYPE in.bin out.f32        ggml's dequantize_row_<type> (same library)
  ggml-ref TYPE in.f32 out.bin               ggml's quantize_row_<type>_ref (for Q8_1 and Q8_K,
                                             which ggml_quantize_chunk does not take)
  types                                   print the types gguf-py can quantize / dequantize

TYPE is a ggml type name (Q4_0, q4_K, BF16, ...). Files are raw little-endian arrays.
"""
import ctypes
import pathlib
import sys

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import quants


def qtype(name: str) -> T:
    for t in T:
        if t.name.lower() == name.lower():
            return t
    sys.exit(f"quant_oracle: unknown type {name!r}")


def ggml_name(t: T) -> str:
    """ggml's spelling in function names: q4_0, q4_K, iq4_nl."""
    n = t.name.lower()
    return n[:-2] + "_K" if n.endswith("_k") else n


def libggml():
    import llama_cpp

    libdir = pathlib.Path(llama_cpp.__file__).parent / "lib"
    cands = sorted(libdir.glob("libggml-base.*"))
    if not cands:
        sys.exit(f"quant_oracle: no libggml-base in {libdir}")
    lib = ctypes.CDLL(str(cands[0]))
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [
        ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
        ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p,
    ]
    lib.ggml_row_size.restype = ctypes.c_size_t
    lib.ggml_row_size.argtypes = [ctypes.c_int, ctypes.c_int64]
    return lib


def main(argv):
    if not argv:
        sys.exit(__doc__)
    mode = argv[0]
    if mode == "types":
        q = []
        for t in T:
            try:
                quants.quantize(np.zeros((256,), dtype=np.float32), t)
                q.append(t.name)
            except Exception:
                pass
        print("quantize:", " ".join(q))
        return
    if mode == "quantize":
        t, src, dst = qtype(argv[1]), argv[2], argv[3]
        x = np.fromfile(src, dtype=np.float32)
        out = quants.quantize(x, t)
        np.ascontiguousarray(out).view(np.uint8).tofile(dst)
    elif mode == "dequantize":
        t, src, rowlen, dst = qtype(argv[1]), argv[2], int(argv[3]), argv[4]
        raw = np.fromfile(src, dtype=np.uint8)
        bs, ts = quants.GGML_QUANT_SIZES[t]
        row_bytes = rowlen // bs * ts
        out = quants.dequantize(raw.reshape(-1, row_bytes), t)
        np.ascontiguousarray(out, dtype=np.float32).tofile(dst)
    elif mode == "ggml-quantize":
        t, src, rowlen, dst = qtype(argv[1]), argv[2], int(argv[3]), argv[4]
        lib = libggml()
        x = np.ascontiguousarray(np.fromfile(src, dtype=np.float32))
        nrows = x.size // rowlen
        row_size = lib.ggml_row_size(int(t), rowlen)
        out = np.zeros(nrows * row_size, dtype=np.uint8)
        n = lib.ggml_quantize_chunk(int(t), x.ctypes.data, out.ctypes.data, 0, nrows, rowlen, None)
        assert n == out.size, (n, out.size)
        out.tofile(dst)
    elif mode == "ggml-ref":
        t, src, dst = qtype(argv[1]), argv[2], argv[3]
        lib = libggml()
        x = np.ascontiguousarray(np.fromfile(src, dtype=np.float32))
        out = np.zeros(lib.ggml_row_size(int(t), x.size), dtype=np.uint8)
        fn = getattr(lib, "quantize_row_" + ggml_name(t) + "_ref")
        fn.restype = None
        fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
        fn(x.ctypes.data, out.ctypes.data, x.size)
        out.tofile(dst)
    elif mode == "ggml-dequantize":
        t, src, dst = qtype(argv[1]), argv[2], argv[3]
        lib = libggml()
        raw = np.ascontiguousarray(np.fromfile(src, dtype=np.uint8))
        bs, ts = quants.GGML_QUANT_SIZES[t]
        k = raw.size // ts * bs
        out = np.zeros(k, dtype=np.float32)
        name = {T.F16: "ggml_fp16_to_fp32_row", T.BF16: "ggml_bf16_to_fp32_row"}.get(t)
        fn = getattr(lib, name or "dequantize_row_" + ggml_name(t))
        fn.restype = None
        fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
        fn(raw.ctypes.data, out.ctypes.data, k)
        out.tofile(dst)
    else:
        sys.exit(f"quant_oracle: unknown mode {mode!r}\n{__doc__}")


if __name__ == "__main__":
    main(sys.argv[1:])
