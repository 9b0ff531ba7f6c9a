#!/usr/bin/env bash
# Fuzzes the readers of user files with cargo-fuzz (libFuzzer, AddressSanitizer).
#
#   fuzz/run.sh [SECONDS] [TARGET...]      default: 600 s for each of the five targets
#
# The growing corpus lives in fuzz/corpus/<target> (ignored by git), crashes in
# fuzz/artifacts/<target>; the committed starting points are fuzz/seeds/<target>. A crash
# input belongs in fuzz/regressions/<target>/ once fixed: the test suite replays it.
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-600}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(safetensors checkpoint config tokenizer image)
fi

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
# libFuzzer's instrumentation needs unstable rustc flags: a nightly toolchain where one is
# installed, else the stable compiler with its unstable features unlocked.
toolchain=()
if rustup run nightly rustc --version >/dev/null 2>&1; then
    toolchain=(+nightly)
else
    export RUSTC_BOOTSTRAP=1
fi
# The targets write their input to a scratch file: keep it in memory where possible.
if [ -d /dev/shm ]; then
    export TMPDIR=/dev/shm
fi

cargo "${toolchain[@]}" fuzz build --release
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target"
    echo "== $target: ${seconds} s"
    cargo "${toolchain[@]}" fuzz run --release "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -malloc_limit_mb=1024 \
        -max_len=65536 -timeout=20 -print_final_stats=1 2>&1 | tee "corpus/$target.log" |
        grep -E "^(#[0-9]+ +(DONE|INITED)|==|stat::|SUMMARY|Done)" || true
done
