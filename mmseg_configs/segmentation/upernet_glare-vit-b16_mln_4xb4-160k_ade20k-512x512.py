# GLARE paper protocol on ADE20k (150 classes): the GLARE-adapted ViT-B/16 (frozen
# ViT + UniAdapters from a GLARE export) + MultiLevelNeck + UperNet, 512x512 crops,
# 160k iterations, 4 GPUs x 4 images (mmseg's ViT-B UperNet recipe, 8 x 2 images:
# the same 16 per step; see "Differences from mmseg's ViT-B UperNet recipe" in
# docs/ARCHITECTURE.md).
# Short alias: mmseg_configs/glare_ade20k.py.
#
#   bash tools/dist_train.sh mmseg_configs/segmentation/upernet_glare-vit-b16_mln_4xb4-160k_ade20k-512x512.py 4 --amp \
#       --cfg-options model.backbone.checkpoint=pretrain/glare_vit-b16.pth
#   python tools/test.py mmseg_configs/segmentation/upernet_glare-vit-b16_mln_4xb4-160k_ade20k-512x512.py work_dirs/upernet_glare-vit-b16_mln_4xb4-160k_ade20k-512x512/iter_160000.pth
_base_ = [
    '../_base_/models/upernet_glare-vit-b16_mln.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    '../_base_/schedules/adamw-poly_160k.py',
]
crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(img_size=crop_size),
    decode_head=dict(num_classes=150),
    auxiliary_head=dict(num_classes=150))

train_dataloader = dict(batch_size=4)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
