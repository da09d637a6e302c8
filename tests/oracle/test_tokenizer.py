"""slmpack export against outside oracles, on the real SmolLM2-135M-Instruct GGUF (Q4_1 + Q8_0,
made by llama.cpp's converter): the exported tokenizer.json, loaded by Hugging Face `tokenizers`,
encodes a varied text set exactly as llama.cpp tokenizes it from the GGUF, and the exported
weights equal gguf-py's dequantization of the GGUF tensors (after undoing llama.cpp's Q/K permute).
"""
import json
import os
import pathlib

import numpy as np
import pytest

from conftest import run

import gguf  # noqa: E402  (oracles: never skipped)
import llama_cpp  # noqa: E402
from safetensors.numpy import load_file  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

TEXTS = [
    "Hello, world!",
    "12345 3.14159",
    "1,000,000 0x1F 2024-11-25 v1.2.3 1e-5 -42 +7 99%",
    "def f(x):\n    return x * 2\n\n\tif x:\n\t\tpass\n",
    "class A:\n    def __init__(self):\n        self.x = [1, 2, 3]  # comment\n",
    "for (int i = 0; i < n; ++i) {\n\tsum += a[i];\n}\n",
    "Caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u00fcber Stra\u00dfe \u00e6\u00f8\u00e5 \u00c5ngstr\u00f6m",
    "\u6211\u60f3\u5728apple\u5de5\u4f5c \u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8 \ud55c\uad6d\uc5b4",
    "emoji \U0001F680\U0001F999 \U0001F636\u200d\U0001F32B\ufe0f \u2705 \U0001F468\u200d\U0001F469\u200d\U0001F467 \U0001F44D\U0001F3FD",
    "   leading spaces and trailing   ",
    "tabs\t\tand\nnewlines\n\n\n  \n mixed \r\n crlf",
    "a  b   c    d     e\t\tf\n\ng",
    "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM<|im_end|>\n",
    "<|endoftext|><|im_start|><|im_end|> text <repo_name>x<file_sep>y",
    "I've been 'told he's there, 'RE you sure? 'M not sure I'll make it, 'D you",
    "''''''```````\"\"\"\"......!!!!!!??????",
    "\u043d\u0435\u0449\u043e \u043d\u0430 \u0411\u044a\u043b\u0433\u0430\u0440\u0441\u043a\u0438 \u0395\u03bb\u03bb\u03b7\u03bd\u03b9\u03ba\u03ac "
    "\u0627\u0644\u0639\u0631\u0628\u064a\u0629 \u05e2\u05d1\u05e8\u05d9\u05ea",
    "\u1780\u17b6\u1793\u17cb\u178f\u17c2\u1796\u17b7\u179f\u17c1\u179f\u17a2\u17b6\u1785\U0001F601 "
    "?\u6211\u60f3\u5728apple\u5de5\u4f5c1314151\u5929\uff5e",
    "x\u00b2 + y\u00b2 = z\u00b2, \u00bd \u2153 \u0661\u0662\u0663 \u2460\u2461 \u2167",
    "",
    " ",
    "\n",
    "a",
    "https://example.com/path?q=1&r=2#frag user@mail.org",
    "    indented code\n        more indented",
    "!!!???...,,,;;;:::",
    "CamelCaseIdentifier snake_case_id kebab-case-id SCREAMING_CASE",
    "The quick brown fox jumps over the lazy dog. " * 3,
    "\u00a0non-breaking\u2009thin\u3000ideographic space",
    "mixed123numbers456and789letters",
    "  \n\n  \t\t  ",
]


def smollm2():
    p = os.environ.get("SLMPACK_SMOLLM2")
    if not p:
        raise RuntimeError("SLMPACK_SMOLLM2 is not set: run tests/run.sh (it runs tests/fetch-model.sh)")
    return pathlib.Path(p)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "smollm2-hf"
    run("export", smollm2(), "--out", out, "--dtype", "f32")
    return out


@pytest.fixture(scope="module")
def llm():
    return llama_cpp.Llama(model_path=str(smollm2()), vocab_only=True, verbose=False)


