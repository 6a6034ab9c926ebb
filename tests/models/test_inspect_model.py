"""tools/inspect_model.py as a subprocess: counts, JSON, exit codes 0 / 1."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

from lib.config import load_config
from lib.depth_bins import RpdSettings
from lib.models import ModelSettings, build_detector

REPO = Path(__file__).resolve().parents[2]
SMALL = ["model.backbone=resnet18", "model.head_conv=16", "model.depth_branch_channels=16"]


def _inspect(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "tools/inspect_model.py"), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_counts_of_gupnet(tmp_path: Path) -> None:
    out = tmp_path / "inspect.json"
    # base.yaml asks for ImageNet weights: the tool must not load them unless --pretrained is given.
    run = _inspect(
        "--config", "configs/base.yaml", "model.type=gupnet", "model.depth_branch=false", "--json", str(out)
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(out.read_text())
    assert report["total"] == 20_871_368
    assert report["modules"]["backbone"] == 15_783_832
    assert report["modules"]["feat_up"] == 3_995_392
    assert report["modules"]["mean_size"] == 9
    assert report["load"] is None
    assert "20,871,368" in run.stdout


def test_checkpoint_fits_or_not(tmp_path: Path) -> None:
    cfg = load_config(
        REPO / "configs/student.yaml", [*SMALL, "model.pretrained=false", "model.depth_branch=false"]
    )
    state = build_detector(ModelSettings.from_config(cfg), RpdSettings.from_config(cfg)).state_dict()
    good, bad = tmp_path / "good.pth", tmp_path / "bad.pth"
    torch.save({"model_state": state, "epoch": 1}, good)  # GUPNet layout: no depth branch
    state["heatmap.2.bias"] = torch.zeros(4)
    state["unused.weight"] = torch.zeros(1)
    torch.save(state, bad)

    out = tmp_path / "good.json"
    run = _inspect("--config", "configs/student.yaml", *SMALL, "--checkpoint", str(good), "--json", str(out))
    assert run.returncode == 0, run.stderr
    load = json.loads(out.read_text())["load"]
    assert load["ok"] is True
    assert len(load["optional_missing"]) == 4  # the student config has the depth branch; the file lacks it

    out = tmp_path / "bad.json"
    run = _inspect("--config", "configs/student.yaml", *SMALL, "--checkpoint", str(bad), "--json", str(out))
    assert run.returncode == 1
    assert "heatmap.2.bias (checkpoint [4] vs model [3])" in run.stderr
    assert "unused.weight" in run.stderr
    load = json.loads(out.read_text())["load"]
    assert load["ok"] is False
    assert load["unexpected"] == ["unused.weight"]
    assert load["mismatched"] == [{"key": "heatmap.2.bias", "checkpoint": [4], "model": [3]}]
