# GLARE continual pre-training in plain PyTorch, in the shape of lightly's
# examples/pytorch/dino.py: the model class is composed here from GLARE's parts
# (adapted ViT, projection heads, region sampler, region pooling, patch
# augmentation, patch matching) and trained with GlareLoss on tensors, teacher
# first. A folder of unlabeled images and a local SSL checkpoint in, the adapted
# backbone (frozen ViT + teacher adapters) out. Copy and adapt.
#
#   python examples/pytorch/glare.py --data my_images/ \
#       --checkpoint dino_deitsmall16_pretrain.pth --model vit_small_patch16_224
#
# lightly_glare.models.GLARE packs the same composition (plus ablation switches)
# into one module: criterion(model([view_0, view_1], geometry)).
import argparse
import copy

import torch
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.utils.scheduler import cosine_schedule
from torch import nn
from torch.utils.data import DataLoader

from lightly_glare.data import ImageFolderDataset
from lightly_glare.loss import GlareLoss
from lightly_glare.models import (
    DEFAULT_OUTPUT_DIM,
    AttentionRegionSampler,
    CrossAttentionRegionPooling,
    GlareProjectionHead,
    UniAdapterViT,
)
from lightly_glare.models.geometry import match_patches, transfer_masks
from lightly_glare.pretraining.loop import (
    PretrainConfig,
    check_loss,
    learning_rate,
    parameter_groups,
    steps_per_epoch,
)
from lightly_glare.transforms import GlareTransform, PatchBlur
from lightly_glare.weights import create_vit
from lightly_glare.weights.export import export_adapted_backbone


class GLARE(nn.Module):
    def __init__(self, vit, output_dim):
        super().__init__()
        # Frozen ViT + one trainable UniAdapter per block.
        self.student_backbone = UniAdapterViT(vit)
        dim = self.student_backbone.embed_dim
        self.student_head = GlareProjectionHead(dim, output_dim=output_dim)
        self.student_patch_head = GlareProjectionHead(dim, output_dim=output_dim)
        self.region_pooling = CrossAttentionRegionPooling(dim)
        # The teacher shares the frozen ViT weights; only adapters and heads copy.
        self.teacher_adapters = copy.deepcopy(self.student_backbone.adapters)
        self.teacher_head = copy.deepcopy(self.student_head)
        self.teacher_patch_head = copy.deepcopy(self.student_patch_head)
        deactivate_requires_grad(self.teacher_adapters)
        deactivate_requires_grad(self.teacher_head)
        deactivate_requires_grad(self.teacher_patch_head)
        self.region_sampler = AttentionRegionSampler()
        self.patch_blur = PatchBlur()  # 30 % of the patches (PATCH_RATIO)

    def update_teacher(self, momentum):
        update_momentum(self.student_backbone.adapters, self.teacher_adapters, momentum)
        update_momentum(self.student_head, self.teacher_head, momentum)
        update_momentum(self.student_patch_head, self.teacher_patch_head, momentum)

    def forward_teacher(self, views):
        with torch.no_grad():  # clean views, both in one batch
            return self.student_backbone.forward_features(
                torch.cat(views),
                adapters=self.teacher_adapters,
                return_cls_attention=True,
            )

    def forward_student(self, views):
        distorted, blurred = self.patch_blur(
            torch.cat(views), self.student_backbone.patch_size
        )  # (2B, 3, H, W), (2B, N)
        return self.student_backbone.forward_features(distorted), blurred

    def forward(self, views, geometry):
        """The matched (teacher, student) projections of every GLARE term."""
        teacher = self.forward_teacher(views)
        student, blurred = self.forward_student(views)
        grid = self.student_backbone.grid_size(*views[0].shape[2:])
        prefix = self.student_backbone.num_prefix_tokens
        t_cls, s_cls = teacher.tokens[:, 0], student.tokens[:, 0]  # (2B, D)
        t_patch = teacher.tokens[:, prefix:]  # (2B, N, D)
        s_patch = student.tokens[:, prefix:]
        with torch.no_grad():
            teacher_cls = self.teacher_head(t_cls).chunk(2)  # 2 x (B, K)
        student_cls = self.student_head(s_cls).chunk(2)
        # Local distortion: blurred student patches vs clean teacher patches.
        with torch.no_grad():
            blurred_teacher = self.teacher_patch_head(t_patch[blurred])  # (M, K)
        local_distortion = (blurred_teacher, self.student_patch_head(s_patch[blurred]))
        # Local matching and regions, from view a to view b and back.
        regions, _ = self.region_sampler(teacher.cls_attention)  # (2B, R, N)
        t_cls, t_patch, s_cls, s_patch, regions = (
            x.chunk(2) for x in (t_cls, t_patch, s_cls, s_patch, regions)
        )
        matched, student_matched, t_regions, s_regions = [], [], [], []
        for a, b in ((0, 1), (1, 0)):
            target, inside = match_patches(
                t_patch[b], geometry[:, a], geometry[:, b], grid
            )  # (B, N, D), (B, N)
            matched.append(target[inside])
            student_matched.append(s_patch[a][inside])
            with torch.no_grad():  # the same regions, mapped into view b
                masks_b = transfer_masks(
                    regions[a], geometry[:, a], geometry[:, b], grid, grid
                )  # (B, R, N)
                pooled_b = self.region_pooling(t_cls[b], t_patch[b], masks_b)
            pooled_a = self.region_pooling(s_cls[a], s_patch[a], regions[a])
            keep = (regions[a].sum(-1) >= 2) & (masks_b.sum(-1) >= 2)  # (B, R)
            t_regions.append(pooled_b[keep])
            s_regions.append(pooled_a[keep])
        with torch.no_grad():
            local_matching_teacher = self.teacher_patch_head(torch.cat(matched))
            regional_teacher = self.teacher_head(torch.cat(t_regions))
        return (
            list(teacher_cls),
            list(student_cls),
            (regional_teacher, self.student_head(torch.cat(s_regions))),
            local_distortion,
            (
                local_matching_teacher,
                self.student_patch_head(torch.cat(student_matched)),
            ),
        )


