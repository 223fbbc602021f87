# UperNet on a GlareViT DINOv2 ViT-S/14 sized for CPU runs at ~126 px: BN instead
# of SyncBN (no process group on CPU) and a 256-channel UPerHead (512 in the
# benchmark configs; 256 halves the CPU time of a training step: 2.2 s instead of
# ~5 s for 8 images of 126 px on 2 cores).
_base_ = './upernet_glare-vit-b16_mln.py'

norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    backbone=dict(
        arch='vit_small_patch14_dinov2',
        img_size=(126, 126),
        checkpoint='pretrain/glare_vit-s14-dinov2.pth'),
    neck=dict(in_channels=[384, 384, 384, 384], out_channels=384),
    decode_head=dict(
        in_channels=[384, 384, 384, 384], channels=256, norm_cfg=norm_cfg),
    auxiliary_head=dict(in_channels=384, norm_cfg=norm_cfg))
