"""Runs `examples/bench.rs` and `torch_components.py` alternately on the same machine and prints a
Markdown table of medians with ratios (Rust time / PyTorch time; below 1 means Rust is faster).

    python tools/bench/side_by_side.py --backends ndarray,flex --config sd15 --latent 32 \
        --steps 0 --only unet --rounds 3
    python tools/bench/side_by_side.py --config tiny --steps 25 --only pipeline --rounds 3
    python tools/bench/side_by_side.py --backends cuda --precision f16 --device cuda --config sd15

Build the example first (`cargo build --release --example bench`, with `--features cuda` or
`wgpu` for GPUs); `tools/bench/cpu_side_by_side.sh` does both for the CPU. Each round runs every
Rust backend once and PyTorch once, in that order; every figure in the table is the median over
rounds of each run's own median. The load average and the number of running `rustc` processes are
printed before each run (`--wait-idle S` first waits up to S seconds for no `rustc`).
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TORCH_DTYPE = {"f32": "fp32", "f16": "fp16"}
NAMES = {
    "clip_text_ms": "CLIP text encoder, 2 × 77 tokens",
    "unet_step_ms": "UNet CFG step, batch 2",
    "controlnet_unet_step_ms": "ControlNet + UNet CFG step, batch 2",
    "vae_decode_ms": "VAE decode",
    "vae_encode_ms": "VAE encode",
    "pipeline_ms": "txt2img, whole generation",
    "peak_rss_mib": "peak resident memory (MiB)",
    "peak_device_mib": "peak device memory (MiB)",
}


def rustc_count():
    out = subprocess.run(["pgrep", "-c", "rustc"], capture_output=True, text=True)
    return int(out.stdout.strip() or 0)


def load():
    return os.getloadavg()[0], rustc_count()


def wait_idle(seconds):
    deadline = time.time() + seconds
    while rustc_count() > 0 and time.time() < deadline:
        time.sleep(15)


def run(cmd, env=None):
    avg, rustc = load()
    print(f"$ {' '.join(cmd)}   # load {avg:.2f}, rustc processes {rustc}", flush=True)
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    if out.returncode != 0:
        sys.exit(f"failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    results = {}
    for line in out.stdout.splitlines():
        if line.startswith("result "):
            key, value = line[len("result ") :].split("=", 1)
            results[key] = float(value)
        elif line and not line.startswith("result"):
            print("   ", line)
    return results, (avg, rustc)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--backends", default="ndarray,flex")
    p.add_argument("--precision", default="f32", choices=["f32", "f16"])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="PyTorch device")
    p.add_argument("--config", default="tiny", choices=["tiny", "sd15"])
    p.add_argument("--latent", type=int, default=None)
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--only", default="clip,unet,controlnet,decode,encode,pipeline")
    p.add_argument("--runs", type=int, default=None, help="timed runs inside each process")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--wait-idle", type=float, default=0)
    p.add_argument("--bin", default=str(ROOT / "target" / "release" / "examples" / "bench"))
    p.add_argument("--python", default=str(ROOT / "tools" / "fixtures" / ".venv" / "bin" / "python"))
    args = p.parse_args()
    latent = args.latent or (16 if args.config == "tiny" else 64)
    backends = args.backends.split(",")
    env = dict(os.environ)
    if args.runs:
        env["BENCH_RUNS"] = str(args.runs)
    env.setdefault("TORCH_THREADS", str(os.cpu_count()))

    rust_cmd = lambda b: [args.bin, b, args.precision, args.config, str(latent), str(args.steps), args.only]
    torch_cmd = [args.python, str(ROOT / "tools" / "bench" / "torch_components.py"),
                 "--device", args.device, "--dtype", TORCH_DTYPE[args.precision],
                 "--config", args.config, "--latent", str(latent), "--steps", str(args.steps),
                 "--only", args.only]
    if args.runs:
        torch_cmd += ["--runs", str(args.runs)]

    columns = backends + ["torch"]
    samples = {c: {} for c in columns}
    loads = []
    for r in range(args.rounds):
        print(f"== round {r + 1}/{args.rounds}", flush=True)
        for column in columns:
            if args.wait_idle:
                wait_idle(args.wait_idle)
            cmd = torch_cmd if column == "torch" else rust_cmd(column)
            results, measured = run(cmd, env)
            loads.append(measured)
            for key, value in results.items():
                samples[column].setdefault(key, []).append(value)

    med = {c: {k: statistics.median(v) for k, v in s.items()} for c, s in samples.items()}
    keys = [k for k in NAMES if any(k in med[c] for c in columns)]
    keys += sorted({k for c in columns for k in med[c]} - set(keys))
    header = ["work"] + [f"{c} {args.precision}" for c in backends] + [f"PyTorch {args.device} {args.precision}"]
    header += [f"{c} / PyTorch" for c in backends]
    print()
    print(f"config {args.config}, latent {latent} ({latent * 8}² pixels), steps {args.steps}, "
          f"{args.rounds} rounds; load average {min(l[0] for l in loads):.2f}–{max(l[0] for l in loads):.2f}, "
          f"rustc processes {min(l[1] for l in loads)}–{max(l[1] for l in loads)}")
    print()
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for key in keys:
        torch_value = med["torch"].get(key)
        row = [NAMES.get(key, key)]
        row += [f"{med[c][key]:.1f}" if key in med[c] else "—" for c in backends]
        row.append(f"{torch_value:.1f}" if torch_value is not None else "—")
        for c in backends:
            ok = key in med[c] and torch_value
            row.append(f"{med[c][key] / torch_value:.2f}×" if ok else "—")
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
