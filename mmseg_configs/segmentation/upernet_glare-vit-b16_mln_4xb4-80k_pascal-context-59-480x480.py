# GLARE paper protocol on Pascal Context (59 classes): the GLARE-adapted ViT-B/16 +
# MultiLevelNeck + UperNet, 480x480 crops, 80k iterations, 4 GPUs x 4 images;
# sliding-window test as mmseg's Pascal Context configs.
# Short alias: mmseg_configs/glare_pascal_context.py.
#
#   bash tools/dist_train.sh mmseg_configs/segmentation/upernet_glare-vit-b16_mln_4xb4-80k_pascal-context-59-480x480.py 4 --amp \
#       --cfg-options model.backbone.checkpoint=pretrain/glare_vit-b16.pth
_base_ = [
    '../_base_/models/upernet_glare-vit-b16_mln.py',
    'mmseg::_base_/datasets/pascal_context_59.py',
    'mmseg::_base_/default_runtime.py',
    '../_base_/schedules/adamw-poly_80k.py',
]
crop_size = (480, 480)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(img_size=crop_size),
    decode_head=dict(num_classes=59),
    auxiliary_head=dict(num_classes=59),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(320, 320)))

train_dataloader = dict(batch_size=4)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
