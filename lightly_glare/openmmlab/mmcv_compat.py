"""A pure-PyTorch ``mmcv.ops`` for installations without mmcv's compiled ops.

mmcv-lite (the compiler-free mmcv) ships mmcv's Python files but not the compiled
extension ``mmcv._ext``, so ``import mmcv.ops`` fails, and with it
``import mmseg.models``: four mmseg 1.2.2 modules import ``point_sample`` or
``sigmoid_focal_loss`` from ``mmcv.ops`` without a guard.

Importing this module (:mod:`lightly_glare.openmmlab` imports it before anything
imports mmseg) runs :func:`ensure_mmcv_ops`. Only when ``import mmcv.ops`` fails
because ``mmcv._ext`` does not exist, it installs a stand-in module as ``mmcv.ops``:

* :func:`point_sample` and :func:`sigmoid_focal_loss` are real implementations with
  mmcv's signatures and semantics (the focal loss ports mmcv's CUDA kernel, forward
  and backward).
* Every other name imports as a placeholder class (so ``from mmcv.ops import X``
  and mmseg's guarded imports keep working) that raises
  :class:`MissingCompiledOpError`, naming the op and how to build compiled mmcv,
  when it is called or instantiated.

A working mmcv with compiled ops is never shadowed, and any other failure of
``import mmcv.ops`` (a broken build, a missing dependency) propagates unchanged.

Attributes:
    MMCV_OPS_IMPLEMENTATION: ``"compiled"`` when ``mmcv.ops`` is mmcv's own module,
        ``"fallback"`` when it is this module's pure-PyTorch stand-in.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import sys
import types
from typing import Any, ClassVar, Final, Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd import Function
from torch.autograd.function import once_differentiable

_OPS_MODULE: Final = "mmcv.ops"
_EXTENSION_MODULE: Final = "mmcv._ext"
_FALLBACK_MARKER: Final = "__lightly_glare_fallback__"
#: mmcv's kernel evaluates log(max(p, FLT_MIN)).
_FLT_MIN: Final = torch.finfo(torch.float32).tiny
_REDUCTIONS: Final = ("none", "mean", "sum")

COMPILED_MMCV_INSTRUCTIONS: Final = (
    "Build mmcv 2.1.0 with compiled ops from source against the installed torch "
    "(about 10 minutes on 2 cores; torch >= 2.6 needs C++20, mmcv's setup.py asks "
    "for C++14/17):\n"
    "  pip download --no-deps --no-binary :all: --no-build-isolation mmcv==2.1.0\n"
    "  tar xzf mmcv-2.1.0.tar.gz && cd mmcv-2.1.0\n"
    "  sed -i 's/-std=c++1[47]/-std=c++20/g' setup.py\n"
    "  pip uninstall -y mmcv-lite\n"
    "  pip install ninja wheel 'setuptools>=77,<82'\n"
    "  MMCV_WITH_OPS=1 MAX_JOBS=2 pip install --no-build-isolation --no-deps .\n"
    "Set FORCE_CUDA=1 as well to build the CUDA kernels (needs nvcc). lightly-glare "
    "then uses mmcv's compiled ops instead of its fallback."
)


class MissingCompiledOpError(RuntimeError):
    """An ``mmcv.ops`` op that needs mmcv's compiled extension was used."""


def _missing_op_message(op_name: str) -> str:
    """Explains that ``mmcv.ops.<op_name>`` needs compiled mmcv and how to get it.

    Args:
        op_name: Name of the op, e.g. ``"nms"``.

    Returns:
        The error message.
    """
    return (
        f"mmcv.ops.{op_name} needs mmcv's compiled extension ({_EXTENSION_MODULE}), "
        "which this installation lacks (mmcv-lite, or mmcv built without ops). "
        "lightly-glare's pure-PyTorch mmcv.ops fallback provides only point_sample "
        f"and sigmoid_focal_loss.\n{COMPILED_MMCV_INSTRUCTIONS}"
    )


class MissingCompiledOp:
    """Base of the placeholders the fallback returns for ops it cannot provide.

    Importing a placeholder works; calling or instantiating it (or a subclass)
    raises :class:`MissingCompiledOpError`. Being a class, it is also a valid
    second argument of ``isinstance`` (always ``False``).

    Attributes:
        op_name: Name of the ``mmcv.ops`` op it stands in for.
    """

    op_name: ClassVar[str] = "<op>"

    def __new__(cls, *args: object, **kwargs: object) -> MissingCompiledOp:
        """Raises :class:`MissingCompiledOpError`: the op cannot run here."""
        raise MissingCompiledOpError(_missing_op_message(cls.op_name))


