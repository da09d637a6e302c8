"""What benchmarks/decode-vs-llama.py and cpu-time-vs-llama.py share: the prompt, and llama.cpp's
prefill/decode timing (llama-cpp-python, greedy, best of 3) under a given clock."""
import time
import llama_cpp
import numpy as np

# repetitive, so greedy decoding stays away from EOS on both sides
PROMPT = ("The history of computing is a story of machines that count, sort and remember. " * 40)
N_GEN = 128
# the cache both sides run with: the 512-token prompt and N_GEN more, in llama.cpp's steps of 256
N_CTX = 768


def llama_speed(model, threads, clock=time.perf_counter):
    """(prompt text, prompt tokens, prefill t/s, decode t/s) of llama.cpp on `model`, time taken
    with `clock` (wall: time.perf_counter; CPU: time.process_time), best of 3."""
    llm = llama_cpp.Llama(model_path=model, n_ctx=N_CTX, n_threads=threads, n_threads_batch=threads,
                          n_batch=512, verbose=False)
    toks = llm.tokenize(PROMPT.encode(), add_bos=False)[:512]
    pp = tg = float("inf")
    for _ in range(3):
        llm.reset()
        t0 = clock(); llm.eval(toks); t1 = clock()
        for _ in range(N_GEN):
            logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),))
            llm.eval([int(logits.argmax())])
        t2 = clock()
        pp = min(pp, t1 - t0); tg = min(tg, t2 - t1)
    return llm.detokenize(toks).decode(), len(toks), len(toks) / pp, N_GEN / tg
