"""Images/s and peak memory of a GLARE step vs a two-view DINO step, side by side.

Both steps use the same frozen timm backbone with the same UniAdapters, the same
heads, batch and resolution. The DINO step is GLARE restricted to the global term
(lightly's DINOLoss on [CLS]) without patch augmentation; the GLARE step computes
all four terms, once per value of ``--local-patches-per-view`` (the local terms'
patch pairs per image and view; ``all``: every valid patch). Optionally also
measures the end-to-end step with data loading and GlareTransform augmentation
from an image folder. With ``--rounds`` every step is built once and the steps
are timed in turn, round after round: the GLARE / DINO ratio of each round
compares steps timed seconds apart, which a shared machine's slow phases
affect alike.

Examples:
    # CPU, small sizes (about a minute)
    python benchmarks/step_throughput.py --models vit_small_patch16_224 \
        --img-size 112 --batch 16 --steps 5
    # CPU, every valid patch against 8, 16 and 32 sampled pairs
    python benchmarks/step_throughput.py --models vit_small_patch16_224 \
        --img-size 112 --batch 16 --steps 3 --warmup 1 \
        --local-patches-per-view all 8 16 32
    # CPU, the GLARE / DINO ratio: 5 rounds of 8 steps each, in turn
    python benchmarks/step_throughput.py --models vit_small_patch14_dinov2 \
        --img-size 126 --batch 16 --steps 8 --warmup 2 --rounds 5
    # GPU, real sizes, bf16
    python benchmarks/step_throughput.py --device cuda --batch 256 --img-size 224
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import timm
import torch
from timm.models.vision_transformer import VisionTransformer
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode

from lightly_glare.argument_types import drop_rate, patch_count, positive_int
from lightly_glare.data import ImageFolderDataset
from lightly_glare.loss import ALL_TERMS, GLOBAL, GlareLoss
from lightly_glare.models import (
    ATTENTION_KERNELS,
    DEFAULT_LOCAL_PATCHES_PER_VIEW,
    DEFAULT_STUDENT_DROP_PATH,
    GLARE,
    GlareProjectionHead,
)
from lightly_glare.models.defaults import MOMENTUM_START
from lightly_glare.precision import AMP_HELP, resolve_amp
from lightly_glare.pretraining.loop import fused_adamw, parameter_groups
from lightly_glare.transforms import GlareTransform

Batch = tuple[list[torch.Tensor], torch.Tensor]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models",
        nargs="+",
        default=[
            "vit_small_patch16_224",
            "vit_base_patch16_224",
            "vit_small_patch14_dinov2",
        ],
    )
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--img-size", type=int, default=112)
    parser.add_argument(
        "--steps", type=positive_int, default=5, help="timed steps per round"
    )
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps")
    parser.add_argument(
        "--rounds",
        type=positive_int,
        default=1,
        help="timed rounds; each round times every step (DINO, then each GLARE "
        "K) in turn, so slow phases of a shared machine hit all of them; prints "
        "each round and the median and range of the GLARE / DINO ratio",
    )
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu"
    )
    parser.add_argument(
        "--threads", type=int, default=0, help="CPU threads (0: torch default)"
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the forward and the loss (one graph with a fixed K)",
    )
    parser.add_argument(
        "--amp", action=argparse.BooleanOptionalAction, default=None, help=AMP_HELP
    )
    parser.add_argument(
        "--attention",
        choices=ATTENTION_KERNELS,
        default="auto",
        help="UniAdapterViT's attention kernel (default: auto, the library's)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="image folder for the end-to-end measurement (skipped when absent)",
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--local-patches-per-view",
        nargs="+",
        type=patch_count,
        default=[DEFAULT_LOCAL_PATCHES_PER_VIEW],
        metavar="K",
        help="GLARE(local_patches_per_view=K) values to measure; 'all': every "
        f"valid patch (default: {DEFAULT_LOCAL_PATCHES_PER_VIEW}, the library's)",
    )
    parser.add_argument(
        "--count-flops",
        action="store_true",
        help="also count matmul/conv/attention FLOPs per image of one step "
        "(torch.utils.flop_counter; load-independent, unlike images/s)",
    )
    parser.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help="the device's dense bf16 peak (H100 / H200 SXM: 989), to print the "
        "achieved share of it (needs --count-flops)",
    )
    parser.add_argument("--output-dim", type=int, default=8192)
    parser.add_argument(
        "--patch-output-dim", type=int, default=None, help="default: --output-dim"
    )
    parser.add_argument(
        "--hidden-dim", type=int, default=2048, help="hidden size of every head"
    )
    parser.add_argument(
        "--student-drop-path",
        type=drop_rate,
        default=DEFAULT_STUDENT_DROP_PATH,
        help="GLARE(student_drop_path=...), both steps (default: the library's, "
        f"{DEFAULT_STUDENT_DROP_PATH})",
    )
    return parser.parse_args(argv)


def build(
    name: str,
    terms: tuple[str, ...],
    args: argparse.Namespace,
    local_patches_per_view: int | None = None,
) -> tuple[GLARE, GlareLoss]:
    size = args.img_size - args.img_size % (14 if "patch14" in name else 16)
    vit = timm.create_model(name, pretrained=False, num_classes=0, img_size=size)
    patch_dim = args.patch_output_dim or args.output_dim
    weights: dict[str, Any] = {
        f"{term}_weight": 1.0 if term in terms else 0.0 for term in ALL_TERMS
    }
    criterion = GlareLoss(
        output_dim=args.output_dim, patch_output_dim=patch_dim, **weights
    )
    dim = vit.embed_dim
    model = GLARE(
        cast(VisionTransformer, vit),
        head=GlareProjectionHead(dim, args.hidden_dim, output_dim=args.output_dim),
        patch_head=GlareProjectionHead(dim, args.hidden_dim, output_dim=patch_dim),
        terms=criterion.active_terms,
        local_patches_per_view=local_patches_per_view,
        student_drop_path=args.student_drop_path,
    )
    if terms == (GLOBAL,):
        model.patch_augmentation = None
    model.backbone.attention = args.attention
    return model.to(args.device), criterion.to(args.device)


def synthetic_batches(batch: int, size: int, device: str) -> Iterator[Batch]:
    views = [torch.randn(batch, 3, size, size, device=device) for _ in range(2)]
    boxes = torch.tensor([[0.0, 0.0, 0.8, 0.8, 0.0], [0.2, 0.2, 0.8, 0.8, 1.0]])
    geometry = boxes.to(device).expand(batch, 2, 5).contiguous()
    while True:
        yield views, geometry


def loader_batches(
    data_dir: Path, batch: int, size: int, workers: int, device: str
) -> Iterator[Batch]:
    dataset = ImageFolderDataset(data_dir, transform=GlareTransform(input_size=size))
    loader = DataLoader(
        dataset,
        batch_size=batch,
        shuffle=True,
        num_workers=workers,
        drop_last=True,
        pin_memory=device == "cuda",
        persistent_workers=workers > 0,
    )
    while True:
        for sample, _, _ in loader:
            *views, geometry = (x.to(device, non_blocking=True) for x in sample)
            yield views, geometry


@dataclass
class StepRunner:
    """One benchmarked step (model, loss, optimizer and its batches).

    Attributes:
        step: Runs one training step.
        batch: Images per step.
        device: Device the step runs on.
        resident_gib: Device memory the step keeps between steps (its model,
            gradients, optimizer state), CUDA only: the peak of a round counts
            this step's resident memory, not that of the others built beside it.
        gflops: GFLOPs per image of one step (``--count-flops``), else None.
    """

    step: Callable[[], None]
    batch: int
    device: str
    resident_gib: float = 0.0
    gflops: float | None = None

    def time_round(self, steps: int) -> tuple[float, float]:
        """Runs ``steps`` timed steps.

        Returns:
            Images/s and peak memory in GiB (CUDA: this step's; CPU: the
            process's maximum resident set so far).
        """
        cuda = self.device == "cuda"
        others = allocated_gib(self.device) - self.resident_gib
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        for _ in range(steps):
            self.step()
        if cuda:
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated() / 2**30 - others
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        return steps * self.batch / (time.perf_counter() - start), peak


def prepare_step(
    model: GLARE,
    criterion: GlareLoss,
    batches: Iterator[Batch],
    args: argparse.Namespace,
) -> StepRunner:
    """Builds the optimizer and runs the untimed steps of one benchmarked step.

    With ``--count-flops`` the first untimed step runs under a FLOP counter.
    """
    groups = parameter_groups(model, weight_decay=0.04)
    optimizer = fused_adamw(groups, 1e-4, args.device)
    amp = resolve_amp(args.amp, args.device)
    device_type = torch.device(args.device).type

    def forward_loss(views: list[torch.Tensor], geometry: torch.Tensor) -> Any:
        return criterion(model(views, geometry))

    if args.compile:
        forward_loss = torch.compile(forward_loss)

    def step() -> None:
        views, geometry = next(batches)
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=amp):
            loss = forward_loss(views, geometry)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        model.update_teacher(MOMENTUM_START)

    runner = StepRunner(step, args.batch, args.device)
    if args.count_flops:
        with FlopCounterMode(display=False) as counter:
            step()
        runner.gflops = counter.get_total_flops() / args.batch / 1e9
    for _ in range(args.warmup - int(args.count_flops)):  # counted step included
        step()
    return runner


def allocated_gib(device: str) -> float:
    """Device memory allocated now in GiB (CUDA; 0 elsewhere)."""
    if device != "cuda":
        return 0.0
    torch.cuda.synchronize()
    return torch.cuda.memory_allocated() / 2**30


def time_rounds(
    runners: dict[str, StepRunner], args: argparse.Namespace
) -> dict[str, tuple[list[float], float]]:
    """Times every runner ``--rounds`` times, in turn within each round.

    Returns:
        Per label: images/s of each round and the peak memory in GiB.
    """
    speeds: dict[str, list[float]] = {label: [] for label in runners}
    peaks = dict.fromkeys(runners, 0.0)
    for _ in range(args.rounds):
        for label, runner in runners.items():
            speed, peak = runner.time_round(args.steps)
            speeds[label].append(speed)
            peaks[label] = max(peaks[label], peak)
    return {label: (speeds[label], peaks[label]) for label in runners}


def flop_columns(gflops: float | None, speed: float, peak: float | None) -> str:
    """GFLOP per image, achieved TFLOP/s and share of ``peak`` (when known)."""
    if gflops is None:
        return ""
    tflops = gflops * speed / 1e3
    share = "" if peak is None else f" {100 * tflops / peak:6.1f}%"
    return f" {gflops:9.2f} {tflops:8.2f}{share}"


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"device={args.device} batch={args.batch} image={args.img_size}px "
        f"bf16={resolve_amp(args.amp, args.device)} compile={args.compile} "
        f"attention={args.attention} "
        f"heads: hidden={args.hidden_dim} output={args.output_dim} "
        f"patch_output={args.patch_output_dim or args.output_dim}"
    )
    header = (
        f"{'model':28s} {'step':18s} {'img/s':>9s} {'peak GiB':>9s} "
        f"{'GFLOP/img':>9s} {'TFLOP/s':>8s} {'of peak':>7s}"
    )
    print(header)
    for name in args.models:
        dino = "dino (2 views)"
        variants = [(dino, (GLOBAL,), None)] + [
            (f"glare K={count or 'all'}", ALL_TERMS, count)
            for count in args.local_patches_per_view
        ]
        runners, models = {}, {}
        for label, terms, count in variants:
            before = allocated_gib(args.device)
            model, criterion = build(name, terms, args, count)
            size = model.backbone.vit.patch_embed.img_size[0]
            batches = synthetic_batches(args.batch, size, args.device)
            runners[label] = prepare_step(model, criterion, batches, args)
            runners[label].resident_gib = allocated_gib(args.device) - before
            models[label] = (model, criterion, size)
        results = time_rounds(runners, args)
        for label, (speeds, peak) in results.items():
            speed = statistics.median(speeds)
            rounds = "" if len(speeds) == 1 else "   rounds " + format_list(speeds)
            print(
                f"{name:28s} {label:18s} {speed:9.1f} {peak:9.2f}"
                f"{flop_columns(runners[label].gflops, speed, args.peak_tflops)}"
                f"{rounds}"
            )
        if args.data_dir is not None:
            for label, (model, criterion, size) in models.items():
                if label == dino:
                    continue
                loading = loader_batches(
                    args.data_dir, args.batch, size, args.workers, args.device
                )
                uncounted = argparse.Namespace(**{**vars(args), "count_flops": False})
                runner = prepare_step(model, criterion, loading, uncounted)
                runner.resident_gib = runners[label].resident_gib  # the same model
                e2e, e2e_peak = runner.time_round(args.steps)
                compute = statistics.median(results[label][0])
                print(
                    f"{name:28s} {'glare + loading':18s} {e2e:9.1f} {e2e_peak:9.2f}"
                    f"   (x{e2e / compute:.2f} of compute-only)"
                )
        dino_speeds = results.pop(dino)[0]
        for label, (speeds, _) in results.items():
            ratios = [g / d for g, d in zip(speeds, dino_speeds, strict=True)]
            spread = ""
            if len(ratios) > 1:
                spread = f"   (rounds {format_list(ratios, 3)}; {min(ratios):.3f}-"
                spread += f"{max(ratios):.3f})"
            cost = ""
            dino_gflops, gflops = runners[dino].gflops, runners[label].gflops
            if gflops is not None and dino_gflops is not None:
                cost = f"   (dino/glare FLOPs {dino_gflops / gflops:.3f})"
            print(
                f"{name:28s} {label + ' / dino':18s} "
                f"{statistics.median(ratios):9.3f}{spread}{cost}"
            )


def format_list(values: list[float], digits: int = 1) -> str:
    """``1.0, 2.5, ...``: a list of figures for one line."""
    return ", ".join(f"{value:.{digits}f}" for value in values)


if __name__ == "__main__":
    main()
