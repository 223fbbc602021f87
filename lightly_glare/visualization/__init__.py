"""Attention-map and PCA figures for (adapted) ViT backbones.

Two kinds of figures, as in the GLARE paper: the per-head [CLS] attention of
the last block with DINO's 0.6-mass outline (GLARE Fig. 2/4), and the PCA of
the patch features as RGB (GLARE Fig. 5, following DINOv2's Fig. 1).

- :mod:`~lightly_glare.visualization.features`: the numbers (PyTorch only):
  :func:`preprocess_image`, :func:`attention_maps`, :func:`attention_mass_mask`,
  :func:`patch_tokens`, :func:`pca_rgb`;
- :mod:`~lightly_glare.visualization.figures`: the PNGs (matplotlib, imported
  lazily; ``pip install lightly-glare[viz]``).

Backbones are loaded with :func:`lightly_glare.weights.build_backbone`; the
command lines are ``tools/analysis_tools/visualize_{attention,pca}.py``. No
OpenMMLab import.

Examples:
    >>> image_rgb, image = preprocess_image(Image.open("cat.jpg"), 224, 16)
    >>> maps = attention_maps(backbone, image)  # (heads, 14, 14)
    >>> attention_figure(image_rgb, maps, "attention.png")
    >>> tokens, grid = patch_tokens(backbone, image)  # (196, D), (14, 14)
    >>> pca_figure([image_rgb], [pca_rgb(tokens, grid)], "pca.png")
"""

from lightly_glare.visualization.features import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    attention_maps,
    attention_mass_mask,
    patch_tokens,
    pca_rgb,
    preprocess_image,
)
from lightly_glare.visualization.figures import (
    attention_figure,
    attention_grid_figure,
    compare_attention_figure,
    panel_grid_figure,
    pca_figure,
)

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "attention_figure",
    "attention_grid_figure",
    "attention_maps",
    "attention_mass_mask",
    "compare_attention_figure",
    "panel_grid_figure",
    "patch_tokens",
    "pca_figure",
    "pca_rgb",
    "preprocess_image",
]
