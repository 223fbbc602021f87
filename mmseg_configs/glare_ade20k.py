# Short name of upernet_glare-vit-b16_mln_4xb4-160k_ade20k-512x512.py.
_base_ = './upernet_glare-vit-b16_mln_4xb4-160k_ade20k-512x512.py'
