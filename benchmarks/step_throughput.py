"""Images/s and peak memory of a GLARE step vs a two-view DINO step, side by side.

Both steps use the same frozen timm backbone with the same UniAdapters, the same
heads, batch and resolution. The DINO step is GLARE restricted to the global term
(lightly's DINOLoss on [CLS]) without patch augmentation; the GLARE step computes
all four terms. Optionally also measures the end-to-end step with data loading
and GlareTransform augmentation from an image folder.

Examples:
    # CPU, small sizes (about a minute)
    python benchmarks/step_throughput.py --models vit_small_patch16_224 \
        --img-size 112 --batch 16 --steps 5
    # GPU, real sizes, bf16
    python benchmarks/step_throughput.py --device cuda --batch 256 --img-size 224
"""

from __future__ import annotations

import argparse
import resource
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from pathlib import Path

import timm
import torch
from torch.utils.data import DataLoader

from lightly_glare.data import ImageFolderDataset
from lightly_glare.loss import ALL_TERMS, GLOBAL, GlareLoss
from lightly_glare.models import GLARE
from lightly_glare.transforms import GlareTransform

Batch = tuple[list[torch.Tensor], torch.Tensor]


def parse_args() -> argparse.Namespace:
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
    parser.add_argument("--steps", type=int, default=5, help="timed steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps")
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu"
    )
    parser.add_argument(
        "--threads", type=int, default=0, help="CPU threads (0: torch default)"
    )
    parser.add_argument(
        "--compile", action="store_true", help="torch.compile the backbone"
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="image folder for the end-to-end measurement (skipped when absent)",
    )
    parser.add_argument("--workers", type=int, default=2)
    return parser.parse_args()


def build(
    name: str, img_size: int, terms: tuple[str, ...], device: str
) -> tuple[GLARE, GlareLoss]:
    size = img_size - img_size % (14 if "patch14" in name else 16)
    vit = timm.create_model(name, pretrained=False, num_classes=0, img_size=size)
    weights = {term: 1.0 if term in terms else 0.0 for term in ALL_TERMS}
    criterion = GlareLoss(**{f"{term}_weight": w for term, w in weights.items()})
    model = GLARE(vit, terms=criterion.active_terms)
    if terms == (GLOBAL,):
        model.patch_augmentation = None
    return model.to(device), criterion.to(device)


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
        for (views, geometry), _, _ in loader:
            yield [v.to(device, non_blocking=True) for v in views], geometry.to(device)


def time_steps(
    model: GLARE,
    criterion: GlareLoss,
    batches: Iterator[Batch],
    args: argparse.Namespace,
) -> tuple[float, float]:
    """Returns (images/s, peak memory in GiB) of full training steps."""
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=1e-4)
    autocast: Callable[[], object] = (
        (lambda: torch.autocast("cuda", dtype=torch.bfloat16))
        if args.device == "cuda"
        else nullcontext
    )

    def step() -> None:
        views, geometry = next(batches)
        with autocast():  # type: ignore[attr-defined]
            loss = criterion(model(views, geometry))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        model.update_teacher(0.996)

    for _ in range(args.warmup):
        step()
    if args.device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    if args.device == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**30
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # process
    return args.steps * args.batch / (time.perf_counter() - start), peak


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"device={args.device} batch={args.batch} image={args.img_size}px")
    header = f"{'model':28s} {'step':18s} {'img/s':>9s} {'peak GiB':>9s}"
    print(header)
    for name in args.models:
        results = {}
        for label, terms in (
            ("dino (2 views)", (GLOBAL,)),
            ("glare (4 terms)", ALL_TERMS),
        ):
            model, criterion = build(name, args.img_size, terms, args.device)
            if args.compile:
                compiled = torch.compile(model.backbone.vit)
                model.backbone.vit = compiled  # type: ignore[assignment]
            size = model.backbone.vit.patch_embed.img_size[0]
            results[label] = time_steps(
                model, criterion, synthetic_batches(args.batch, size, args.device), args
            )
            speed, peak = results[label]
            print(f"{name:28s} {label:18s} {speed:9.1f} {peak:9.2f}")
            if label.startswith("glare") and args.data_dir is not None:
                e2e = time_steps(
                    model,
                    criterion,
                    loader_batches(
                        args.data_dir, args.batch, size, args.workers, args.device
                    ),
                    args,
                )
                print(
                    f"{name:28s} {'glare + loading':18s} {e2e[0]:9.1f} {e2e[1]:9.2f}"
                    f"   (x{e2e[0] / results[label][0]:.2f} of compute-only)"
                )
        ratio = results["glare (4 terms)"][0] / results["dino (2 views)"][0]
        print(f"{name:28s} {'glare / dino':18s} {ratio:9.3f}")


if __name__ == "__main__":
    main()
