"""Evaluate a checkpoint with an mmengine config (mmseg's ``tools/test.py`` flags).

``lightly_glare.openmmlab`` is imported first (project modules, ``mmcv.ops``
fallback). The metrics of the config's ``test_evaluator`` are logged and, with
``--work-dir``, dumped as JSON there.

Examples:
    python tools/test.py mmseg_configs/glare_ade20k.py work_dirs/ade/iter_160000.pth
    python tools/test.py CONFIG CHECKPOINT --show-dir vis --out predictions
"""

from __future__ import annotations

import argparse
import os
import os.path as osp

from mmengine.config import Config, DictAction
from mmengine.runner import Runner

import lightly_glare.openmmlab  # noqa: F401  (registers modules, mmcv fallback)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Test (and evaluate) a model")
    parser.add_argument("config", help="test config file path")
    parser.add_argument("checkpoint", help="checkpoint file")
    parser.add_argument(
        "--work-dir",
        help="the dir for logs; the metrics are dumped there as JSON",
    )
    parser.add_argument(
        "--out",
        type=str,
        help="the dir to save predictions (label PNGs) for offline evaluation",
    )
    parser.add_argument(
        "--show-dir",
        help="the dir to save painted predictions in (SHOW_DIR/vis_data/vis_image; "
        "every `interval`-th image of the SegVisualizationHook, 50 by default)",
    )
    parser.add_argument(
        "--cfg-options",
        nargs="+",
        action=DictAction,
        help="override settings in the config, key=value pairs, e.g. "
        'test_dataloader.dataset.data_root=data/ade; lists as key="[a,b]"',
    )
    parser.add_argument(
        "--launcher",
        choices=["none", "pytorch", "slurm", "mpi"],
        default="none",
        help="job launcher",
    )
    parser.add_argument("--local_rank", "--local-rank", type=int, default=0)
    args = parser.parse_args(argv)
    if "LOCAL_RANK" not in os.environ:
        os.environ["LOCAL_RANK"] = str(args.local_rank)
    return args


def enable_visualization(cfg: Config, show_dir: str) -> None:
    """Makes the visualization hook draw predictions into ``show_dir``."""
    hooks = cfg.default_hooks
    if "visualization" not in hooks:
        raise SystemExit(
            "--show-dir needs a visualization hook in default_hooks, e.g. "
            "visualization=dict(type='SegVisualizationHook')."
        )
    hooks.visualization.draw = True
    cfg.visualizer.save_dir = show_dir


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)

    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)

    # work_dir priority: CLI > config file > ./work_dirs/<config name>
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get("work_dir", None) is None:
        cfg.work_dir = osp.join(
            "./work_dirs", osp.splitext(osp.basename(args.config))[0]
        )

    cfg.load_from = args.checkpoint
    if args.show_dir:
        enable_visualization(cfg, args.show_dir)
    if args.out is not None:
        cfg.test_evaluator.output_dir = args.out
        cfg.test_evaluator.keep_results = True

    Runner.from_cfg(cfg).test()


if __name__ == "__main__":
    main()
