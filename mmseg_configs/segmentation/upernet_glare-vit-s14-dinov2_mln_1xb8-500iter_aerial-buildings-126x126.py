# GLARE-adapted DINOv2 ViT-S/14 + UperNet on the offline aerial_buildings set (2 classes),
# 126x126 crops, 500 iterations of 8 images: sized for a CPU (2 cores: ~15 min).
#
#   python tools/dataset_converters/prepare_data.py aerial --out data/aerial
#   python tools/train.py mmseg_configs/segmentation/upernet_glare-vit-s14-dinov2_mln_1xb8-500iter_aerial-buildings-126x126.py \
#       --cfg-options model.backbone.checkpoint=pretrain/glare_vit-s14-dinov2.pth
# (a GLARE export, e.g. of ../pretrain/glare_vit-s14-dinov2_1xb16-300iter_aerial-126.py;
# model.backbone.checkpoint_type=ssl for a plain DINOv2 checkpoint).
_base_ = [
    '../_base_/models/upernet_glare-vit-s14-dinov2_mln_cpu.py',
    '../_base_/datasets/aerial_buildings.py',
    'mmseg::_base_/default_runtime.py',
    '../_base_/schedules/adamw-poly_500iter.py',
]
crop_size = (126, 126)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(img_size=crop_size),
    decode_head=dict(num_classes=2),
    auxiliary_head=dict(num_classes=2))
