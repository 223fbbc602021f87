"""docs/ARCHITECTURE.md lists exactly the names lightly-glare registers."""

import re
from pathlib import Path

import mmseg.registry

import lightly_glare.openmmlab  # noqa: F401  (registers the modules)

ROOT = Path(__file__).resolve().parents[2]
REGISTRIES = ("MODELS", "TRANSFORMS", "DATASETS", "DATA_SAMPLERS", "HOOKS")


def registered() -> set[tuple[str, str]]:
    names = set()
    for registry in REGISTRIES:
        for name, module in getattr(mmseg.registry, registry).module_dict.items():
            if getattr(module, "__module__", "").startswith("lightly_glare"):
                names.add((registry, name))
    return names


def documented() -> set[tuple[str, str]]:
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    section = text.split("## Registered names", 1)[1].split("\n## ", 1)[0]
    names = set()
    for row in re.findall(r"^\| `(\w+)` \| (.+?) \|", section, flags=re.M):
        registry, cell = row
        names |= {(registry, name) for name in re.findall(r"`(\w+)`", cell)}
    return names


def test_architecture_doc_lists_every_registered_name() -> None:
    assert registered() == documented()


def test_every_registered_part_builds_by_name() -> None:
    models = mmseg.registry.MODELS
    parts = {
        "GlareProjectionHead": {"input_dim": 8, "hidden_dim": 8, "output_dim": 4},
        "AttentionRegionSampler": {},
        "CrossAttentionRegionPooling": {"dim": 8},
        "PatchBlur": {},
        "PatchNoise": {},
        "PatchColorJitter": {},
        "PatchMasking": {},
        "GlareLoss": {"output_dim": 4},
        "GlareRegionalLoss": {"output_dim": 4},
        "GlareLocalLoss": {"output_dim": 4},
    }
    for name, args in parts.items():
        part = models.build({"type": name, **args})
        assert type(part).__name__ == name
    transform = mmseg.registry.TRANSFORMS.build({"type": "GlareTransform"})
    assert type(transform).__name__ == "GlareTransform"
