"""mmseg's ``config`` and ``--cfg-options`` arguments, shared by the tools here.

``get_flops.py``, ``benchmark.py``, ``browse_dataset.py`` and
``print_config.py`` import this module from their own folder; the logic they
run is :mod:`lightly_glare.openmmlab.analysis`, which has no command-line code.
"""

from __future__ import annotations

import argparse

from mmengine.config import DictAction


def add_config_arguments(parser: argparse.ArgumentParser, config_help: str) -> None:
    """Adds mmseg's ``config`` and ``--cfg-options`` arguments to ``parser``.

    Args:
        parser: The tool's argument parser.
        config_help: Help text of the ``config`` argument.
    """
    parser.add_argument("config", help=config_help)
    parser.add_argument(
        "--cfg-options",
        nargs="+",
        action=DictAction,
        help="override settings in the config, key=value pairs, e.g. "
        "model.backbone.img_size=(256,256) test_dataloader.batch_size=2; "
        'lists as key="[a,b]" or key=a,b, no white space; replace a dict value '
        "with key._delete_=True key.x=1",
    )
