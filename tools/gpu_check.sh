#!/usr/bin/env bash
# Every GPU figure of docs/performance.md in one call, in two halves.
#
#   tools/gpu_check.sh build [cuda|wgpu]    # here: build, strip and bundle (no GPU needed)
#   tools/gpu_check.sh run [--tiny]          # on the GPU machine, from the repository root
#
# `build` compiles examples/bench and examples/gpu_check for the backend (default cuda; burn-cuda
# needs no CUDA toolkit to build), strips them into target/gpu-check/ (GPU_CHECK_DIR), and adds the
# PyTorch side: a copy of the shared torch_baseline.py (TORCH_BASELINE, default
# ../shared/tools/torch_baseline.py) and the wheels the GPU machine lacks (diffusers and
# importlib_metadata; its image has torch and transformers). The bundle must stay under the
# 64 MiB a device call carries; `build` prints its size. GPU_CHECK_PROFILE picks the cargo profile
# (release; `dev` reuses the test build for a quick proof of the script).
#
# `run` (at most ~8 minutes of wall time on an H100) writes to $OUT (default target/gpu-check/out):
#   1. parity.md    — tiny-sd and Prompt Diffusion images remade on the device against the committed
#                     references: f32 within 2/255, f16 without NaN and within 8/255;
#   2. bench-*.log  — examples/bench at SD1.5 shapes in f16 and f32 (CLIP, UNet CFG step,
#                     ControlNet + UNet, VAE decode/encode, the 25-step 512² image, peak memory);
#   3. the attention [2,8,4096,40] row (bench's `attention`), beside PyTorch's SDPA;
#   4. peak memory (bench's pool reservation);
#   5. first-image.log — the first image of a cold process (empty kernel cache) and of a warm one;
#   then torch.log (torch_baseline.py on the same GPU, when PyTorch sees one) and rows.md, the
#   Markdown rows of docs/performance.md's GPU table with PyTorch's figures beside ours.
# `--tiny` runs the same steps at tiny shapes (the proof of the script on wgpu + lavapipe here).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
bundle="$(realpath -m "${GPU_CHECK_DIR:-target/gpu-check}")"

build() {
    local backend="${1:-cuda}" profile="${GPU_CHECK_PROFILE:-release}"
    cargo build --profile "$profile" --features "$backend" --example bench --example gpu_check
    local out="target/$([ "$profile" = dev ] && echo debug || echo "$profile")/examples"
    mkdir -p "$bundle/wheels"
    # Stripped and xz-compressed: about 12 MiB each instead of 70.
    for bin in bench gpu_check; do
        cp "$out/$bin" "$bundle/$bin"
        strip "$bundle/$bin"
        xz -T0 -6 -f "$bundle/$bin"
    done
    echo "$backend" > "$bundle/backend"
    local baseline="${TORCH_BASELINE:-$root/../shared/tools/torch_baseline.py}"
    if [ -f "$baseline" ]; then
        cp "$baseline" "$bundle/torch_baseline.py"
    else
        echo "warning: $baseline not found: run will skip PyTorch's figures" >&2
    fi
    if ! ls "$bundle"/wheels/diffusers-*.whl > /dev/null 2>&1; then
        local pip="python3 -m pip"
        [ -x tools/fixtures/.venv/bin/python ] && pip="tools/fixtures/.venv/bin/python -m pip"
        $pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
            -d "$bundle/wheels" diffusers==0.42.1 importlib_metadata ||
            echo "warning: no wheels downloaded: run will skip PyTorch's figures" >&2
    fi
    du -sh "$bundle"
    local bytes
    bytes=$(du -sb "$bundle" | cut -f1)
    if [ "$bytes" -gt $((64 * 1024 * 1024)) ]; then
        echo "error: the bundle is over 64 MiB" >&2
        exit 1
    fi
}

# `result key=value` lines of a log → the value of `key` (empty when absent).
value() { sed -n "s/^result $2=//p" "$1" | tail -n 1; }

