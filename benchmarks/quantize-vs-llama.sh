#!/usr/bin/env bash
# SmolLM2-135M F16 GGUF -> Q8_0, Q4_0, Q4_K_M: wall time and peak RSS of `slmpack quantize`
# vs llama.cpp's own quantizer (llama_model_quantize through llama-cpp-python), same input
# file, same thread count, run back to back. Prints a Markdown table for docs/performance.md.
# The llama.cpp side runs in Python (start-up + `import llama_cpp` included, measured alone and
# also subtracted in the "w/o Python" column); "data equal" compares every tensor's type and
# bytes of the two outputs with gguf-py.
#
#   bash benchmarks/quantize-vs-llama.sh            # THREADS=2 by default
#
# Env: SLMPACK_BIN (default target/release/slmpack, built if missing), SLMPACK_PYTHON
# (default .venv/bin/python), SLMPACK_SMOLLM2 (the Q4_1 GGUF; default: tests/fetch-model.sh),
# THREADS, WORK (scratch folder), RUNS (repetitions, best of; default 3).
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS="${THREADS:-2}"
RUNS="${RUNS:-3}"
PY="${SLMPACK_PYTHON:-$PWD/.venv/bin/python}"
BIN="${SLMPACK_BIN:-$PWD/target/release/slmpack}"
[ -x "$BIN" ] || cargo build --release -p slmpack
SRC="${SLMPACK_SMOLLM2:-$(bash tests/fetch-model.sh)}"
WORK="${WORK:-$(mktemp -d)}"
mkdir -p "$WORK"
F16="$WORK/smollm2-135m-f16.gguf"
# The F16 GGUF both quantizers start from (the model ships as Q4_1; this widens it to F16).
[ -s "$F16" ] || "$BIN" quantize "$SRC" --type f16 --allow-requantize -o "$F16" -q >/dev/null

declare -A LLAMA_FTYPE=([q8_0]=7 [q4_0]=2 [q4_k_m]=15)

measure() { # command... -> "wall_seconds kib cpu_seconds" (best of RUNS each)
  local best_s="" best_k="" best_c=""
  for _ in $(seq "$RUNS"); do
    /usr/bin/time -v "$@" >/dev/null 2>"$WORK/time.txt"
    local wall kib s c
    wall=$(grep "Elapsed (wall clock)" "$WORK/time.txt" | awk '{print $NF}')
    c=$(awk -F: '/User time|System time/ {t += $2} END {print t}' "$WORK/time.txt")
    if [ -z "$best_c" ] || awk "BEGIN{exit !($c < $best_c)}"; then best_c=$c; fi
    kib=$(grep "Maximum resident set size" "$WORK/time.txt" | awk '{print $NF}')
    s=$(echo "$wall" | awk -F: '{ if (NF==3) print $1*3600+$2*60+$3; else print $1*60+$2 }')
    if [ -z "$best_s" ] || awk "BEGIN{exit !($s < $best_s)}"; then best_s=$s; fi
    if [ -z "$best_k" ] || [ "$kib" -lt "$best_k" ]; then best_k=$kib; fi
  done
  echo "$best_s $best_k $best_c"
}

echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; threads: $THREADS; best of $RUNS"
echo "slmpack: $("$BIN" --version); llama.cpp via llama-cpp-python $("$PY" -c 'import llama_cpp; print(llama_cpp.__version__)')"
echo "input: $F16 ($(stat -c %s "$F16") bytes)"
read -r py_s py_k py_c < <(measure "$PY" -c "import llama_cpp")
echo "python + import llama_cpp alone: ${py_s}s wall, ${py_c}s CPU, $((py_k / 1024)) MiB (included in the llama.cpp numbers below)"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| type | slmpack wall s | llama.cpp wall s | wall speed-up | w/o Python | slmpack CPU s | llama.cpp CPU s | CPU ratio | slmpack peak RSS MiB | llama.cpp peak RSS MiB | RSS ratio | data equal |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
for t in q8_0 q4_0 q4_k_m; do
  ours="$WORK/slmpack-$t.gguf"
  theirs="$WORK/llama-$t.gguf"
  read -r s_s s_k s_c < <(measure "$BIN" quantize "$F16" --type "$t" -o "$ours" -q -j "$THREADS")
  read -r l_s l_k l_c < <(measure "$PY" -c "
import ctypes, llama_cpp
p = llama_cpp.llama_model_quantize_default_params()
p.ftype = ${LLAMA_FTYPE[$t]}
p.nthread = $THREADS
raise SystemExit(llama_cpp.llama_model_quantize(b'$F16', b'$theirs', ctypes.byref(p)))")
  same=$("$PY" -c "
import gguf
a, b = gguf.GGUFReader('$ours'), gguf.GGUFReader('$theirs')
ta, tb = {t.name: t for t in a.tensors}, {t.name: t for t in b.tensors}
ok = ta.keys() == tb.keys() and all(
    ta[n].tensor_type == tb[n].tensor_type and ta[n].data.tobytes() == tb[n].data.tobytes() for n in ta)
print('yes' if ok else 'NO')")
  awk -v t="$t" -v ss="$s_s" -v ls="$l_s" -v ps="$py_s" -v sc="$s_c" -v lc="$l_c" -v sk="$s_k" -v lk="$l_k" -v same="$same" 'BEGIN {
    printf "| %s | %.2f | %.2f | %.1fx | %.1fx | %.2f | %.2f | %.1fx | %.0f | %.0f | %.2f | %s |\n", t, ss, ls, ls/ss, (ls-ps)/ss, sc, lc, lc/sc, sk/1024, lk/1024, sk/lk, same }'
done
