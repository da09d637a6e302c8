#!/usr/bin/env bash
# Builds slmpack-kernels for aarch64 and runs its tests under qemu-user twice:
#   QEMU_CPU=max        (NEON + dotprod: both the NEON and the sdot kernels run)
#   QEMU_CPU=cortex-a53 (NEON only: the fallback runs, dotprod must not be detected)
# Each run asserts the exact set of instruction sets exercised (SLMPACK_EXPECT_ISAS).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v qemu-aarch64 >/dev/null || need+=(qemu-user)
command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu)
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

run() {
    echo "== aarch64 kernels under QEMU_CPU=$1 (expect: $2) =="
    QEMU_CPU="$1" SLMPACK_EXPECT_ISAS="$2" \
        cargo test -p slmpack-kernels --target aarch64-unknown-linux-gnu -- --nocapture --test-threads 2 \
        2>&1 | grep -vE '^\s+(Compiling|Running|Doc-tests)' 
    return "${PIPESTATUS[0]}"
}
run max scalar,neon,dotprod
run cortex-a53 scalar,neon
