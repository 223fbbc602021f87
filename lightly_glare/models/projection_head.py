"""GLARE's projection head: DINO's head, deep-copyable and checkpoint-compatible."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.utils.parametrizations import weight_norm

from lightly_glare.loss.glare_output import DEFAULT_OUTPUT_DIM
from lightly_glare.models.defaults import HIDDEN_DIM

#: Checkpoint key forms of the weight-normalised last layer, mapped to the
#: parametrised form this head stores (``original0`` = g, ``original1`` = v).
_WEIGHT_NORM_KEYS = {
    "last_layer.weight_g": "last_layer.parametrizations.weight.original0",
    "last_layer.weight_v": "last_layer.parametrizations.weight.original1",
}


class GlareProjectionHead(nn.Module):
    """DINO's projection head for [CLS], region and patch tokens.

    A multi-layer perceptron with GELU (``input_dim -> hidden_dim -> ... ->
    bottleneck_dim``), L2 normalisation, and a weight-normalised linear layer
    to ``output_dim`` without bias. The same function as lightly's
    :class:`~lightly.models.modules.DINOProjectionHead` (tested equal on copied
    weights), with two differences that GLARE needs:

    - the last layer uses ``torch.nn.utils.parametrizations.weight_norm``, so
      the head can be deep-copied (the EMA teacher is ``copy.deepcopy`` of the
      student's head);
    - the parameters carry the names of DINO's and iBOT's official ``DINOHead``
      (``mlp.0``, ``mlp.2``, ``mlp.4``, ``last_layer``), and
      :meth:`load_state_dict` also accepts the checkpoint forms
      ``last_layer.weight_g`` / ``last_layer.weight_v`` and lightly's
      ``layers.*``, so heads of official checkpoints and of lightly models load
      strictly.

    - [0]: DINO, Caron et al., ICCV 2021, https://arxiv.org/abs/2104.14294

    Attributes:
        input_dim: Token dimension D of the backbone.
        hidden_dim: Hidden size of the MLP. Defaults to 2048 (DINO).
        bottleneck_dim: Size before the last layer. Defaults to 256 (DINO).
        output_dim: Number K of prototypes. Defaults to
            :data:`DEFAULT_OUTPUT_DIM`.
        num_layers: Linear layers of the MLP (>= 1). Defaults to 3 (DINO).
        norm_last_layer: Fix the norm g of the last layer's rows to 1 (DINO's
            default for ViT-S; more stable). Defaults to True.
        freeze_last_layer: Epochs during which
            :meth:`cancel_last_layer_gradients` drops the last layer's
            gradients (DINO's ``freeze_last_layer``, as lightly's
            ``DINOProjectionHead``). Defaults to -1 (never).

    Examples:
        >>> head = GlareProjectionHead(input_dim=384, output_dim=2048)
        >>> head(torch.randn(8, 384)).shape  # (B, D) -> (B, K)
        torch.Size([8, 2048])
        >>> teacher_head = copy.deepcopy(head)
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int = HIDDEN_DIM,
        bottleneck_dim: int = 256,
        output_dim: int = DEFAULT_OUTPUT_DIM,
        num_layers: int = 3,
        norm_last_layer: bool = True,
        freeze_last_layer: int = -1,
    ) -> None:
        super().__init__()
        if min(input_dim, hidden_dim, bottleneck_dim, output_dim, num_layers) < 1:
            raise ValueError(
                "GlareProjectionHead sizes must be positive, got "
                f"input_dim={input_dim}, hidden_dim={hidden_dim}, "
                f"bottleneck_dim={bottleneck_dim}, output_dim={output_dim}, "
                f"num_layers={num_layers}."
            )
        self.input_dim = input_dim
        self.hidden_dim = hidden_dim
        self.bottleneck_dim = bottleneck_dim
        self.output_dim = output_dim
        self.num_layers = num_layers
        self.norm_last_layer = norm_last_layer
        self.freeze_last_layer = freeze_last_layer
        sizes = [input_dim] + [hidden_dim] * (num_layers - 1) + [bottleneck_dim]
        layers: list[nn.Module] = []
        for index, (size_in, size_out) in enumerate(
            zip(sizes[:-1], sizes[1:], strict=True)
        ):
            if index > 0:
                layers.append(nn.GELU())
            layers.append(nn.Linear(size_in, size_out))
        self.mlp = nn.Sequential(*layers)
        self.last_layer = weight_norm(nn.Linear(bottleneck_dim, output_dim, bias=False))
        self.register_load_state_dict_pre_hook(_accept_checkpoint_keys)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """DINO's initialisation.

        Truncated normal (std 0.02) weights, zero biases, last-layer norms g = 1.
        """
        for module in self.mlp:
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
        weight_v = self.last_layer.parametrizations.weight.original1
        nn.init.trunc_normal_(weight_v, std=0.02)
        weight_g = self.last_layer.parametrizations.weight.original0
        weight_g.fill_(1.0)
        weight_g.requires_grad_(not self.norm_last_layer)

    def cancel_last_layer_gradients(self, current_epoch: int) -> None:
        """Drops the last layer's gradients during the first epochs.

        DINO keeps the output layer fixed for ``freeze_last_layer`` epochs
        (``cancel_gradients_last_layer`` in DINO's ``utils.py``), which helps
        training; call it between ``loss.backward()`` and ``optimizer.step()``,
        as lightly's ``DINOProjectionHead.cancel_last_layer_gradients`` (same
        signature and effect).

        Args:
            current_epoch: The epoch of the step; from ``freeze_last_layer``
                on, nothing is changed.
        """
        if current_epoch >= self.freeze_last_layer:
            return
        for param in self.last_layer.parameters():
            param.grad = None

    def forward(self, x: Tensor) -> Tensor:
        """Projects tokens.

        Args:
            x: Tokens with shape (..., input_dim).

        Returns:
            Projections (logits over the K prototypes) with shape
            (..., output_dim).
        """
        if x.shape[-1] != self.input_dim:
            raise ValueError(
                f"GlareProjectionHead expects tokens of size {self.input_dim}, got "
                f"shape {tuple(x.shape)}."
            )
        x = self.mlp(x)  # (..., bottleneck_dim)
        x = F.normalize(x, dim=-1, p=2)
        return self.last_layer(x)  # (..., output_dim)


def _accept_checkpoint_keys(
    module: nn.Module,
    state_dict: dict[str, Any],
    prefix: str,
    *_: Any,
) -> None:
    """Renames checkpoint keys in place to this head's names before a load.

    DINO/iBOT (``last_layer.weight_g`` / ``weight_v``) and lightly
    (``layers.*``) forms are accepted.
    """
    for key in list(state_dict):
        if not key.startswith(prefix):
            continue
        local = key[len(prefix) :]
        renamed = _WEIGHT_NORM_KEYS.get(local)
        if renamed is None and local.startswith("layers."):
            renamed = "mlp." + local[len("layers.") :]
        if renamed is not None:
            state_dict[prefix + renamed] = state_dict.pop(key)


def head_state_dict(state: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """The entries of ``state`` under ``prefix``, with the prefix removed.

    Args:
        state: A checkpoint's flat state dict, e.g. a DINO checkpoint's
            ``teacher`` entry.
        prefix: The head's key prefix, e.g. ``"head."``.

    Returns:
        The head's own state dict (empty when ``state`` has no such keys).
    """
    return {
        key[len(prefix) :]: value
        for key, value in state.items()
        if key.startswith(prefix)
    }
