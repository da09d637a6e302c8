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
stamp="$VENV/.slmpack-requirements"
if [ -f "$stamp" ] && cmp -s "$stamp" tests/requirements-oracle.txt; then
  exit 0
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" \
  "$VENV/bin/python" -m pip install -q -r tests/requirements-oracle.txt
"$VENV/bin/python" -c "import gguf, llama_cpp, tokenizers, safetensors, numpy; print('oracles ready: gguf', gguf.__version__ if hasattr(gguf,'__version__') else '', 'llama_cpp', llama_cpp.__version__)"
cp tests/requirements-oracle.txt "$stamp"
