_base_ = '../glare_vit-s14-dinov2_1xb16-300iter_aerial-126.py'
# Ablation: without both local terms (global + regional: no L_loc1, no L_loc2).
model = dict(loss=dict(local_distortion_weight=0., local_matching_weight=0.))
