#!/usr/bin/env bash
# CPU figures of this port and PyTorch side by side, run alternately on the same machine:
# one SD1.5-architecture UNet CFG step (batch 2, latent 4×32×32) and the tiny 25-step
# txt2img pipeline, on ndarray and flex f32 against PyTorch-CPU f32. Extra arguments go to
# both side_by_side.py calls (e.g. --rounds 5 --wait-idle 600).
# Needs the fixture environment (tools/fixtures/setup_venv.sh) for the PyTorch half.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
"$root/tools/fixtures/setup_venv.sh" > /dev/null
cargo build --release --example bench
py="$root/tools/fixtures/.venv/bin/python"
date -u; uname -m; nproc; grep -m1 "model name" /proc/cpuinfo || true
"$py" tools/bench/side_by_side.py --backends ndarray,flex --config sd15 --latent 32 \
    --steps 0 --only unet "$@"
"$py" tools/bench/side_by_side.py --backends ndarray,flex --config tiny --steps 25 \
    --only pipeline "$@"
