# The ViT-S/16 overrides of upernet_glare-vit-b16_mln.py, once for every ViT-S/16
# config: timm's vit_small_patch16_224 (384 channels, 6 heads) for the backbone,
# 384 input channels for the neck and both heads, stochastic depth 0.1 as mmseg's
# DeiT-S UperNet (vit_deit-s16_mln_upernet_8xb2-160k_ade20k-512x512.py).
#
# Held in a variable, not in `model`: a config inheriting both a ViT-B entry
# config and this piece may not get `model` from two bases (mmengine refuses
# duplicate keys among bases), so it merges this one explicitly:
#   _base_ = ['../glare_ade20k.py', '../_base_/models/upernet_glare-vit-s16_mln.py']
#   model = {{_base_.vit_s16_model}}
vit_s16_model = dict(
    backbone=dict(
        arch='vit_small_patch16_224',
        drop_path_rate=0.1,
        # Placeholder: --cfg-options model.backbone.checkpoint=PATH
        checkpoint='pretrain/glare_vit-s16.pth'),
    neck=dict(in_channels=[384, 384, 384, 384], out_channels=384),
    decode_head=dict(in_channels=[384, 384, 384, 384]),
    auxiliary_head=dict(in_channels=384))
