"""lib/eval/report.py: every table and file of an evaluation, on hand-built reports."""

from __future__ import annotations

import json

import pytest

from lib.eval.error_analysis import analyse_errors
from lib.eval.report import (
    SCORE_KEY,
    ap_summary,
    format_error_summary,
    format_markdown,
    format_results_table,
    format_table,
    key_metric,
    write_epoch_summary,
    write_json,
    write_reports,
)


def report(mode: int, car_3d: dict | None) -> dict:
    """An evaluator report of one AP mode with Car only (2D 90/80/70, no AOS)."""
    return {
        "ap_mode": mode,
        "num_frames_evaluated": 3,
        "num_frames_listed": 4,
        "frames_evaluated_rule": "every frame",
        "min_overlap": {"Car": 0.7},
        "min_overlap_3d": {"Car": 0.7},
        "ap": {
            "Car": {
                "bbox": {"easy": 90.0, "moderate": 80.0, "hard": 70.0},
                "aos": None,
                "bev": {"easy": 12.34567, "moderate": 10.0, "hard": 9.0},
                "3d": car_3d,
            }
        },
        "precision_curves": {
            "Car": {
                "bbox": {d: [1.0] * 41 for d in ("easy", "moderate", "hard")},
                "aos": None,
                "bev": None,
                "3d": None,
            }
        },
    }


CAR_3D = {"easy": 30.0, "moderate": 20.125, "hard": 10.0}
REPORTS = {"ap40": report(40, CAR_3D), "ap11": report(11, None)}


def test_console_table_in_the_openpcdet_layout():
    lines = format_table(REPORTS).splitlines()
    assert lines[:6] == [
        "KITTI AP|R40: 3 frames evaluated of 4 listed (every frame)",
        "Car AP_R40@0.70, 0.70, 0.70:",
        "bbox AP:90.0000, 80.0000, 70.0000",
        "bev  AP:12.3457, 10.0000, 9.0000",
        "3d   AP:30.0000, 20.1250, 10.0000",
        "aos  AP:-, -, -",
    ]
    assert lines[6:] == [
        "KITTI AP|R11: 3 frames evaluated of 4 listed (every frame)",
        "Car AP_R11@0.70, 0.70, 0.70:",
        "bbox AP:90.0000, 80.0000, 70.0000",
        "bev  AP:12.3457, 10.0000, 9.0000",
        "3d   AP:-, -, -",
        "aos  AP:-, -, -",
    ]


def test_markdown_table_rows_per_class_and_metric():
    lines = format_markdown({"ap40": REPORTS["ap40"]}).splitlines()
    assert lines == [
        "### AP40",
        "",
        "| class | metric | Easy | Mod | Hard |",
        "|---|---|---|---|---|",
        "| Car | bbox | 90.00 | 80.00 | 70.00 |",
        "| Car | aos | - | - | - |",
        "| Car | bev | 12.35 | 10.00 | 9.00 |",
        "| Car | 3d | 30.00 | 20.12 | 10.00 |",
    ]


def test_key_metric_and_summary():
    assert key_metric(REPORTS) == 20.125  # Car 3D Moderate AP40
    assert key_metric({"ap40": report(40, None)}) == 0.0  # no 3D detections
    assert key_metric({"ap40": {"ap": {}}}) == 0.0  # Car not evaluated
    summary = ap_summary(REPORTS)
    assert summary == {"ap40": REPORTS["ap40"]["ap"], "ap11": REPORTS["ap11"]["ap"]}
    assert "precision_curves" not in json.dumps(summary)


def test_an_evaluated_folder_holds_the_json_and_markdown(tmp_path):
    errors = analyse_errors([], [], classes=["Car"])  # no frames: every cell empty
    path = write_reports(tmp_path / "val", REPORTS, errors)
    assert path == tmp_path / "val" / "ap.json"
    assert json.loads(path.read_text()) == REPORTS
    assert (tmp_path / "val" / "ap.md").read_text() == format_markdown(REPORTS)
    assert json.loads((tmp_path / "val" / "error_analysis.json").read_text()) == errors
    assert write_json(tmp_path / "a" / "b.json", {"x": 1}).read_text() == '{\n "x": 1\n}\n'


