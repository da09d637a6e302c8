"""Prefill and decode speed of `slmpack run` and llama.cpp (llama-cpp-python) on the same GGUF at
ONE thread, measured in CPU time instead of wall time, so that other processes competing for the
cores (a shared build machine) do not skew the ratio. Usage:
    python benchmarks/cpu-time-vs-llama.py SLMPACK_BIN MODEL.gguf [MODEL.gguf ...]
Same prompt and decode length as decode-vs-llama.py (~512-token prompt, 128 greedy tokens).
slmpack's prefill CPU time is (run with the prompt, 1 token) minus (run with a 1-token prompt,
1 token), its decode CPU time is (prompt, 129 tokens) minus (prompt, 1 token), each the best of 3
child-process CPU times; llama.cpp's are process CPU times around `eval`, best of 3.
Prints a Markdown table row per model (tokens per CPU-second)."""
import resource, subprocess, sys, time

from llama_timing import N_CTX, N_GEN, llama_speed

def child_cpu(cmd):
    best = float("inf")
    for _ in range(3):
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run(cmd, capture_output=True, check=True)
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        best = min(best, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime))
    return best

def slm(bin_, model, prompt, n):
    run = lambda p, k: child_cpu([bin_, "run", model, "-p", p, "-n", str(k), "-c", str(N_CTX), "--threads", "1", "--json"])
    base = run("Hi", 1)
    pre = run(prompt, 1)
    full = run(prompt, N_GEN + 1)
    return n / max(pre - base, 1e-9), N_GEN / max(full - pre, 1e-9)

bin_ = sys.argv[1]
print("| model | prompt tokens | slmpack pp t/cpu-s | llama.cpp pp t/cpu-s | pp ratio | slmpack tg t/cpu-s | llama.cpp tg t/cpu-s | tg ratio |")
print("|---|---|---|---|---|---|---|---|")
for m in sys.argv[2:]:
    text, n, lpp, ltg = llama_speed(m, 1, time.process_time)
    spp, stg = slm(bin_, m, text, n)
    print(f"| {m.split('/')[-1]} | {n} | {spp:.1f} | {lpp:.1f} | {spp/lpp:.2f} | {stg:.1f} | {ltg:.1f} | {stg/ltg:.2f} |", flush=True)
