# The ViT-S/16 variant of ./upernet_glare-vit-b16_mln_4xb4-160k_ade20k-512x512.py: the same dataset, crops, schedule and
# 4 GPUs x 4 images, with the ViT-S/16 backbone, neck and head channels of
# ../_base_/models/upernet_glare-vit-s16_mln.py.
#
#   bash tools/dist_train.sh mmseg_configs/segmentation/upernet_glare-vit-s16_mln_4xb4-160k_ade20k-512x512.py 4 --amp \
#       --cfg-options model.backbone.checkpoint=pretrain/glare_vit-s16.pth
_base_ = [
    './upernet_glare-vit-b16_mln_4xb4-160k_ade20k-512x512.py',
    '../_base_/models/upernet_glare-vit-s16_mln.py',
]

model = {{_base_.vit_s16_model}}
