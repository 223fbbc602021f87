"""The pure-PyTorch mmcv.ops fallback: its ops, and when it is (not) installed.

Import-state tests run in fresh interpreters so that they cannot affect each other.
"""

from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from lightly_glare.openmmlab.mmcv_compat import point_sample, sigmoid_focal_loss
from tests.conftest import DEVICES

needs_mmcv_lite = pytest.mark.skipif(
    importlib.util.find_spec("mmcv._ext") is not None,
    reason="a compiled mmcv is installed: the fallback is (rightly) not used",
)


def run_python(code: str) -> None:
    """Runs `code` in a fresh interpreter; its asserts decide the test."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-4000:]


# --- point_sample ------------------------------------------------------------


def manual_bilinear(feature: Tensor, x: float, y: float) -> Tensor:
    """Bilinear interpolation of (C, H, W) at pixel coordinates, zeros outside."""
    _, height, width = feature.shape
    x0, y0 = math.floor(x), math.floor(y)
    value = torch.zeros(feature.shape[0], dtype=feature.dtype)
    for row, weight_y in ((y0, y0 + 1 - y), (y0 + 1, y - y0)):
        for col, weight_x in ((x0, x0 + 1 - x), (x0 + 1, x - x0)):
            if 0 <= row < height and 0 <= col < width:
                value += weight_x * weight_y * feature[:, row, col]
    return value


@pytest.mark.parametrize("align_corners", [False, True])
def test_point_sample_is_bilinear_interpolation(align_corners: bool) -> None:
    features = torch.randn(2, 3, 5, 7, dtype=torch.float64)
    points = torch.rand(2, 11, 2, dtype=torch.float64)  # (x, y) in [0, 1]
    height, width = features.shape[2:]
    out = point_sample(features, points, align_corners=align_corners)
    assert out.shape == (2, 3, 11)
    for n in range(2):
        for i, (x, y) in enumerate(points[n].tolist()):
            if align_corners:
                col, row = x * (width - 1), y * (height - 1)
            else:
                col, row = x * width - 0.5, y * height - 0.5
            expected = manual_bilinear(features[n], col, row)
            torch.testing.assert_close(out[n, :, i], expected)


def test_point_sample_hits_pixel_centres_and_corners() -> None:
    features = torch.randn(1, 2, 4, 6)
    rows, cols = torch.meshgrid(torch.arange(4), torch.arange(6), indexing="ij")
    centres = torch.stack([(cols + 0.5) / 6, (rows + 0.5) / 4], dim=-1)  # (4, 6, 2)
    sampled = point_sample(features, centres.reshape(1, -1, 2))
    torch.testing.assert_close(sampled, features.reshape(1, 2, -1))
    corners = torch.tensor([[[0.0, 0.0], [1.0, 1.0], [1.0, 0.0]]])
    sampled = point_sample(features, corners, align_corners=True)
    expected = features[0][:, [0, 3, 0], [0, 5, 5]]
    torch.testing.assert_close(sampled[0], expected)


def test_point_sample_grid_input_matches_point_list() -> None:
    features = torch.randn(2, 3, 5, 5)
    grid = torch.rand(2, 4, 6, 2)
    out = point_sample(features, grid)
    assert out.shape == (2, 3, 4, 6)
    flat = point_sample(features, grid.reshape(2, 24, 2))
    torch.testing.assert_close(out.reshape(2, 3, 24), flat)


# --- sigmoid_focal_loss ------------------------------------------------------


def focal_reference(
    pred: Tensor, target: Tensor, gamma: float, alpha: float, weight: Tensor | None
) -> Tensor:
    """Elementwise focal loss, written from the formula (no clamping)."""
    num_classes = pred.size(1)
    p = pred.sigmoid()
    positive = F.one_hot(target, num_classes + 1)[:, :num_classes].bool()
    loss = torch.where(
        positive,
        -alpha * (1 - p) ** gamma * torch.log(p),
        -(1 - alpha) * p**gamma * torch.log(1 - p),
    )
    return loss if weight is None else loss * weight[target].unsqueeze(1)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("use_weight", [False, True])
def test_focal_loss_and_gradient_match_formula(
    reduction: str, use_weight: bool, device: str
) -> None:
    num_classes = 4
    pred = 3 * torch.randn(9, num_classes, dtype=torch.float64)
    pred = pred.to(device).requires_grad_()
    # Index num_classes marks background; per-class weights need real classes.
    high = num_classes if use_weight else num_classes + 1
    target = torch.randint(0, high, (9,))
    target[0] = high - 1
    target = target.to(device)
    weight = torch.rand(num_classes, dtype=torch.float64) if use_weight else None
    weight = None if weight is None else weight.to(device)

    loss = sigmoid_focal_loss(pred, target, 1.5, 0.3, weight, reduction)
    elementwise = focal_reference(pred, target, 1.5, 0.3, weight)
    expected = {
        "none": elementwise,
        "sum": elementwise.sum(),
        "mean": elementwise.sum() / pred.size(0),  # mmcv divides by N only
    }[reduction]
    torch.testing.assert_close(loss, expected)

    upstream = torch.rand_like(loss)  # a non-trivial incoming gradient
    (grad,) = torch.autograd.grad((loss * upstream).sum(), pred)
    (expected_grad,) = torch.autograd.grad((expected * upstream).sum(), pred)
    torch.testing.assert_close(grad, expected_grad)


def test_focal_loss_saturates_like_mmcv_kernel() -> None:
    """Logits beyond float range: clamped logs, the kernel's analytic gradient."""
    pred = torch.tensor([[-100.0, 100.0]], requires_grad=True)
    target = torch.tensor([0])  # class 0 positive with p ~ 0, class 1 negative, p ~ 1
    alpha = 0.25
    loss = sigmoid_focal_loss(pred, target, 2.0, alpha, None, "none")
    log_flt_min = math.log(torch.finfo(torch.float32).tiny)
    expected = torch.tensor([[-alpha * log_flt_min, -(1 - alpha) * log_flt_min]])
    torch.testing.assert_close(loss.detach(), expected)
    loss.sum().backward()
    assert pred.grad is not None
    torch.testing.assert_close(pred.grad, torch.tensor([[-alpha, 1 - alpha]]))


