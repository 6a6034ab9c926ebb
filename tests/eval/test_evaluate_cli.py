"""tools/evaluate.py end to end: the devkit's numbers as JSON, and one-line errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "tools" / "evaluate.py"
TOLERANCE = 1e-4


def _run(case: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        str(SCRIPT),
        "--label-dir",
        str(case / "label_2"),
        "--result-dir",
        str(case / "pred"),
    ]
    cmd += ["--split", str(case / "ImageSets" / "val.txt"), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


@pytest.fixture
def case(fixture_root, tmp_path) -> Path:
    shutil.copytree(fixture_root / "case_3", tmp_path / "case_3")
    return tmp_path / "case_3"


def test_cli_reproduces_devkit_json(case, report_diff):
    done = _run(case, "--only-result-frames", "--json", str(case / "out.json"))
    assert done.returncode == 0, done.stderr
    assert "Car AP_R40@0.70, 0.70, 0.70:" in done.stdout and "Cyclist AP_R11@" in done.stdout
    reports = json.loads((case / "out.json").read_text())
    for mode in (40, 11):
        expected = json.loads((case / f"expected_ap{mode}.json").read_text())
        report = reports[f"ap{mode}"]
        assert report["ap_mode"] == mode and report["schema_version"] == 1
        assert report["num_frames_listed"] == expected["num_frames_listed"]
        assert report["num_frames_evaluated"] == expected["num_frames_evaluated"]
        assert report_diff(report, expected) <= TOLERANCE


def test_cli_default_evaluates_every_split_frame(case, report_diff):
    done = _run(case, "--json", str(case / "all.json"), "--classes", "Car", "Pedestrian", "Cyclist")
    assert done.returncode == 0, done.stderr
    report = json.loads((case / "all.json").read_text())["ap40"]
    expected = json.loads((case / "expected_ap40_all_frames.json").read_text())
    assert report["num_frames_evaluated"] == expected["num_frames_evaluated"] == 120
    assert report_diff(report, expected) <= TOLERANCE


def test_cli_errors_are_one_line(case):
    bad = case / "pred" / "data" / sorted(p.name for p in (case / "pred" / "data").iterdir())[0]
    bad.write_text(bad.read_text() + "Car 1 2 3\n")
    done = _run(case)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{bad.name}:" in lines[0] and "columns" in lines[0]

    done = _run(case, "--result-dir", str(case / "missing"))
    assert done.returncode != 0 and "Traceback" not in done.stderr


def test_cli_report_dir_writes_the_report_and_refuses_to_replace_it(case):
    out = case / "report"
    done = _run(case, "--report-dir", str(out), "--classes", "Car")
    assert done.returncode == 0, done.stderr
    assert all((out / name).is_file() for name in ("report.md", "pr_Car.png", "errors_Car.png"))
    assert json.loads((out / "ap.json").read_text())["ap40"]["ap"].keys() == {"Car"}
    again = _run(case, "--report-dir", str(out), "--classes", "Car")
    assert again.returncode == 2 and again.stderr.startswith("error: ") and "--overwrite" in again.stderr
    assert _run(case, "--report-dir", str(out), "--classes", "Car", "--overwrite").returncode == 0
