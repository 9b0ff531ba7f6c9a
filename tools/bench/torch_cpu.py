"""PyTorch-CPU counterpart of `examples/bench.rs` (f32, threads from TORCH_THREADS, default 2).

Times, on the same machine and in the same run as the Rust figures
(`tools/bench/cpu_side_by_side.sh`): one SD1.5-size UNet CFG step (batch 2, latent 4×32×32,
random weights), and the tiny txt2img pipeline of fixtures/tiny-sd (12 steps, CFG, 128×128).
"""

import os
import statistics
import time
from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline, UNet2DConditionModel

ROOT = Path(__file__).resolve().parents[2]
torch.set_num_threads(int(os.environ.get("TORCH_THREADS", "2")))


def median_ms(fn, runs):
    fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


with torch.inference_mode():
    torch.manual_seed(0)
    unet = UNet2DConditionModel(cross_attention_dim=768).eval()
    x = torch.randn(2, 4, 32, 32)
    t = torch.tensor([500, 500])
    ctx = torch.randn(2, 77, 768)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"unet CFG step (batch 2, latent 32): {median_ms(lambda: unet(x, t, ctx), 3):.1f} ms")
    del unet
    pipe = StableDiffusionPipeline.from_pretrained(ROOT / "fixtures" / "tiny-sd", safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    run = lambda: pipe("a fox", num_inference_steps=12, guidance_scale=7.5, generator=torch.Generator().manual_seed(1))
    print(f"tiny txt2img, 12 steps with CFG, 128x128: {median_ms(run, 3):.1f} ms")
