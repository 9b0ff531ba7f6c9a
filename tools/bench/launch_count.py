"""Counts the GPU kernels one component step launches, by kind, with cubecl's execution log.

    cargo build --release --features wgpu --example bench
    python3 tools/bench/launch_count.py --backend wgpu --config sd15 --latent 8 --only unet

Runs `examples/bench.rs` three times in a scratch folder whose `cubecl.toml` turns on cubecl's
minimal profiling log (one `Executing <kernel>` line per launch): once to fill a private kernel
cache (so autotuning launches nothing later), then with one and with two timed runs. The
difference between the last two is what one run of the component launches (model creation and
the untimed warm-up run cancel out). Launch counts do not depend on the device's speed, so
lavapipe (wgpu on a CPU) gives the same fusion decisions as a GPU; convolution and matmul kernel
choices come from autotuning and may differ between devices.
"""

import argparse
import collections
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def kernels(log):
    """The kernel names of an execution log, without runtime suffix and launch parameters."""
    names = collections.Counter()
    if log.exists():
        for line in log.read_text().splitlines():
            if line.startswith("Executing "):
                parts = line[len("Executing ") :].split(" | ")
                if parts[-1].endswith("Runtime"):
                    parts.pop()
                names[" / ".join(parts[:2])] += 1
    return names


def run(bench, args, runs, scratch, cache):
    log = scratch / "exec.log"
    log.unlink(missing_ok=True)
    env = dict(os.environ, BENCH_RUNS=str(runs), PROMPT_DIFFUSION_CACHE_DIR=str(cache))
    out = subprocess.run([bench, *args], cwd=scratch, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"{bench} failed:\n{out.stdout}\n{out.stderr}")
    return kernels(log)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--backend", default="wgpu", choices=["wgpu", "cuda"])
    p.add_argument("--precision", default="f32", choices=["f32", "f16", "bf16"])
    p.add_argument("--config", default="sd15", choices=["tiny", "sd15"])
    p.add_argument("--latent", type=int, default=8)
    p.add_argument("--only", default="unet", help="one component of examples/bench.rs")
    p.add_argument("--bin", default=str(ROOT / "target" / "release" / "examples" / "bench"))
    a = p.parse_args()
    args = [a.backend, a.precision, a.config, str(a.latent), "0", a.only]
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        (scratch / "cubecl.toml").write_text(
            "[profiling.logger]\n"
            'level = "minimal"\n'
            f'file = "{scratch / "exec.log"}"\n'
            "append = true\n"
        )
        cache = scratch / "kernels"
        run(a.bin, args, 1, scratch, cache)
        one = run(a.bin, args, 1, scratch, cache)
        two = run(a.bin, args, 2, scratch, cache)
    step = {k: two[k] - one[k] for k in two.keys() | one.keys()}
    step = {k: v for k, v in step.items() if v}
    print(f"{a.only} on {a.backend} {a.precision}, config {a.config}, latent {a.latent}: "
          f"{sum(step.values())} kernel launches per run")
    print("\n| launches | kernel |\n|---|---|")
    for name, n in sorted(step.items(), key=lambda kv: (-kv[1], kv[0])):
        print(f"| {n} | `{name}` |")


if __name__ == "__main__":
    main()
