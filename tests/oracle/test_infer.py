"""slmpack's runtime (`slmpack logits`, `slmpack run`) against llama.cpp (llama-cpp-python).

* Tiny random llama models written here with gguf-py (F32, F16, Q8_0, Q4_0, Q4_1 weights; tied and
  untied output): logits for the same tokens must match llama.cpp's.
* SmolLM2-135M-Instruct (Q4_1, env SLMPACK_SMOLLM2, plus F16/Q8_0/Q4_0/Q4_K_M files requantized
  from it): tokenization identical to llama.cpp's, greedy continuations, the confidence of a
  greedy answer against llama-cpp-python's log-probabilities, and teacher-forced top-1
  agreement over >= 1000 positions per weight type, and `benchmarks/agreement.py`'s report of it.
"""
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, run, slmpack_bin

try:
    import gguf
    from gguf import quants
    from llama_cpp import Llama
except ImportError as e:  # never skip silently
    raise RuntimeError(
        f"the oracle tests need gguf and llama-cpp-python ({e}); run tests/setup-python.sh"
    ) from e

GT = gguf.GGMLQuantizationType


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for _, c in sorted(zip(bs, cs))]


def write_tiny_llama(path, wtype, tied=True, seed=0, n_embd=64, n_head=4, n_head_kv=2, n_ff=128,
                     n_layer=2, rope_base=10000.0):
    """A random llama GGUF with a byte-level BPE vocabulary (256 bytes, 3 merges, 3 specials)."""
    rng = np.random.default_rng(seed)
    toks = bytes_to_unicode()
    merges = ["Ġ t", "h e", "Ġt he"]
    toks += ["Ġt", "he", "Ġthe"]
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    ttypes = [1] * len(toks) + [3] * len(specials)
    toks += specials
    n_vocab = len(toks)
    hd = n_embd // n_head

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(n_layer)
    w.add_context_length(256)
    w.add_embedding_length(n_embd)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_rope_freq_base(rope_base)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(hd)
    w.add_vocab_size(n_vocab)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(toks)
    w.add_token_types(ttypes)
    w.add_token_merges(merges)
    w.add_bos_token_id(n_vocab - 3)
    w.add_eos_token_id(n_vocab - 1)
    w.add_add_bos_token(False)

    def mat(name, rows, cols, scale):
        a = (rng.standard_normal((rows, cols)) * scale).astype(np.float32)
        if wtype == GT.F32:
            w.add_tensor(name, a)
        elif wtype == GT.F16:
            w.add_tensor(name, a.astype(np.float16))
        else:
            q = quants.quantize(a, wtype)
            w.add_tensor(name, q, raw_shape=q.shape, raw_dtype=wtype)

    def vec(name, n):
        w.add_tensor(name, (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32))

    mat("token_embd.weight", n_vocab, n_embd, 1.0)
    vec("output_norm.weight", n_embd)
    if not tied:
        mat("output.weight", n_vocab, n_embd, 0.3)
    for l in range(n_layer):
        p = f"blk.{l}."
        vec(p + "attn_norm.weight", n_embd)
        mat(p + "attn_q.weight", n_head * hd, n_embd, 0.3)
        mat(p + "attn_k.weight", n_head_kv * hd, n_embd, 0.3)
        mat(p + "attn_v.weight", n_head_kv * hd, n_embd, 0.3)
        mat(p + "attn_output.weight", n_embd, n_head * hd, 0.2)
        vec(p + "ffn_norm.weight", n_embd)
        mat(p + "ffn_gate.weight", n_ff, n_embd, 0.3)
        mat(p + "ffn_up.weight", n_ff, n_embd, 0.3)
        mat(p + "ffn_down.weight", n_embd, n_ff, 0.2)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return n_vocab


def llama_logits(model, tokens, n_batch=512):
    # llama.cpp's defaults as llama-cpp-python sets them: F16 KV cache, no flash attention
    llm = Llama(model_path=str(model), logits_all=True, n_ctx=max(64, len(tokens) + 8), n_batch=n_batch,
                n_ubatch=n_batch, n_threads=1, verbose=False)
    llm.eval(tokens)
    return np.array(llm.scores[: len(tokens)], dtype=np.float32)


def slmpack_logits(model, tokens, tmp, extra=()):
    out = tmp / "logits.npy"
    run("logits", model, "--tokens", ",".join(map(str, tokens)), "--out", out, *extra)
    return np.load(out)


