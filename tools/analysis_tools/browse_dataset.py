"""Draw a config's training samples with their labels (mmseg's ``browse_dataset.py``).

Each sample of ``train_dataloader.dataset`` goes through the training pipeline
(augmentations included) and is drawn by the config's ``visualizer`` with its
ground-truth map, shown in a window and/or written to ``--output-dir`` under
the image's file name.

Examples:
    python tools/analysis_tools/browse_dataset.py \
        mmseg_configs/segmentation/upernet_*_aerial-roads-126x126.py \
        --not-show --output-dir vis/roads  # the CPU aerial-roads config
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from config_args import add_config_arguments
from mmengine.utils import ProgressBar
from mmseg.registry import DATASETS, VISUALIZERS

import lightly_glare.openmmlab  # noqa: F401  (registers modules, mmcv fallback)
from lightly_glare.openmmlab.analysis import (
    has_display,
    load_config,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Browse a dataset")
    add_config_arguments(parser, "train config file path")
    parser.add_argument(
        "--output-dir", help="write the drawn samples into this directory"
    )
    parser.add_argument(
        "--not-show", action="store_true", help="do not show them in a window"
    )
    parser.add_argument(
        "--show-interval", type=float, default=2, help="seconds per shown sample"
    )
    args = parser.parse_args(argv)
    if args.not_show and args.output_dir is None:
        parser.error("--not-show without --output-dir draws nothing.")
    if not args.not_show and not has_display():
        parser.error("no display to show samples on: pass --not-show --output-dir DIR.")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options)
    dataset = DATASETS.build(cfg.train_dataloader.dataset)
    visualizer = VISUALIZERS.build(cfg.visualizer)
    visualizer.dataset_meta = dataset.metainfo
    progress = ProgressBar(len(dataset))
    for item in dataset:
        # CHW BGR -> contiguous HWC RGB (OpenCV draws only on contiguous arrays)
        image = np.ascontiguousarray(item["inputs"].numpy()[::-1].transpose(1, 2, 0))
        sample = item["data_samples"].numpy()
        name = Path(sample.img_path).name
        visualizer.add_datasample(
            name=name,
            image=image,
            data_sample=sample,
            draw_gt=True,
            draw_pred=False,
            show=not args.not_show,
            wait_time=args.show_interval,
            out_file=None if args.output_dir is None else f"{args.output_dir}/{name}",
        )
        progress.update()


if __name__ == "__main__":
    main()
