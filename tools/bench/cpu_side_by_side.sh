#!/usr/bin/env bash
# CPU figures of this port and PyTorch side by side, run alternately on the same machine, for
# every row of docs/performance.md's CPU table: the SD1.5-architecture UNet CFG step (batch 2)
# at latents 4×32×32 and 4×64×64, the ControlNet + UNet step and the VAE decode at 32², and the
# tiny 25-step txt2img pipeline; burn-flex f32 everywhere, burn-ndarray f32 for the 32² step and
# the tiny pipeline, against PyTorch-CPU f32. Prints the commit and the load average with each
# table. Extra arguments go to every side_by_side.py call (e.g. --rounds 5 --wait-idle 600).
# Needs the fixture environment (tools/fixtures/setup_venv.sh) for the PyTorch half.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
"$root/tools/fixtures/setup_venv.sh" > /dev/null
cargo build --release --example bench
py="$root/tools/fixtures/.venv/bin/python"
date -u; uname -m; nproc; grep -m1 "model name" /proc/cpuinfo || true
echo "commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- crates src examples || echo ' (modified)')"
"$py" tools/bench/side_by_side.py --backends ndarray,flex --config sd15 --latent 32 \
    --steps 0 --only unet "$@"
"$py" tools/bench/side_by_side.py --backends flex --config sd15 --latent 32 \
    --steps 0 --only controlnet,decode "$@"
"$py" tools/bench/side_by_side.py --backends flex --config sd15 --latent 64 \
    --steps 0 --only unet "$@"
"$py" tools/bench/side_by_side.py --backends ndarray,flex --config tiny --steps 25 \
    --only pipeline "$@"
