"""lib/eval/plots.py and report.md: pictures drawn from the evaluator's own arrays, every link resolves."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from lib.constants import EVAL_DIFFICULTIES
from lib.eval import plots
from lib.eval.error_analysis import analyse_errors
from lib.eval.kitti_eval import evaluate
from lib.eval.kitti_format import load_labels, load_results
from lib.eval.report import REPORT_MARKDOWN, write_reports
from lib.kitti_io import read_split

CASE = "case_2"  # 40 frames, every class (tests/data/kitti_eval/README.md)


@pytest.fixture(scope="module")
def evaluation(request):
    root = request.config.rootpath / "tests" / "data" / "kitti_eval" / CASE
    split = read_split(root / "ImageSets" / "val.txt")
    gt, det = load_labels(root / "label_2", split), load_results(root / "pred", split)
    return root, evaluate(gt, det), analyse_errors(gt, det)


def test_recall_axis_is_the_devkit_sample_points():
    assert plots.recall_points()[[0, 1, 20, 40]].tolist() == [0.0, 0.025, 0.5, 1.0]
    assert len(plots.recall_points()) == 41


def test_pr_lines_are_the_evaluator_arrays_and_the_devkit_curves(evaluation, tmp_path):
    root, reports, _ = evaluation
    golden = json.loads((root / "expected_ap40_all_frames.json").read_text())["precision_curves"]
    report = reports["ap40"]
    for name in report["ap"]:
        fig = plots.draw_pr_curves(report, name)
        for ax, (metric, _) in zip(fig.axes, plots.PR_METRICS, strict=True):
            curves = report["precision_curves"][name][metric]
            if curves is None:
                assert not ax.lines
                continue
            assert len(ax.lines) == len(EVAL_DIFFICULTIES)
            for line, difficulty in zip(ax.lines, EVAL_DIFFICULTIES, strict=True):
                assert line.get_ydata().tolist() == curves[difficulty]  # the same array, unchanged
                assert np.allclose(line.get_ydata(), golden[name][metric][difficulty], atol=1e-4)
                assert line.get_xdata().tolist() == plots.recall_points().tolist()
        assert plots.save(fig, tmp_path / f"pr_{name}.png").read_bytes()[:4] == b"\x89PNG"


def test_error_lines_are_the_analysis_cells(evaluation, tmp_path):
    _, _, errors = evaluation
    fig = plots.draw_error_plots(errors, "Car")
    plots.save(fig, tmp_path / "errors_Car.png")
    cells = errors["classes"]["Car"]
    recall, depth = fig.axes[0].lines, fig.axes[1].lines
    expected_07 = [cells[b]["recall"]["3d@0.7"] for b in errors["distance_bins_m"]]
    got = recall[2].get_ydata().tolist()
    assert got == pytest.approx([np.nan if v is None else v for v in expected_07], nan_ok=True)
    assert depth[2].get_ydata().tolist() == pytest.approx(
        [
            np.nan if cells[b]["depth_bias_m"]["median"] is None else cells[b]["depth_bias_m"]["median"]
            for b in errors["distance_bins_m"]
        ],
        nan_ok=True,
    )


def test_report_names_every_file_it_links_and_each_exists(evaluation, tmp_path):
    _, reports, errors = evaluation
    write_reports(tmp_path, reports, errors, title="case 2")
    text = (tmp_path / REPORT_MARKDOWN).read_text()
    links = re.findall(r"\]\(([^)]+)\)", text)
    assert sorted(set(links)) == sorted(
        ["ap.json", "ap.md", "error_analysis.json"]
        + [f"pr_{c}.png" for c in ("Car", "Pedestrian", "Cyclist")]
        + [f"errors_{c}.png" for c in ("Car", "Pedestrian", "Cyclist")]
    )
    for link in links:
        path = tmp_path / link
        assert path.is_file() and path.stat().st_size > 0, link
        if link.endswith(".png"):
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert text.startswith("# case 2\n")
    assert "| Car | 3d |" in text  # the AP table beside the pictures
    assert not list(tmp_path.glob("*.partial"))
