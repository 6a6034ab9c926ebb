"""One way to load a detector (lib/models/loading.py) from the tools: the checkpoint is read once,
its stored config serves when ``--config`` is left out, and a file without one asks for it.

A tiny GUPNet (tests/configs/tiny.yaml) is trained for one epoch on six synthetic frames; its
last.pth is then evaluated, resumed, exported and run on images with and without ``--config``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lib.config import ConfigError, load_config
from lib.datasets.synthetic import write_dataset
from lib.errors import run_cli
from lib.eval.kitti_format import latest_result_dir
from lib.models.checkpoint_io import CheckpointNotFoundError
from lib.models.checkpoint_role import CheckpointRoleError
from lib.models.loading import load_detector, open_checkpoint
from tools.export_student import main as export_main
from tools.infer import main as infer_main
from tools.train_val import main as train_val_main

REPO_ROOT = Path(__file__).resolve().parents[2]
TINY_BASE = REPO_ROOT / "tests" / "configs" / "tiny.yaml"


@pytest.fixture(autouse=True)
def one_thread_and_restore_globals(cli_globals) -> None:
    """The CLI mains run in-process (tests/conftest.py ``cli_globals``)."""


@pytest.fixture(scope="module")
def run(module_tmp) -> dict[str, Path]:
    """One epoch (2 steps) of the tiny detector; its run folder, config and last.pth."""
    root = module_tmp
    write_dataset(root / "data", frames=6, seed=2, image_size=(320, 96), val_fraction=0.34)
    config = root / "tiny.yaml"
    data = root / "data"
    config.write_text(f"_base_: {TINY_BASE}\ndataset:\n  root_dir: {data}\ntrainer:\n  max_epoch: 1\n")
    torch.manual_seed(0)
    assert run_cli(train_val_main, ["--config", str(config), "--output-dir", str(root / "out")]) == 0
    return {"root": root, "config": config, "last": root / "out" / "tiny" / "checkpoints" / "last.pth"}


@pytest.fixture
def reads(monkeypatch) -> dict[str, int]:
    """How often each file is read with torch.load (file name -> count)."""
    counts: dict[str, int] = {}
    load = torch.load

    def counting(f, *args, **kwargs):
        counts[Path(f).name] = counts.get(Path(f).name, 0) + 1
        return load(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", counting)
    return counts


def result_files(folder: Path) -> dict[str, str]:
    """The KITTI result files written under ``folder`` (any sub-folder), by name."""
    return {p.name: p.read_text() for p in sorted(folder.rglob("data/*.txt"))}


def test_eval_of_a_checkpoint_uses_its_stored_config_and_reads_it_once(run, reads, tmp_path):
    # The exact line of the README: no --config; the stored config names the run folder.
    assert run_cli(train_val_main, ["-e", "--resume", str(run["last"])]) == 0
    assert reads == {"last.pth": 1}
    stored = result_files(latest_result_dir(run["root"] / "out" / "tiny", "val"))
    assert len(stored) == 2  # the two val frames
    argv = ["--config", str(run["config"]), "--output-dir", str(tmp_path), "-e", "--resume", str(run["last"])]
    assert run_cli(train_val_main, argv) == 0
    assert result_files(latest_result_dir(tmp_path / "tiny", "val")) == stored


def test_resume_without_config_reads_the_checkpoint_once(run, reads, tmp_path):
    argv = ["--resume", str(run["last"]), "--output-dir", str(tmp_path), "trainer.max_epoch=2"]
    assert run_cli(train_val_main, argv) == 0
    assert reads == {"last.pth": 1}
    resumed = open_checkpoint(tmp_path / "tiny" / "checkpoints" / "last.pth")
    assert (resumed.data["epoch"], resumed.data["iteration"]) == (2, 4)  # 4 train frames, batch 2
    assert resumed.config["trainer"]["max_epoch"] == 2 and resumed.config["model"]["type"] == "gupnet"


def test_infer_without_config_equals_infer_with_it(run, tmp_path, capsys):
    images = run["root"] / "data" / "training"
    common = ["--input", str(images / "image_2"), "--calib", str(images / "calib"), "--no-render"]
    common += ["--no-progress", "--checkpoint", str(run["last"])]
    assert run_cli(infer_main, [*common, "--out", str(tmp_path / "stored")]) == 0
    given = ["--out", str(tmp_path / "given"), "--config", str(run["config"])]
    assert run_cli(infer_main, [*common, *given]) == 0
    stored = result_files(tmp_path / "stored")
    assert len(stored) == 6 and stored == result_files(tmp_path / "given")


def test_an_exported_student_keeps_its_config_and_weights_alone_need_one(run, tmp_path, capsys):
    exported = tmp_path / "student.pth"
    assert run_cli(export_main, ["--checkpoint", str(run["last"]), "--out", str(exported)]) == 0
    images = run["root"] / "data" / "training"
    common = ["--input", str(images / "image_2"), "--calib", str(images / "calib"), "--no-render"]
    for name, path in (("exported", exported), ("last", run["last"])):
        argv = [*common, "--no-progress", "--checkpoint", str(path), "--out", str(tmp_path / name)]
        assert run_cli(infer_main, argv) == 0
    assert result_files(tmp_path / "exported") == result_files(tmp_path / "last")
    capsys.readouterr()
    weights = open_checkpoint(exported).data["model_state"]
    exported = tmp_path / "weights.pth"  # weights alone, as a reference download holds them
    torch.save({"model_state": weights}, exported)
    argv = ["--checkpoint", str(exported), "--input", str(images / "image_2"), "--out", str(tmp_path / "o")]
    assert run_cli(infer_main, [*argv, "--intrinsics", "700,700,160,48"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {exported} stores no config: pass the model's config with --config")
    assert run_cli(train_val_main, ["-e", "--resume", str(exported)]) == 2
    assert f"{exported} stores no config" in capsys.readouterr().err
    # With --config the exported weights load into the same network.
    loaded = load_detector(run["config"], exported)
    assert loaded.report.ok and loaded.config.model.type == "gupnet" and not loaded.detector.training


def test_loader_refuses_a_teacher_for_inference_and_odd_stored_configs(run, tmp_path):
    ckpt = open_checkpoint(run["last"]).data
    teacher_cfg = load_config(run["config"], ["model.input=depth"]).to_dict()
    teacher = tmp_path / "teacher.pth"
    torch.save({**ckpt, "config": teacher_cfg}, teacher)
    refused = (
        rf"{teacher}: not a checkpoint for inference \(tools/infer\.py\): "
        "model.input is 'depth' in the checkpoint, the run needs 'rgb'"
    )
    with pytest.raises(CheckpointRoleError, match=refused):
        load_detector(None, teacher, role="infer")
    assert load_detector(None, teacher).detector.input_key == "depth"  # -e of a teacher run: its teacher
    odd = tmp_path / "odd.pth"
    torch.save({**ckpt, "config": {**ckpt["config"], "trainer": {"max_epochs": 3}}}, odd)
    unknown = rf"{odd} \(its stored config\): unknown config key 'trainer.max_epochs'"
    with pytest.raises(ConfigError, match=unknown):
        load_detector(None, odd)
    with pytest.raises(CheckpointNotFoundError, match=r"distill\.teacher_checkpoint: checkpoint not found"):
        load_detector(run["config"], tmp_path / "none.pth", role="teacher")


def test_train_val_without_config_needs_a_checkpoint_path(capsys):
    assert run_cli(train_val_main, ["-e"]) == 2
    assert "--config is required unless --resume names a checkpoint" in capsys.readouterr().err
