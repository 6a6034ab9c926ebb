"""lib/eval/report.py: every table and file of an evaluation, on hand-built reports."""

from __future__ import annotations

import json

import pytest

from lib.eval.error_analysis import analyse_errors
from lib.eval.report import (
    ap_summary,
    format_error_summary,
    format_markdown,
    format_table,
    key_metric,
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