run() {
    local tiny=0
    [ "${1:-}" = --tiny ] && tiny=1
    local out="${OUT:-$bundle/out}" backend bin
    backend="$(cat "$bundle/backend")"
    bin="$(mktemp -d)"
    for b in bench gpu_check; do
        python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
            "$bundle/$b.xz" "$bin/$b"
        chmod +x "$bin/$b"
    done
    if [ "$backend" = wgpu ] && ! ls /usr/share/vulkan/icd.d/*.json > /dev/null 2>&1; then
        # No Vulkan driver: Mesa's lavapipe runs wgpu on the CPU (as .ci/run installs it).
        local sudo=""
        [ "$(id -u)" -ne 0 ] && sudo=sudo
        $sudo apt-get update -q && $sudo apt-get install -y -q --no-install-recommends mesa-vulkan-drivers
    fi
    mkdir -p "$out"
    out="$(cd "$out" && pwd)"
    local size=sd15 latent=64 steps=25
    [ $tiny = 1 ] && size=tiny latent=16 steps=5
    local started=$SECONDS
    echo "== $(date -u) commit $(git rev-parse --short HEAD 2> /dev/null || echo ?) backend $backend"
    command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"

    echo "== 1. parity"
    local failed=0
    : > "$out/parity.log"
    for precision in f32 f16; do
        "$bin/gpu_check" parity "$backend" "$precision" 2>&1 | tee -a "$out/parity.log" || failed=1
    done
    {
        echo "| parity case | max pixel difference | bound | result |"
        echo "|---|---|---|---|"
        grep '^| ' "$out/parity.log" || true
    } > "$out/parity.md"

    echo "== 5. first image, cold then warm"
    local cache
    cache="$(mktemp -d)"
    for run in cold warm; do
        PROMPT_DIFFUSION_CACHE_DIR="$cache" "$bin/gpu_check" first-image "$backend" f16 \
            "$size" "$latent" "$steps" 2>&1 | tee "$out/first-image-$run.log"
    done

    echo "== 2-4. components, attention, pipeline, peak memory"
    for precision in f16 f32; do
        PROMPT_DIFFUSION_CACHE_DIR="$cache" BENCH_RUNS="${BENCH_RUNS:-5}" "$bin/bench" "$backend" \
            "$precision" "$size" "$latent" "$steps" 2>&1 | tee "$out/bench-$precision.log"
    done

    echo "== PyTorch on the same machine"
    : > "$out/torch.log"
    if [ $tiny = 0 ] && [ -f "$bundle/torch_baseline.py" ] &&
        python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2> /dev/null; then
        local site
        site="$(mktemp -d)"
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" \
            "$bundle"/wheels/*.whl
        (cd "$out" && OUT="$out" COMPILE=0 PYTHONPATH="$site" PYTHONUNBUFFERED=1 timeout 240 \
            python3 "$bundle/torch_baseline.py" && timeout 60 python3 "$root/tools/bench/torch_sdpa.py") 2>&1 |
            tee "$out/torch.log" || echo "PyTorch baseline failed (see torch.log)"
    else
        echo "skipped: no CUDA device for PyTorch (or --tiny)" | tee "$out/torch.log"
    fi

    rows "$out" > "$out/rows.md"
    cat "$out/rows.md"
    echo "== done in $((SECONDS - started)) s"
    if [ $failed = 1 ]; then
        echo "parity FAILED (see parity.log)" >&2
        return 1
    fi
}

# PyTorch's figure for a name printed by torch_baseline.py (`name: 1.23 ms`), or "—".
torch_ms() {
    local v
    v="$(sed -n "s/^$2: \([0-9.]*\) ms.*/\1/p" "$1/torch.log" | head -n 1)"
    echo "${v:-—}"
}

# A number from torch_baseline.json in GiB, or "—".
torch_json() {
    python3 -c "import json,sys; print(f'{json.load(open(sys.argv[1]))[sys.argv[2]]:.2f} GiB')" \
        "$1/torch_baseline.json" "$2" 2> /dev/null || echo "—"
}

rows() {
    local out="$1" f16="$1/bench-f16.log" f32="$1/bench-f32.log" gpu
    gpu="$(cut -d, -f1 "$out/gpu.txt" 2> /dev/null || echo "$(cat "$bundle/backend") device")"
    echo "Measured on $gpu by tools/gpu_check.sh ($(date -u +%Y-%m-%d))."
    echo
    echo "| figure | ours f16 | ours f32 | PyTorch f16 | PyTorch f32 |"
    echo "|---|---|---|---|---|"
    local key label torch
    for key in unet_step_ms controlnet_unet_step_ms vae_decode_ms vae_encode_ms clip_text_ms attention_ms pipeline_ms; do
        case $key in
        unet_step_ms) label="UNet CFG step (batch 2)" torch=unet_b2_64 ;;
        controlnet_unet_step_ms) label="ControlNet + UNet step" torch=controlnet_unet_b2_64 ;;
        vae_decode_ms) label="VAE decode" torch=vae_decode_512 ;;
        vae_encode_ms) label="VAE encode" torch=vae_encode_512 ;;
        clip_text_ms) label="CLIP text encoder, 2 × 77 tokens" torch=clip_text_b2 ;;
        attention_ms) label="attention (largest self-attention)" torch=attention ;;
        pipeline_ms) label="whole txt2img" torch=none ;;
        esac
        echo "| $label | $(value "$f16" "$key") ms | $(value "$f32" "$key") ms |" \
            "$(torch_ms "$out" "fp16_$torch") | $(torch_ms "$out" "fp32_$torch") |"
    done
    local peak16 peak32
    peak16="$(torch_json "$out" fp16_peak_mem_gib)" peak32="$(torch_json "$out" fp32_peak_mem_gib)"
    echo "| peak memory (ours: pool reservation; PyTorch: UNet step allocation) |" \
        "$(value "$f16" peak_device_mib) MiB | $(value "$f32" peak_device_mib) MiB | $peak16 | $peak32 |"
    echo "| first image, cold process | $(value "$out/first-image-cold.log" first_image_s) s | | | |"
    echo "| first image, warm kernel cache | $(value "$out/first-image-warm.log" first_image_s) s | | | |"
    echo
    cat "$out/parity.md"
}

case "${1:-}" in
build) build "${2:-cuda}" ;;
run) run "${2:-}" ;;
*)
    sed -n '2,25p' "$0"
    exit 2
    ;;
esac
