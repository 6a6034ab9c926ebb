"""tools/compare_runs.py: deltas against the seed spread, or against ±1 AP when none is known."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lib.config import load_config, save_config
from lib.errors import UserError
from tools import compare_runs

REPO_ROOT = Path(__file__).resolve().parents[2]


def reports(mod_3d: float) -> dict:
    """Evaluator reports with Car 3D Easy / Mod / Hard = 30 / ``mod_3d`` / 10 and BEV 50 / 40 / 30."""
    car = {
        "3d": {"easy": 30.0, "moderate": mod_3d, "hard": 10.0},
        "bev": {"easy": 50.0, "moderate": 40.0, "hard": 30.0},
    }
    return {"ap40": {"ap": {"Car": car}}}


def test_a_cell_is_judged_against_the_widest_seed_range_else_the_default_noise():
    # reference seeds 20 and 22 (range 2): +2.5 is outside, +0.5 inside
    outside = compare_runs.compare_cell([20.0, 22.0], [23.5], 1.0)
    assert outside == pytest.approx(
        {
            "reference": 21.0,
            "other": 23.5,
            "delta": 2.5,
            "noise": 2.0,
            "noise_from": "seeds",
            "significant": True,
        }
    )
    inside = compare_runs.compare_cell([20.0, 22.0], [21.0, 22.0, 21.5], 1.0)
    assert inside["delta"] == pytest.approx(0.5) and inside["noise"] == 2.0 and not inside["significant"]
    # single runs: ±1 AP
    assert not compare_runs.compare_cell([10.0], [10.8], 1.0)["significant"]
    assert compare_runs.compare_cell([10.0], [11.5], 1.0)["significant"]
    assert compare_runs.compare_cell([10.0], [9.0], 1.0)["significant"] is False  # exactly the noise
    assert compare_runs.compare_cell([10.0], [8.9], 1.0)["significant"]


def write_run(run_dir: Path, ap: dict) -> None:
    """A run folder as reproduce.py leaves it: config.yaml and results/<split>/ap.json."""
    cfg = load_config(REPO_ROOT / "configs" / "demo" / "student.yaml", [f"experiment.name={run_dir.name}"])
    save_config(cfg, run_dir / "config.yaml")
    (run_dir / "results" / cfg.tester.split).mkdir(parents=True)
    (run_dir / "results" / cfg.tester.split / "ap.json").write_text(json.dumps(ap))


def test_cli_marks_significant_and_noise_deltas_per_stage(tmp_path, capsys):
    """Reference: 2 seeds, student 3D Mod 20 / 22 (range 2), monommkd 21 / 21.5 (range 0.5); other:
    one run, student 25 (+4 > 2: significant), monommkd 21.6 (+0.35 <= 0.5: not); every other
    cell equal (delta 0: not significant)."""
    for k, (student, distilled) in enumerate([(20.0, 21.0), (22.0, 21.5)]):
        write_run(tmp_path / "a" / f"seed_{k}" / "student", reports(student))
        write_run(tmp_path / "a" / f"seed_{k}" / "monommkd", reports(distilled))
    write_run(tmp_path / "b" / "student", reports(25.0))
    write_run(tmp_path / "b" / "monommkd", reports(21.6))
    assert compare_runs.main([str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert "| student | 3D Mod | 21.00 | 25.00 | +4.00 | ±2.00 (seeds) | yes |" in out
    assert "| monommkd | 3D Mod | 21.25 | 21.60 | +0.35 | ±0.50 (seeds) | no (within noise) |" in out
    assert "| student | BEV Easy | 50.00 | 50.00 | +0.00 | ±0.00 (seeds) | no (within noise) |" in out
    assert out.count("| yes |") == 1

    # two stages of one reproduction, and two single runs (±1 AP)
    assert compare_runs.main([f"{tmp_path / 'a'}:student", f"{tmp_path / 'a'}:monommkd"]) == 0
    assert (
        "| run | 3D Mod | 21.00 | 21.25 | +0.25 | ±2.00 (seeds) | no (within noise) |"
        in capsys.readouterr().out
    )
    assert compare_runs.main([str(tmp_path / "b" / "monommkd"), str(tmp_path / "b" / "student")]) == 0
    assert "| run | 3D Mod | 21.60 | 25.00 | +3.40 | ±1.00 (default) | yes |" in capsys.readouterr().out


def test_cli_names_a_folder_without_evaluation(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="empty: no evaluation"):
        compare_runs.load_runs(str(tmp_path / "empty"))
    write_run(tmp_path / "r" / "student", reports(1.0))
    with pytest.raises(UserError, match="no stage 'teacher'"):
        compare_runs.load_runs(f"{tmp_path / 'r'}:teacher")
