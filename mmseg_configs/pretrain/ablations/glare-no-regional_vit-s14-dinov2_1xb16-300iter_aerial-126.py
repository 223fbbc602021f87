_base_ = '../glare_vit-s14-dinov2_1xb16-300iter_aerial-126.py'
# Ablation: without the regional term (global + both local terms).
model = dict(loss=dict(regional_weight=0.))
