# GLARE-adapted ViT-B/16 + UperNet on LoveDA (7 aerial land-cover classes),
# 512x512 crops, 80k iterations, 4 GPUs x 4 images.
_base_ = [
    './_base_/models/upernet_glare-vit-b16_mln.py',
    'mmseg::_base_/datasets/loveda.py',
    'mmseg::_base_/default_runtime.py',
    './_base_/schedules/adamw-poly_80k.py',
]
crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(img_size=crop_size),
    decode_head=dict(num_classes=7),
    auxiliary_head=dict(num_classes=7))

train_dataloader = dict(batch_size=4)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
