# The ViT-S/16 variant of upernet_glare-vit-b16_mln_4xb4-160k_ade20k-512x512.py
# (384 channels; stochastic depth 0.1 as mmseg's DeiT-S UperNet).
_base_ = './upernet_glare-vit-b16_mln_4xb4-160k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        arch='vit_small_patch16_224',
        drop_path_rate=0.1,
        checkpoint='pretrain/glare_vit-s16.pth'),
    neck=dict(in_channels=[384, 384, 384, 384], out_channels=384),
    decode_head=dict(in_channels=[384, 384, 384, 384]),
    auxiliary_head=dict(in_channels=384))
