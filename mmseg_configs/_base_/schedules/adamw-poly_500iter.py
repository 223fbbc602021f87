# A CPU-sized version of the AdamW + poly schedule: 500 iterations, linear
# warm-up over 50, validation and checkpoints every 100. DINOv2 ViT-S/14 at
# 126 px, 8 images per step, 128-channel UPerHead: 1.7 s per iteration measured
# on 2 idle CPU cores, so about 15 minutes.
_base_ = './adamw-poly_160k.py'

# The neck and heads start from random weights while the backbone starts from
# pre-trained ones: they get 10x its learning rate (mmseg's lr_mult convention,
# as in SegFormer's configs), so that a short schedule trains them far enough.
# A custom key replaces the type rules of the base schedule for the parameters
# it matches (mmengine), so the neck's and heads' norms and biases are decayed
# here (weight decay 0.01 x 6e-4 over 500 steps: negligible).
optim_wrapper = dict(
    paramwise_cfg=dict(
        custom_keys={
            'head': dict(lr_mult=10.),
            'neck': dict(lr_mult=10.),
        }))

param_scheduler = [
    dict(
        type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=50),
    dict(
        type='PolyLR', eta_min=0.0, power=1.0, begin=50, end=500,
        by_epoch=False),
]
train_cfg = dict(max_iters=500, val_interval=100)
default_hooks = dict(
    checkpoint=dict(interval=100, max_keep_ckpts=1),
    logger=dict(interval=10))
