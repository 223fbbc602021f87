# GLARE continual pre-training in plain PyTorch, in the shape of lightly's
# examples/pytorch/dino.py: a folder of unlabeled images and a local SSL checkpoint
# in, adapters (plus the frozen backbone) out. Copy and adapt.
#
#   python examples/pytorch/glare.py --data my_images/ \
#       --checkpoint dino_deitsmall16_pretrain.pth --arch vit_small_patch16_224
import argparse

import torch
from lightly.utils.scheduler import cosine_schedule
from torch.utils.data import DataLoader

from lightly_glare.data import ImageFolderDataset
from lightly_glare.loss import GlareLoss
from lightly_glare.models import GLARE
from lightly_glare.training import PretrainConfig, learning_rate, parameter_groups
from lightly_glare.transforms import GlareTransform
from lightly_glare.weights import create_vit

parser = argparse.ArgumentParser(description="GLARE continual pre-training")
parser.add_argument("--data", required=True, help="folder of unlabeled images")
parser.add_argument("--checkpoint", help="local SSL checkpoint (DINO/DINOv2/iBOT/timm)")
parser.add_argument("--arch", default="vit_small_patch16_224", help="timm model name")
parser.add_argument("--input-size", type=int, default=224)
parser.add_argument("--epochs", type=int, default=50)
parser.add_argument("--max-steps", type=int, default=0, help="stop early (0: off)")
parser.add_argument("--batch-size", type=int, default=64)
parser.add_argument("--output-dim", type=int, default=8192, help="head outputs")
parser.add_argument("--workers", type=int, default=8)
parser.add_argument("--out", default="glare_backbone.pth")
args = parser.parse_args()

device = "cuda" if torch.cuda.is_available() else "cpu"
vit = create_vit(args.arch, checkpoint=args.checkpoint, img_size=args.input_size)
criterion = GlareLoss(output_dim=args.output_dim).to(device)
model = GLARE(vit, terms=criterion.active_terms, output_dim=args.output_dim).to(device)
print(model.backbone.report)

dataset = ImageFolderDataset(args.data, transform=GlareTransform(args.input_size))
dataloader = DataLoader(
    dataset,
    batch_size=args.batch_size,
    shuffle=True,
    drop_last=True,
    num_workers=args.workers,
)

# AdamW on adapters and heads, no decay on norms and biases (DINO's recipe);
# lr 5e-4 * batch / 256 with 10 % linear warm-up, then cosine to 1e-6.
optimizer = torch.optim.AdamW(parameter_groups(model, weight_decay=0.04))
peak_lr = 5e-4 * args.batch_size / 256
total_steps = args.epochs * len(dataloader)
if args.max_steps:
    total_steps = min(total_steps, args.max_steps)
schedule = PretrainConfig(steps=total_steps)

print("Starting training")
step = 0
for epoch in range(args.epochs):
    total_loss = 0.0
    for (views, geometry), _, _ in dataloader:
        if step == total_steps:
            break
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, peak_lr, schedule)
        model.update_teacher(cosine_schedule(step, total_steps, 0.996, 1.0))
        views = [view.to(device) for view in views]
        with torch.autocast("cuda", torch.bfloat16, enabled=device == "cuda"):
            loss = criterion(model(views, geometry.to(device)), epoch=epoch)
        if not torch.isfinite(loss):
            raise SystemExit(f"Non-finite loss at step {step}: {criterion.last_terms}")
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.trainable_parameters(), 3.0)
        optimizer.step()
        total_loss += loss.item()
        step += 1
        terms = {k: round(float(v), 4) for k, v in criterion.last_terms.items()}
        print(f"step {step}/{total_steps} loss {loss.item():.4f} {terms}")
    print(f"epoch: {epoch:>02}, loss: {total_loss / max(1, len(dataloader)):.5f}")
    if step == total_steps:
        break

# The teacher's EMA adapters + the frozen backbone, for GlareViT / UniAdapterViT.
print("Saved", model.export_backbone(args.out, extra_meta={"timm_name": args.arch}))