def llama_cpp_sums_as_avx2():
    """True where llama.cpp (built natively by llama-cpp-python) runs the AVX2 code whose sums
    slmpack's AVX2 kernels reproduce bit for bit (x86_64 with AVX2, without AVX-512)."""
    import llama_cpp
    info = llama_cpp.llama_print_system_info().decode()
    return "AVX2 = 1" in info and "AVX512 = 1" not in info


# (weight type, tolerance on max|ours - llama.cpp| relative to max|logit|, bit-identical on AVX2)
# Both sides keep K and V in f16 and round Q and the softmax probabilities to f16 (llama.cpp's
# default, no flash attention). The quantized types: activations are quantized to Q8 blocks
# exactly as ggml-cpu does and the sums run in the same order (tinyBLAS, `vec_dot`, the Q4_0
# repack), so on x86_64/AVX2 the logits are bit-identical, which the test asserts there; the
# tolerance leaves room for other CPUs, where a last-bit difference can flip an int8 of a
# quantized activation and move the logits by up to ~1% of their range. F16, BF16 and F32 too:
# their products run tinyBLAS's order for batches (rows in fours) and `ggml_vec_dot_f16`'s,
# `_bf16`'s and `_f32`'s elsewhere, on f16-/bf16-rounded activations for F16/BF16. Elsewhere a
# last-bit difference can flip an f16 rounding of Q/K/V/P (2^-11 relative), hence 1e-3 for F32.
# The mean error must stay at 1e-3 of the range.
TINY_CASES = [
    (GT.F32, 1e-3, True),
    (GT.F16, 1e-2, True),
    (GT.BF16, 1e-2, True),
    (GT.Q8_0, 1e-2, True),
    (GT.Q4_0, 1e-2, True),
    (GT.Q4_1, 1e-2, True),
    (GT.Q5_0, 1e-2, True),
    (GT.Q5_1, 1e-2, True),
]


@pytest.mark.parametrize("wtype,tol,exact", TINY_CASES, ids=[c[0].name for c in TINY_CASES])
@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
def test_tiny_logits_match_llama_cpp(tmp_path, wtype, tol, exact, tied):
    model = tmp_path / "tiny.gguf"
    n_vocab = write_tiny_llama(model, wtype, tied=tied, seed=int(wtype), rope_base=10000.0 if tied else 50000.0)
    rng = np.random.default_rng(1)
    tokens = [int(t) for t in rng.integers(0, n_vocab, 40)]
    ours = slmpack_logits(model, tokens, tmp_path, ["--batch-size", "16"])
    ref = llama_logits(model, tokens)
    assert ours.shape == ref.shape == (len(tokens), n_vocab)
    err = float(np.abs(ours - ref).max())
    scale = float(np.abs(ref).max())
    print(f"\n{wtype.name} {'tied' if tied else 'untied'}: max-abs {err:.3g}, max|logit| {scale:.3g}, "
          f"relative {err / scale:.3g}, top-1 agreement {(ours.argmax(1) == ref.argmax(1)).mean():.3f}")
    assert err <= tol * scale, f"{wtype.name}: max-abs error {err} > {tol} * {scale}"
    assert float(np.abs(ours - ref).mean()) <= 1e-3 * scale
    assert (ours.argmax(1) == ref.argmax(1)).mean() >= 0.95
    if exact and llama_cpp_sums_as_avx2():
        assert err == 0, f"{wtype.name}: not bit-identical to llama.cpp on AVX2 (max-abs {err})"


# The K-quants (gguf-py cannot quantize them): a tiny F32 model quantized by slmpack with
# `--pure` (every matrix of the mix's base type, where its rows fit) and as a llama.cpp mix.
# Shapes: "k256" has rows of 256 and 512 columns (whole super-blocks everywhere); "smollm2" has
# SmolLM2-135M's (576 columns: the K-quant mixes fall back to Q5_0/Q5_1/Q8_0 there, as
# llama-quantize does). 40 tokens in one batch reach llama.cpp's tiled K-quant product
# (`ggml-cpu/tiled`, from 8 tokens) and its Q4_K repack (`q4_K_8x8`, rows in eights); decode-size
# batches (4 tokens) reach `vec_dot` and the repack's `gemv`. All bit-identical on AVX2.
KQUANT_CASES = [
    ("k256", "q4_k_m", True), ("k256", "q5_k_m", True), ("k256", "q6_k", True),
    ("smollm2", "q4_k_m", False), ("smollm2", "q5_k_m", False), ("smollm2", "q6_k", False),
]
SHAPES = {"k256": dict(n_embd=256, n_ff=512, n_head=4, n_head_kv=2),
          "smollm2": dict(n_embd=576, n_ff=1536, n_head=9, n_head_kv=3)}


