"""Config errors in our registered modules fail at build time, naming the key."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple, TypeVar

import pytest
from mmengine.registry import DefaultScope, Registry
from mmengine.runner import Runner
from mmseg.registry import DATA_SAMPLERS, DATASETS, HOOKS, MODELS

import lightly_glare.openmmlab  # noqa: F401  (registers the modules)
from lightly_glare.openmmlab.config_validation import (
    ConfigArgumentError,
    matches,
    validate_arguments,
)
from lightly_glare.openmmlab.pretrain_data import GlarePretrainDataset
from tests.openmmlab.test_pretrain import ARCH, VIT_CFG, tiny_cfg, tiny_head

OUR_MODULES_DIR = Path(lightly_glare.openmmlab.__file__).parent


class Case(NamedTuple):
    registry: Registry
    #: A valid config (without ``type``) for a folder of images.
    valid: Callable[[Path], dict[str, Any]]
    unknown: str
    suggestion: str
    wrong_key: str
    wrong_value: Any
    expected: str


def _prepared(root: Path) -> dict[str, Any]:
    return {
        "data_root": str(root),
        "data_prefix": {"img_path": ".", "seg_map_path": "."},
        "lazy_init": True,
        "pipeline": [],
    }


_DATASET = Case(
    DATASETS, _prepared, "img_sufix", "img_suffix", "reduce_zero_label", 0, "bool"
)
CASES = {
    "GlareViT": Case(
        MODELS,
        lambda root: {
            "arch": {"patch_size": 8, "embed_dim": 48, "depth": 2, "num_heads": 3},
            "img_size": 32,
            "out_indices": [0, 1],
        },
        "out_indice",
        "out_indices",
        "adapter_bottleneck",
        "64",
        "int | None",
    ),
    "GlarePretrainer": Case(
        MODELS,
        lambda root: {
            "backbone": {
                "type": "UniAdapterViT",
                "arch": ARCH,
                "img_size": 32,
                "vit_cfg": VIT_CFG,
            },
            "head": tiny_head(16),
        },  # fmt: skip
        "share_patch_haed",
        "share_patch_head",
        "min_region_patches",
        "2",
        "int",
    ),
    "GlarePretrainDataPreprocessor": Case(
        MODELS,
        lambda root: {},
        "non_blockng",
        "non_blocking",
        "non_blocking",
        1,
        "Optional[bool]",
    ),
    "GlarePretrainDataset": Case(
        DATASETS,
        lambda root: {
            "data_root": str(root),
            "transform": {"type": "GlareTransform", "input_size": 32},
        },
        "min_sise",
        "min_size",
        "skip_bad",
        "yes",
        "bool",
    ),
    "GlareInfiniteSampler": Case(
        DATA_SAMPLERS,
        lambda root: {"dataset": GlarePretrainDataset(str(root)), "seed": 0},
        "shufle",
        "shuffle",
        "shuffle",
        "yes",
        "bool",
    ),
    "GlareTeacherEMAHook": Case(
        HOOKS,
        lambda root: {"momentum_start": 0.99, "momentum_end": 1},  # int for float
        "momentum_strat",
        "momentum_start",
        "momentum_end",
        "1.0",
        "float",
    ),
    "AtomicCheckpointHook": Case(
        HOOKS,
        lambda root: {"interval": 10, "by_epoch": False, "max_keep_ckpts": 2},
        "intervall",
        "interval",
        "max_keep_ckpts",
        "2",
        "int",
    ),
    "AerialBuildingsDataset": _DATASET,
    "AerialRoadsDataset": _DATASET,
    "MRITissueDataset": _DATASET,
}


@pytest.fixture(autouse=True)
def _mmseg_scope() -> Iterator[None]:
    """Builds in mmseg's scope whatever scope earlier tests left current."""
    with DefaultScope.overwrite_default_scope("mmseg"):
        yield


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.conftest import real_photo

    folder = tmp_path_factory.mktemp("images")
    real_photo().resize((64, 64)).save(folder / "photo.png")
    return folder


def test_every_registered_module_is_covered() -> None:
    source = "\n".join(p.read_text() for p in OUR_MODULES_DIR.glob("*.py"))
    registered = re.findall(r"register_module\(\)\n(?:@\w+\n)*class (\w+)", source)
    # Bf16AutocastOptimWrapper adds no argument to mmengine's OptimWrapper;
    # GlareHeadInitHook takes none (the model holds head_init).
    exempt = {"NonFiniteLossHook", "Bf16AutocastOptimWrapper", "GlareHeadInitHook"}
    assert set(registered) == set(CASES) | exempt


