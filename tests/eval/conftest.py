"""Shared fixtures of the evaluator tests: the golden KITTI devkit cases in ../shared/fixtures."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session")
def fixture_root(shared_dir: Path) -> Path:
    """shared/fixtures/kitti_eval (case_1..case_6 with the devkit's values); skipped when absent."""
    root = shared_dir / "fixtures" / "kitti_eval"
    if not root.is_dir():
        pytest.skip(f"KITTI devkit golden fixtures not found at {root}")
    return root


@pytest.fixture(scope="session")
def report_diff():
    """``report_diff(report, expected)``: the largest |difference| over every AP value and
    precision-curve point of one AP mode; asserts that both have nulls at the same places."""
    return _max_report_diff


def _max_report_diff(report: dict, expected: dict) -> float:
    worst = 0.0
    for key in ("ap", "precision_curves"):
        for name, metrics in expected[key].items():
            for metric, values in metrics.items():
                got = report[key][name][metric]
                where = f"{key}/{name}/{metric}"
                assert (got is None) == (values is None), f"{where}: expected {values}, got {got}"
                for difficulty, value in (values or {}).items():
                    diff = np.abs(np.asarray(got[difficulty]) - np.asarray(value)).max()
                    assert not math.isnan(diff), f"{where}/{difficulty}: NaN"
                    worst = max(worst, float(diff))
    return worst