@pytest.mark.parametrize("shape,mix,pure", KQUANT_CASES, ids=[f"{a}-{b}" for a, b, _ in KQUANT_CASES])
def test_tiny_kquant_logits_match_llama_cpp(tmp_path, shape, mix, pure):
    base = tmp_path / "tiny-f32.gguf"
    n_vocab = write_tiny_llama(base, GT.F32, tied=True, seed=3, **SHAPES[shape])
    model = tmp_path / f"tiny-{mix}.gguf"
    run("quantize", base, "--type", mix, *(["--pure"] if pure else []), "-q", "-o", model)
    rng = np.random.default_rng(1)
    tokens = [int(t) for t in rng.integers(0, n_vocab, 40)]
    for batch in [40, 4]:
        ours = slmpack_logits(model, tokens, tmp_path, ["--batch-size", str(batch)])
        ref = llama_logits(model, tokens, n_batch=batch)
        err = float(np.abs(ours - ref).max())
        scale = float(np.abs(ref).max())
        print(f"\n{shape} {mix}{' pure' if pure else ''} batch {batch}: max-abs {err:.3g}, "
              f"max|logit| {scale:.3g}, top-1 agreement {(ours.argmax(1) == ref.argmax(1)).mean():.3f}")
        assert err <= 1e-2 * scale, f"{mix}: max-abs error {err} > 1e-2 * {scale}"
        if llama_cpp_sums_as_avx2():
            assert err == 0, f"{shape} {mix} batch {batch}: not bit-identical to llama.cpp (max-abs {err})"


def test_tiny_kernels_scalar_equals_avx2(tmp_path):
    """The scalar and AVX2 kernels differ only in float summation order (see TINY_CASES)."""
    model = tmp_path / "tiny.gguf"
    n_vocab = write_tiny_llama(model, GT.Q4_1)
    tokens = list(range(0, n_vocab, 7))[:30]
    out = {}
    for isa in ["scalar", "avx2"]:
        os.environ["SLMPACK_ISA"] = isa
        try:
            out[isa] = slmpack_logits(model, tokens, tmp_path)
        finally:
            del os.environ["SLMPACK_ISA"]
    d = np.abs(out["scalar"] - out["avx2"])
    scale = np.abs(out["scalar"]).max()
    assert d.max() <= 1e-2 * scale and d.mean() <= 1e-3 * scale, (d.max(), d.mean(), scale)
    assert (out["scalar"].argmax(1) == out["avx2"].argmax(1)).mean() >= 0.95


# ---------------------------------------------------------------- SmolLM2-135M-Instruct (Q4_1)

def smollm2():
    p = os.environ.get("SLMPACK_SMOLLM2")
    if not p or not pathlib.Path(p).is_file():
        raise RuntimeError("SLMPACK_SMOLLM2 must name the SmolLM2-135M-Instruct GGUF (tests/run.sh sets it "
                           "with tests/fetch-model.sh)")
    return p


TEXTS = [
    "Hello world!",
    "The quick brown fox jumps over the lazy dog.",
    "  leading spaces and trailing   ",
    "Numbers: 3.14159, 1234567890 and 42nd.",
    "Ünïcödé: naïve café, Straße, 日本語のテキスト, emoji 🦀🚀 and ﬁ ligature.",
    "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "don't won't it's I'm you're we'll they'd",
    "tabs\tand\nnewlines\r\n\n\nmixed",
    "URL: https://example.com/path?q=1&r=2#frag",
    "Über-long-hyphenated-compound-words-are-fun",
    "",
]


def test_smollm2_tokenization_matches_llama_cpp():
    model = smollm2()
    v = Llama(model_path=model, vocab_only=True, verbose=False)
    for text in TEXTS:
        if not text:
            continue
        want = v.tokenize(text.encode(), add_bos=False, special=True)
        got = json.loads(run("run", model, "-p", text, "--tokenize-only").stdout)
        assert got == want, f"{text!r}: slmpack {got} llama.cpp {want}"


PROMPTS = [
    "The capital of France is",
    "Once upon a time, in a small village,",
    "def fibonacci(n):",
    "The three primary colors are",
    "Water boils at a temperature of",
]


