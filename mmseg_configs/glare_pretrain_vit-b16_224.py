# GLARE continual pre-training of a ViT-B/16 at 224 px (GPU-sized): 64 images
# per step, 20k iterations, output 8192 / hidden 2048 heads. Set data_root and
# the SSL checkpoint (e.g. DINO ViT-B/16) with --cfg-options.
_base_ = './_base_/glare_pretrain_runtime.py'

batch_size = 64
max_iters = 20000
warmup_iters = max_iters // 10
input_size = 224

model = dict(
    arch='vit_base_patch16_224',
    img_size=input_size,
    checkpoint='checkpoints/dino_vitbase16_pretrain.pth',
    output_dim=8192,
    hidden_dim=2048,
    head_bottleneck_dim=256,
    adapter_bottleneck=64)

train_dataloader = dict(
    batch_size=batch_size,
    num_workers=8,
    dataset=dict(data_root='data/unlabeled', input_size=input_size))

train_cfg = dict(max_iters=max_iters)
optim_wrapper = dict(optimizer=dict(lr=5e-4 * batch_size / 256))
param_scheduler = [
    dict(type='LinearLR', start_factor=1.0 / warmup_iters, by_epoch=False, begin=0,
         end=warmup_iters),
    dict(type='CosineAnnealingLR', eta_min=1e-6, by_epoch=False,
         begin=warmup_iters, end=max_iters, T_max=max_iters - warmup_iters),
]
default_hooks = dict(checkpoint=dict(interval=2000))