@pytest.mark.parametrize("name", sorted(CASES))
def test_valid_config_builds(name: str, root: Path) -> None:
    case = CASES[name]
    built = case.registry.build({"type": name, **case.valid(root)})
    assert type(built).__name__ == name


@pytest.mark.parametrize("name", sorted(CASES))
def test_unknown_key_is_named_with_suggestion(name: str, root: Path) -> None:
    case = CASES[name]
    cfg = {"type": name, **case.valid(root), case.unknown: 1}
    with pytest.raises(ConfigArgumentError) as error:
        case.registry.build(cfg)
    message = str(error.value)
    assert message.startswith(f"{name} got an unknown argument {case.unknown!r}")
    assert f"(did you mean {case.suggestion!r}?)" in message
    valid = message.split("Valid arguments: ")[1].rstrip(".")
    assert case.suggestion in valid.split(", ")
    assert case.unknown not in valid.split(", ")


@pytest.mark.parametrize("name", sorted(CASES))
def test_wrong_type_is_named_with_expected_and_received(name: str, root: Path) -> None:
    case = CASES[name]
    cfg = {"type": name, **case.valid(root), case.wrong_key: case.wrong_value}
    with pytest.raises(ConfigArgumentError) as error:
        case.registry.build(cfg)
    received = type(case.wrong_value).__name__
    assert str(error.value) == (
        f"{name} argument {case.wrong_key!r} expects {case.expected}, got "
        f"{received} {case.wrong_value!r}."
    )


def test_prepared_datasets_check_forwarded_base_arguments(root: Path) -> None:
    """Arguments given through ``**kwargs`` to mmseg's BaseSegDataset."""
    cfg = {"type": "AerialBuildingsDataset", **_prepared(root), "data_root": 3}
    with pytest.raises(ConfigArgumentError, match="'data_root' expects"):
        DATASETS.build(cfg)


def test_hook_without_arguments_says_so() -> None:
    with pytest.raises(ConfigArgumentError, match="Valid arguments: none"):
        HOOKS.build({"type": "NonFiniteLossHook", "interval": 1})


@pytest.mark.parametrize(
    ("key", "value", "module"),
    [
        ("model.teacher_tmp", 0.04, "GlarePretrainer"),
        ("custom_hooks.1.momentum_end", "1", "GlareTeacherEMAHook"),
    ],
)
def test_runner_build_fails_on_config_error(
    key: str, value: Any, module: str, root: Path, tmp_path: Path
) -> None:
    cfg = tiny_cfg(tmp_path, root, max_iters=1)
    cfg.merge_from_dict({key: value})
    with pytest.raises(ConfigArgumentError, match=f"^{module} "):
        Runner.from_cfg(cfg).train()
    assert not list(tmp_path.glob("*.pth"))


T = TypeVar("T")


@pytest.mark.parametrize(
    ("value", "hint", "expected"),
    [
        (1, float, True),
        (True, int, False),
        (True, float, False),
        (None, int | None, True),
        ("x", int | None, False),
        ([1, 2], tuple[int, int], True),
        ((1, 2, 3), tuple[int, int], False),
        ((1, "a"), tuple[int, ...], False),
        ((1, 2), list[int], True),
        ([1, 2], Sequence[int], True),
        ("ab", Sequence[str], False),
        ({"a": 1}, dict[str, int], True),
        ({"a": "1"}, dict[str, int], False),
        ("sgd", Literal["sgd", "adamw"], True),
        ("adam", Literal["sgd", "adamw"], False),
        (1, Literal[True], False),
        (print, Callable[..., Any], True),
        (3, Callable[..., Any], False),
        (object(), T, True),  # not understood: not checked
        (object(), Any, True),
        (Path("."), Path, True),
        ("a", Path, False),
    ],
)
def test_matches(value: Any, hint: Any, expected: bool) -> None:
    assert matches(value, hint) is expected


@validate_arguments
class PartlyAnnotated:
    """``Missing`` does not resolve (a name only a type checker would import)."""

    def __init__(
        self,
        size: int = 1,
        thing: Missing = None,  # noqa: F821
        **kwargs: Any,
    ) -> None:
        self.thing = thing


def test_unresolvable_annotation_skips_only_that_argument() -> None:
    assert PartlyAnnotated(2, thing="anything").thing == "anything"
    with pytest.raises(ConfigArgumentError, match="'size' expects int, got str"):
        PartlyAnnotated("2")  # positional arguments are checked too
    with pytest.raises(ConfigArgumentError, match="Valid arguments: size, thing"):
        PartlyAnnotated(colour=1)  # **kwargs go to object: nothing more
