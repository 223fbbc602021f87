"""Projection heads of DINO, iBOT and DINOv2 checkpoints, for GLARE's heads.

The backbone loaders (:func:`~lightly_glare.weights.load_ssl_checkpoint`) drop
the heads; :func:`load_projection_heads` reads them, so that GLARE starts from
the heads the backbone was trained with instead of random ones (with random
heads and ``freeze_heads=True`` the teacher is uniform and the adapters get no
signal). The official layouts (written out from the DINO, iBOT and DINOv2
source code):

- DINO ``checkpoint.pth``: ``student`` (``module.head.*``) and ``teacher``
  (``head.*``) entries; ``DINOHead`` keys ``mlp.0``, ``mlp.2``, ``mlp.4``
  (Linear layers, GELUs between) and ``last_layer.weight_g`` /
  ``last_layer.weight_v`` (weight-normalised, no bias).
- iBOT ``checkpoint.pth`` (``student`` / ``teacher``) and released teacher
  files (``{"state_dict": ...}``, read as the teacher): ``iBOTHead`` adds
  ``last_layer2.*``, the patch tokens' last layer on the shared MLP; with
  ``shared_head=True`` it is the [CLS] head's own ``last_layer`` (equal
  tensors).
- DINOv2 training checkpoints: ``dino_head.*`` ([CLS]) and, with
  ``ibot.separate_head``, ``ibot_head.*`` (patches), in ``teacher`` /
  ``student`` entries or ``teacher.`` / ``student.`` key prefixes.

Every head state dict returned loads with ``strict=True`` into
:class:`~lightly_glare.models.GlareProjectionHead` built with its
:class:`HeadSizes`.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from torch import Tensor, nn

from lightly_glare.models.projection_head import GlareProjectionHead, head_state_dict
from lightly_glare.weights.checkpoint_io import (
    CheckpointMismatchError,
    check_finite,
    listed,
)
from lightly_glare.weights.ssl_checkpoints import loaded_checkpoint
from lightly_glare.weights.ssl_layouts import network_state_dict, strip_prefixes

#: Names of the heads of :class:`CheckpointHeads`.
HeadName = Literal["student", "teacher", "student_patch", "teacher_patch"]
#: Key prefixes of the heads: DINO / iBOT keep one head (``head.``) whose
#: ``last_layer2.`` is iBOT's patch layer on the shared MLP; DINOv2 keeps a
#: [CLS] head and a separate patch head.
_HEAD_PREFIX = "head."
_IBOT_PATCH_LAYER = "last_layer2."
_DINOV2_PREFIXES = ("dino_head.", "ibot_head.")
_LINEAR_WEIGHT = re.compile(r"mlp\.(\d+)\.weight")


@dataclass(frozen=True)
class HeadSizes:
    """The sizes of a DINO head, as :class:`GlareProjectionHead` takes them.

    ``GlareProjectionHead(**dataclasses.asdict(sizes))`` builds a head that
    the state dict the sizes were read from loads into strictly.

    Attributes:
        input_dim: Token dimension D of the backbone.
        hidden_dim: Hidden size of the MLP (equal to ``bottleneck_dim`` when
            ``num_layers`` is 1: unused then).
        bottleneck_dim: Size before the last layer.
        output_dim: Number K of prototypes.
        num_layers: Linear layers of the MLP.
    """

    input_dim: int
    hidden_dim: int
    bottleneck_dim: int
    output_dim: int
    num_layers: int


def head_sizes(state: Mapping[str, Tensor], source: str = "the head") -> HeadSizes:
    """Reads the sizes of a head state dict in DINO's layout, strictly.

    Args:
        state: A head's state dict: ``mlp.<2i>.weight`` ``(out, in)`` and
            ``mlp.<2i>.bias`` for the linear layers, ``last_layer.weight_g``
            ``(K, 1)`` and ``last_layer.weight_v`` ``(K, bottleneck_dim)``.
        source: What ``state`` is, for the message.

    Returns:
        The sizes.

    Raises:
        CheckpointMismatchError: Keys or shapes do not form such a head (e.g.
            BatchNorm layers of ``use_bn_in_head``, a last norm, iBOT's
            ``mlp2`` without bottleneck); the message lists the differences.
    """
    indices = sorted(
        int(match.group(1)) for key in state if (match := _LINEAR_WEIGHT.fullmatch(key))
    )
    weight_v = state.get("last_layer.weight_v")
    if not indices or indices[0] != 0 or weight_v is None or weight_v.dim() != 2:
        raise _not_a_head(source, state, "no mlp.0.weight or last_layer.weight_v")
    first, last = state["mlp.0.weight"], state[f"mlp.{indices[-1]}.weight"]
    sizes = HeadSizes(
        input_dim=int(first.shape[1]),
        hidden_dim=int(first.shape[0]),
        bottleneck_dim=int(last.shape[0]),
        output_dim=int(weight_v.shape[0]),
        num_layers=len(indices),
    )
    chain = (
        [sizes.input_dim]
        + [sizes.hidden_dim] * (sizes.num_layers - 1)
        + [sizes.bottleneck_dim]
    )
    expected: dict[str, tuple[int, ...]] = {
        "last_layer.weight_g": (sizes.output_dim, 1),
        "last_layer.weight_v": (sizes.output_dim, sizes.bottleneck_dim),
    }
    for layer in range(sizes.num_layers):  # Linear at 2i, GELU at 2i + 1
        expected[f"mlp.{2 * layer}.weight"] = (chain[layer + 1], chain[layer])
        expected[f"mlp.{2 * layer}.bias"] = (chain[layer + 1],)
    differences = [f"missing {key}" for key in expected if key not in state]
    differences += [f"unexpected {key}" for key in state if key not in expected]
    differences += [
        f"{key}: {tuple(state[key].shape)}, expected {shape}"
        for key, shape in expected.items()
        if key in state and tuple(state[key].shape) != shape
    ]
    if differences:
        raise _not_a_head(source, state, listed(differences))
    return sizes


def _not_a_head(
    source: str, state: Mapping[str, Tensor], cause: str
) -> CheckpointMismatchError:
    return CheckpointMismatchError(
        f"{source} is not a DINO/iBOT projection head ({cause}; keys: "
        f"{listed(list(state))}). Supported: Linear layers mlp.0, mlp.2, ... with "
        "GELUs between and a weight-normalised last_layer (weight_g, weight_v); "
        "heads with BatchNorm (use_bn_in_head), a last norm or no bottleneck are "
        "not. Start from random heads instead (do not load the heads)."
    )


@dataclass(frozen=True)
class CheckpointHeads:
    """The projection heads found in a checkpoint (None where absent).

    Every state dict has DINO's key layout (``mlp.*``, ``last_layer.weight_g``
    / ``weight_v``) and loads strictly into ``GlareProjectionHead(**asdict(
    sizes))`` (``patch_sizes`` for the patch heads); :meth:`build` does that.

    Attributes:
        source: The checkpoint, for messages.
        student: The student's [CLS] head.
        teacher: The teacher's [CLS] head (a file holding one network, e.g.
            iBOT's released ``{"state_dict": ...}``, gives its head here).
        student_patch: The student's separate patch head (iBOT with
            ``shared_head=False``: the shared MLP plus ``last_layer2``; DINOv2:
            ``ibot_head``).
        teacher_patch: The teacher's separate patch head.
        sizes: Sizes of the [CLS] heads; None without any.
        patch_sizes: Sizes of the patch heads; None without any.
        shared_patch_head: The method projected patches with the [CLS] head
            (iBOT ``shared_head=True``, DINOv2 without ``ibot_head``); False
            for DINO (no patch term) and for separate patch heads.
    """

    source: str
    student: dict[str, Tensor] | None = None
    teacher: dict[str, Tensor] | None = None
    student_patch: dict[str, Tensor] | None = None
    teacher_patch: dict[str, Tensor] | None = None
    sizes: HeadSizes | None = None
    patch_sizes: HeadSizes | None = None
    shared_patch_head: bool = False

    def build(
        self, which: HeadName, *, norm_last_layer: bool = True
    ) -> GlareProjectionHead | None:
        """A :class:`GlareProjectionHead` holding one of the heads.

        Args:
            which: ``"student"``, ``"teacher"``, ``"student_patch"`` or
                ``"teacher_patch"``.
            norm_last_layer: Keep the last layer's norms g fixed (DINO's
                default); see :class:`GlareProjectionHead`.

        Returns:
            The head, loaded strictly; None when the checkpoint has no such
            head.
        """
        state: dict[str, Tensor] | None = getattr(self, which)
        sizes = self.patch_sizes if which.endswith("_patch") else self.sizes
        if state is None or sizes is None:
            return None
        head = GlareProjectionHead(
            **dataclasses.asdict(sizes), norm_last_layer=norm_last_layer
        )
        head.load_state_dict(state, strict=True)
        return head


def load_projection_heads(
    checkpoint: str | os.PathLike[str] | Mapping[str, Any],
    *,
    source: str | os.PathLike[str] | None = None,
    input_dim: int | None = None,
    output_dim: int | None = None,
    patch_output_dim: int | None = None,
) -> CheckpointHeads:
    """Reads the student's and the teacher's projection heads of a checkpoint.

    A file is read with ``torch.load(weights_only=True)`` (no pickled code
    runs). See the module docstring for the layouts.

    Args:
        checkpoint: Local DINO / iBOT / DINOv2 checkpoint file, or the object
            read from it by :func:`~lightly_glare.weights.read_ssl_checkpoint`
            (a file read once for the backbone, with
            :func:`~lightly_glare.weights.create_vit`, and the heads).
        source: The file an already-loaded ``checkpoint`` came from, named in
            messages. Defaults to None (``"<checkpoint>"``).
        input_dim: The backbone's token dimension D the heads must take; None
            skips the check.
        output_dim: The [CLS] heads' output size K the caller wants; None takes
            the checkpoint's.
        patch_output_dim: The patch heads' output size; None takes the
            checkpoint's. Checked against the separate patch heads, or the
            [CLS] heads when the checkpoint shares them.

    Returns:
        The heads (fields None where the checkpoint has none, e.g. a plain
        backbone file) and their sizes.

    Raises:
        FileNotFoundError: ``checkpoint`` does not exist.
        CheckpointMismatchError: The file cannot be read; a head is not in
            DINO's layout; the student's and the teacher's heads differ in
            size; or a requested size differs from the checkpoint's (the
            message names both and the fix).
        NonFiniteWeightsError: A head weight holds NaN or inf.
    """
    loaded, label = loaded_checkpoint(checkpoint, source)
    networks = {name: _network(loaded, name, label) for name in ("student", "teacher")}
    if networks["student"] is None and networks["teacher"] is None:
        networks["teacher"] = network_state_dict(loaded, None, label)
    found: dict[str, dict[str, Tensor] | None] = {}
    shared = False
    for name, state in networks.items():
        head, patch, shared_here = _heads_of(state or {})
        found[name], found[f"{name}_patch"] = head, patch
        shared = shared or shared_here
    for name, head in found.items():
        if head is not None:
            check_finite(head, f"{label} ({name} head)")
    sizes = _common_sizes(label, found["student"], found["teacher"], "[CLS]")
    patch_sizes = _common_sizes(
        label, found["student_patch"], found["teacher_patch"], "patch"
    )
    checks = (
        ("input_dim", input_dim, sizes, "[CLS]"),
        ("input_dim", input_dim, patch_sizes, "patch"),
        ("output_dim", output_dim, sizes, "[CLS]"),
        (
            "patch_output_dim",
            patch_output_dim,
            sizes if shared else patch_sizes,
            "patch",
        ),
    )
    for argument, value, found_sizes, kind in checks:
        _check_requested(label, argument, value, found_sizes, kind)
    return CheckpointHeads(
        source=label,
        student=found["student"],
        teacher=found["teacher"],
        student_patch=found["student_patch"],
        teacher_patch=found["teacher_patch"],
        sizes=sizes,
        patch_sizes=patch_sizes,
        shared_patch_head=shared,
    )


def _network(checkpoint: Any, name: str, source: str) -> dict[str, Any] | None:
    """The ``student`` / ``teacher`` network's state, or None if absent."""
    try:
        return network_state_dict(checkpoint, name, source)
    except CheckpointMismatchError:
        return None


