"""GLARE's models (pure PyTorch + timm + lightly; no OpenMMLab import).

Besides the modules (UniAdapter, UniAdapterViT, heads, region sampler and
pooling, GLARE), the batch-side operations GLARE applies inside its forward
pass live here, as lightly keeps token-level operations under
``lightly.models``: patch correspondences between two views from their crop
geometry (:mod:`lightly_glare.models.geometry`, which also defines the
``(5,)`` view-geometry format that ``GlareTransform`` writes) and the
patch-level augmentations (:mod:`lightly_glare.models.patch_augmentations`;
the ``Patch*`` classes users pick are exported by
:mod:`lightly_glare.transforms`). Import them from those modules.
"""

from lightly_glare.loss.glare_output import DEFAULT_OUTPUT_DIM
from lightly_glare.models.adapted_vit import (
    BackboneOutput,
    TrainableReport,
    UniAdapterViT,
)
from lightly_glare.models.block_kernels import (
    ATTENTION_KERNELS,
    AttentionKernel,
    attention_with_cls_map,
)
from lightly_glare.models.glare import (
    DEFAULT_LOCAL_PATCHES_PER_VIEW,
    DEFAULT_STUDENT_DROP_PATH,
    GLARE,
)
from lightly_glare.models.head_init import (
    DEFAULT_HEAD_INIT_IMAGES,
    HeadInitialization,
    initialize_head,
    initialize_heads_from_data,
    spherical_kmeans,
)
from lightly_glare.models.projection_head import (
    GlareProjectionHead,
    head_state_dict,
)
from lightly_glare.models.region_pooling import CrossAttentionRegionPooling
from lightly_glare.models.region_sampler import (
    AttentionRegionSampler,
    attention_mass_masks,
)
from lightly_glare.models.uniadapter import (
    UniAdapter,
    count_adapter_parameters,
    default_bottleneck,
)

__all__ = [
    "ATTENTION_KERNELS",
    "AttentionKernel",
    "DEFAULT_LOCAL_PATCHES_PER_VIEW",
    "DEFAULT_STUDENT_DROP_PATH",
    "DEFAULT_OUTPUT_DIM",
    "GLARE",
    "GlareProjectionHead",
    "DEFAULT_HEAD_INIT_IMAGES",
    "HeadInitialization",
    "initialize_head",
    "initialize_heads_from_data",
    "spherical_kmeans",
    "head_state_dict",
    "AttentionRegionSampler",
    "BackboneOutput",
    "CrossAttentionRegionPooling",
    "TrainableReport",
    "UniAdapter",
    "UniAdapterViT",
    "attention_mass_masks",
    "attention_with_cls_map",
    "count_adapter_parameters",
    "default_bottleneck",
]
