# Short name of upernet_glare-vit-b16_mln_4xb4-80k_pascal-context-59-480x480.py.
_base_ = './upernet_glare-vit-b16_mln_4xb4-80k_pascal-context-59-480x480.py'
