# Distributed GLARE continual pre-training with PyTorch Lightning (DDP), in the shape
# of lightly's examples/pytorch_lightning_distributed/dino.py. The module and the
# data pipeline are those of examples/pytorch_lightning/glare.py; DDP only changes
# the Trainer. GlareLoss's centers are all-reduced across ranks.
#
#   python examples/pytorch_lightning_distributed/glare.py --data my_images/ \
#       --checkpoint dino_deitsmall16_pretrain.pth --devices 4
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pytorch_lightning"))
from glare import main  # noqa: E402

if __name__ == "__main__":
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--devices", type=int, default=2)
    known, rest = parser.parse_known_args()
    # find_unused_parameters: a term with no valid region/patch in a step leaves
    # its head without gradient on that rank.
    main(rest, strategy="ddp_find_unused_parameters_true", devices=known.devices)
