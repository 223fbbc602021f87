# GLARE continual pre-training of a ViT-B/16 at 224 px (GPU-sized): 1 GPU x 64
# images per step, 20k iterations, output 8192 / hidden 2048 heads. Set the data
# folder and the SSL checkpoint (e.g. DINO ViT-B/16) with --cfg-options. On N
# GPUs (tools/dist_train.sh) each takes 64 images: scale
# optim_wrapper.optimizer.lr to 5e-4 * 64 * N / 256.
#
#   python tools/train.py mmseg_configs/pretrain/glare_vit-b16_1xb64-20k_unlabeled-224.py \
#       --work-dir work_dirs/pretrain_vit-b16 --amp \
#       --cfg-options model.backbone.checkpoint=checkpoints/dino_vitbase16_pretrain.pth \
#       train_dataloader.dataset.data_root=data/unlabeled
#   python tools/model_converters/export_backbone.py work_dirs/pretrain_vit-b16/iter_20000.pth \
#       pretrain/glare_vit-b16.pth   # what ../glare_ade20k.py and co. load
_base_ = '../_base_/glare_pretrain_runtime.py'

batch_size = 64
max_iters = 20000
warmup_iters = max_iters // 10
input_size = 224

model = dict(
    backbone=dict(
        arch='vit_base_patch16_224',
        img_size=input_size,
        checkpoint='checkpoints/dino_vitbase16_pretrain.pth'),
    head=dict(output_dim=8192, hidden_dim=2048, bottleneck_dim=256))

train_dataloader = dict(
    batch_size=batch_size,
    num_workers=8,
    dataset=dict(
        data_root='data/unlabeled',
        transform=dict(input_size=input_size)))

train_cfg = dict(max_iters=max_iters)
optim_wrapper = dict(optimizer=dict(lr=5e-4 * batch_size / 256))
param_scheduler = [
    dict(type='LinearLR', start_factor=1.0 / warmup_iters, by_epoch=False, begin=0,
         end=warmup_iters),
    dict(type='CosineAnnealingLR', eta_min=1e-6, by_epoch=False,
         begin=warmup_iters, end=max_iters, T_max=max_iters - warmup_iters),
]
default_hooks = dict(checkpoint=dict(interval=2000))