def test_exported_tokenizer_encodes_like_llama_cpp(exported, llm):
    tok = Tokenizer.from_file(str(exported / "tokenizer.json"))
    mismatches = []
    for t in TEXTS:
        for add in (False, True):
            hf = tok.encode(t, add_special_tokens=add).ids
            cpp = llm.tokenize(t.encode(), add_bos=add, special=True)
            if hf != cpp:
                mismatches.append((t, add, hf, cpp))
    assert not mismatches, f"{len(mismatches)} of {2 * len(TEXTS)} differ: {mismatches[:3]}"
    # decoding gives the text back (byte-level BPE is lossless)
    for t in TEXTS:
        ids = tok.encode(t, add_special_tokens=False).ids
        assert tok.decode(ids, skip_special_tokens=False) == t


def test_exported_tokenizer_config(exported):
    r = gguf.GGUFReader(str(smollm2()))

    def field(key):
        f = r.fields[key]
        if f.types[0] == gguf.GGUFValueType.STRING:
            return bytes(f.parts[f.data[0]]).decode()
        return f.parts[f.data[0]][0]

    tc = json.loads((exported / "tokenizer_config.json").read_text())
    tokens = json.loads((exported / "tokenizer.json").read_text())["model"]["vocab"]
    by_id = {v: k for k, v in tokens.items()}
    assert tc["chat_template"] == field("tokenizer.chat_template")
    assert tc["bos_token"] == by_id[int(field("tokenizer.ggml.bos_token_id"))] == "<|im_start|>"
    assert tc["eos_token"] == by_id[int(field("tokenizer.ggml.eos_token_id"))] == "<|im_end|>"
    assert tc["add_bos_token"] is False
    cfg = json.loads((exported / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForCausalLM"]
    assert cfg["vocab_size"] == 49152
    assert cfg["hidden_size"] == 576 and cfg["num_hidden_layers"] == 30
    assert cfg["num_attention_heads"] == 9 and cfg["num_key_value_heads"] == 3
    assert cfg["intermediate_size"] == 1536
    assert cfg["rope_theta"] == 100000.0 and cfg["rms_norm_eps"] == 1e-5
    assert cfg["max_position_embeddings"] == 8192
    assert cfg["tie_word_embeddings"] is True
    assert cfg["bos_token_id"] == 1 and cfg["eos_token_id"] == 2


HF_NAMES = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}


def hf_name(name):
    fixed = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
             "output.weight": "lm_head.weight"}
    if name in fixed:
        return fixed[name]
    _, bid, base, suffix = name.split(".")
    return f"model.layers.{bid}.{HF_NAMES[base]}.{suffix}"


def unpermute(w, n_head):
    """Inverse of llama.cpp's LlamaModel.permute (reshape(n_head, 2, r/n_head/2, c).swapaxes(1, 2))."""
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def test_exported_weights_equal_gguf_py_dequantize(exported):
    r = gguf.GGUFReader(str(smollm2()))
    n_head, n_head_kv = 9, 3
    st = {}
    for f in sorted(exported.glob("*.safetensors")):
        st.update(load_file(str(f)))
    assert len(st) == len(r.tensors) == 272
    assert "lm_head.weight" not in st
    types = set()
    for t in r.tensors:
        want = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        types.add(t.tensor_type.name)
        if ".attn_q." in t.name:
            want = unpermute(want, n_head)
        elif ".attn_k." in t.name:
            want = unpermute(want, n_head_kv)
        got = st[hf_name(t.name)]
        assert got.dtype == np.float32
        assert got.shape == tuple(int(d) for d in reversed(t.shape)), t.name
        assert np.array_equal(got, want), t.name
    assert {"Q4_1", "Q8_0", "F32"} <= types


def test_export_f16_matches_numpy_rounding(tmp_path):
    """--dtype f16 rounds the dequantized values as numpy's float16 cast does."""
    out = tmp_path / "f16"
    run("export", smollm2(), "--out", out, "--max-shard-size", "100MB")
    files = sorted(p.name for p in out.glob("*.safetensors"))
    assert len(files) > 1 and (out / "model.safetensors.index.json").exists()
    idx = json.loads((out / "model.safetensors.index.json").read_text())
    r = gguf.GGUFReader(str(smollm2()))
    picked = {"token_embd.weight", "blk.0.attn_q.weight", "blk.7.attn_k.weight", "blk.29.ffn_down.weight"}
    for t in r.tensors:
        if t.name not in picked:
            continue
        name = hf_name(t.name)
        got = load_file(str(out / idx["weight_map"][name]))[name]
        want = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        if ".attn_q." in t.name:
            want = unpermute(want, 9)
        elif ".attn_k." in t.name:
            want = unpermute(want, 3)
        assert got.dtype == np.float16
        assert np.array_equal(got, want.astype(np.float16)), t.name
