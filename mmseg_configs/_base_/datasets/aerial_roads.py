# solaris aerial road masks (2 classes), 128 px tiles prepared by
#   python tools/dataset_converters/prepare_data.py aerial --out data/aerial
# Same pipelines as the buildings set.
_base_ = './aerial_buildings.py'

dataset_type = 'AerialRoadsDataset'
data_root = 'data/aerial/roads'
train_dataloader = dict(dataset=dict(type=dataset_type, data_root=data_root))
val_dataloader = dict(dataset=dict(type=dataset_type, data_root=data_root))
test_dataloader = val_dataloader
