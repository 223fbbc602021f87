"""Print a config with every inherited value resolved (mmseg's ``print_config.py``).

``_base_`` files, ``mmseg::`` configs and ``--cfg-options`` are merged into one
config, printed as Python. ``--dump`` writes it to a file (mmseg's script always
writes ``example.py`` to the working directory); ``--graph`` builds the model
and prints its modules.

Examples:
    python tools/analysis_tools/print_config.py mmseg_configs/glare_ade20k.py
    python tools/analysis_tools/print_config.py CONFIG --graph \
        --dump work_dirs/resolved.py
"""

from __future__ import annotations

import argparse

from config_args import add_config_arguments
from mmseg.registry import MODELS

import lightly_glare.openmmlab  # noqa: F401  (registers modules, mmcv fallback)
from lightly_glare.openmmlab.analysis import load_config


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Print the whole config")
    add_config_arguments(parser, "config file path")
    parser.add_argument(
        "--graph", action="store_true", help="print the model's modules"
    )
    parser.add_argument("--dump", help="also write the resolved config to this file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options)
    print(f"Config:\n{cfg.pretty_text}")
    if args.dump is not None:
        cfg.dump(args.dump)
    if args.graph:
        print(f"Model graph:\n{MODELS.build(cfg.model)}")


if __name__ == "__main__":
    main()
