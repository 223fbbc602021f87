# UperNet on a GlareViT ViT-B/16 (frozen-ViT weights + UniAdapters from a GLARE
# export): blocks (3, 5, 7, 11) -> MultiLevelNeck (scales 4, 2, 1, 0.5) -> UPerHead,
# FCN auxiliary head on the last level. Neck, heads and data preprocessor come from
# mmseg's ViT-B UperNet model; only the backbone is replaced.
_base_ = 'mmseg::_base_/models/upernet_vit-b16_ln_mln.py'

custom_imports = dict(
    imports=['lightly_glare.openmmlab'], allow_failed_imports=False)

model = dict(
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='GlareViT',
        arch='vit_base_patch16_224',
        img_size=(512, 512),
        out_indices=(3, 5, 7, 11),
        adapter_bottleneck=64,
        adapter_scale=0.1,
        drop_path_rate=0.0,
        # Placeholder: --cfg-options model.backbone.checkpoint=PATH
        # (checkpoint_type='ssl' for a plain DINO / DINOv2 / iBOT / timm file).
        checkpoint='pretrain/glare_vit-b16.pth',
        checkpoint_type='glare',
        freeze_backbone=False))
