#!/usr/bin/env bash
# The test command: installs what the tests need (Rust deps via cargo, the Python oracles into
# .venv), then runs the Rust test suites and the oracle tests against gguf-py and llama.cpp.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/setup-python.sh
export SLMPACK_SMOLLM2="$(bash tests/fetch-model.sh)"
export SLMPACK_PYTHON="${SLMPACK_VENV:-$PWD/.venv}/bin/python"
cargo build --workspace --bins
export SLMPACK_BIN="$PWD/target/debug/slmpack"
cargo test --workspace
"$SLMPACK_PYTHON" -m pytest -q tests/oracle
bash tests/aarch64.sh
