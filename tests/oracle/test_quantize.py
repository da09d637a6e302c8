"""slmpack quantize against outside oracles: gguf-py reads what slmpack writes, llama.cpp's own
quantizer picks the same per-tensor types and writes the same bytes, and llama.cpp loads and
evaluates every mix."""
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from conftest import run
from tinymodel import make_tiny_llama, permute_like_llama_cpp

import gguf  # noqa: E402  (the oracle: never skipped)

# llama_ftype numbers (llama.h)
FTYPES = {
    "f32": 0,
    "f16": 1,
    "q4_0": 2,
    "q4_1": 3,
    "q8_0": 7,
    "q5_0": 8,
    "q5_1": 9,
    "q4_k_s": 14,
    "q4_k_m": 15,
    "q5_k_s": 16,
    "q5_k_m": 17,
    "q6_k": 18,
    "iq4_nl": 25,
    "bf16": 32,
}
MIXES = ["q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q4_k_s", "q4_k_m", "q5_k_s", "q5_k_m", "q6_k", "iq4_nl", "f16", "bf16"]

PY = sys.executable


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """A tiny checkpoint and slmpack's F32 GGUF of it (the common input for both quantizers)."""
    d = tmp_path_factory.mktemp("tiny")
    ck, cfg, tensors = make_tiny_llama(d / "tiny-llama")
    f32 = d / "tiny-f32.gguf"
    run("quantize", ck, "--type", "f32", "-o", f32, "-q")
    return {"dir": d, "ck": ck, "cfg": cfg, "tensors": tensors, "f32": f32}


def read(path):
    return gguf.GGUFReader(str(path))


def field(r, key):
    f = r.fields[key]
    if f.types and f.types[0] == gguf.GGUFValueType.STRING:
        return bytes(f.parts[f.data[0]]).decode()
    if f.types and f.types[0] == gguf.GGUFValueType.ARRAY:
        return [f.parts[i] for i in f.data]
    return f.parts[f.data[0]][0]


def tensor_map(r):
    return {t.name: t for t in r.tensors}


