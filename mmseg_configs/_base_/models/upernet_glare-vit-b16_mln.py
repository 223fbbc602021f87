# UperNet on a GlareViT ViT-B/16 (frozen-ViT weights + UniAdapters from a GLARE
# export): blocks (2, 5, 8, 11) -> MultiLevelNeck (scales 4, 2, 1, 0.5) -> UPerHead,
# FCN auxiliary head on the last level. Neck, heads and data preprocessor come from
# mmseg's ViT-B UperNet model; only the backbone is replaced. The block indices
# are mmseg's (vit_vit-b16_mln_upernet_8xb2-160k_ade20k-512x512.py) and the
# paper's baseline protocol: every 12-block ViT inheriting this piece (ViT-S/16,
# DINOv2 ViT-S/14) uses them too.
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
        out_indices=(2, 5, 8, 11),
        adapter_bottleneck=None,  # embed_dim // 12: 32 for ViT-S, 64 for ViT-B
        adapter_scale=0.1,
        drop_path_rate=0.0,
        # Placeholder: --cfg-options model.backbone.checkpoint=PATH
        # (checkpoint_type='ssl' for a plain DINO / DINOv2 / iBOT / timm file).
        checkpoint='pretrain/glare_vit-b16.pth',
        checkpoint_type='glare',
        freeze_backbone=False))
