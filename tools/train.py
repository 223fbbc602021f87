"""Train with any mmengine config: mmseg fine-tuning or GLARE pre-training.

The flags are those of mmsegmentation 1.x's ``tools/train.py``. Before the
config is built, ``lightly_glare.openmmlab`` is imported, which registers this
project's modules and installs the pure-PyTorch ``mmcv.ops`` fallback when the
compiled mmcv ops are absent (mmcv-lite).

``--amp`` switches ``OptimWrapper`` to mmengine's ``AmpOptimWrapper`` with
``dtype='bfloat16'`` when the GPU supports it (no overflow risk, same exponent
range as fp32) and float16 otherwise (as mmseg's own ``--amp``), both with
dynamic loss scaling. Without a GPU it selects ``Bf16AutocastOptimWrapper``
(bf16 autocast on the CPU; mmengine's ``AmpOptimWrapper`` is GPU-only) where
the CPU has native bf16 (AVX-512 BF16, AMX, Arm BF16), and stops with an error
on other CPUs (emulated bf16 is slower than fp32) instead of silently training
in fp32.

Examples:
    python tools/train.py mmseg_configs/glare_ade20k.py --work-dir work_dirs/ade
    python tools/train.py mmseg_configs/glare_ade20k.py \
        --cfg-options model.backbone.checkpoint=glare_vit-b16.pth
    bash tools/dist_train.sh mmseg_configs/glare_ade20k.py 4 --amp  # 4xb4
    python tools/train.py \
        mmseg_configs/pretrain/glare_vit-s14-dinov2_1xb16-300iter_aerial-126.py \
        --cfg-options model.backbone.checkpoint=dinov2_vits14.pth
"""

from __future__ import annotations

import argparse
import logging
import os
import os.path as osp

import torch
from mmengine.config import Config, DictAction
from mmengine.logging import print_log
from mmengine.registry import RUNNERS, init_default_scope
from mmengine.runner import Runner

import lightly_glare.openmmlab  # noqa: F401  (registers modules, mmcv fallback)
from lightly_glare.precision import native_bf16


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Train with an mmengine config")
    parser.add_argument("config", help="train config file path")
    parser.add_argument("--work-dir", help="the dir to save logs and models")
    parser.add_argument(
        "--resume",
        action="store_true",
        default=False,
        help="resume from the latest checkpoint in the work_dir automatically",
    )
    parser.add_argument(
        "--amp",
        action="store_true",
        default=False,
        help="enable automatic-mixed-precision training (bfloat16 where the GPU "
        "supports it, else float16; on a CPU bfloat16 where it is native)",
    )
    parser.add_argument(
        "--cfg-options",
        nargs="+",
        action=DictAction,
        help="override settings in the config, key=value pairs, e.g. "
        "model.backbone.checkpoint=glare.pth train_cfg.max_iters=1000; "
        'lists as key="[a,b]" or key=a,b, no white space',
    )
    parser.add_argument(
        "--launcher",
        choices=["none", "pytorch", "slurm", "mpi"],
        default="none",
        help="job launcher",
    )
    # torch.distributed.launch passes --local-rank (torch >= 2.0), older
    # launchers --local_rank; torchrun sets LOCAL_RANK instead.
    parser.add_argument("--local_rank", "--local-rank", type=int, default=0)
    args = parser.parse_args(argv)
    if "LOCAL_RANK" not in os.environ:
        os.environ["LOCAL_RANK"] = str(args.local_rank)
    return args


def enable_amp(cfg: Config) -> None:
    """Switches the config's optimizer wrapper to mixed precision."""
    wrapper = cfg.optim_wrapper.type
    if wrapper in ("AmpOptimWrapper", "Bf16AutocastOptimWrapper"):
        print_log(
            "AMP training is already enabled in your config.",
            logger="current",
            level=logging.WARNING,
        )
        return
    if wrapper != "OptimWrapper":
        raise SystemExit(
            "--amp is only supported when the optimizer wrapper type is "
            f"OptimWrapper, but got {wrapper}."
        )
    if not torch.cuda.is_available():
        if not native_bf16("cpu"):
            raise SystemExit(
                "--amp needs a GPU or a CPU with native bf16 (AVX-512 BF16, AMX, "
                "Arm BF16); this CPU emulates bf16, slower than fp32: train "
                "without --amp."
            )
        cfg.optim_wrapper.type = "Bf16AutocastOptimWrapper"
        print_log("AMP dtype: bfloat16 (CPU autocast)", logger="current")
        return
    cfg.optim_wrapper.type = "AmpOptimWrapper"
    cfg.optim_wrapper.loss_scale = "dynamic"
    cfg.optim_wrapper.dtype = (
        "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    )
    print_log(f"AMP dtype: {cfg.optim_wrapper.dtype}", logger="current")


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

    if args.amp:
        enable_amp(cfg)
    cfg.resume = args.resume

    if "runner_type" in cfg:
        init_default_scope(cfg.get("default_scope", "mmengine"))
        runner = RUNNERS.build(cfg)
    else:
        runner = Runner.from_cfg(cfg)
    runner.train()


if __name__ == "__main__":
    main()
