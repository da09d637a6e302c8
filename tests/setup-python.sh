#!/usr/bin/env bash
# Create .venv with the outside oracles the tests compare against (gguf-py, llama-cpp-python,
# tokenizers, safetensors, numpy, pytest). Idempotent: re-running only installs what changed.
# llama-cpp-python builds llama.cpp from source the first time (about 6-10 minutes on 2 cores);
# pip caches the wheel, so later runs take seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${SLMPACK_VENV:-$PWD/.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
# llama.cpp is built for one fixed x86 target, AVX2 (with FMA, F16C), not for whatever this host
# has: its f16 and f32 sums (attention) and its softmax follow the vector width it is compiled
# for, so a host that exposes AVX-512 would otherwise get another oracle (on a Zen 4 host with
# AVX-512 a native build's SmolLM2 logits differ from the AVX2 build's by 0.15 on average,
# docs/performance.md). slmpack's x86 kernels, AVX-512 ones included, give the AVX2 build's bits.
# The wheel is built without pip's cache, which does not key wheels on these flags.
llama_args=()
if [ "$(uname -m)" = x86_64 ]; then
  export CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX512=OFF"
  llama_args=(--no-cache-dir)
fi
stamp="$VENV/.slmpack-requirements"
want="$(cat tests/requirements-oracle.txt; echo "CMAKE_ARGS=${CMAKE_ARGS:-}")"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -r <(grep -v '^llama-cpp-python' tests/requirements-oracle.txt)
CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" \
  "$VENV/bin/python" -m pip install -q --force-reinstall --no-deps "${llama_args[@]}" \
  "$(grep '^llama-cpp-python' tests/requirements-oracle.txt)"
"$VENV/bin/python" -m pip install -q -r tests/requirements-oracle.txt
"$VENV/bin/python" -c "import gguf, llama_cpp, tokenizers, safetensors, numpy; print('oracles ready: gguf', gguf.__version__ if hasattr(gguf,'__version__') else '', 'llama_cpp', llama_cpp.__version__); print(llama_cpp.llama_print_system_info().decode())"
printf '%s' "$want" > "$stamp"
