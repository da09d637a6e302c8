"""`slmpack bench` accuracy workloads against llama.cpp (llama-cpp-python).

Perplexity of SmolLM2-135M (Q4_1, env SLMPACK_SMOLLM2) on the shipped text
`benchmarks/data/device-notes.txt`, computed by slmpack's runtime, must agree with the same
computation on llama.cpp's logits (llama-perplexity's method: tokenize once with BOS if the
model adds one, chunks of n_ctx, BOS first in each chunk when used, score the second half)
within slmpack's error bar. A model compared with itself has KLD 0 and 100 % same top token.
"""
import json
import math
import os
import pathlib

import numpy as np

from conftest import ROOT, run

try:
    from llama_cpp import Llama
except ImportError as e:  # never skip silently
    raise RuntimeError(
        f"the oracle tests need llama-cpp-python ({e}); run tests/setup-python.sh"
    ) from e

N_CTX = 256
CHUNKS = 4
TEXT = ROOT / "benchmarks" / "data" / "device-notes.txt"


def smollm2() -> str:
    p = os.environ.get("SLMPACK_SMOLLM2")
    if not p or not pathlib.Path(p).is_file():
        raise RuntimeError(
            "SLMPACK_SMOLLM2 must name the SmolLM2-135M Q4_1 GGUF (tests/fetch-model.sh prints it)"
        )
    return p


def llama_cpp_perplexity(model: str, text: str):
    llm = Llama(model_path=model, n_ctx=N_CTX, n_batch=N_CTX, logits_all=True, verbose=False,
                seed=0)
    tokens = llm.tokenize(text.encode("utf-8"), add_bos=True, special=False)
    adds_bos = len(llm.tokenize(b"x", add_bos=True)) > len(llm.tokenize(b"x", add_bos=False))
    n_chunk = min(CHUNKS, len(tokens) // N_CTX)
    first = N_CTX // 2
    nll = nll2 = 0.0
    count = 0
    for c in range(n_chunk):
        chunk = list(tokens[c * N_CTX:(c + 1) * N_CTX])
        if adds_bos:
            chunk[0] = llm.token_bos()
        llm.reset()
        llm.eval(chunk)
        logits = np.asarray(llm.scores[:N_CTX], dtype=np.float64)
        for j in range(first, N_CTX - 1):
            row = logits[j]
            m = row.max()
            lse = m + math.log(np.exp(row - m).sum())
            v = lse - row[tokens[c * N_CTX + j + 1]]
            nll += v
            nll2 += v * v
            count += 1
    mean = nll / count
    ppl = math.exp(mean)
    var = nll2 / count - mean * mean
    err = math.sqrt(var / (count - 1)) * ppl
    return ppl, err, count


def test_perplexity_matches_llama_cpp_and_self_kld_is_zero(tmp_path):
    model = smollm2()
    scen = tmp_path / "ppl.yaml"
    scen.write_text(
        "name: oracle\nrepetitions: 1\nwarmup: 0\nworkloads:\n"
        f"  - {{kind: perplexity, name: ppl, file: {TEXT}, n_ctx: {N_CTX}, chunks: {CHUNKS}}}\n"
        f"  - {{kind: kld, name: kld, file: {TEXT}, n_ctx: {N_CTX}, chunks: 2}}\n"
    )
    out = tmp_path / "out"
    run("bench", model, "--scenario", scen, "--out", out, "--no-plots", "--quiet",
        "--energy", "estimate", "--device-profile",
        ROOT / "benchmarks" / "devices" / "laptop-x86.yaml")
    report = json.loads((out / "report.json").read_text())
    (tier,) = report["tiers"]
    by_name = {w["name"]: w["result"] for w in tier["workloads"]}
    ours = by_name["ppl"]["ppl"]

    ppl, err, count = llama_cpp_perplexity(model, TEXT.read_text())
    print(f"slmpack PPL {ours['ppl']:.4f} ± {ours['err']:.4f}; llama.cpp {ppl:.4f} ± {err:.4f}"
          f" over {count} tokens")
    assert ours["tokens"] == count == CHUNKS * (N_CTX - 1 - N_CTX // 2)
    assert abs(ours["ppl"] - ppl) <= ours["err"], (ours, ppl, err)
    # the two error bars describe the same spread of per-token losses
    assert abs(ours["err"] - err) <= 0.1 * err, (ours, err)

    kld = by_name["kld"]["kld"]
    assert report["reference_tier"] == tier["name"]
    assert kld["mean_kld"] == 0.0
    assert kld["same_top_pct"] == 100.0
    assert kld["rms_dp_pct"] == 0.0
    assert kld["tokens"] == 2 * (N_CTX - 1 - N_CTX // 2)
    # the report says how energy was obtained
    assert tier["workloads"][0]["energy"]["method"] == "estimate(laptop-x86)"
    assert report["machine"]["isa"] != "unknown"
