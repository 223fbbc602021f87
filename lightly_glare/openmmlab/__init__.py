"""OpenMMLab (mmengine / mmcv / mmseg) integration of lightly-glare.

The only subpackage that imports OpenMMLab. Importing it first makes the
installed stack usable, then registers lightly-glare's components:

1. :mod:`~lightly_glare.openmmlab.mmcv_compat` provides a pure-PyTorch
   ``mmcv.ops`` when mmcv's compiled ops are absent (mmcv-lite), so that
   ``import mmseg.models`` works. It must run before anything imports mmseg,
   hence the ``isort: split`` below.
2. :mod:`~lightly_glare.openmmlab.checkpoint` allows the objects mmengine's
   resume checkpoints hold in ``torch.load(weights_only=True)``.

Every registered class checks its config arguments when built
(:mod:`~lightly_glare.openmmlab.config_validation`); the fail-safe hooks
(non-finite loss, atomic checkpoints) are in :mod:`~lightly_glare.openmmlab.hooks`.

OpenMMLab configs load it with
``custom_imports = dict(imports=["lightly_glare.openmmlab"])``.
"""

from lightly_glare.openmmlab import mmcv_compat

# isort: split

from lightly_glare.openmmlab import (  # noqa: F401
    backbone,
    checkpoint,
    components,
    config_scope,
    datasets,
    hooks,
    optim_wrapper,
    pretrain_data,
    pretrainer,
)

__all__ = ["checkpoint", "mmcv_compat"]