def _heads_of(
    state: Mapping[str, Any],
) -> tuple[dict[str, Tensor] | None, dict[str, Tensor] | None, bool]:
    """The [CLS] head, the separate patch head and "shared" of one network."""
    tensors = {
        strip_prefixes(key): value
        for key, value in state.items()
        if isinstance(value, Tensor)
    }
    head = head_state_dict(tensors, _HEAD_PREFIX)
    if head:  # DINO / iBOT
        last_layer2 = head_state_dict(head, _IBOT_PATCH_LAYER)
        cls_head = {
            k: v for k, v in head.items() if not k.startswith(_IBOT_PATCH_LAYER)
        }
        if not last_layer2:
            return cls_head, None, False
        if all(
            key in last_layer2 and last_layer2[key].equal(cls_head[f"last_layer.{key}"])
            for key in ("weight_g", "weight_v")
        ):
            return cls_head, None, True  # iBOT shared_head: the same module
        mlp = {k: v for k, v in cls_head.items() if k.startswith("mlp.")}
        patch = {**mlp, **{f"last_layer.{k}": v for k, v in last_layer2.items()}}
        return cls_head, patch, False
    dino, ibot = (head_state_dict(tensors, prefix) for prefix in _DINOV2_PREFIXES)
    return dino or None, ibot or None, bool(dino) and not ibot


