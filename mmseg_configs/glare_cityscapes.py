# Short name of upernet_glare-vit-b16_mln_4xb4-80k_cityscapes-512x1024.py.
_base_ = './upernet_glare-vit-b16_mln_4xb4-80k_cityscapes-512x1024.py'