def llama_quantize(src, dst, ftype, pure=False, nthread=2):
    """llama.cpp's quantizer through llama-cpp-python, in a subprocess (its logs stay out)."""
    code = f"""
import ctypes, llama_cpp
p = llama_cpp.llama_model_quantize_default_params()
p.ftype = {ftype}
p.nthread = {nthread}
p.pure = {pure}
rc = llama_cpp.llama_model_quantize({str(src)!r}.encode(), {str(dst)!r}.encode(), ctypes.byref(p))
raise SystemExit(rc)
"""
    p = subprocess.run([PY, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0, f"llama_model_quantize failed:\n{p.stderr[-4000:]}"
    return p.stderr


def test_gguf_py_reads_checkpoint_conversion(tiny):
    r = read(tiny["f32"])
    cfg = tiny["cfg"]
    assert field(r, "general.architecture") == "llama"
    assert field(r, "general.file_type") == 0
    assert field(r, "general.quantization_version") == 2
    assert field(r, "general.alignment") == 32
    assert field(r, "llama.block_count") == cfg["num_hidden_layers"]
    assert field(r, "llama.embedding_length") == cfg["hidden_size"]
    assert field(r, "llama.feed_forward_length") == cfg["intermediate_size"]
    assert field(r, "llama.attention.head_count") == cfg["num_attention_heads"]
    assert field(r, "llama.attention.head_count_kv") == cfg["num_key_value_heads"]
    assert field(r, "llama.context_length") == cfg["max_position_embeddings"]
    assert field(r, "llama.rope.dimension_count") == cfg["hidden_size"] // cfg["num_attention_heads"]
    assert abs(field(r, "llama.attention.layer_norm_rms_epsilon") - 1e-5) < 1e-9
    assert "tokenizer.ggml.tokens" in r.fields
    assert "tokenizer.chat_template" in r.fields
    t = tensor_map(r)
    assert "output.weight" not in t  # tied
    names = {
        "token_embd.weight",
        "output_norm.weight",
        *(f"blk.{l}.{n}.weight" for l in range(4) for n in
          ["attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down"]),
    }
    assert set(t) == names
    for n, ten in t.items():
        assert ten.tensor_type == gguf.GGMLQuantizationType.F32, n
    assert list(t["token_embd.weight"].shape) == [cfg["hidden_size"], cfg["vocab_size"]]
    assert list(t["blk.0.ffn_down.weight"].shape) == [cfg["intermediate_size"], cfg["hidden_size"]]


def test_q_and_k_are_permuted_like_llama_cpp(tiny):
    r = read(tiny["f32"])
    t = tensor_map(r)
    cfg = tiny["cfg"]
    src = tiny["tensors"]
    for l in range(cfg["num_hidden_layers"]):
        q = np.asarray(t[f"blk.{l}.attn_q.weight"].data)
        k = np.asarray(t[f"blk.{l}.attn_k.weight"].data)
        v = np.asarray(t[f"blk.{l}.attn_v.weight"].data)
        hq = src[f"model.layers.{l}.self_attn.q_proj.weight"].astype(np.float32)
        hk = src[f"model.layers.{l}.self_attn.k_proj.weight"].astype(np.float32)
        hv = src[f"model.layers.{l}.self_attn.v_proj.weight"].astype(np.float32)
        np.testing.assert_array_equal(q, permute_like_llama_cpp(hq, cfg["num_attention_heads"]))
        np.testing.assert_array_equal(k, permute_like_llama_cpp(hk, cfg["num_key_value_heads"]))
        np.testing.assert_array_equal(v, hv)
    emb = np.asarray(t["token_embd.weight"].data)
    np.testing.assert_array_equal(emb, src["model.embed_tokens.weight"].astype(np.float32))


@pytest.mark.parametrize("mix", MIXES + ["pure-q4_k_m"])
def test_types_and_bytes_equal_llama_cpp(tiny, tmp_path, mix):
    pure = mix.startswith("pure-")
    ftype = mix.removeprefix("pure-")
    ours = tmp_path / f"slmpack-{mix}.gguf"
    direct = tmp_path / f"slmpack-direct-{mix}.gguf"
    theirs = tmp_path / f"llama-{mix}.gguf"
    extra = ["--pure"] if pure else []
    res = run("quantize", tiny["f32"], "--type", ftype, "-o", ours, "-q", "--json", *extra)
    run("quantize", tiny["ck"], "--type", ftype, "-o", direct, "-q", *extra)
    llama_quantize(tiny["f32"], theirs, FTYPES[ftype], pure=pure)

    a, b, c = read(ours), read(theirs), read(direct)
    ta, tb, tc = tensor_map(a), tensor_map(b), tensor_map(c)
    assert set(ta) == set(tb) == set(tc)
    assert field(a, "general.file_type") == field(b, "general.file_type") == FTYPES[ftype]
    type_diff = {n: (ta[n].tensor_type.name, tb[n].tensor_type.name) for n in ta if ta[n].tensor_type != tb[n].tensor_type}
    assert not type_diff, f"types differ from llama.cpp (slmpack, llama.cpp): {type_diff}"
    byte_diff = [n for n in ta if bytes(ta[n].data.tobytes()) != bytes(tb[n].data.tobytes())]
    assert not byte_diff, f"tensor bytes differ from llama.cpp's quantizer: {byte_diff}"
    direct_diff = [n for n in ta if bytes(ta[n].data.tobytes()) != bytes(tc[n].data.tobytes())]
    assert not direct_diff, f"checkpoint -> {mix} differs from F32 GGUF -> {mix}: {direct_diff}"

    # the fallbacks slmpack reports are exactly the ffn_down rows of 640 for 256-block types
    out = json.loads(res.stdout)["outputs"][0]
    fb = {f["tensor"] for f in out["fallbacks"]}
    k_quant = ftype in ("q4_k_s", "q4_k_m", "q5_k_s", "q5_k_m", "q6_k")
    if k_quant:
        assert {f"blk.{l}.ffn_down.weight" for l in range(4)} <= fb
    elif ftype in ("f16", "bf16", "q8_0"):
        assert not fb


@pytest.mark.parametrize("mix", MIXES + ["pure-q4_k_m"])
def test_llama_cpp_loads_and_evaluates(tiny, tmp_path, mix):
    pure = mix.startswith("pure-")
    ftype = mix.removeprefix("pure-")
    out = tmp_path / f"{mix}.gguf"
    run("quantize", tiny["ck"], "--type", ftype, "-o", out, "-q", *(["--pure"] if pure else []))
    code = f"""
import json, numpy as np, llama_cpp
m = llama_cpp.Llama(model_path={str(out)!r}, n_ctx=64, n_threads=2, verbose=True, logits_all=True)
toks = m.tokenize(b"Hello world! The capital of France is 42.", add_bos=False)
m.eval(toks)
lg = np.array(m.scores[: len(toks)])
print(json.dumps({{"n": len(toks), "finite": bool(np.isfinite(lg).all()), "std": float(lg.std())}}))
"""
    p = subprocess.run([PY, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-4000:]
    res = json.loads(p.stdout.strip().splitlines()[-1])
    assert res["n"] > 3 and res["finite"] and res["std"] > 0
    bad = [l for l in p.stderr.splitlines() if "degraded" in l.lower() or "error" in l.lower()]
    assert not bad, "\n".join(bad)


def test_inspect_json_matches_gguf_py(tiny, tmp_path):
    out = tmp_path / "q4.gguf"
    run("quantize", tiny["f32"], "--type", "q4_k_m", "-o", out, "-q")
    j = json.loads(run("inspect", out, "--json").stdout)
    r = read(out)
    t = tensor_map(r)
    assert len(j["tensors"]) == len(t)
    for row in j["tensors"]:
        g = t[row["name"]]
        assert row["type"] == g.tensor_type.name
        assert row["bytes"] == int(g.n_bytes)
        assert row["shape"] == list(reversed([int(x) for x in g.shape]))
    assert j["n_params"] == sum(int(g.n_elements) for g in t.values())


def test_smollm2_recipe_meets_its_budgets():
    """recipes/smollm2-135m.yaml on the real SmolLM2-135M: every tier within max_bytes.

    Types and sizes depend only on tensor names and shapes, so planning from the shipped Q4_1 GGUF
    (--allow-requantize --dry-run) gives the exact sizes a build from the F16 checkpoint writes."""
    model = os.environ.get("SLMPACK_SMOLLM2")
    assert model and pathlib.Path(model).is_file(), (
        "SLMPACK_SMOLLM2 must name SmolLM2-135M-Instruct.Q4_1.gguf (tests/run.sh sets it from tests/fetch-model.sh)"
    )
    root = pathlib.Path(__file__).resolve().parents[2]
    recipe = root / "recipes" / "smollm2-135m.yaml"
    res = run("quantize", model, "--recipe", recipe, "--out", "/nonexistent-dry-run", "--allow-requantize",
              "--dry-run", "--json")
    outs = {o["tier"]: o for o in json.loads(res.stdout)["outputs"]}
    assert list(outs) == ["low", "medium", "high"]
    budgets = {"low": 100_000_000, "medium": 160_000_000, "high": 300_000_000}
    for tier, budget in budgets.items():
        assert outs[tier]["size"] <= budget, (tier, outs[tier]["size"])
    assert outs["low"]["mix"] == "q4_k_m" and outs["medium"]["mix"] == "q8_0" and outs["high"]["mix"] == "f16"
    # the low tier really is 4-bit-class: under 6 bits per weight
    assert outs["low"]["bits_per_weight"] < 6.0
