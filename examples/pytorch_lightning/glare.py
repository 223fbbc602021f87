# GLARE continual pre-training with PyTorch Lightning, in the shape of lightly's
# examples/pytorch_lightning/dino.py. Copy and adapt.
#
#   python examples/pytorch_lightning/glare.py --data my_images/ \
#       --checkpoint dino_deitsmall16_pretrain.pth --model vit_small_patch16_224
import argparse

import pytorch_lightning as pl
import torch
from lightly.utils.scheduler import cosine_schedule
from torch.utils.data import DataLoader

from lightly_glare.data import ImageFolderDataset
from lightly_glare.loss import GlareLoss
from lightly_glare.models import (
    DEFAULT_OUTPUT_DIM,
    GlareProjectionHead,
    initialize_heads_from_data,
)
from lightly_glare.pretraining.job import build_glare
from lightly_glare.pretraining.loop import (
    PretrainConfig,
    check_loss,
    learning_rate,
    parameter_groups,
    steps_per_epoch,
)
from lightly_glare.transforms import GlareTransform, PatchBlur
from lightly_glare.weights import create_vit


class GlareModule(pl.LightningModule):
    def __init__(self, model, checkpoint, input_size, output_dim, batch_size):
        super().__init__()
        vit = create_vit(model, checkpoint=checkpoint, img_size=input_size)
        self.criterion = GlareLoss(output_dim=output_dim)
        head = GlareProjectionHead(vit.embed_dim, output_dim=output_dim)
        # Frozen ViT + UniAdapters, the loss's terms, PatchBlur for L_loc1.
        self.model = build_glare(vit, self.criterion, head, PatchBlur)
        self.peak_lr = PretrainConfig.base_lr * batch_size / 256  # DINO's 5e-4

    def on_train_batch_start(self, batch, batch_idx):
        steps = self.trainer.estimated_stepping_batches
        schedule = PretrainConfig(steps=steps)  # DINO's schedules
        momentum = cosine_schedule(
            self.global_step, steps, schedule.momentum_start, schedule.momentum_end
        )
        self.model.update_teacher(momentum)
        for group in self.optimizers().param_groups:
            group["lr"] = learning_rate(self.global_step, self.peak_lr, schedule)

    def training_step(self, batch, batch_idx):
        (view_0, view_1, geometry), _, _ = batch
        output = self.model([view_0, view_1], geometry)
        loss = self.criterion(output, epoch=self.current_epoch)
        check_loss(loss, self.global_step, self.criterion.last_terms)
        self.log("train_loss", loss, prog_bar=True, sync_dist=True)
        for name, value in self.criterion.last_terms.items():
            self.log(f"loss/{name}", value, sync_dist=True)
        return loss

    def configure_optimizers(self):
        decay = PretrainConfig.weight_decay  # DINO's 0.04
        return torch.optim.AdamW(parameter_groups(self.model, decay), lr=self.peak_lr)


def main(argv=None, strategy="auto", devices="auto"):
    parser = argparse.ArgumentParser(description="GLARE pre-training (Lightning)")
    parser.add_argument("--data", required=True, help="folder of unlabeled images")
    parser.add_argument("--checkpoint", help="local SSL checkpoint")
    parser.add_argument("--model", default="vit_small_patch16_224")
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--max-steps", type=int, default=-1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--output-dim", type=int, default=DEFAULT_OUTPUT_DIM)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--out", default="glare_backbone.pth")
    args = parser.parse_args(argv)

    module = GlareModule(
        args.model, args.checkpoint, args.input_size, args.output_dim, args.batch_size
    )
    dataset = ImageFolderDataset(args.data, transform=GlareTransform(args.input_size))
    dataloader = DataLoader(
        dataset,
        batch_size=args.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=args.workers,
    )
    steps_per_epoch(dataloader)  # refuses a run with no batch
    # Heads the checkpoint lacks start on the data: a sharp teacher from step 0.
    fitted = initialize_heads_from_data(module.model, dataloader)
    module.criterion.set_centers(fitted.centers)
    accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    trainer = pl.Trainer(
        max_epochs=args.epochs,
        max_steps=args.max_steps,
        devices=devices,
        accelerator=accelerator,
        strategy=strategy,
        precision="bf16-mixed" if accelerator == "gpu" else "32-true",
        gradient_clip_val=PretrainConfig.clip_grad,  # DINO's 3.0
        log_every_n_steps=1,
        enable_checkpointing=False,
        logger=pl.loggers.CSVLogger("lightning_logs"),
    )
    trainer.fit(model=module, train_dataloaders=dataloader)
    if trainer.is_global_zero:
        meta = {"timm_name": args.model}
        print("Saved", module.model.export_backbone(args.out, extra_meta=meta))


if __name__ == "__main__":
    main()
