"""ONNX export (tools/export_onnx.py, lib/inference.py): ONNX Runtime reproduces PyTorch.

A small random-initialised DID-M3D (configs/demo: ResNet-18, 384x128) is exported and run by ONNX
Runtime on the three real KITTI frames in one batch of 3 (the exported example has batch 1, so
the dynamic batch axis is exercised) and compared output by output with PyTorch.
"""

from __future__ import annotations

import importlib.util
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from lib.config import load_config
from lib.depth_bins import RpdSettings
from lib.errors import run_cli
from lib.inference import OUTPUT_NAMES, Frame, OnnxBackend, TorchBackend, make_batch
from lib.kitti_io import read_calib, read_label
from lib.models.build import ModelSettings, build_detector
from lib.models.loading import load_detector
from lib.utils.files import current_umask

pytest.importorskip("onnxruntime")

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG = REPO_ROOT / "configs" / "demo" / "student.yaml"
# Max abs difference of every float output, ONNX Runtime vs PyTorch (fp32, CPU), as a fraction of
# the output's largest value (at least 1): the depth in metres differed by 1.2e-4 m on an AVX-512
# CPU (2026-12-01), 5.5e-5 m elsewhere; the other outputs by at most 2.3e-5.
TOLERANCE = 1e-4


def load_tool(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_tool", REPO_ROOT / "tools" / f"{name}.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


@pytest.fixture(scope="module")
def exported(module_tmp: Path) -> tuple[Path, Path]:
    """A random-initialised demo student's checkpoint and its ONNX export (tools/export_onnx.py)."""
    folder = module_tmp
    torch.manual_seed(0)
    checkpoint = folder / "random.pth"
    cfg = load_config(CONFIG)
    model = replace(ModelSettings.from_config(cfg), pretrained=False)
    torch.save({"model_state": build_detector(model, RpdSettings.from_config(cfg)).state_dict()}, checkpoint)
    onnx_path = folder / "model.onnx"
    argv = ["--config", str(CONFIG), "--checkpoint", str(checkpoint), "--out", str(onnx_path)]
    assert run_cli(load_tool("export_onnx").main, argv) == 0
    return checkpoint, onnx_path


def kitti_frames(kitti_sample_dir: Path) -> list[Frame]:
    training = kitti_sample_dir / "training"
    return [
        Frame(
            name=name,
            image=cv2.imread(str(training / "image_2" / f"{name}.png"))[..., ::-1],
            P2=read_calib(training / "calib" / f"{name}.txt").P2,
        )
        for name in ("000000", "000001", "000002")
    ]


def test_onnx_runtime_equals_pytorch_on_the_kitti_frames(
    exported: tuple[Path, Path], kitti_sample_dir: Path
) -> None:
    checkpoint, onnx_path = exported
    cfg = load_config(CONFIG)
    batch = make_batch(kitti_frames(kitti_sample_dir), resolution=tuple(cfg.dataset.resolution))
    torch_out = TorchBackend(
        load_detector(cfg, checkpoint).detector, topk=cfg.tester.topk, device=torch.device("cpu")
    )(batch.arrays)
    onnx_backend = OnnxBackend(onnx_path)
    assert onnx_backend.resolution == tuple(cfg.dataset.resolution)
    onnx_out = onnx_backend(batch.arrays)
    differences = {}
    for name in OUTPUT_NAMES:
        assert onnx_out[name].shape == torch_out[name].shape, name
        assert onnx_out[name].shape[0] == 3, name  # the dynamic batch axis
        scale = max(1.0, float(np.abs(torch_out[name]).max()))
        differences[name] = float(np.abs(onnx_out[name].astype(np.float64) - torch_out[name]).max()) / scale
    print(
        "max abs difference ONNX Runtime vs PyTorch / max(1, largest value):",
        {k: f"{v:.2e}" for k, v in differences.items()},
    )
    for name in ("cls", "xs", "ys"):  # the same peaks
        assert differences[name] == 0, name
    assert max(differences.values()) <= TOLERANCE, differences
    assert np.abs(torch_out["depth"]).max() > 1.0  # the outputs compared are not all tiny


def test_infer_with_the_onnx_backend(
    exported: tuple[Path, Path], kitti_sample_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """tools/infer.py on a .onnx file (ONNX Runtime, chosen by the suffix) writes the boxes of the
    PyTorch backend; the exported file is readable by the group (0666 less the umask, not 0600)."""
    checkpoint, onnx_path = exported
    training = kitti_sample_dir / "training"
    infer = load_tool("infer")
    common = [
        "--config",
        str(CONFIG),
        "--input",
        str(training / "image_2"),
        "--calib",
        str(training / "calib"),
    ]
    common += ["--no-render", "--no-progress", "--score-threshold", "0.05"]
    assert (
        run_cli(infer.main, [*common, "--checkpoint", str(checkpoint), "--out", str(tmp_path / "torch")]) == 0
    )
    assert onnx_path.stat().st_mode & 0o777 == 0o666 & ~current_umask()
    argv = [*common, "--checkpoint", str(onnx_path), "--out", str(tmp_path / "onnx")]
    assert run_cli(infer.main, argv) == 0
    total = 0
    for name in ("000000", "000001", "000002"):
        a = read_label(tmp_path / "torch" / "data" / f"{name}.txt")
        b = read_label(tmp_path / "onnx" / "data" / f"{name}.txt")
        assert [o.cls_type for o in a] == [o.cls_type for o in b]
        for x, y in zip(a, b, strict=True):  # 2-decimal geometry: at most one rounding step apart
            np.testing.assert_allclose(
                [*x.box2d, x.h, x.w, x.l, *x.pos, x.ry], [*y.box2d, y.h, y.w, y.l, *y.pos, y.ry], atol=0.011
            )
            assert x.score == pytest.approx(y.score, abs=1e-4)
        total += len(a)
    assert total > 0
    capsys.readouterr()


def test_export_refuses_to_overwrite_and_wrong_resolution(
    exported: tuple[Path, Path], kitti_sample_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    checkpoint, onnx_path = exported
    argv = ["--config", str(CONFIG), "--checkpoint", str(checkpoint), "--out", str(onnx_path)]
    assert run_cli(load_tool("export_onnx").main, argv) == 2
    assert "exists (--force to overwrite)" in capsys.readouterr().err
    training = kitti_sample_dir / "training"
    argv = ["--config", str(CONFIG), "--checkpoint", str(onnx_path), "--backend", "onnx", "--no-progress"]
    argv += [
        "--input",
        str(training / "image_2"),
        "--calib",
        str(training / "calib"),
        "--out",
        str(tmp_path / "o"),
    ]
    assert run_cli(load_tool("infer").main, [*argv, "dataset.resolution=[640,192]"]) == 2
    assert "exported for input (384, 128)" in capsys.readouterr().err
