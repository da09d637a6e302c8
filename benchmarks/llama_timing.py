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


def _llama(model, threads):
    return llama_cpp.Llama(model_path=model, n_ctx=N_CTX, n_threads=threads, n_threads_batch=threads,
                           n_batch=512, verbose=False)


def _greedy(llm):
    """N_GEN greedy tokens after what `llm` holds (end-of-generation tokens included)."""
    for _ in range(N_GEN):
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),))
        llm.eval([int(logits.argmax())])


def llama_speed(model, threads, clock=time.perf_counter):
    """(prompt text, prompt tokens, prefill t/s, decode t/s) of llama.cpp on `model`, time taken
    with `clock` (wall: time.perf_counter; CPU: time.process_time), best of 3."""
    llm = _llama(model, threads)
    toks = llm.tokenize(PROMPT.encode(), add_bos=False)[:512]
    pp = tg = float("inf")
    for _ in range(3):
        llm.reset()
        t0 = clock(); llm.eval(toks); t1 = clock()
        _greedy(llm)
        t2 = clock()
        pp = min(pp, t1 - t0); tg = min(tg, t2 - t1)
    return llm.detokenize(toks).decode(), len(toks), len(toks) / pp, N_GEN / tg


# llama-bench's `tg128` measures decode from an empty context, where attention reads a handful of
# cache cells and a token costs little more than reading the weights; this short prompt does the
# same (4 tokens, then decode at positions 4..131), beside the decode after the 512-token prompt above
SHORT_PROMPT = "The history of computing"


def llama_tg_short(model, threads, clock=time.perf_counter):
    """(prompt tokens, decode t/s) of llama.cpp: N_GEN greedy tokens after SHORT_PROMPT, best
    of 3."""
    llm = _llama(model, threads)
    toks = llm.tokenize(SHORT_PROMPT.encode(), add_bos=False)
    tg = float("inf")
    for _ in range(3):
        llm.reset()
        llm.eval(toks)
        t1 = clock(); _greedy(llm); t2 = clock()
        tg = min(tg, t2 - t1)
    return len(toks), N_GEN / tg
