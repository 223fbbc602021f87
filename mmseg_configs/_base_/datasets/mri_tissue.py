# MNI152 T1 axial slices (233 x 197 px; background/CSF, grey matter, white
# matter) prepared by
#   python tools/dataset_converters/prepare_data.py mri --out data/mri
# For training, slices are resized to a long side of 160-240 px (short side
# >= 135 px) and cropped to 126 px; validation runs on whole slices resized to
# 160 x 135 px.
_base_ = './aerial_buildings.py'

dataset_type = 'MRITissueDataset'
data_root = 'data/mri'
crop_size = (126, 126)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(
        type='RandomResize',
        scale=(160, 160),
        ratio_range=(1.0, 1.5),
        keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(160, 160), keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs')
]
train_dataloader = dict(
    dataset=dict(
        type=dataset_type, data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(
    dataset=dict(
        type=dataset_type, data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader
