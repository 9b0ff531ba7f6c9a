"""PyTorch/diffusers counterpart of `examples/bench.rs`: the same components at the same shapes.

    python tools/bench/torch_components.py [--device cpu|cuda] [--dtype fp32|fp16]
        [--config tiny|sd15] [--latent N] [--steps N] [--only clip,unet,...] [--runs N]

Random weights (weights do not change the speed), diffusers modules built from the same configs:
`tiny` reads fixtures/tiny-sd (its ControlNet is `ControlNetModel.from_unet`), `sd15` uses the
SD1.5 architecture (UNet, ControlNet, VAE, CLIP ViT-L/14 text encoder). Components and shapes:

* clip: text encoder on 2 × 77 tokens
* unet: one UNet step with classifier-free guidance (batch 2, latent 4×N×N, context 2×77×width)
* controlnet: ControlNet (3-channel 8N² hint) + UNet, batch 2
* decode / encode: VAE decode 1×4×N×N → 8N² and encode 8N² → N²
* pipeline: StableDiffusionPipeline text→image, `--steps` steps with CFG at 8N² (tiny: the
  fixture as published; sd15: random components with the fixture's tokenizer and scheduler)
* attention: F.scaled_dot_product_attention at the SD1.5 UNet shapes (opt-in: `--only attention`)

Each figure is the median of `--runs` calls after one warm-up call (CUDA synchronised), printed as
`name: X ms` and as a machine-readable `result key=value` line, like the Rust example. Threads:
TORCH_THREADS (default: all cores).
"""

import argparse
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures"))
from common import FIXTURES, rgb_vae  # noqa: E402 (tools/fixtures/common.py)

TINY_SD = FIXTURES / "tiny-sd"
ALL = ["clip", "unet", "controlnet", "decode", "encode", "pipeline"]


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--dtype", default="fp32", choices=["fp32", "fp16"])
    p.add_argument("--config", default="tiny", choices=["tiny", "sd15"])
    p.add_argument("--latent", type=int, default=None, help="latent side (16 tiny, 64 sd15)")
    p.add_argument("--steps", type=int, default=25, help="pipeline steps (0 skips it)")
    p.add_argument("--only", default=",".join(ALL), help="comma-separated components")
    p.add_argument("--runs", type=int, default=None, help="timed runs (10 tiny, 3 sd15)")
    return p.parse_args()


