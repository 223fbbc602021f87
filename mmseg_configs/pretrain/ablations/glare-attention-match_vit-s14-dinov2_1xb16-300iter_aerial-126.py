_base_ = '../glare_vit-s14-dinov2_1xb16-300iter_aerial-126.py'
# Ablation: regions matched across views by attention instead of by crop geometry.
model = dict(region_match='attention')
