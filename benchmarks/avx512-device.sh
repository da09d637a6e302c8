#!/usr/bin/env bash
# Checks and measures the AVX-512 / AVX-512 VNNI kernels on a machine that has them, from
# binaries built elsewhere (the lent device machines have no Rust toolchain and no network).
#
#   bash benchmarks/avx512-device.sh build   # here: static test and bench binaries -> devbin/
#   bash benchmarks/avx512-device.sh run     # there: tests on every ISA, then kernel benchmarks
#
# `run` writes everything to $OUT (or ./avx512-out): cpu.txt, tests.txt, bench-*.txt. The kernel
# tests must exercise scalar, avx2, avx512 and avx512vnni (SLMPACK_EXPECT_ISAS), so a CPU
# without AVX-512 VNNI fails them instead of passing on AVX2 alone.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=devbin
TRIPLE=x86_64-unknown-linux-gnu

build() {
    export RUSTFLAGS="-C target-feature=+crt-static" CARGO_TARGET_DIR=target/static
    local msgs
    msgs=$(mktemp)
    cargo test --release --target "$TRIPLE" -p slmpack-kernels -p slmpack --no-run \
        --message-format=json >"$msgs"
    cargo bench --target "$TRIPLE" -p slmpack-kernels --no-run --message-format=json >>"$msgs"
    cargo build --release --target "$TRIPLE" -p slmpack
    rm -rf "$BIN" && mkdir -p "$BIN"
    python3 - "$msgs" "$BIN" <<'EOF'
import json, shutil, subprocess, sys
msgs, out = sys.argv[1], sys.argv[2]
for line in open(msgs):
    m = json.loads(line)
    if m.get("reason") != "compiler-artifact" or not m.get("executable"):
        continue
    t = m["target"]
    if t["name"] in ("build-script-build",) or "proc-macro" in t["kind"]:
        continue
    pid = m["package_id"]
    crate = "slmpack-kernels" if "crates/kernels" in pid else "cli" if "crates/cli" in pid else ""
    name = f"{crate}--{t['name']}--{t['kind'][0]}"
    if not crate or (crate == "cli" and t["name"] != "integration"):
        continue
    if t["name"] == "ggml_cpu":
        continue  # needs llama.cpp's libggml-cpu.so from .venv
    shutil.copy(m["executable"], f"{out}/{name}")
    subprocess.run(["strip", f"{out}/{name}"], check=True)
    print(name)
EOF
    cp "target/static/$TRIPLE/release/slmpack" "$BIN/slmpack"
    strip "$BIN/slmpack"
    # the integration tests run the binary at the path cargo baked into them
    grep -ao "/[A-Za-z0-9_./-]*/target/static/$TRIPLE/[a-z]*/slmpack" "$BIN"/*integration* |
        sed 's/^[^:]*://' | sort -u >"$BIN/slmpack.path"
    rm -f "$msgs"
    du -sh "$BIN"
}

run() {
    local out="${OUT:-avx512-out}"
    mkdir -p "$out"
    { nproc; grep -m1 "model name" /proc/cpuinfo || true
      grep -m1 "^flags" /proc/cpuinfo | tr ' ' '\n' | grep -E '^avx' | tr '\n' ' ' || true; echo; } \
        >"$out/cpu.txt"
    cat "$out/cpu.txt"
    local want=scalar,avx2,avx512,avx512vnni
    {
        for t in "$BIN"/slmpack-kernels--*--test "$BIN"/slmpack-kernels--slmpack_kernels--lib; do
            [ -e "$t" ] || continue
            echo "== $t"
            SLMPACK_EXPECT_ISAS=$want "$t" --test-threads 8 2>&1 | grep -vE '^test .* ok$' || true
        done
        local baked
        baked=$(head -1 "$BIN/slmpack.path")
        if mkdir -p "$(dirname "$baked")" && cp "$BIN/slmpack" "$baked"; then
            echo "== integration tests (slmpack at $baked; default ISA: the best this CPU runs)"
            "$BIN"/cli--integration--test --test-threads 8 2>&1 | grep -vE '^test .* ok$' || true
        fi
    } 2>&1 | tee "$out/tests.txt"
    local bench
    bench=$(ls "$BIN"/slmpack-kernels--matmul--bench)
    local crit=(--bench --warm-up-time 0.3 --measurement-time 1 --noplot)
    # every x86 set, one thread, decode shapes and the prefill shape
    RAYON_NUM_THREADS=1 SLMPACK_BENCH_ISAS=avx2,avx512,avx512vnni \
        SLMPACK_BENCH_TYPES=q8_0,q4_0,q4_1,q5_0,q4_k,q6_k SLMPACK_BENCH_SHAPES=576x1536,576x49152 \
        "$bench" "${crit[@]}" 'gemv/.*/576x49152|gemm64/.*/576x1536' 2>&1 |
        grep -E 'gemv|gemm|time:|thrpt:|kernels:' | tee "$out/bench-isas.txt" || true
    # prefill tile shapes on the widest set
    for tile in 2x4 3x4 4x4 4x3 3x3; do
        echo "== SLMPACK_TILE=$tile"
        RAYON_NUM_THREADS=1 SLMPACK_TILE=$tile SLMPACK_BENCH_ISAS=avx512vnni \
            SLMPACK_BENCH_TYPES=q8_0,q4_0,q4_1,q5_0,q4_k,q6_k SLMPACK_BENCH_SHAPES=576x1536 \
            "$bench" "${crit[@]}" 'gemm64/.*/576x1536' 2>&1 | grep -E 'gemm|thrpt:' || true
    done 2>&1 | tee "$out/bench-tiles.txt"
}

case "${1:-}" in
build) build ;;
run) run ;;
*) echo "usage: $0 build|run" >&2; exit 2 ;;
esac
