#!/usr/bin/env bash
# Builds slmpack-kernels for aarch64 and runs its tests under qemu-user twice:
#   QEMU_CPU=max        (NEON + dotprod: both the NEON and the sdot kernels run)
#   QEMU_CPU=cortex-a53 (NEON only: the fallback runs, dotprod must not be detected)
# Each run asserts the exact set of instruction sets exercised (SLMPACK_EXPECT_ISAS).
# The outside oracle: llama.cpp's ggml-cpu from the llama-cpp-python sdist that
# tests/requirements-oracle.txt pins, cross-built for aarch64 twice (armv8.2-a+dotprod, and plain
# armv8-a for the NEON-only run); crates/kernels/tests/ggml_cpu.rs loads it under QEMU and
# requires our kernels to give its activation bytes and dot products bit for bit.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v qemu-aarch64 >/dev/null || need+=(qemu-user)
command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu)
command -v aarch64-linux-gnu-g++ >/dev/null || need+=(g++-aarch64-linux-gnu)
command -v cmake >/dev/null || need+=(cmake)
[ -d /usr/aarch64-linux-gnu/lib ] || need+=(libc6-dev-arm64-cross)
if [ ${#need[@]} -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -q
    $SUDO apt-get install -y -q "${need[@]}"
fi
rustup target list --installed | grep -qx aarch64-unknown-linux-gnu \
    || rustup target add aarch64-unknown-linux-gnu

export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"
# a separate target dir keeps the native build's artifacts intact
export CARGO_TARGET_DIR="${SLMPACK_AARCH64_TARGET_DIR:-$PWD/target/aarch64-cross}"

# llama.cpp's ggml-cpu for aarch64, built into .cache/ once per version and architecture
ggml_version=$(sed -n 's/^llama-cpp-python==//p' tests/requirements-oracle.txt)
ggml_cache="$PWD/.cache/llama-cpp-python-$ggml_version"
ggml_src="$ggml_cache/llama_cpp_python-$ggml_version/vendor/llama.cpp/ggml"
if [ ! -d "$ggml_src" ]; then
    mkdir -p "$ggml_cache"
    # PyPI's simple index gives the sdist's URL with its sha256
    link=$(curl -fsSL https://pypi.org/simple/llama-cpp-python/ |
        grep -o "https://[^\"]*/llama_cpp_python-$ggml_version\.tar\.gz#sha256=[0-9a-f]*" | head -1)
    [ -n "$link" ] || { echo "error: no sdist of llama-cpp-python $ggml_version on PyPI" >&2; exit 1; }
    curl -fsSL "${link%%#*}" -o "$ggml_cache/sdist.tgz.part"
    echo "${link##*=}  $ggml_cache/sdist.tgz.part" | sha256sum -c --quiet
    tar xzf "$ggml_cache/sdist.tgz.part" -C "$ggml_cache"
    rm "$ggml_cache/sdist.tgz.part"
    # the sdist leaves out the pkg-config template ggml's CMakeLists configures
    touch "$ggml_src/ggml.pc.in"
fi
build_ggml() {
    local dir="$ggml_cache/build-$1"
    if [ ! -f "$dir/src/libggml-cpu.so" ]; then
        cmake -S "$ggml_src" -B "$dir" -DCMAKE_SYSTEM_NAME=Linux -DCMAKE_SYSTEM_PROCESSOR=aarch64 \
            -DCMAKE_C_COMPILER=aarch64-linux-gnu-gcc -DCMAKE_CXX_COMPILER=aarch64-linux-gnu-g++ \
            -DGGML_NATIVE=OFF -DGGML_CPU_ARM_ARCH="$1" -DGGML_OPENMP=OFF -DBUILD_SHARED_LIBS=ON \
            -DCMAKE_BUILD_TYPE=Release -DGGML_BUILD_TESTS=OFF -DGGML_BUILD_EXAMPLES=OFF >/dev/null
        cmake --build "$dir" --target ggml-cpu -j "$(nproc)" >/dev/null
    fi
    echo "$dir/src"
}
ggml_dotprod=$(build_ggml armv8.2-a+dotprod)
ggml_neon=$(build_ggml armv8-a)

run() {
    echo "== aarch64 kernels under QEMU_CPU=$1 (expect: $2; ggml-cpu oracle: $3) =="
    CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu -E LD_LIBRARY_PATH=$3" \
        SLMPACK_GGML_CPU_LIB="$3/libggml-cpu.so" QEMU_CPU="$1" SLMPACK_EXPECT_ISAS="$2" \
        cargo test -p slmpack-kernels --target aarch64-unknown-linux-gnu -- --nocapture --test-threads 2 \
        2>&1 | grep -vE '^\s+(Compiling|Running|Doc-tests)' 
    return "${PIPESTATUS[0]}"
}
run max scalar,neon,dotprod "$ggml_dotprod"
run cortex-a53 scalar,neon "$ggml_neon"
