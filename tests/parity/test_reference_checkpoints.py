"""Checkpoints in the references' layouts load strictly in every tool (docs/parity.md,
"checkpoint layouts"): ``tools/train_val.py -e``, ``tools/inspect_model.py`` and
``tools/export_student.py`` read them through the one reader of lib/models/checkpoint_io.py.

The layouts (state_dict names and shapes of GUPNet, MonoSKD's DID-M3D and MonoSKD's two
distillation wrappers) come from instantiating the reference models
(tests/fixtures/parity/schedule_decode_state_keys.json, tools/parity/schedule_decode.py); the
files are built here with zero-stride tensors of those shapes, in the references' checkpoint
format ``{"model_state", "optimizer_state", "epoch"}`` (docs/reference.md, 'Checkpoint format').
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from parity_common import reference_network

from lib.datasets.synthetic import write_dataset
from lib.errors import run_cli
from lib.eval.kitti_format import latest_result_dir
from lib.models import load_model_state
from lib.models.checkpoint_io import CheckpointError, read_checkpoint
from tools.export_student import main as export_main
from tools.inspect_model import main as inspect_main
from tools.train_val import main as train_val_main

REPO = Path(__file__).resolve().parents[2]
LAYOUTS = json.loads((REPO / "tests/fixtures/parity/schedule_decode_state_keys.json").read_text())
# Each reference file, the shipped config it belongs to, and its student's key prefix.
CASES = {
    "gupnet": ("configs/gupnet.yaml", ""),
    "did": ("configs/did_m3d.yaml", ""),
    "skd_monoskd": ("configs/did_m3d.yaml", "centernet_rgb."),
    "skd_monodistill": ("configs/did_m3d.yaml", "centernet_rgb."),
}


def _state(layout: str) -> dict[str, torch.Tensor]:
    """Zero-stride tensors (tiny files) with the reference's names and shapes."""
    spec = LAYOUTS[layout]
    state = {}
    for key, shape in zip(spec["keys"], spec["shapes"], strict=True):
        dims = [int(d) for d in shape.split(",") if d]
        dtype = torch.int64 if key.endswith("num_batches_tracked") else torch.float32
        state[key] = torch.ones((), dtype=dtype).expand(dims) if dims else torch.ones((), dtype=dtype)
    return state


def _shapes(state: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items()}


@pytest.fixture(scope="module")
def reference_files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("reference_checkpoints")
    files = {}
    for layout in CASES:
        files[layout] = folder / f"{layout}.pth"
        torch.save({"model_state": _state(layout), "optimizer_state": {}, "epoch": 140}, files[layout])
    return files


@pytest.fixture(autouse=True)
def restore_logging(cli_globals) -> None:
    """The CLI mains run in-process; their process-wide settings are undone after each test."""


def test_our_detectors_have_the_reference_layouts() -> None:
    for layout, model_type in (("gupnet", "gupnet"), ("did", "did")):
        ours = reference_network(model_type).state_dict()
        assert list(ours) == LAYOUTS[layout]["keys"]  # names and order
        assert _shapes(ours) == _shapes(_state(layout))
    did = _shapes(_state("did"))
    for wrapper in ("skd_monoskd", "skd_monodistill"):
        state = _state(wrapper)
        student = {k[len("centernet_rgb.") :]: v for k, v in state.items() if k.startswith("centernet_rgb.")}
        assert _shapes(student) == did
        assert {k.split(".")[0] for k in state} >= {"centernet_rgb", "centernet_depth", "rgb_fs"}


@pytest.mark.parametrize("layout", sorted(CASES))
def test_inspect_model_loads_each_reference_file(layout: str, reference_files, tmp_path, capsys) -> None:
    config, _ = CASES[layout]
    report = tmp_path / "inspect.json"
    assert (
        inspect_main(
            [
                "--config",
                str(REPO / config),
                "--checkpoint",
                str(reference_files[layout]),
                "--json",
                str(report),
            ]
        )
        == 0
    )
    load = json.loads(report.read_text())["load"]
    assert load["ok"] and not load["missing"] and not load["unexpected"] and not load["mismatched"]
    assert "fits" in capsys.readouterr().out


@pytest.mark.parametrize("layout", sorted(CASES))
def test_export_student_gives_the_student_of_each_reference_file(
    layout: str, reference_files, tmp_path
) -> None:
    config, prefix = CASES[layout]
    out = tmp_path / "student.pth"
    assert run_cli(export_main, ["--checkpoint", str(reference_files[layout]), "--out", str(out)]) == 0
    exported = read_checkpoint(out)
    source = _state(layout)
    assert _shapes(exported) == {
        k[len(prefix) :]: v for k, v in _shapes(source).items() if k.startswith(prefix)
    }
    model_type = "gupnet" if layout == "gupnet" else "did"
    assert load_model_state(reference_network(model_type), out).ok


def test_unknown_wrapper_keys_are_refused(reference_files, tmp_path) -> None:
    state = _state("skd_monoskd") | {"discriminator.weight": torch.zeros(1)}
    path = tmp_path / "odd.pth"
    torch.save({"model_state": state}, path)
    with pytest.raises(CheckpointError, match="unknown keys \\(1\\): discriminator.weight"):
        read_checkpoint(path)


@pytest.fixture(scope="module")
def tiny_split(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ckpt_eval") / "data"
    write_dataset(root, frames=4, seed=3, image_size=(320, 96), val_fraction=0.5)
    return root


@pytest.mark.parametrize("layout", sorted(CASES))
def test_train_val_eval_loads_each_reference_file(layout: str, reference_files, tiny_split, tmp_path) -> None:
    config, _ = CASES[layout]
    argv = [
        "--config",
        str(REPO / config),
        "-e",
        "--output-dir",
        str(tmp_path),
        f"tester.checkpoint={reference_files[layout]}",
        f"dataset.root_dir={tiny_split}",
        "dataset.resolution=[320, 96]",
        "dataset.batch_size=1",
        "dataset.num_workers=0",
        "dataset.check_split_sizes=false",
    ]
    assert run_cli(train_val_main, argv) == 0
    name = Path(config).stem
    assert sorted(
        p.name for p in (latest_result_dir(tmp_path / name, "val") / "data").iterdir()
    )  # one file per frame
