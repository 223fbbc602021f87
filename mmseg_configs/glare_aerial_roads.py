# Short name of upernet_glare-vit-s14-dinov2_mln_1xb8-500iter_aerial-roads-126x126.py.
_base_ = './upernet_glare-vit-s14-dinov2_mln_1xb8-500iter_aerial-roads-126x126.py'
