"""Measure a segmentor's inference speed in images/s (mmseg's ``benchmark.py``).

The model (on the GPU when there is one) predicts ``--total-iters`` batches of
the config's ``test_dataloader`` (cycled if it has fewer); the first
``--num-warmup`` are not timed. The speeds of ``--repeat-times`` runs, their
mean and variance are printed and dumped as JSON to
``WORK_DIR/fps_<timestamp>.json`` (``./work_dirs/<config name>`` by default).
mmseg's flags, plus ``--cfg-options``, ``--num-warmup`` and ``--total-iters``
(fixed at 5 and 200 there); the checkpoint is optional (speed does not depend on
the weights), and when given it must match the model key for key.

Examples:
    python tools/analysis_tools/benchmark.py mmseg_configs/glare_ade20k.py \
        work_dirs/ade/iter_160000.pth
    python tools/analysis_tools/benchmark.py CONFIG --total-iters 50 \
        --cfg-options test_dataloader.dataset.data_root=data/ade
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from config_args import add_config_arguments
from mmengine.fileio import dump
from mmengine.runner import Runner

import lightly_glare.openmmlab  # noqa: F401  (registers modules, mmcv fallback)
from lightly_glare.openmmlab.analysis import (
    build_segmentor,
    load_config,
    load_weights,
    measure_throughput,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="MMSeg benchmark a model")
    add_config_arguments(parser, "test config file path")
    parser.add_argument(
        "checkpoint",
        nargs="?",
        help="checkpoint file (e.g. WORK_DIR/iter_N.pth); random weights if left out",
    )
    parser.add_argument(
        "--log-interval", type=int, default=50, help="interval of logging"
    )
    parser.add_argument("--work-dir", help="the dir to dump the results into as JSON")
    parser.add_argument("--repeat-times", type=int, default=1)
    parser.add_argument(
        "--num-warmup", type=int, default=5, help="untimed batches first"
    )
    parser.add_argument(
        "--total-iters", type=int, default=200, help="batches, warm-up included"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options)
    work_dir = Path(args.work_dir or Path("work_dirs") / Path(args.config).stem)
    torch.backends.cudnn.benchmark = False
    cfg.model.train_cfg = None
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = build_segmentor(cfg, args.config, device)
    if args.checkpoint is not None:
        load_weights(model, args.checkpoint)
    loader = Runner.build_dataloader(cfg.test_dataloader)

    results: dict[str, object] = {"config": args.config, "unit": "img / s"}
    speeds = []
    for run in range(1, args.repeat_times + 1):
        print(f"Run {run}:")
        speed = measure_throughput(
            model, loader, args.num_warmup, args.total_iters, args.log_interval
        ).images_per_second
        print(f"Overall fps: {speed:.2f} img / s\n")
        results[f"overall_fps_{run}"] = round(speed, 2)
        speeds.append(speed)
    results["average_fps"] = round(statistics.mean(speeds), 2)
    results["fps_variance"] = round(statistics.pvariance(speeds), 4)
    print(f"Average fps of {args.repeat_times} evaluations: {results['average_fps']}")
    print(f"The variance of {args.repeat_times} evaluations: {results['fps_variance']}")
    work_dir.mkdir(parents=True, exist_ok=True)
    timestamp = time.strftime("%Y%m%d_%H%M%S", time.localtime())
    dump(results, str(work_dir / f"fps_{timestamp}.json"), indent=4)


if __name__ == "__main__":
    main()
