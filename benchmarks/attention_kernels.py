"""Forward + backward time of fused SDPA vs matmul attention at ViT token counts.

Measures what ``UniAdapterViT(attention="auto")`` decides: on the CPU under
bf16, PyTorch's fused attention kernel against timm's unfused attention (two
matrix products around an fp32 softmax), for the attention shapes of a batch
of two-view GLARE steps. Rounds alternate the two kernels; the median and
range over rounds are printed per shape and dtype.

Examples:
    python benchmarks/attention_kernels.py               # CPU, bf16 and fp32
    python benchmarks/attention_kernels.py --device cuda --dtypes bf16
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from timm.layers.attention import Attention
from torch import Tensor

from lightly_glare.models import block_kernels

Kernel = Callable[[Tensor, Tensor, Tensor], Tensor]
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
#: (batch x views, heads, tokens): DINOv2-S/14 at 112 and 126 px, ViT-S/16 and
#: ViT-B/16 at 224 px, batch 16, two views.
SHAPES = ((32, 6, 65), (32, 6, 82), (32, 6, 197), (32, 12, 197))


#: A timm attention module for the scale (d_h^-0.5 for d_h = 64) and the
#: attention dropout (none in eval mode) of UniAdapterViT's matmul path.
ATTENTION = Attention(64, num_heads=1).eval()


def matmul_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """UniAdapterViT's unfused attention (two matmuls, fp32 softmax)."""
    probabilities = block_kernels.attention_probabilities(ATTENTION, q, k)
    return block_kernels.matmul_attention(ATTENTION, probabilities, v)


KERNELS: dict[str, Kernel] = {
    "sdpa": F.scaled_dot_product_attention,
    "matmul": matmul_attention,
}


def time_kernel(
    kernel: Kernel, shape: tuple[int, ...], dtype: torch.dtype, args: argparse.Namespace
) -> float:
    """Milliseconds of one forward + backward, averaged over ``args.calls``."""
    q, k, v = (
        torch.randn(shape, dtype=dtype, device=args.device, requires_grad=True)
        for _ in range(3)
    )
    grad = torch.randn(shape, dtype=dtype, device=args.device)
    for _ in range(2):  # warm-up
        kernel(q, k, v).backward(grad)
    if args.device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(args.calls):
        kernel(q, k, v).backward(grad)
    if args.device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / args.calls * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu"
    )
    parser.add_argument("--dtypes", nargs="+", choices=DTYPES, default=list(DTYPES))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=10, help="calls per timing")
    args = parser.parse_args()
    print(f"device={args.device} threads={torch.get_num_threads()}")
    print(f"{'B x H x T':>14s} {'dtype':5s} {'sdpa ms':>16s} {'matmul ms':>16s} ratio")
    for batch, heads, tokens in SHAPES:
        shape = (batch, heads, tokens, ATTENTION.head_dim)
        for dtype_name in args.dtypes:
            times: dict[str, list[float]] = {name: [] for name in KERNELS}
            for _ in range(args.rounds):
                for name, kernel in KERNELS.items():
                    times[name].append(
                        time_kernel(kernel, shape, DTYPES[dtype_name], args)
                    )
            medians = {name: statistics.median(t) for name, t in times.items()}
            cells = " ".join(
                f"{medians[name]:7.2f} [{min(t):.1f}-{max(t):.1f}]"
                for name, t in times.items()
            )
            print(
                f"{batch:4d} x{heads:3d} x{tokens:4d} {dtype_name:5s} {cells} "
                f"{medians['sdpa'] / medians['matmul']:5.2f}"
            )


if __name__ == "__main__":
    main()
