"""lib.config: _base_ inheritance, unknown keys, typed overrides, the repo's own configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lib.config import Config, ConfigError, load_config, parse_override, save_config

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def cfg_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A small chain whose base.yaml stands for configs/base.yaml (the root that sets every key)."""
    monkeypatch.setattr("lib.config.BASE_CONFIG", tmp_path / "base.yaml")
    (tmp_path / "base.yaml").write_text(
        "model:\n  type: did\n  depth_branch: true\n  lr: 0.001\n  size: [1280, 384]\n  ckpt: null\n"
        "trainer:\n  max_epoch: 140\n"
    )
    (tmp_path / "mid.yaml").write_text("_base_: base.yaml\ntrainer:\n  max_epoch: 10\n")
    (tmp_path / "child.yaml").write_text("_base_: mid.yaml\nmodel:\n  type: gupnet\n")
    return tmp_path


def test_inheritance_chain_merges_recursively(cfg_dir: Path) -> None:
    cfg = load_config(cfg_dir / "child.yaml")
    assert cfg.model.type == "gupnet"
    assert cfg.model.depth_branch is True
    assert cfg.trainer.max_epoch == 10
    assert cfg["model"]["size"] == [1280, 384]


def test_overrides_are_typed(cfg_dir: Path) -> None:
    cfg = load_config(
        cfg_dir / "child.yaml", ["model.lr=1", "model.depth_branch=false", "model.ckpt=a/b.pth"]
    )
    assert cfg.model.lr == 1.0 and isinstance(cfg.model.lr, float)
    assert cfg.model.depth_branch is False
    assert cfg.model.ckpt == "a/b.pth"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.tpye=x", "unknown config key 'model.tpye'"),
        ("trainer.max_epoch=ten", "expected int, got str"),
        ("model.depth_branch=1", "expected bool, got int"),
        ("model=3", "'model' must be a mapping"),
        ("noequals", "expected key.sub=value"),
    ],
)
def test_bad_overrides_name_the_key(cfg_dir: Path, override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(cfg_dir / "child.yaml", [override])


def test_unknown_key_in_file_names_the_file(cfg_dir: Path) -> None:
    bad = cfg_dir / "bad.yaml"
    bad.write_text("_base_: base.yaml\ntrainer:\n  max_epochs: 3\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: unknown config key 'trainer\.max_epochs'"):
        load_config(bad)


def test_missing_file_and_circular_chain(cfg_dir: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(cfg_dir / "nope.yaml")
    (cfg_dir / "a.yaml").write_text("_base_: b.yaml\n")
    (cfg_dir / "b.yaml").write_text("_base_: a.yaml\n")
    with pytest.raises(ConfigError, match="circular"):
        load_config(cfg_dir / "a.yaml")


def test_config_is_read_only_and_round_trips(cfg_dir: Path, tmp_path: Path) -> None:
    cfg = load_config(cfg_dir / "child.yaml")
    with pytest.raises(TypeError):
        cfg["model"] = 1  # type: ignore[index]
    with pytest.raises(AttributeError, match="model.nope"):
        _ = cfg.model.nope
    out = tmp_path / "run" / "config.yaml"
    save_config(cfg, out)
    assert Config(yaml.safe_load(out.read_text())).to_dict() == cfg.to_dict()


def test_parse_override_values() -> None:
    assert parse_override("a.b=[1, 2]") == (["a", "b"], [1, 2])
    assert parse_override("a=null") == (["a"], None)


@pytest.mark.parametrize(
    ("text", "value"),
    [("1e-3", 0.001), ("-2.5E+4", -25000.0), ("1.0e-5", 1e-5), ("3", 3), ("1e3x", "1e3x"), ("e3", "e3")],
)
def test_exponent_numbers_are_floats(text: str, value: object) -> None:
    """PyYAML alone reads ``1e-3`` as the string "1e-3" (YAML 1.1 wants a dot)."""
    assert yaml.safe_load("1e-3") == "1e-3"  # the behaviour this module corrects
    parsed = parse_override(f"a={text}")[1]
    assert parsed == value and type(parsed) is type(value)


def test_exponent_float_in_a_file_replaces_a_float_default(cfg_dir: Path) -> None:
    (cfg_dir / "exp.yaml").write_text("_base_: base.yaml\nmodel:\n  lr: 2.5e-4\n")
    assert load_config(cfg_dir / "exp.yaml").model.lr == 0.00025
    assert load_config(cfg_dir / "child.yaml", ["model.lr=1e-3"]).model.lr == 0.001


def test_base_list_and_empty_file_are_refused(cfg_dir: Path) -> None:
    (cfg_dir / "two.yaml").write_text("_base_: [base.yaml, mid.yaml]\n")
    with pytest.raises(ConfigError, match=r"two\.yaml: '_base_' must name one parent file, got \['base"):
        load_config(cfg_dir / "two.yaml")
    (cfg_dir / "empty.yaml").write_text("# nothing but a comment\n")
    with pytest.raises(ConfigError, match=r"empty\.yaml: empty config file"):
        load_config(cfg_dir / "empty.yaml")


def test_every_repo_config_loads() -> None:
    files = sorted((REPO / "configs").rglob("*.yaml"))
    assert (REPO / "configs" / "base.yaml") in files
    for path in files:
        cfg = load_config(path)
        assert cfg.model.type in ("did", "gupnet"), path


def test_section_settings_builds_the_frozen_object_and_names_a_key_mismatch():
    import dataclasses

    from lib.config import Config, section_settings

    @dataclasses.dataclass(frozen=True)
    class Inner:
        weight: float

    @dataclasses.dataclass(frozen=True)
    class Outer:
        lr: float
        steps: list
        inner: Inner

    section = Config({"lr": 0.5, "steps": [3, 4], "inner": {"weight": 2.0}, "path": "x"})
    got = section_settings(Outer, section, name="opt", skip=("path",), nested={"inner": Inner})
    assert got == Outer(lr=0.5, steps=[3, 4], inner=Inner(weight=2.0))
    with pytest.raises(dataclasses.FrozenInstanceError):
        got.lr = 1.0
    with pytest.raises(ValueError, match=r"only in the section: \['path'\], only in the class: \[\]"):
        section_settings(Outer, section, name="opt", nested={"inner": Inner})
    with pytest.raises(ValueError, match=r"only in the section: \[\], only in the class: \['inner'\]"):
        section_settings(Outer, {"lr": 1.0, "steps": []}, name="opt")


def test_model_rpd_loss_distill_sections_parse_in_every_config():
    """Every shipped config's model / rpd / loss / distill section parses into its settings record
    (whose fields are the section's keys: a key added to base.yaml without a field fails here)."""
    from lib.depth_bins import RpdSettings
    from lib.distiller import DistillSettings
    from lib.losses.criterion import LossSettings
    from lib.models.build import ModelSettings

    for path in sorted((REPO / "configs").rglob("*.yaml")):
        cfg = load_config(path)
        assert ModelSettings.from_config(cfg).type == cfg.model.type, path
        assert RpdSettings.from_config(cfg).bins.num_bins == cfg.rpd.num_bins, path
        assert LossSettings.from_config(cfg).htl_window == cfg.loss.htl_window, path
        distill = DistillSettings.from_config(cfg)
        assert distill.dualkl.mode == cfg.distill.dualkl.mode, path
        assert distill.teacher_checkpoint == cfg.distill.teacher_checkpoint, path


def test_model_and_loss_settings_name_the_bad_key_and_num_classes_is_gone():
    from lib.losses.criterion import LossSettings
    from lib.models.build import ModelSettings

    base = REPO / "configs" / "base.yaml"
    with pytest.raises(ConfigError, match="unknown config key 'model.num_classes'"):
        load_config(base, ["model.num_classes=3"])  # the class set is fixed (lib/constants.py)
    cases = {
        "model.head_conv=0": ModelSettings,
        "model.input=lidar": ModelSettings,
        "model.backbone=vgg16": ModelSettings,
        "loss.htl_window=2": LossSettings,
        "loss.htl_horizon=0": LossSettings,
        "loss.depth_branch_fg_weight=-1": LossSettings,
    }
    for override, settings in cases.items():
        key = override.split("=")[0]
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            settings.from_config(load_config(base, [override]))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("experiment.name=''", "experiment.name must be one folder name"),
        ("experiment.name=a/b", "experiment.name must be one folder name"),
        ("experiment.seed=-1", "override 'experiment.seed=-1': experiment.seed must be >= 0, got -1"),
        ("experiment.output_dir=''", "experiment.output_dir: empty path"),
    ],
)
def test_experiment_settings_refuse_a_name_that_is_no_folder_and_a_negative_seed(override, message):
    from lib.config import ConfigError, ExperimentSettings

    with pytest.raises(ConfigError, match=message):  # a range at load time, the rest when parsed
        ExperimentSettings.from_config(load_config(REPO / "configs" / "base.yaml", [override]))


def test_experiment_settings_give_the_run_folder():
    from lib.config import ExperimentSettings

    cfg = load_config(REPO / "configs" / "teacher.yaml", ["experiment.output_dir=/tmp/runs"])
    settings = ExperimentSettings.from_config(cfg)
    assert settings.run_dir == Path("/tmp/runs") / cfg.experiment.name
    assert (settings.seed, settings.deterministic) == (444, False)