def _missing_op(op_name: str) -> type[MissingCompiledOp]:
    placeholder = type(op_name, (MissingCompiledOp,), {"op_name": op_name})
    placeholder.__module__ = _OPS_MODULE
    placeholder.__doc__ = _missing_op_message(op_name)
    return placeholder


def point_sample(
    input: Tensor, points: Tensor, align_corners: bool = False, **kwargs: Any
) -> Tensor:
    """Samples features at points given in ``[0, 1] x [0, 1]`` coordinates.

    Same signature and behaviour as ``mmcv.ops.point_sample``: a wrapper of
    ``torch.nn.functional.grid_sample`` (bilinear, zero padding by default) that
    takes 3-D point tensors and coordinates in ``[0, 1]`` instead of ``[-1, 1]``.

    Args:
        input: Feature map, shape ``(N, C, H, W)``.
        points: Point coordinates ``(x, y)`` (``x`` along the width), range
            ``[0, 1]``, shape ``(N, P, 2)`` or ``(N, Hgrid, Wgrid, 2)``.
        align_corners: Whether 0 and 1 are the centres of the corner pixels
            (``True``) or their outer corners (``False``). Defaults to False.
        **kwargs: Passed on to ``grid_sample`` (``mode``, ``padding_mode``).

    Returns:
        Features at the points, shape ``(N, C, P)`` or ``(N, C, Hgrid, Wgrid)``.
    """
    is_point_list = points.dim() == 3
    if is_point_list:
        points = points.unsqueeze(2)  # (N, P, 2) -> (N, P, 1, 2)
    output = F.grid_sample(
        input, 2.0 * points - 1.0, align_corners=align_corners, **kwargs
    )
    return output.squeeze(3) if is_point_list else output


def _check_focal_loss_inputs(
    pred: Tensor, target: Tensor, weight: Tensor | None, reduction: str
) -> None:
    if pred.dim() != 2:
        raise ValueError(f"pred must have shape (N, C), got {tuple(pred.shape)}.")
    if target.dtype != torch.long or target.shape != pred.shape[:1]:
        raise ValueError(
            f"target must be int64 class indices of shape ({pred.size(0)},), got "
            f"{target.dtype} of shape {tuple(target.shape)}."
        )
    if weight is not None and weight.shape != pred.shape[1:]:
        raise ValueError(
            f"weight must have shape ({pred.size(1)},), got {tuple(weight.shape)}."
        )
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}.")


class _SigmoidFocalLossFunction(Function):
    """mmcv's ``sigmoid_focal_loss`` CUDA kernel, forward and backward, in PyTorch."""

    @staticmethod
    def forward(
        ctx: Any,
        pred: Tensor,
        target: Tensor,
        gamma: float,
        alpha: float,
        weight: Tensor | None,
        reduction: str,
    ) -> Tensor:
        p = pred.sigmoid()
        log_p = p.clamp(min=_FLT_MIN).log()
        log_not_p = (1.0 - p).clamp(min=_FLT_MIN).log()
        # (N, C): whether column c is the sample's class (index C: background).
        classes = torch.arange(pred.size(1), device=pred.device)
        positive = target.unsqueeze(1) == classes
        # (N, 1): mmcv scales a sample's losses by the weight of its target class.
        row_weight = (
            torch.ones_like(p[:, :1]) if weight is None else weight[target, None]
        )
        loss = row_weight * torch.where(
            positive,
            -alpha * (1.0 - p).pow(gamma) * log_p,
            -(1.0 - alpha) * p.pow(gamma) * log_not_p,
        )
        ctx.save_for_backward(p, log_p, log_not_p, positive, row_weight)
        ctx.gamma, ctx.alpha, ctx.reduction = gamma, alpha, reduction
        if reduction == "mean":
            return loss.sum() / pred.size(0)
        return loss.sum() if reduction == "sum" else loss

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:
        p, log_p, log_not_p, positive, row_weight = ctx.saved_tensors
        gamma, alpha = ctx.gamma, ctx.alpha
        grad = row_weight * torch.where(
            positive,
            -alpha * (1.0 - p).pow(gamma) * (1.0 - p - gamma * p * log_p),
            -(1.0 - alpha) * p.pow(gamma) * (gamma * (1.0 - p) * log_not_p - p),
        )
        grad = grad * grad_output
        if ctx.reduction == "mean":
            grad = grad / p.size(0)
        return grad, None, None, None, None, None


