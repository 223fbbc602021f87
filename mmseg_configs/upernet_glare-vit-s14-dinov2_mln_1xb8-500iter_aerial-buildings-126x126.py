# GLARE-adapted DINOv2 ViT-S/14 + UperNet on the offline aerial_buildings set (2 classes),
# 126x126 crops, 500 iterations of 8 images: sized for a CPU (2 cores: ~15 min).
_base_ = [
    './_base_/models/upernet_glare-vit-s14-dinov2_mln_cpu.py',
    './_base_/datasets/aerial_buildings.py',
    'mmseg::_base_/default_runtime.py',
    './_base_/schedules/adamw-poly_500iter.py',
]
crop_size = (126, 126)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(img_size=crop_size),
    decode_head=dict(num_classes=2),
    auxiliary_head=dict(num_classes=2))