def llama_greedy(llm, prompt_tokens, n, eog):
    llm.reset()
    llm.eval(prompt_tokens)
    out = []
    for _ in range(n):
        row = llm.scores[llm.n_tokens - 1]
        assert np.abs(row).max() > 0, "llama.cpp returned no logits"
        t = int(np.argmax(row))
        if t in eog:
            break
        out.append(t)
        llm.eval([t])
    return out


# SmolLM2 at several weight types: the Q4_1 original and files requantized from it with
# `slmpack quantize --allow-requantize` (the same network at other types, enough to compare
# runtimes; each made once per session).
@pytest.fixture(scope="module")
def smollm2_variants(tmp_path_factory):
    made = {}

    def get(wtype):
        if wtype == "q4_1":
            return smollm2()
        if wtype not in made:
            out = tmp_path_factory.mktemp("smollm2") / f"smollm2-{wtype}.gguf"
            run("quantize", smollm2(), "--type", wtype, "--allow-requantize", "-q", "-o", out)
            made[wtype] = str(out)
        return made[wtype]

    return get


# Greedy continuations of 32 tokens (or to EOS), token for token as llama.cpp's. llama.cpp
# decodes one token at a time through other kernels than its prompt path (`vec_dot` instead of
# tinyBLAS, the repack's `gemv`, `ggml_vec_dot_f16` for attention over all its cache rows, at
# least 256) and slmpack follows both paths, so every prompt must continue identically.
GREEDY_TYPES = ["q4_1", "f16", "q8_0", "q4_0", "q4_k_m"]


@pytest.mark.parametrize("wtype", GREEDY_TYPES)
def test_smollm2_greedy_continuations(tmp_path, smollm2_variants, wtype):
    model = smollm2_variants(wtype)
    llm = Llama(model_path=model, n_ctx=256, n_threads=2, logits_all=True, verbose=False)
    eog = {2, 0}
    report = []
    for p in PROMPTS:
        r = json.loads(run("run", model, "-p", p, "-n", "32", "--json").stdout)
        ours = r["tokens"]
        prompt = llm.tokenize(p.encode(), add_bos=False, special=True)
        ref = llama_greedy(llm, prompt, 32, eog)
        same = 0
        while same < min(len(ours), len(ref)) and ours[same] == ref[same]:
            same += 1
        report.append((p, same, len(ours), len(ref)))
        assert len(ref) >= 8 and len(ours) >= 8, (p, ours, ref)
        if ours != ref:
            # say how close llama.cpp's own logits were at the divergence
            llm.reset()
            llm.eval(prompt + ref[:same])
            row = np.array(llm.scores[llm.n_tokens - 1])
            margin = float(row[ref[same]] - row[ours[same]]) if same < min(len(ours), len(ref)) else None
            pytest.fail(f"{p!r}: first {same} tokens identical, then slmpack {ours[same:]} vs llama.cpp "
                        f"{ref[same:]} (llama.cpp's margin there: {margin})")
        print(f"\n{p!r}: all {same} tokens identical")


# The confidence `slmpack run` reports (mean and minimum probability of the generated tokens,
# what `--min-confidence` compares) against llama-cpp-python's own log-probabilities of the same
# greedy completion (`logprobs`: its log-softmax of llama.cpp's logits, in float32 numpy). The
# logits are the same bits, so only the two softmax implementations differ (ggml's vectorised expf
# summed in f32 here): a confidence taken from the wrong position, the wrong token, or scaled
# logits would be off by far more than the tolerance.
@pytest.mark.parametrize("wtype", ["q4_1", "q8_0"])
def test_smollm2_confidence_matches_llama_cpp_logprobs(smollm2_variants, wtype):
    model = smollm2_variants(wtype)
    llm = Llama(model_path=model, n_ctx=256, n_threads=2, logits_all=True, verbose=False)
    n = 16
    for p in PROMPTS[:3]:
        r = json.loads(run("run", model, "-p", p, "-n", str(n), "--json").stdout)
        assert r["stop"] == "length", r
        prompt = llm.tokenize(p.encode(), add_bos=False, special=True)
        llm.reset()
        c = llm.create_completion(prompt, max_tokens=n, temperature=0.0, repeat_penalty=1.0,
                                  logprobs=1)["choices"][0]
        assert c["text"] == r["text"], (p, c["text"], r["text"])
        probs = np.exp(np.array(c["logprobs"]["token_logprobs"], dtype=np.float64))
        assert len(probs) == n == len(r["tokens"]), (p, len(probs), r["tokens"])
        ours = r["confidence"]
        print(f"\n{p!r}: mean {ours['mean']:.6f} vs {probs.mean():.6f}, "
              f"min {ours['min']:.6f} vs {probs.min():.6f}")
        assert abs(ours["mean"] - probs.mean()) < 1e-5, (p, ours, probs)
        assert abs(ours["min"] - probs.min()) < 1e-5, (p, ours, probs)
        assert 0.0 < probs.min() < 1.0