def sigmoid_focal_loss(
    pred: Tensor,
    target: Tensor,
    gamma: float = 2.0,
    alpha: float = 0.25,
    weight: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Sigmoid focal loss with class-index targets, as ``mmcv.ops``'s CUDA op.

    Follows `Focal Loss for Dense Object Detection <https://arxiv.org/abs/1708.02002>`_
    exactly as mmcv's kernel computes it: with ``p = sigmoid(pred)``, the loss of
    sample ``n`` and class ``c`` is ``-alpha (1 - p)^gamma log(p)`` when
    ``target[n] == c`` and ``-(1 - alpha) p^gamma log(1 - p)`` otherwise, logs
    clamped at ``log(FLT_MIN)``; the gradient is the kernel's analytic one. A target
    of ``C`` (or any index outside ``[0, C)``) marks a sample as background.

    Args:
        pred: Logits, shape ``(N, C)``.
        target: Class indices, int64, shape ``(N,)``.
        gamma: Focusing parameter. Defaults to 2.0.
        alpha: Weight of the positive term (``1 - alpha`` for the negative one).
            Defaults to 0.25.
        weight: Per-class weights, shape ``(C,)``; as in mmcv, every loss of
            sample ``n`` is scaled by ``weight[target[n]]``, so targets must then
            lie in ``[0, C)``. Defaults to None.
        reduction: ``"none"`` (shape ``(N, C)``), ``"sum"``, or ``"mean"``: the
            sum divided by ``N`` (not by ``N * C``). Defaults to ``"mean"``.

    Returns:
        The loss, shape ``(N, C)`` for ``reduction="none"``, else a scalar.

    Raises:
        ValueError: If shapes, the target dtype or ``reduction`` are invalid.
    """
    _check_focal_loss_inputs(pred, target, weight, reduction)
    loss: Tensor = _SigmoidFocalLossFunction.apply(
        pred, target, float(gamma), float(alpha), weight, reduction
    )
    return loss


def _build_fallback_module() -> types.ModuleType:
    fallback = types.ModuleType(_OPS_MODULE, __doc__)
    fallback.__spec__ = importlib.machinery.ModuleSpec(_OPS_MODULE, loader=None)

    def placeholder_attribute(name: str) -> type[MissingCompiledOp]:
        # Module-level __getattr__ (PEP 562): one cached placeholder per op name.
        if name.startswith("_"):  # probes such as __path__ or __all__ must fail
            raise AttributeError(f"module {_OPS_MODULE!r} has no attribute {name!r}")
        placeholder = _missing_op(name)
        setattr(fallback, name, placeholder)
        return placeholder

    vars(fallback).update(
        {
            _FALLBACK_MARKER: True,
            "point_sample": point_sample,
            "sigmoid_focal_loss": sigmoid_focal_loss,
            "__getattr__": placeholder_attribute,
        }
    )
    return fallback


def is_fallback_active() -> bool:
    """Whether ``mmcv.ops`` currently is this module's pure-PyTorch stand-in."""
    loaded = sys.modules.get(_OPS_MODULE)
    return getattr(loaded, _FALLBACK_MARKER, False) is True


def ensure_mmcv_ops() -> bool:
    """Makes ``import mmcv.ops`` work, installing the fallback only if needed.

    Leaves an already imported ``mmcv.ops`` alone. Otherwise imports it, and only
    if that fails because ``mmcv._ext`` (mmcv's compiled extension) does not exist
    installs the pure-PyTorch stand-in as ``sys.modules["mmcv.ops"]`` and
    ``mmcv.ops``. Idempotent.

    Returns:
        Whether ``mmcv.ops`` is the pure-PyTorch fallback.

    Raises:
        ImportError: ``import mmcv.ops`` failed for another reason than the missing
            compiled extension (for example a compiled mmcv that does not load);
            the original error propagates.
    """
    if _OPS_MODULE in sys.modules:
        return is_fallback_active()
    try:
        importlib.import_module(_OPS_MODULE)
    except ModuleNotFoundError as error:
        if error.name != _EXTENSION_MODULE:
            raise
        fallback = _build_fallback_module()
        sys.modules[_OPS_MODULE] = fallback
        vars(sys.modules["mmcv"])["ops"] = fallback
        return True
    return False


MMCV_OPS_IMPLEMENTATION: Final[Literal["compiled", "fallback"]] = (
    "fallback" if ensure_mmcv_ops() else "compiled"
)