def _common_sizes(
    source: str,
    student: dict[str, Tensor] | None,
    teacher: dict[str, Tensor] | None,
    kind: str,
) -> HeadSizes | None:
    """The sizes of the student's and teacher's heads, which must agree."""
    sizes = {
        name: head_sizes(state, f"{source} ({name} {kind} head)")
        for name, state in (("student", student), ("teacher", teacher))
        if state is not None
    }
    if len(set(sizes.values())) > 1:
        raise CheckpointMismatchError(
            f"{source}: the student's and the teacher's {kind} heads differ in "
            f"size ({sizes['student']} vs {sizes['teacher']}); the checkpoint is "
            "inconsistent: load a checkpoint written by one training run."
        )
    return next(iter(sizes.values()), None)


def _check_requested(
    source: str,
    argument: str,
    value: int | None,
    sizes: HeadSizes | None,
    kind: str,
) -> None:
    """Raises if a requested size differs from the checkpoint's heads'."""
    if value is None or sizes is None:
        return
    field = "input_dim" if argument == "input_dim" else "output_dim"
    found = getattr(sizes, field)
    if found != value:
        fix = (
            "build the backbone the heads were trained on, or do not load the heads"
            if field == "input_dim"
            else f"use {argument}={found} (None takes the checkpoint's size), or "
            "do not load the heads (random heads trained from scratch)"
        )
        raise CheckpointMismatchError(
            f"{source}: its {kind} heads have {field} {found} but {argument}="
            f"{value} was requested: {fix}."
        )


