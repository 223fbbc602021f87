"""lightly-glare: GLARE continual self-supervised pre-training for Vision Transformers.

The pure-PyTorch components live in :mod:`lightly_glare.models`,
:mod:`lightly_glare.loss` and :mod:`lightly_glare.transforms` and never import
OpenMMLab. :mod:`lightly_glare.openmmlab` registers them with mmengine / mmseg.
``lightly_glare.pretrain(out, data, checkpoint, model=...)`` runs a whole
continual pre-training (:func:`lightly_glare.pretraining.run.pretrain`, the
pre-training code is :mod:`lightly_glare.pretraining`); it is imported on
first use, so that ``import lightly_glare`` (and the ``lightly-glare`` command)
stays instant.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lightly_glare.pretraining.run import pretrain

__version__ = "0.1.0"
__all__ = ["__version__", "pretrain"]


def __getattr__(name: str) -> Any:
    """Imports :func:`~lightly_glare.pretraining.run.pretrain` on first access."""
    if name == "pretrain":
        from lightly_glare.pretraining.run import pretrain

        return pretrain
    raise AttributeError(f"module 'lightly_glare' has no attribute {name!r}")
