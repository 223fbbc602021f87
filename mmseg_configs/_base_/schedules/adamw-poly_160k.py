# mmseg's ViT fine-tuning schedule (the paper's protocol, docs/ARCHITECTURE.md):
# AdamW lr 6e-5, weight decay 0.01, linear warm-up over 1500 iterations, then poly (power 1) to 0.
#
# No weight decay on every norm (by module type: the ViT's norm1/norm2/norm, the
# UniAdapters' norms, the heads' BN), every bias and every other 1-D parameter
# (DINOv2's LayerScale), the positional embedding and the class/register tokens:
# timm's and DINO's rule (ndim <= 1, biases, no_weight_decay()). mmseg's ViT
# recipe writes 'norm': dict(decay_mult=0.), which matches the names of timm's
# norms but not of mmseg's own ViT (ln1/ln2); see "Differences from mmseg's
# ViT-B UperNet recipe" in docs/ARCHITECTURE.md.
_base_ = 'mmseg::_base_/schedules/schedule_160k.py'

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(
        type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(
        norm_decay_mult=0.,
        bias_decay_mult=0.,
        flat_decay_mult=0.,
        custom_keys={
            'pos_embed': dict(decay_mult=0.),
            'cls_token': dict(decay_mult=0.),
            'reg_token': dict(decay_mult=0.),
        }))

param_scheduler = [
    dict(
        type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0,
        end=1500),
    dict(
        type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=160000,
        by_epoch=False),
]

# Fail-safe training (every segmentation config inherits this schedule):
# checkpoints and the last_checkpoint pointer are written atomically, and a NaN
# or infinite loss stops the run before its weights are checkpointed.
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
custom_hooks = [dict(type='NonFiniteLossHook')]