def _describe_sizes(head: nn.Module) -> str:
    """``input_dim=..., output_dim=...`` of a head, for messages."""
    names = ("input_dim", "hidden_dim", "bottleneck_dim", "output_dim", "num_layers")
    sizes = [f"{name}={getattr(head, name)}" for name in names if hasattr(head, name)]
    return ", ".join(sizes) or type(head).__name__


def load_heads_into(
    targets: Mapping[tuple[str, str], nn.Module], heads: CheckpointHeads
) -> list[str]:
    """Loads a checkpoint's heads into a model's heads, all or nothing.

    The rules of :meth:`GLARE.load_heads <lightly_glare.models.GLARE.load_heads>`:
    each network's head takes that network's checkpoint head, or the other
    network's where the checkpoint holds only one; patch heads take the
    checkpoint's separate patch heads, or its [CLS] heads where it has none.

    Args:
        targets: The modules to load, by ``(network, kind)`` with network
            ``"student"`` / ``"teacher"`` and kind ``"head"`` / ``"patch_head"``
            (no patch heads where the model shares its [CLS] head).
        heads: From :func:`load_projection_heads`.

    Returns:
        What was loaded, e.g. ``["student head <- student", ...]``.

    Raises:
        CheckpointMismatchError: A head has other sizes than the checkpoint's;
            nothing is loaded.
    """
    other = {"student": "teacher", "teacher": "student"}
    separate_patch_heads = (heads.student_patch or heads.teacher_patch) is not None
    plan = []
    for (network, kind), module in targets.items():
        use_patch = kind == "patch_head" and separate_patch_heads
        suffix = "_patch" if use_patch else ""
        source = network if getattr(heads, network + suffix) else other[network]
        state = getattr(heads, source + suffix)
        if state is not None:
            label = f"{network} {kind.replace('_', ' ')}"
            plan.append((module, state, label, f"{source}{suffix} head"))
    for module, state, label, source in plan:  # all or nothing
        try:
            copy.deepcopy(module).load_state_dict(state, strict=True)
        except RuntimeError as error:
            sizes = heads.patch_sizes if "patch" in source else heads.sizes
            raise CheckpointMismatchError(
                f"{heads.source}: the checkpoint's {source} has sizes "
                f"{sizes}, which this model's {label} ({_describe_sizes(module)}) "
                "cannot hold. Build the head with the checkpoint's sizes "
                f"(output_dim={getattr(sizes, 'output_dim', '?')}) or do not "
                "load the checkpoint's heads."
            ) from error
    for module, state, _, _ in plan:
        module.load_state_dict(state, strict=True)
    return [f"{label} <- {source}" for _, _, label, source in plan]
