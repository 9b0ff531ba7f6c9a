#!/usr/bin/env bash
# CPU figures of this port and PyTorch side by side, in one run on the same machine.
# Needs the fixture environment (tools/fixtures/setup_venv.sh) for the PyTorch half.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
"$root/tools/fixtures/setup_venv.sh" > /dev/null
cargo build --release --example bench
date -u; uname -m; nproc
for backend in ndarray flex; do
    echo "== prompt-diffusion, $backend f32"
    ./target/release/examples/bench "$backend" f32 sd15 32
    ./target/release/examples/bench "$backend" f32 tiny 16
done
echo "== PyTorch"
TORCH_THREADS="${TORCH_THREADS:-$(nproc)}" "$root/tools/fixtures/.venv/bin/python" tools/bench/torch_cpu.py
