"""Prefill and decode tokens/s of `slmpack run` and llama.cpp (llama-cpp-python) on the same GGUF,
same prompt, same thread count, back to back. Usage:
    python benchmarks/decode-vs-llama.py SLMPACK_BIN THREADS MODEL.gguf [MODEL.gguf ...]
Prints Markdown tables. Decode is measured twice, 128 greedy tokens each time (end-of-generation
tokens ignored on both sides): after a ~512-token prompt (the prefill's; positions 512..639,
attention reads every cached position), and after a 4-token prompt ("short", llama-bench's `tg128`:
attention reads almost nothing, a token is the weights' stream). The repetitive long prompt keeps
greedy decoding away from EOS on both sides.
Then the memory-bandwidth bound of decode: each generated token reads every weight once, so decode
cannot beat (copy bandwidth) / (weight bytes); the copy bandwidth is measured here with a 256 MiB
numpy copy (bytes read + written per second). It is measured right before each of a model's
slmpack runs (best of 5 copies each time, so the bound and the decode speed it is compared with
come from the same minute of a host whose speed drifts), and once after all the models (best of
5); both bounds are printed."""
import json, subprocess, sys, time
import numpy as np

from llama_timing import N_CTX, N_GEN, SHORT_PROMPT, llama_speed, llama_tg_short

def slm(bin_, model, threads, prompt):
    """(best prefill t/s, best decode t/s, best copy bandwidth measured before each run)"""
    best_pp = best_tg = best_bw = 0.0
    for _ in range(3):
        best_bw = max(best_bw, copy_bandwidth())
        out = subprocess.run([bin_, "run", model, "-p", prompt, "-n", str(N_GEN), "-c", str(N_CTX),
                              "--threads", str(threads), "--ignore-eos", "--json"],
                             capture_output=True, text=True, check=True)
        t = json.loads(out.stdout)["timings"]
        best_pp = max(best_pp, t["prefill_tokens_per_s"]); best_tg = max(best_tg, t["decode_tokens_per_s"])
    return best_pp, best_tg, best_bw

# the copy's source and target (256 MiB each), made once: every measurement copies the same pages
COPY_A = np.ones(256 << 18, dtype=np.float32)
COPY_B = np.zeros_like(COPY_A)

def copy_bandwidth():
    a, b = COPY_A, COPY_B
    best = 0.0
    for _ in range(5):
        t0 = time.perf_counter(); np.copyto(b, a); t1 = time.perf_counter()
        best = max(best, 2 * a.nbytes / (t1 - t0))
    return best

bin_, threads = sys.argv[1], int(sys.argv[2])
print("| model | threads | prompt tokens | slmpack pp t/s | llama.cpp pp t/s | pp ratio | slmpack tg t/s | llama.cpp tg t/s | tg ratio | slmpack tg t/s, short | llama.cpp tg t/s, short | tg ratio, short |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
rows = []
for m in sys.argv[3:]:
    text, n, lpp, ltg = llama_speed(m, threads)
    _, ltg_s = llama_tg_short(m, threads)
    spp, stg, sbw = slm(bin_, m, threads, text)
    _, stg_s, sbw_s = slm(bin_, m, threads, SHORT_PROMPT)
    rows.append((m, stg, sbw, stg_s, sbw_s))
    print(f"| {m.split('/')[-1]} | {threads} | {n} | {spp:.1f} | {lpp:.1f} | {spp/lpp:.2f} | {stg:.1f} | {ltg:.1f} | {stg/ltg:.2f} | {stg_s:.1f} | {ltg_s:.1f} | {stg_s/ltg_s:.2f} |", flush=True)

def weight_bytes(model):
    from gguf import GGUFReader
    return sum(int(t.n_bytes) for t in GGUFReader(model).tensors)

bw = copy_bandwidth()
print(f"\ncopy bandwidth (read + write) after all the models: {bw / 1e9:.1f} GB/s")
print("| model | weight bytes | copy GB/s at its runs | bound t/s | slmpack tg t/s | fraction of bound | bound from the copy after all models | fraction of that | copy GB/s at the short runs | bound t/s | slmpack tg t/s, short | fraction of bound, short |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for m, stg, sbw, stg_s, sbw_s in rows:
    wb = weight_bytes(m)
    bound, bound_end, bound_s = sbw / wb, bw / wb, sbw_s / wb
    print(f"| {m.split('/')[-1]} | {wb / 1e6:.1f} MB | {sbw / 1e9:.1f} | {bound:.0f} | {stg:.1f} | {stg / bound:.2f} | {bound_end:.0f} | {stg / bound_end:.2f} | {sbw_s / 1e9:.1f} | {bound_s:.0f} | {stg_s:.1f} | {stg_s / bound_s:.2f} |", flush=True)
