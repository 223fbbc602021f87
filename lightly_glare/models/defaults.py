"""Default values of GLARE's knobs, each written once.

Every signature, dataclass field, config and command-line option that takes one
of these knobs uses the constant below as its default, so a change here changes
it everywhere (docs/method.md says which of them are the paper's and which are
ours).
"""

from __future__ import annotations

#: Output scale of every UniAdapter (its up-projection is multiplied by it).
ADAPTER_SCALE = 0.1
#: Fraction of a teacher attention head's mass kept as a region (DINO's rule).
REGION_MASS = 0.6
#: Fraction of the patches a patch-level augmentation distorts per image.
PATCH_RATIO = 0.3
#: Teacher EMA momentum at step 0 (cosine schedule to :data:`MOMENTUM_END`).
MOMENTUM_START = 0.996
#: Teacher EMA momentum at the last step.
MOMENTUM_END = 1.0
#: Input size of the ViT and of the views, in pixels (the paper's and timm's).
IMG_SIZE = 224
#: Hidden size of the projection heads' MLP (DINO's).
HIDDEN_DIM = 2048
#: A region with fewer patches than this in either view is not matched.
MIN_REGION_PATCHES = 2
#: (min, max) Gaussian blur sigma in pixels, of the image and the patch blur
#: (DINO's range).
BLUR_SIGMAS = (0.1, 2.0)
