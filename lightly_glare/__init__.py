"""lightly-glare: GLARE continual self-supervised pre-training for Vision Transformers.

The pure-PyTorch components live in :mod:`lightly_glare.models`,
:mod:`lightly_glare.loss` and :mod:`lightly_glare.transforms` and never import
OpenMMLab. :mod:`lightly_glare.openmmlab` registers them with mmengine / mmseg.
"""

__version__ = "0.1.0"
