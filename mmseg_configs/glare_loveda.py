# Short name of upernet_glare-vit-b16_mln_4xb4-80k_loveda-512x512.py.
_base_ = './upernet_glare-vit-b16_mln_4xb4-80k_loveda-512x512.py'
