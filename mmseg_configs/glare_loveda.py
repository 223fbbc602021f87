# Short name of the GLARE paper protocol on LoveDA (ViT-B/16 UperNet), kept for
# the README's commands: the recipe is segmentation/upernet_glare-vit-b16_mln_4xb4-80k_loveda-512x512.py.
_base_ = ['./segmentation/upernet_glare-vit-b16_mln_4xb4-80k_loveda-512x512.py']