def test_focal_loss_rejects_invalid_inputs() -> None:
    pred = torch.randn(3, 2)
    with pytest.raises(ValueError, match="int64"):
        sigmoid_focal_loss(pred, torch.tensor([0.0, 1.0, 0.0]))
    with pytest.raises(ValueError, match=r"\(N, C\)"):
        sigmoid_focal_loss(pred.flatten(), torch.tensor([0, 1, 0]))
    with pytest.raises(ValueError, match="weight"):
        sigmoid_focal_loss(pred, torch.tensor([0, 1, 0]), weight=torch.ones(3))
    with pytest.raises(ValueError, match="reduction"):
        sigmoid_focal_loss(pred, torch.tensor([0, 1, 0]), reduction="avg")


@needs_mmcv_lite
@pytest.mark.parametrize("alpha", [0.25, [0.1, 0.5, 0.9]])
def test_mmseg_cuda_path_with_fallback_equals_mmseg_cpu_path(
    alpha: float | list[float],
) -> None:
    """mmseg's wrapper of the CUDA op, fed by the fallback, agrees with mmseg's own
    pure-PyTorch focal loss (given one-hot targets)."""
    from mmseg.models.losses import focal_loss

    assert focal_loss._sigmoid_focal_loss is sigmoid_focal_loss
    pred = torch.randn(12, 3, dtype=torch.float64)
    target = torch.randint(0, 4, (12,))
    one_hot = F.one_hot(target, 4)[:, :3].to(pred.dtype)
    kwargs = {"gamma": 2.0, "alpha": alpha, "reduction": "mean"}
    with_op = focal_loss.sigmoid_focal_loss(pred, target, one_hot, **kwargs)
    pure = focal_loss.py_sigmoid_focal_loss(pred, one_hot, **kwargs)
    torch.testing.assert_close(with_op, pure)


# --- installation ------------------------------------------------------------


@needs_mmcv_lite
def test_fallback_makes_mmseg_models_importable() -> None:
    run_python(
        """
        import sys
        import lightly_glare.openmmlab
        from lightly_glare.openmmlab import mmcv_compat
        import mmcv
        import mmseg.models
        from mmengine.utils.dl_utils import mmcv_full_available
        from mmseg.models.decode_heads import san_head
        from mmseg.models.losses import focal_loss
        from mmseg.models.utils import point_sample as mmseg_point_sample
        from mmseg.utils import mask_classification

        assert mmcv_compat.MMCV_OPS_IMPLEMENTATION == "fallback"
        assert mmcv_compat.ensure_mmcv_ops() is True  # idempotent
        assert mmcv.ops is sys.modules["mmcv.ops"]
        for module in (san_head, mmseg_point_sample, mask_classification):
            assert module.point_sample is mmcv_compat.point_sample
        assert focal_loss._sigmoid_focal_loss is mmcv_compat.sigmoid_focal_loss
        assert not mmcv_full_available()  # the fallback does not pose as compiled
        """
    )


