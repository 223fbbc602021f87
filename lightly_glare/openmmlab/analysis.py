"""Complexity and speed of mmseg models: the logic behind ``tools/analysis_tools``.

mmsegmentation's own ``get_flops.py``, ``benchmark.py``, ``browse_dataset.py``
and ``print_config.py`` import ``mmseg.models`` before a config's
``custom_imports`` run, which fails under mmcv-lite (``No module named
'mmcv._ext'``). This project's equivalents import :mod:`lightly_glare.openmmlab`
first and share the helpers below.

FLOPs are counted with mmengine's :class:`~mmengine.analysis.FlopAnalyzer`
(fvcore's jit-trace counter), which counts **one multiply-add as one flop**
(MACs) and has no handle for ``aten::scaled_dot_product_attention``: the fused
attention of timm's ViTs (``F.scaled_dot_product_attention``) would count as
zero, about 19.4 G multiply-adds for ViT-B/16 at 512 x 512. :func:`count_flops`
registers :func:`sdpa_flop_jit` for it.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from mmengine.analysis import FlopAnalyzer, parameter_count
from mmengine.analysis.jit_handles import get_shape
from mmengine.config import Config
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import init_default_scope
from mmengine.runner import load_checkpoint
from mmseg.models import BaseSegmentor
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from torch import Tensor, nn
from torch.utils.data import DataLoader

#: The jit operator of ``torch.nn.functional.scaled_dot_product_attention``.
ATTENTION_OP = "aten::scaled_dot_product_attention"


def load_config(path: str, cfg_options: dict[str, Any] | None) -> Config:
    """Loads an mmengine config (running its ``custom_imports``) for a tool.

    Also makes the config's ``default_scope`` (mmseg's by default) current, so
    that registries build mmseg's modules.

    Args:
        path: Config file.
        cfg_options: ``--cfg-options`` overrides merged into the config, or None.

    Returns:
        The config, inherited values resolved.

    Raises:
        FileNotFoundError: ``path`` does not exist.
    """
    if not Path(path).is_file():
        raise FileNotFoundError(
            f"Config file {path} not found; pass the path of a config, e.g. "
            "mmseg_configs/glare_ade20k.py."
        )
    cfg = Config.fromfile(path)
    if cfg_options is not None:
        cfg.merge_from_dict(cfg_options)
    init_default_scope(cfg.get("default_scope", "mmseg"))
    return cfg


def build_segmentor(cfg: Config, source: str, device: str = "cpu") -> BaseSegmentor:
    """Builds the config's segmentor in eval mode, SyncBN reverted to BN.

    The weights are left as built (``init_weights`` is not called, so no
    checkpoint named in the config is read).

    Args:
        cfg: A loaded mmseg config.
        source: The config's name, for errors.
        device: Device to put the model on. Defaults to ``"cpu"``.

    Returns:
        The segmentor.

    Raises:
        TypeError: The config's model is not an mmseg segmentor (e.g. a GLARE
            pre-training config).
    """
    model = MODELS.build(cfg.model)
    if not isinstance(model, BaseSegmentor):
        raise TypeError(
            f"{source} builds a {type(model).__name__}, not an mmseg segmentor; "
            "pass a segmentation config (model.type an mmseg segmentor such as "
            "EncoderDecoder), not a pre-training one."
        )
    return revert_sync_batchnorm(model).to(device).eval()


def load_weights(model: nn.Module, checkpoint: str) -> None:
    """Loads an mmengine checkpoint into ``model``, every key matching.

    Args:
        model: The segmentor.
        checkpoint: A checkpoint saved by mmengine's Runner (``state_dict``).

    Raises:
        FileNotFoundError: ``checkpoint`` does not exist.
        RuntimeError: Its keys do not match the model's (mmengine names them).
    """
    if not Path(checkpoint).is_file():
        raise FileNotFoundError(
            f"Checkpoint {checkpoint} not found; pass a file saved by "
            "tools/train.py (work_dir/iter_N.pth), or leave it out."
        )
    load_checkpoint(model, checkpoint, map_location="cpu", strict=True)


# ----------------------------------------------------------------------- FLOPs


def sdpa_flop_jit(inputs: list[Any], outputs: list[Any]) -> int:
    """Multiply-adds of ``aten::scaled_dot_product_attention``, as mmengine counts.

    Query ``(..., Lq, E)``, key ``(..., Lk, E)`` and value ``(..., Lk, Ev)``
    with leading (batch, heads) dimensions ``...``: ``Q K^T`` takes
    ``prod(...) * Lq * Lk * E`` multiply-adds and ``softmax(.) V`` takes
    ``prod(...) * Lq * Lk * Ev``, the counts ``aten::matmul`` gets for the same
    products. The scaling, mask and softmax are elementwise and not counted
    (nor are they for the unfused form).

    Args:
        inputs: The op's jit inputs (query, key, value, mask, ...).
        outputs: The op's jit outputs (unused).

    Returns:
        The number of multiply-adds.
    """
    query, key, value = (get_shape(v) for v in inputs[:3])
    if query is None or key is None or value is None:
        raise ValueError(
            f"{ATTENTION_OP} without static shapes in the traced graph; trace "
            "the model with concrete input tensors."
        )
    *leading, query_len, dim = query
    key_len, value_dim = key[-2], value[-1]
    return math.prod(leading) * query_len * key_len * (dim + value_dim)


def _scaled(count: int) -> str:
    """``count`` in G (from 10^9) or M, two decimals: ``"444.99 G"``."""
    return f"{count / 1e9:.2f} G" if count >= 1e9 else f"{count / 1e6:.2f} M"


@dataclass(frozen=True)
class Complexity:
    """The complexity of one forward pass.

    Attributes:
        input_shape: Shape of the input batch, e.g. ``(1, 3, 512, 512)``.
        macs: Multiply-adds in total (what mmengine and fvcore call "flops").
        attention_macs: The part of ``macs`` spent in
            ``scaled_dot_product_attention`` (0 when not counted).
        params: Number of parameters.
        uncounted_ops: Operators without a counting handle (elementwise ops
            such as ``aten::add``, ``aten::gelu``) and how often they ran.
    """

    input_shape: tuple[int, ...]
    macs: int
    attention_macs: int
    params: int
    uncounted_ops: Counter[str]

    @property
    def flops(self) -> int:
        """Floating-point operations, two per multiply-add."""
        return 2 * self.macs

    def summary(self) -> str:
        """The report printed by ``tools/analysis_tools/get_flops.py``."""
        uncounted = ", ".join(
            f"{op} x{count}" for op, count in sorted(self.uncounted_ops.items())
        )
        return "\n".join(
            [
                f"Input shape: {self.input_shape}",
                f"MACs: {_scaled(self.macs)} multiply-adds (what mmengine, "
                "fvcore and mmseg's get_flops.py print as 'Flops')",
                "  of which scaled-dot-product attention: "
                f"{_scaled(self.attention_macs)} (mmengine alone counts 0)",
                f"FLOPs: {_scaled(self.flops)} (2 per multiply-add)",
                f"Params: {_scaled(self.params)}",
                f"Not counted (no handle): {uncounted or 'none'}",
            ]
        )


def count_flops(
    model: nn.Module, inputs: Tensor, count_attention: bool = True
) -> Complexity:
    """Counts the multiply-adds of ``model(inputs)`` by tracing it.

    Args:
        model: Any module; its ``forward`` takes the input tensor.
        inputs: The input batch.
        count_attention: Count ``scaled_dot_product_attention`` with
            :func:`sdpa_flop_jit`. False reproduces mmengine's own count (which
            misses it). Defaults to True.

    Returns:
        The counts.
    """
    analyzer = FlopAnalyzer(model, (inputs,))
    if count_attention:
        analyzer.set_op_handle(ATTENTION_OP, sdpa_flop_jit)
    analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    macs = analyzer.total()
    # by_operator() names ops without their "aten::" prefix.
    attention = analyzer.by_operator()[ATTENTION_OP.removeprefix("aten::")]
    return Complexity(
        input_shape=tuple(inputs.shape),
        macs=macs,
        attention_macs=attention,
        params=parameter_count(model)[""],
        uncounted_ops=analyzer.unsupported_ops(),
    )


def segmentor_flops(
    model: BaseSegmentor, image_shape: tuple[int, int, int]
) -> Complexity:
    """Counts a segmentor's multiply-adds on one random image, as mmseg does.

    The image passes through the model's data preprocessor (which may pad it,
    e.g. to the training crop size), then the segmentor's ``tensor`` forward:
    backbone, neck and decode head. The auxiliary head, which runs only in
    training, is removed from ``model`` first (as mmseg's script does).

    Args:
        model: The segmentor, e.g. from :func:`build_segmentor`.
        image_shape: ``(channels, height, width)``.

    Returns:
        The counts; ``input_shape`` is the preprocessed batch's.
    """
    image = torch.rand(image_shape, device=next(model.parameters()).device)
    sample = SegDataSample(
        metainfo={"ori_shape": image_shape[1:], "pad_shape": image_shape[1:]}
    )
    data = model.data_preprocessor({"inputs": [image], "data_samples": [sample]})
    if getattr(model, "auxiliary_head", None) is not None:
        model.auxiliary_head = None
    return count_flops(model, data["inputs"])


# ------------------------------------------------------------------------ speed


@dataclass(frozen=True)
class Throughput:
    """Timed inference of one benchmark run.

    Attributes:
        images: Images in the timed batches (warm-up excluded).
        seconds: Time the model spent on them.
    """

    images: int
    seconds: float

    @property
    def images_per_second(self) -> float:
        """Images per second."""
        return self.images / self.seconds


def _repeat(loader: DataLoader[Any]) -> Iterator[Any]:
    """Iterates ``loader`` again and again."""
    while True:
        yield from loader


def measure_throughput(
    model: BaseSegmentor,
    loader: DataLoader[Any],
    num_warmup: int,
    total_iters: int,
    log_interval: int,
    log: Callable[[str], None] = print,
) -> Throughput:
    """Times ``predict`` forwards on batches of ``loader``, like mmseg's benchmark.

    Batches are preprocessed as in testing (``tools/test.py``; mmseg's
    benchmark pads them to the training crop size instead), and preprocessing
    is not timed; CUDA is synchronised around each forward. The loader is
    cycled when it has fewer than ``total_iters`` batches.

    Args:
        model: The segmentor, in eval mode.
        loader: Test data loader.
        num_warmup: Untimed batches first.
        total_iters: Batches in all, warm-up included.
        log_interval: Log the running speed every this many batches.
        log: Where progress lines go. Defaults to ``print``.

    Returns:
        The timed images and seconds.

    Raises:
        ValueError: ``total_iters <= num_warmup`` or the loader is empty.
    """
    if num_warmup < 0 or total_iters <= num_warmup:
        raise ValueError(
            f"total_iters ({total_iters}) must exceed num_warmup ({num_warmup}) "
            ">= 0: set --total-iters and --num-warmup accordingly."
        )
    if len(loader) == 0:
        raise ValueError(
            "The test dataloader is empty: check test_dataloader.dataset "
            "(data_root, data_prefix) in the config."
        )
    cuda = next(model.parameters()).is_cuda
    images, seconds = 0, 0.0
    batches = _repeat(loader)
    for index in range(total_iters):
        data = model.data_preprocessor(next(batches), False)
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.no_grad():
            model(data["inputs"], data["data_samples"], mode="predict")
        if cuda:
            torch.cuda.synchronize()
        if index >= num_warmup:
            seconds += time.perf_counter() - start
            images += len(data["inputs"])
            if (index + 1) % log_interval == 0:
                log(
                    f"Done batch [{index + 1:<3}/ {total_iters}], "
                    f"fps: {images / seconds:.2f} img / s"
                )
    return Throughput(images=images, seconds=seconds)


# -------------------------------------------------------------------- browsing


def has_display() -> bool:
    """Whether windows can be shown (assumed everywhere but on headless Linux)."""
    if not sys.platform.startswith("linux"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
