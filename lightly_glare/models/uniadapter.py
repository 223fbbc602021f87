"""UniAdapter: the bottleneck adapter GLARE trains inside every frozen ViT block."""

from __future__ import annotations

from torch import Tensor, nn

from lightly_glare.models.defaults import ADAPTER_SCALE


class UniAdapter(nn.Module):
    """Vision branch of UniAdapter: ``s * W_up(ReLU(W_down(LN(x))))``.

    - [0]: UniAdapter, Lu et al., ICLR 2024, https://arxiv.org/abs/2302.06605
      (code: ``RERV/UniAdapter``, ``models/adapter.py``).

    UniAdapter's cross-modal parts (text/multimodal up-projections, shared
    down-projection) have no role in a vision-only model; only the layer norm,
    the down-projection and the up-projection are kept. GLARE places one adapter
    per transformer block, in parallel to the MLP, reading the stream after the
    attention sub-layer (see :class:`~lightly_glare.models.UniAdapterViT`).

    Attributes:
        dim: Token dimension D of the backbone.
        bottleneck: Hidden size b of the adapter. Defaults to
            :func:`default_bottleneck` of ``dim`` (``dim // 12``: 32 for
            ViT-S, 64 for ViT-B; ours, chosen on the segmentation-transfer
            harness; the UniAdapter paper uses 512 for ViT-B in retrieval).
        scale: Output scale s. Defaults to 0.1 as in UniAdapter.
        dropout: Dropout on the bottleneck activations. Defaults to 0.
        zero_init: Initialise the up-projection to zero so that the adapted
            network equals the source network at step 0. Defaults to True (ours).

    Examples:
        >>> adapter = UniAdapter(dim=384)  # bottleneck 384 // 12 = 32
        >>> tokens = torch.randn(2, 197, 384)
        >>> adapter(tokens).abs().max()  # zero-initialised: an exact identity branch
        tensor(0., grad_fn=<MaxBackward1>)
    """

    def __init__(
        self,
        dim: int,
        bottleneck: int | None = None,
        scale: float = ADAPTER_SCALE,
        dropout: float = 0.0,
        zero_init: bool = True,
    ) -> None:
        super().__init__()
        if dim <= 0 or (bottleneck is not None and bottleneck <= 0):
            raise ValueError(
                f"dim and bottleneck must be positive, got dim={dim}, "
                f"bottleneck={bottleneck}."
            )
        bottleneck = default_bottleneck(dim) if bottleneck is None else bottleneck
        self.dim = dim
        self.bottleneck = bottleneck
        self.scale = scale
        self.norm = nn.LayerNorm(dim)
        self.down = nn.Linear(dim, bottleneck)
        self.act = nn.ReLU()
        self.dropout = nn.Dropout(dropout)
        self.up = nn.Linear(bottleneck, dim)
        self.zero_init = zero_init
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialises the projections (Kaiming-uniform down, zero or small up)."""
        self.norm.reset_parameters()
        nn.init.kaiming_uniform_(self.down.weight, a=5**0.5)
        nn.init.zeros_(self.down.bias)
        if self.zero_init:
            nn.init.zeros_(self.up.weight)
        else:
            nn.init.trunc_normal_(self.up.weight, std=0.02)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: Tensor) -> Tensor:
        """Computes the adapter branch.

        Args:
            x: Tokens with shape (B, T, D).

        Returns:
            The adapter output with shape (B, T, D), to be added to the stream.
        """
        hidden = self.dropout(self.act(self.down(self.norm(x))))  # (B, T, b)
        return self.up(hidden) * self.scale  # (B, T, D)


def default_bottleneck(dim: int) -> int:
    """The default adapter bottleneck of a ``dim``-wide ViT: ``max(1, dim // 12)``.

    32 for ViT-S (384), 64 for ViT-B (768), 85 for ViT-L (1024). On the
    segmentation-transfer harness (DINOv2 ViT-S/14, aerial and MRI, 3 seeds)
    32 was not below 64 on either domain, at half the adapters' cost.

    Args:
        dim: Token dimension d of the backbone.
    """
    return max(1, dim // 12)


def count_adapter_parameters(dim: int, bottleneck: int) -> int:
    """Returns the trainable parameters of one adapter: ``3d + 2db + b``.

    Args:
        dim: Token dimension d.
        bottleneck: Bottleneck size b.
    """
    return 3 * dim + 2 * dim * bottleneck + bottleneck
