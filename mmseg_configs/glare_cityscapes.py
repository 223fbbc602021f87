# Short name of the GLARE paper protocol on Cityscapes (ViT-B/16 UperNet), kept for
# the README's commands: the recipe is segmentation/upernet_glare-vit-b16_mln_4xb4-80k_cityscapes-512x1024.py.
_base_ = ['./segmentation/upernet_glare-vit-b16_mln_4xb4-80k_cityscapes-512x1024.py']