parser = argparse.ArgumentParser(description="GLARE continual pre-training")
parser.add_argument("--data", required=True, help="folder of unlabeled images")
parser.add_argument("--checkpoint", help="local SSL checkpoint (DINO/DINOv2/iBOT/timm)")
parser.add_argument("--model", default="vit_small_patch16_224", help="timm model name")
parser.add_argument("--input-size", type=int, default=224)
parser.add_argument("--epochs", type=int, default=50)
parser.add_argument("--max-steps", type=int, default=0, help="stop early (0: off)")
parser.add_argument("--batch-size", type=int, default=64)
parser.add_argument(
    "--output-dim", type=int, default=DEFAULT_OUTPUT_DIM, help="head outputs"
)
parser.add_argument("--workers", type=int, default=8)
parser.add_argument("--out", default="glare_backbone.pth")
args = parser.parse_args()

device = "cuda" if torch.cuda.is_available() else "cpu"
vit = create_vit(args.model, checkpoint=args.checkpoint, img_size=args.input_size)
model = GLARE(vit, args.output_dim).to(device)
print(model.student_backbone.report)

# [view_0, view_1, geometry] per image: a lightly MultiViewTransform.
transform = GlareTransform(input_size=args.input_size)
dataset = ImageFolderDataset(args.data, transform=transform)
dataloader = DataLoader(
    dataset,
    batch_size=args.batch_size,
    shuffle=True,
    drop_last=True,
    num_workers=args.workers,
)
criterion = GlareLoss(output_dim=args.output_dim).to(device)

# DINO's recipe (PretrainConfig's defaults): AdamW on adapters and heads, no
# decay on norms and biases; lr 5e-4 * batch / 256 with 10 % linear warm-up,
# then cosine to 1e-6; teacher momentum 0.996 -> 1; gradients clipped at 3.
total_steps = args.epochs * steps_per_epoch(dataloader)  # refuses 0 batches
if args.max_steps:
    total_steps = min(total_steps, args.max_steps)
schedule = PretrainConfig(steps=total_steps)
optimizer = torch.optim.AdamW(parameter_groups(model, schedule.weight_decay))
peak_lr = schedule.base_lr * args.batch_size / 256

print("Starting Training")
step = 0
for epoch in range(args.epochs):
    total_loss = 0.0
    for batch in dataloader:
        if step == total_steps:
            break
        view_0, view_1, geometry = (x.to(device) for x in batch[0])
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, peak_lr, schedule)
        momentum = cosine_schedule(
            step, total_steps, schedule.momentum_start, schedule.momentum_end
        )
        model.update_teacher(momentum)
        with torch.autocast("cuda", torch.bfloat16, enabled=device == "cuda"):
            teacher_out, student_out, regional, local_distortion, local_matching = (
                model([view_0, view_1], geometry)
            )
            loss = criterion(
                teacher_out,
                student_out,
                regional=regional,
                local_distortion=local_distortion,
                local_matching=local_matching,
                epoch=epoch,
            )
        check_loss(loss, step, criterion.last_terms)  # stops on NaN / inf
        optimizer.zero_grad()
        loss.backward()
        trainable = [p for p in model.parameters() if p.requires_grad]
        torch.nn.utils.clip_grad_norm_(trainable, schedule.clip_grad)
        optimizer.step()
        total_loss += loss.item()
        step += 1
        terms = {k: round(float(v), 4) for k, v in criterion.last_terms.items()}
        print(f"step {step}/{total_steps} loss {loss.item():.4f} {terms}")
    print(f"epoch: {epoch:>02}, loss: {total_loss / len(dataloader):.5f}")
    if step == total_steps:
        break

# The frozen backbone + the teacher's EMA adapters, for GlareViT / UniAdapterViT.
path = export_adapted_backbone(
    model.student_backbone,
    args.out,
    adapters=model.teacher_adapters,
    extra_meta={"timm_name": args.model},
)
print("Saved", path)
