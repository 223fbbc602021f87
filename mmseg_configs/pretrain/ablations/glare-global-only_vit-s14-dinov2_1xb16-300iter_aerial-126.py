_base_ = '../glare_vit-s14-dinov2_1xb16-300iter_aerial-126.py'
# Ablation: DINO-only, the global [CLS] term alone (continual DINO with adapters).
model = dict(loss=dict(regional_weight=0., local_distortion_weight=0., local_matching_weight=0.))
