_base_ = '../glare_vit-s14-dinov2_1xb16-300iter_aerial-126.py'
# Ablation: Gaussian noise instead of blur as the student's patch distortion (L_loc1).
model = dict(patch_augmentation=dict(type='PatchNoise'))
