"""PyTorch's scaled-dot-product attention at the UNet's largest self-attention, [2, 8, 4096, 40],
timed with CUDA events as torch_baseline.py times the components (run by tools/gpu_check.sh)."""

import torch
import torch.nn.functional as F

for name, dtype in [("fp16", torch.float16), ("fp32", torch.float32)]:
    q, k, v = (torch.randn(2, 8, 4096, 40, device="cuda", dtype=dtype) for _ in range(3))
    for _ in range(5):
        F.scaled_dot_product_attention(q, k, v)
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(50):
        F.scaled_dot_product_attention(q, k, v)
    end.record()
    torch.cuda.synchronize()
    print(f"{name}_attention: {start.elapsed_time(end) / 50:.3f} ms", flush=True)