def main():
    args = parse_args()
    if "TORCH_THREADS" in os.environ:
        torch.set_num_threads(int(os.environ["TORCH_THREADS"]))
    dev = torch.device(args.device)
    dtype = torch.float16 if args.dtype == "fp16" else torch.float32
    latent = args.latent or (16 if args.config == "tiny" else 64)
    runs = args.runs or (10 if args.config == "tiny" else 3)
    only = set(args.only.split(","))
    image = latent * 8

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def median_ms(fn, n):
        fn()
        sync()
        times = []
        for _ in range(max(n, 1)):
            start = time.perf_counter()
            fn()
            sync()
            times.append((time.perf_counter() - start) * 1e3)
        return statistics.median(times)

    def report(key, what, ms):
        print(f"{what}: {ms:.1f} ms")
        print(f"result {key}={ms:.3f}", flush=True)

    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    print(
        f"torch {torch.__version__}, {args.device} {args.dtype}, {torch.get_num_threads()} threads, "
        f"config {args.config}, latent {latent}, image {image}"
    )
    torch.manual_seed(0)
    if args.config == "tiny":
        new_unet = lambda: UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(TINY_SD / "unet"))
        new_vae = lambda: AutoencoderKL.from_config(AutoencoderKL.load_config(TINY_SD / "vae"))
        new_clip = lambda: CLIPTextModel(CLIPTextConfig.from_pretrained(TINY_SD / "text_encoder"))
        new_controlnet = lambda unet: ControlNetModel.from_unet(unet)
    else:
        new_unet = lambda: UNet2DConditionModel(cross_attention_dim=768)
        new_vae = lambda: rgb_vae((128, 256, 512, 512), 2, 32, sample_size=512)
        new_clip = lambda: CLIPTextModel(CLIPTextConfig(hidden_act="quick_gelu", projection_dim=768))
        new_controlnet = lambda unet: ControlNetModel(cross_attention_dim=768)
    place = lambda m: m.to(dev, dtype).eval()

    with torch.inference_mode():
        if "clip" in only:
            clip = place(new_clip())
            ids = (torch.arange(154, device=dev) % clip.config.vocab_size).reshape(2, 77)
            report("clip_text_ms", "clip text (2 x 77 tokens)", median_ms(lambda: clip(ids), runs))
            del clip
        if only & {"unet", "controlnet"}:
            unet = place(new_unet())
            width = unet.config.cross_attention_dim
            x = torch.randn(2, 4, latent, latent, device=dev, dtype=dtype)
            t = torch.tensor([500, 500], device=dev)
            ctx = torch.randn(2, 77, width, device=dev, dtype=dtype)
            if "unet" in only:
                if dev.type == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                report("unet_step_ms", "unet CFG step (batch 2)", median_ms(lambda: unet(x, t, ctx), runs))
                if dev.type == "cuda":
                    mib = torch.cuda.max_memory_allocated() / 2**20
                    print(f"result unet_peak_device_mib={mib:.1f}")
            if "controlnet" in only:
                cn = place(new_controlnet(unet))
                hint = torch.rand(2, 3, image, image, device=dev, dtype=dtype)

                def cn_step():
                    down, mid = cn(x, t, ctx, hint, return_dict=False)
                    return unet(x, t, ctx, down_block_additional_residuals=down, mid_block_additional_residual=mid)

                report("controlnet_unet_step_ms", "controlnet + unet CFG step (batch 2)", median_ms(cn_step, runs))
                del cn
            del unet
        if only & {"decode", "encode"}:
            vae = place(new_vae())
            if "decode" in only:
                z = torch.randn(1, 4, latent, latent, device=dev, dtype=dtype)
                report("vae_decode_ms", f"vae decode ({image}x{image})", median_ms(lambda: vae.decode(z), min(runs, 3)))
            if "encode" in only:
                px = torch.rand(1, 3, image, image, device=dev, dtype=dtype) * 2 - 1
                ms = median_ms(lambda: vae.encode(px).latent_dist.mode(), min(runs, 3))
                report("vae_encode_ms", f"vae encode ({image}x{image})", ms)
            del vae
        if "attention" in only:
            scale = 16 if args.config == "tiny" else 1
            for seq, d in [(4096, 40), (1024, 80), (256, 160), (64, 160)]:
                sq = max(seq // scale, 4)
                for sk in (sq, 77):
                    q = torch.randn(2, 8, sq, d, device=dev, dtype=dtype)
                    k = torch.randn(2, 8, sk, d, device=dev, dtype=dtype)
                    v = torch.randn(2, 8, sk, d, device=dev, dtype=dtype)
                    label = f"self-{sq}x{d}" if sk == sq else f"cross-{sq}x{sk}x{d}"
                    ms = median_ms(lambda: F.scaled_dot_product_attention(q, k, v), runs)
                    report(f"attention_{label}_ms", f"attention {label}", ms)
        if "pipeline" in only and args.steps > 0:
            from diffusers import StableDiffusionPipeline

            if args.config == "tiny":
                pipe = StableDiffusionPipeline.from_pretrained(TINY_SD, safety_checker=None, dtype=dtype)
            else:
                from diffusers import PNDMScheduler
                from transformers import CLIPTokenizer

                pipe = StableDiffusionPipeline(
                    vae=new_vae(),
                    text_encoder=new_clip(),
                    tokenizer=CLIPTokenizer.from_pretrained(TINY_SD / "tokenizer"),
                    unet=new_unet(),
                    scheduler=PNDMScheduler.from_pretrained(TINY_SD / "scheduler"),
                    safety_checker=None,
                    feature_extractor=None,
                    requires_safety_checker=False,
                )
            pipe = pipe.to(dev, dtype)
            pipe.set_progress_bar_config(disable=True)
            run = lambda: pipe(
                "a photograph of an astronaut riding a horse",
                num_inference_steps=args.steps,
                guidance_scale=7.5,
                height=image,
                width=image,
                generator=torch.Generator().manual_seed(1),
            )
            what = f"txt2img, {args.steps} steps with CFG, {image}x{image} (whole generation)"
            report("pipeline_ms", what, median_ms(run, min(runs, 3)))
    if dev.type == "cuda":
        print(f"result peak_device_mib={torch.cuda.max_memory_allocated() / 2**20:.1f}")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory (process): {rss:.0f} MiB")
    print(f"result peak_rss_mib={rss:.1f}")


if __name__ == "__main__":
    main()