@needs_mmcv_lite
def test_other_ops_import_but_raise_a_clear_error_when_used() -> None:
    run_python(
        """
        import importlib.util
        import lightly_glare.openmmlab
        import mmcv.ops
        from lightly_glare.openmmlab.mmcv_compat import (
            MissingCompiledOp, MissingCompiledOpError)
        from mmcv.ops import RoIAlign, nms
        from mmcv.ops import nms as nms_again
        from mmseg.models.decode_heads import cc_head
        from mmseg.registry import MODELS

        assert nms is nms_again and issubclass(nms, MissingCompiledOp)
        assert not isinstance(object(), RoIAlign)
        uses = {"nms": lambda: nms(None, None, 0.5), "RoIAlign": lambda: RoIAlign(7)}
        for name, use in uses.items():
            try:
                use()
            except MissingCompiledOpError as error:
                message = str(error)
            else:
                raise AssertionError(f"{name} ran without compiled ops")
            expected = (f"mmcv.ops.{name} ", "mmcv._ext", "mmcv==2.1.0",
                        "-std=c++20", "MMCV_WITH_OPS=1")
            for part in expected:
                assert part in message, (part, message)

        # mmseg's guarded import (except ModuleNotFoundError) now gets a
        # placeholder, so the head is registered and fails only when built.
        assert issubclass(cc_head.CrissCrossAttention, MissingCompiledOp)
        try:
            MODELS.build(dict(type="CCHead", in_channels=8, channels=4, num_classes=3))
        except MissingCompiledOpError as error:
            assert "mmcv.ops.CrissCrossAttention" in str(error)
        else:
            raise AssertionError("CCHead built without compiled ops")

        # Probes stay honest: not a package, no fake dunders, a findable spec.
        assert not hasattr(mmcv.ops, "__path__") and not hasattr(mmcv.ops, "__all__")
        assert importlib.util.find_spec("mmcv.ops") is not None
        try:
            import mmcv.ops.nms
        except ModuleNotFoundError:
            pass
        else:
            raise AssertionError("submodule import should fail")
        """
    )


#: Makes `import mmcv.ops` load mmcv's real Python files, as with compiled mmcv.
FAKE_COMPILED_EXTENSION = """
import importlib.machinery, sys, types
extension = types.ModuleType("mmcv._ext")
extension.__spec__ = importlib.machinery.ModuleSpec("mmcv._ext", None)
def kernel(name):
    if name.startswith("__"):
        raise AttributeError(name)
    return lambda *args, **kwargs: None
extension.__getattr__ = kernel
sys.modules["mmcv._ext"] = extension
"""


def test_compiled_mmcv_is_not_shadowed() -> None:
    run_python(
        FAKE_COMPILED_EXTENSION
        + """
import sys
from lightly_glare.openmmlab import mmcv_compat
import mmcv.ops

real_ops = sys.modules["mmcv.ops"]
assert mmcv_compat.MMCV_OPS_IMPLEMENTATION == "compiled"
assert mmcv_compat.ensure_mmcv_ops() is False
assert real_ops.__file__.endswith("mmcv/ops/__init__.py"), real_ops.__file__
assert mmcv.ops is real_ops
mmcv_point_sample = sys.modules["mmcv.ops.point_sample"].point_sample
assert real_ops.point_sample is mmcv_point_sample is not mmcv_compat.point_sample
"""
    )


def test_already_imported_mmcv_ops_is_left_untouched() -> None:
    run_python(
        """
        import sys, types
        import importlib.util, pathlib
        import lightly_glare

        existing = types.ModuleType("mmcv.ops")
        sys.modules["mmcv.ops"] = existing
        # The module alone: the package __init__ goes on to import mmseg,
        # which (rightly) fails against this empty stand-in.
        package = pathlib.Path(lightly_glare.__file__).parent / "openmmlab"
        path = package / "mmcv_compat.py"
        spec = importlib.util.spec_from_file_location("mmcv_compat", path)
        mmcv_compat = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mmcv_compat)

        assert sys.modules["mmcv.ops"] is existing
        assert vars(existing).keys() == vars(types.ModuleType("x")).keys()
        assert mmcv_compat.MMCV_OPS_IMPLEMENTATION == "compiled"
        """
    )


def test_a_broken_compiled_mmcv_is_reported_not_replaced() -> None:
    run_python(
        """
        import sys

        class BrokenExtension:  # like a compiled _ext built against another torch
            def find_spec(self, name, path=None, target=None):
                if name == "mmcv._ext":
                    raise ImportError("_ext.so: undefined symbol: _ZN3c10")
                return None

        sys.meta_path.insert(0, BrokenExtension())
        try:
            import lightly_glare.openmmlab
        except ImportError as error:
            assert "undefined symbol" in str(error), error
        else:
            raise AssertionError("the broken build was hidden by the fallback")
        assert "mmcv.ops" not in sys.modules
        """
    )
