# Runtime of GLARE continual pre-training with mmengine (tools/train.py): the
# plain loop of lightly_glare/pretraining/loop.py as mmengine pieces. AdamW (no decay on
# norms and biases), gradient clipping 3.0, 10 % linear warm-up then cosine to
# 1e-6, EMA teacher with cosine momentum 0.996 -> 1 (GlareTeacherEMAHook).
# Entry configs (mmseg_configs/pretrain/) set the backbone, the head sizes, the
# data folder and the size-dependent values: optim_wrapper.optimizer.lr
# (5e-4 * batch / 256), param_scheduler, max_iters.
default_scope = 'mmseg'
custom_imports = dict(
    imports=['lightly_glare.openmmlab'], allow_failed_imports=False)

batch_size = 16
max_iters = 300
warmup_iters = max_iters // 10

# The model, composed from parts registered in mmseg's MODELS (see
# lightly_glare/openmmlab/components.py), as mmpretrain composes DINO. An
# inheriting config changes one part in one line, e.g.
#   model = dict(patch_augmentation=dict(type='PatchNoise'))
#   model = dict(loss=dict(regional_weight=0.))
# (mmseg_configs/pretrain/ablations/ holds such configs).
model = dict(
    type='GlarePretrainer',
    # Frozen timm ViT from a local SSL checkpoint + trainable UniAdapters.
    # vit_cfg: further timm.create_model arguments (e.g. drop_path_rate; depth
    # for tests). An empty dict rather than None, so that --cfg-options
    # model.backbone.vit_cfg.depth=2 merges into it.
    backbone=dict(
        type='UniAdapterViT',
        arch='vit_small_patch16_224',
        img_size=224,
        checkpoint=None,
        checkpoint_key=None,
        adapter_bottleneck=None,  # embed_dim // 12: 32 for ViT-S, 64 for ViT-B
        adapter_scale=0.1,
        vit_cfg=dict()),
    # [CLS] / region head; input_dim is filled in from the backbone.
    head=dict(
        type='GlareProjectionHead',
        output_dim=8192,
        hidden_dim=2048,
        bottleneck_dim=256),
    # None: an untied patch head of the same architecture as `head`. Another
    # one replaces None with patch_head=dict(_delete_=True, type=...).
    patch_head=None,
    region_sampler=dict(type='AttentionRegionSampler', num_regions=None, mass=0.6),
    region_pooling=dict(type='CrossAttentionRegionPooling'),  # dim filled in
    # Patch pairs per image and view of each local term: bounds the step's cost
    # (at most 1 / 0.95 of a DINO step) with fixed shapes; None: every valid
    # patch (docs/PERFORMANCE.md).
    local_patches_per_view=2,
    # Share of the rows whose frozen attention / MLP branch the student skips
    # in each block (sample-skipping stochastic depth; docs/PERFORMANCE.md).
    student_drop_path=0.3,
    # The student's distortion for L_loc1. Only patch_ratio here, which every
    # patch augmentation (PatchBlur, PatchNoise, PatchColorJitter, PatchMasking)
    # accepts, so that an inheriting config swaps the type in one line.
    patch_augmentation=dict(type='PatchBlur', patch_ratio=0.3),
    # Term weights and DINO's temperatures; output sizes are filled in from the
    # heads. The warm-up unit is the iteration here: for DINO's warm-up set
    # teacher_temp=0.07, warmup_teacher_temp=0.04 and warmup_teacher_temp_epochs
    # to e.g. 30 % of max_iters.
    loss=dict(
        type='GlareLoss',
        global_weight=1.0,
        regional_weight=1.0,
        local_distortion_weight=1.0,
        local_matching_weight=1.0,
        student_temp=0.1,
        teacher_temp=0.04,
        warmup_teacher_temp=0.04,
        warmup_teacher_temp_epochs=0),
    # Heads the checkpoint lacks (DINOv2, timm): 'auto' fits them to
    # head_init_images images before the first step (GlareHeadInitHook) when the
    # checkpoint has no heads; 'data' always; 'random' keeps DINO's random heads.
    head_init='auto',
    head_init_images=512,
    # Seeds the patch augmentation's and region sampler's generator (with the
    # step and the rank), and the head initialisation's choices.
    seed=0,
    data_preprocessor=dict(type='GlarePretrainDataPreprocessor'))

train_dataloader = dict(
    batch_size=batch_size,
    num_workers=2,
    persistent_workers=True,
    drop_last=True,
    # Yields epoch * len + index: augmentations depend on (seed, epoch, index)
    # only, so --resume repeats an uninterrupted run.
    sampler=dict(type='GlareInfiniteSampler', shuffle=True),
    collate_fn=dict(type='default_collate'),
    dataset=dict(
        type='GlarePretrainDataset',
        data_root='data/unlabeled',
        transform=dict(type='GlareTransform', input_size=224),
        seed=0))

train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters)
val_cfg = None
val_dataloader = None
val_evaluator = None
test_cfg = None
test_dataloader = None
test_evaluator = None

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(
        # fused: one kernel for all tensors (CPU and CUDA; about 10 ms instead
        # of 50-85 ms per step for GLARE's 15.5 M trainable parameters on a
        # 2-core CPU).
        type='AdamW', lr=5e-4 * batch_size / 256, betas=(0.9, 0.999),
        weight_decay=0.04, fused=True),
    paramwise_cfg=dict(norm_decay_mult=0., bias_decay_mult=0.),
    clip_grad=dict(max_norm=3.0))

param_scheduler = [
    dict(type='LinearLR', start_factor=1.0 / warmup_iters, by_epoch=False, begin=0,
         end=warmup_iters),
    dict(type='CosineAnnealingLR', eta_min=1e-6, by_epoch=False,
         begin=warmup_iters, end=max_iters, T_max=max_iters - warmup_iters),
]

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=10, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    # Atomic writes: a kill while saving never corrupts the latest checkpoint.
    checkpoint=dict(type='AtomicCheckpointHook', by_epoch=False, interval=100,
                    max_keep_ckpts=2, save_last=True),
    sampler_seed=dict(type='DistSamplerSeedHook'))
custom_hooks = [
    # Fits the heads the checkpoint lacks to the data before the first step
    # (model.head_init; a resumed run keeps its own).
    dict(type='GlareHeadInitHook'),
    dict(type='GlareTeacherEMAHook', momentum_start=0.996, momentum_end=1.0),
]

env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'))
randomness = dict(seed=0, deterministic=False)
# vis_data/scalars.json and TensorBoard events (tensorboard --logdir WORK_DIR):
# the loss and each of its terms as separate scalars, lr, EMA momentum.
vis_backends = [dict(type='LocalVisBackend'), dict(type='TensorboardVisBackend')]
# No fixed name: each run gets its own visualizer (named after the experiment).
visualizer = dict(type='Visualizer', vis_backends=vis_backends)
log_processor = dict(by_epoch=False, window_size=10)
log_level = 'INFO'
load_from = None
resume = False