def test_error_summary_cells_and_missing_runs():
    cell = {
        "recall": {"2d@0.5": 0.9, "3d@0.5": 0.5, "3d@0.7": 0.25},
        "depth_abs_m": {"median": 1.0, "p90": 3.0},
        "depth_bias_m": {"median": -0.5},
        "heading_mod_pi_rad": {"median": 0.1},
    }
    analysis = {"classes": {"Car": {"all": cell}}}
    other = {"classes": {"Car": {"all": {**cell, "recall": {**cell["recall"], "3d@0.7": 0.75}}}}}
    table = format_error_summary({"a": [analysis], "b": [analysis, other], "c": [None]}, title="T")
    lines = table.splitlines()
    assert lines[0] == "**T**" and lines[2].startswith("| model | recall 2D 0.5 |")
    assert lines[4] == "| a | 0.90 | 0.50 | 0.25 | 1.00 | 3.00 | -0.50 | 0.10 |"
    spread = "| 0.50 ± 0.35 | 1.00 ± 0.00 | 3.00 ± 0.00 | -0.50 ± 0.00 | 0.10 ± 0.00 |"  # sqrt(0.125)
    assert lines[5] == "| b | 0.90 ± 0.00 | 0.50 ± 0.00 " + spread
    assert lines[6] == "| c | - | - | - | - | - | - | - |"  # a run evaluated without the analysis


@pytest.mark.parametrize("mode", ["ap40", "ap11"])
def test_markdown_headers_follow_the_modes(mode):
    assert format_markdown({mode: REPORTS[mode]}).startswith(f"### {mode.upper()}\n")


def car_reports(mod_3d: float, easy_bev: float = 50.0) -> dict:
    return {
        "ap40": {
            "ap": {
                "Car": {
                    "3d": {"easy": 1.0, "moderate": mod_3d, "hard": 0.5},
                    "bev": {"easy": easy_bev, "moderate": 40.0, "hard": 30.0},
                }
            }
        }
    }


def test_seed_rows_mean_std_and_range_are_hand_computed():
    # 3D Mod of three seeds 10, 12, 17: mean 13, sample std sqrt((9 + 1 + 16) / 2) = 3.61, range 10-17
    runs = [car_reports(10.0, 50.0), car_reports(12.0, 52.0), car_reports(17.0, 54.0)]
    lines = format_results_table({"student": runs, "teacher": car_reports(30.0)}, title="T").splitlines()
    assert lines[4:] == [
        "| student seed 0 | 1.00 | 10.00 | 0.50 | 50.00 | 40.00 | 30.00 |",
        "| student seed 1 | 1.00 | 12.00 | 0.50 | 52.00 | 40.00 | 30.00 |",
        "| student seed 2 | 1.00 | 17.00 | 0.50 | 54.00 | 40.00 | 30.00 |",
        "| student | 1.00 ± 0.00 | 13.00 ± 3.61 | 0.50 ± 0.00 | 52.00 ± 2.00 | 40.00 ± 0.00 | 30.00 ± 0.00 |",
        "| student min–max | 1.00–1.00 | 10.00–17.00 | 0.50–0.50 | 50.00–54.00 | 40.00–40.00 | 30.00–30.00 |",
        "| teacher | 1.00 | 30.00 | 0.50 | 50.00 | 40.00 | 30.00 |",
    ]


def test_epoch_summary_puts_last_and_best_side_by_side(tmp_path):
    records = [
        {"epoch": 5, SCORE_KEY: 12.0, "ap40": car_reports(12.0)["ap40"]["ap"]},
        {"epoch": 10, SCORE_KEY: 15.5, "ap40": car_reports(15.5)["ap40"]["ap"]},
        {"epoch": 15, SCORE_KEY: 15.5, "ap40": car_reports(15.5, 60.0)["ap40"]["ap"]},
        {"epoch": 20, SCORE_KEY: 14.0, "ap40": car_reports(14.0)["ap40"]["ap"]},
        {"type": "test", "epoch": 10, SCORE_KEY: 99.0, "ap40": car_reports(99.0)["ap40"]["ap"]},  # an -e run
    ]
    assert write_epoch_summary(tmp_path) is None  # no eval.jsonl: nothing evaluated during training
    (tmp_path / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    text = write_epoch_summary(tmp_path).read_text()
    assert "| last epoch (20) | 1.00 | 14.00 | 0.50 | 50.00 | 40.00 | 30.00 |" in text
    assert "| best epoch on val (10) | 1.00 | 15.50 | 0.50 | 50.00 | 40.00 | 30.00 |" in text  # first best
    assert "optimistic (here +1.50 Car 3D Mod AP40 over the last epoch)" in text
    assert "last and best of 4 evaluations" in text
