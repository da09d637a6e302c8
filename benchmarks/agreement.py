"""Teacher-forced agreement of slmpack and llama.cpp builds on one GGUF: the logits of every
position of a 1024-token text (README.md + tests/oracle/test_infer.py, as the oracle test), from
`slmpack logits` and from llama.cpp through the llama-cpp-python of each Python given (F16 KV
cache, no flash attention, `n_batch` 512, one thread: llama-cpp-python's defaults), compared pair
by pair: top-1 agreement, bit-identical positions, mean and max |Δlogit|. Usage:

    python benchmarks/agreement.py SLMPACK_BIN MODEL.gguf NAME=PYTHON [NAME=PYTHON ...]

e.g. `avx2=.venv/bin/python native=/tmp/llnative/bin/python` to compare the test oracle (built
for AVX2 by tests/setup-python.sh) with a native build. Prints a Markdown table.
"""
import itertools
import pathlib
import subprocess
import sys
import tempfile

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]

# run by each llama-cpp-python's own Python: argv = model, tokens file, logits out
LLAMA = """
import sys, numpy as np
from llama_cpp import Llama
model, tok_file, out = sys.argv[1:4]
tokens = [int(t) for t in open(tok_file).read().split(",")]
llm = Llama(model_path=model, logits_all=True, n_ctx=len(tokens) + 8, n_batch=512, n_ubatch=512,
            n_threads=1, verbose=False)
llm.eval(tokens)
np.save(out, np.array(llm.scores[: len(tokens)], dtype=np.float32))
"""

TOKENIZE = """
import sys
from llama_cpp import Llama
model, text_file, out = sys.argv[1:4]
v = Llama(model_path=model, vocab_only=True, verbose=False)
toks = v.tokenize(open(text_file, "rb").read(), add_bos=False, special=True)[:1024]
open(out, "w").write(",".join(map(str, toks)))
"""


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    slm, model, builds = sys.argv[1], sys.argv[2], [a.split("=", 1) for a in sys.argv[3:]]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        text = tmp / "text.txt"
        text.write_text((ROOT / "README.md").read_text() + "\n"
                        + (ROOT / "tests" / "oracle" / "test_infer.py").read_text())
        tok = tmp / "tokens.txt"
        subprocess.run([builds[0][1], "-c", TOKENIZE, model, text, tok], check=True, capture_output=True)
        logits = {}
        out = tmp / "slmpack.npy"
        subprocess.run([slm, "logits", model, "--tokens", tok.read_text(), "--out", out],
                       check=True, capture_output=True)
        logits["slmpack"] = np.load(out)
        for name, py in builds:
            out = tmp / f"{name}.npy"
            subprocess.run([py, "-c", LLAMA, model, tok, out], check=True, capture_output=True)
            logits[f"llama.cpp {name}"] = np.load(out)
    n = len(logits["slmpack"])
    print(f"{pathlib.Path(model).name}, {n} positions\n")
    print("| a | b | top-1 agreement | bit-identical positions | mean \\|Δlogit\\| | max \\|Δlogit\\| |")
    print("|---|---|---|---|---|---|")
    for a, b in itertools.combinations(logits, 2):
        x, y = logits[a], logits[b]
        err = np.abs(x - y)
        agree = float((x.argmax(1) == y.argmax(1)).mean())
        same = int((err.max(1) == 0).sum())
        print(f"| {a} | {b} | {agree:.4f} | {same} / {n} | {err.mean():.4f} | {err.max():.3f} |")


if __name__ == "__main__":
    main()