# Teacher-forced top-1 agreement with llama.cpp (its defaults: F16 KV cache, no flash attention,
# n_batch 512), measured on x86_64 with AVX2 against llama-cpp-python 0.3.36:
# * q4_1, q8_0: 1.0000, bit-identical logits at all 1024 positions (same activation rounding as
#   ggml-cpu's AVX2 `quantize_row_q8_0/1`, same dot-product orders, ggml's exp/softmax/swiglu,
#   f16 K/V/Q/P, GCC's FMA contraction in RoPE);
# * f16: 1.0000, bit-identical logits: the F16 weight products run tinyBLAS's order for batches
#   (rows in fours) and `ggml_vec_dot_f16`'s otherwise, on activations rounded to f16 as ggml does;
# * q4_0: 1.0000, bit-identical logits: llama.cpp repacks Q4_0 into 8-row groups on AVX2
#   (`q4_0_8x8`), and slmpack's own 8-row packed layout (`slmpack_kernels::packed`) sums each row
#   the same way (exact integer dot per block, then one FMA per block);
# * q4_k_m: 1.0000, bit-identical logits: its Q4_K matrices are repacked as llama.cpp's
#   `q4_K_8x8` (four tokens at a time as its `gemm`, the rest as its `gemv`), its Q6_K matrices
#   sum as llama.cpp's tiled K-quant product (`ggml-cpu/tiled`, batches of 8 tokens and more),
#   its Q5_0 matrices per lane as tinyBLAS. (Before those, 0.93: last-bit differences flip int8
#   activation roundings and move logits by ~0.2 on average; llama.cpp's own noise floor on this
#   text, flash attention on against off, is 0.949.)
TOP1_MIN = {"q4_1": 0.99, "q8_0": 0.99, "f16": 0.99, "q4_0": 0.99, "q4_k_m": 0.99}


@pytest.mark.parametrize("wtype", list(TOP1_MIN))
def test_smollm2_teacher_forced_top1_agreement(tmp_path, smollm2_variants, wtype):
    model = smollm2_variants(wtype)
    root = pathlib.Path(__file__).resolve().parents[2]
    text = (root / "README.md").read_text() + "\n" + (root / "tests" / "oracle" / "test_infer.py").read_text()
    v = Llama(model_path=model, vocab_only=True, verbose=False)
    tokens = v.tokenize(text.encode(), add_bos=False, special=True)[:1024]
    assert len(tokens) >= 1000
    ours = slmpack_logits(model, tokens, tmp_path)
    ref = llama_logits(model, tokens)
    agree = float((ours.argmax(1) == ref.argmax(1)).mean())
    err = np.abs(ours - ref)
    exact = int((err.max(1) == 0).sum())
    print(f"\nSmolLM2 {wtype} teacher-forced: {len(tokens)} positions, top-1 agreement {agree:.4f}, "
          f"bit-identical rows {exact}, mean |dlogit| {err.mean():.4f}, max {err.max():.3f}")
    assert agree >= TOP1_MIN[wtype], f"{wtype}: top-1 agreement {agree}"
    assert err.mean() <= 0.3


def test_agreement_script_reports_slmpack_and_llama_cpp_identical(smollm2_variants):
    # benchmarks/agreement.py compares llama.cpp builds (docs/performance.md, "Agreement with
    # llama.cpp"); against the oracle build its table must show what the teacher-forced test
    # above checks: every position's logits identical
    model = smollm2_variants("q4_1")
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "agreement.py"), slmpack_bin(),
                          model, f"oracle={sys.executable}"],
                         capture_output=True, text=True, check=True).stdout
    print(out)
    rows = [line for line in out.splitlines() if line.startswith("| slmpack | llama.cpp oracle |")]
    assert len(rows) == 1, out
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    assert cells[2] == "1.0000" and cells[3] == "1024 / 1024" and cells[4] == "0.0000", rows[0]
