"""Fixtures of the evaluator tests: the official devkit's golden cases in tests/data/kitti_eval."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session")
def fixture_root(test_data_dir: Path) -> Path:
    """tests/data/kitti_eval: case_1..case_6 with the official devkit's AP values."""
    return test_data_dir / "kitti_eval"


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
