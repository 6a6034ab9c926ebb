"""tools/reproduce.py --demo --all end to end at a toy size (CPU): the synthetic set, its depth
maps, the five stages chained by checkpoint (teacher -> student -> MonoMMKD, MonoSKD,
MonoDistill), their evaluations and the printed table; ``--skip-done`` and a bad override."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lib.config import load_config

REPO_ROOT = Path(__file__).resolve().parents[2]
STAGES = ("teacher", "student", "monommkd", "monoskd", "monodistill")
TOY = ["trainer.max_epoch=1", "trainer.max_iters_per_epoch=2", "dataset.resolution=[128,64]"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
ROW = re.compile(r"^\| (\w+) \|((?: [0-9]+\.[0-9]{2} \|)+)$")


def reproduce(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "tools/reproduce.py", *args]
    return subprocess.run(cmd, cwd=REPO_ROOT, env=ENV, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("reproduce") / "demo"
    return out, reproduce("--demo", "--all", "--frames", "6", "--output-dir", str(out), *TOY)


def table_rows(text: str) -> list[tuple[str, list[float]]]:
    rows = []
    for line in text.splitlines():
        match = ROW.match(line)
        if match:
            rows.append((match.group(1), [float(v) for v in match.group(2).split("|") if v.strip()]))
    return rows


def test_demo_all_chains_every_stage_and_writes_the_table(demo_run):
    out, result = demo_run
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert sorted(p.name for p in (out / "data" / "training").iterdir()) == [
        "calib",
        "depth_dense",
        "image_2",
        "label_2",
        "velodyne",
    ]
    for stage in STAGES:
        assert (out / stage / "checkpoints" / "last.pth").is_file(), stage
        assert (out / stage / "results" / "val" / "ap.json").is_file(), stage
    for stage in ("monommkd", "monoskd", "monodistill"):
        distill = load_config(out / stage / "config.yaml").distill
        assert distill.teacher_checkpoint == str(out / "teacher" / "checkpoints" / "last.pth")
        assert distill.student_checkpoint == str(out / "student" / "checkpoints" / "last.pth")
    table = (out / "table.md").read_text()
    assert table in result.stdout
    assert "IoU 0.7 (KITTI protocol)" in table and "loose overlaps" in table
    rows = table_rows(table)
    # the paper's table (3D + BEV: 6 cells) then the loose one (2D + BEV + 3D: 9 cells), every stage
    assert [(name, len(cells)) for name, cells in rows] == [(s, 6) for s in STAGES] + [(s, 9) for s in STAGES]
    assert all(0.0 <= v <= 100.0 for _, cells in rows for v in cells)


def test_skip_done_reuses_every_stage(demo_run):
    out, first = demo_run
    assert first.returncode == 0
    before = {s: (out / s / "checkpoints" / "last.pth").stat().st_mtime_ns for s in STAGES}
    again = reproduce("--demo", "--all", "--skip-done", "--output-dir", str(out), *TOY)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("done already") == len(STAGES)
    assert {s: (out / s / "checkpoints" / "last.pth").stat().st_mtime_ns for s in STAGES} == before
    assert (out / "table.md").read_text() in again.stdout


def test_bad_override_fails_before_training(tmp_path):
    result = reproduce(
        "--demo", "--frames", "2", "--output-dir", str(tmp_path / "demo"), "trainer.max_epok=1"
    )
    assert result.returncode == 2
    assert "max_epok" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "demo").exists()  # checked before the data is written
