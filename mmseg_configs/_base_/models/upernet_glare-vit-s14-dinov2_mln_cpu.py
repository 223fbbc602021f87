# UperNet on a GlareViT DINOv2 ViT-S/14 sized for CPU runs at ~126 px: BN instead
# of SyncBN (no process group on CPU) and a 128-channel UPerHead (512 in the
# benchmark configs). At 126 px the head, not the ViT, dominates a step: its 3x3
# fusion conv alone is ~3 GFLOP per image at 256 channels. Measured on 2 idle
# cores, 8 images per step: ~5 s at 512 channels, 2.6 s at 256, 1.7 s at 128.
# Features from blocks (2, 5, 8, 11) of the 12-block ViT-S/14, as the ViT-B piece.
_base_ = './upernet_glare-vit-b16_mln.py'

norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    backbone=dict(
        arch='vit_small_patch14_dinov2',
        img_size=(126, 126),
        checkpoint='pretrain/glare_vit-s14-dinov2.pth'),
    neck=dict(in_channels=[384, 384, 384, 384], out_channels=384),
    decode_head=dict(
        in_channels=[384, 384, 384, 384], channels=128, norm_cfg=norm_cfg),
    auxiliary_head=dict(in_channels=384, norm_cfg=norm_cfg))
