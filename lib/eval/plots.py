"""Pictures of an evaluation: precision-recall curves, errors by distance, the spread of seeds.

Every figure is drawn from a report, never recomputed:

* :func:`draw_pr_curves`: the evaluator's own 41-point precision arrays
  (:func:`lib.eval.kitti_eval.evaluate`, ``precision_curves``) against recall ``i / 40``, the
  sample points of the devkit's recall thresholds (lib/eval/kitti_kernels.py
  ``NUM_SAMPLE_PTS``); one panel per metric (2D, BEV, 3D), one line per difficulty;
* :func:`draw_error_plots`: an error analysis (:func:`lib.eval.error_analysis.analyse_errors`) per
  distance bin: recall at 2D IoU 0.5 and 3D IoU 0.5 / 0.7, depth error (median, p90) and bias,
  heading (modulo pi) and size error;
* :func:`draw_seed_spread`: one AP cell of several runs per model (each run a dot, the mean a bar).

matplotlib is imported on first use, with the file-only Agg backend, so that importing this
module (and the tools that write reports) stays cheap. Figures are written as PNG and closed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lib.constants import EVAL_DIFFICULTIES
from lib.eval.kitti_kernels import NUM_SAMPLE_PTS

PR_METRICS = (("bbox", "2D"), ("bev", "BEV"), ("3d", "3D"))
DPI = 100


def _pyplot():
    """matplotlib.pyplot on the Agg backend (imported here: a slow import, needed only to draw)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def recall_points() -> np.ndarray:
    """(41,) the recall of each point of an evaluator precision curve: 0, 1/40, ..., 1."""
    return np.arange(NUM_SAMPLE_PTS) / (NUM_SAMPLE_PTS - 1)


def draw_pr_curves(report: Mapping[str, Any], name: str):
    """The figure of class ``name``'s precision-recall curves from one evaluator report.

    Args:
        report: one mode's report of :func:`lib.eval.kitti_eval.evaluate` (``precision_curves``
            and ``ap`` nested class -> metric -> difficulty; a metric that was not evaluated is None).
        name: a class of the report.

    Returns:
        A matplotlib Figure with one axes per metric of :data:`PR_METRICS`; each evaluated
        difficulty is one line whose y data are the report's precision curve unchanged.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(PR_METRICS), figsize=(12, 3.8), dpi=DPI)
    mode = report["ap_mode"]
    for ax, (metric, label) in zip(axes, PR_METRICS, strict=True):
        curves = report["precision_curves"][name].get(metric)
        overlap = report["min_overlap"][name] if metric == "bbox" else report["min_overlap_3d"][name]
        ax.set_title(f"{name} {label} @ IoU {overlap:g}")
        if curves is None:
            ax.text(0.5, 0.5, "not evaluated", ha="center", va="center", transform=ax.transAxes)
        else:
            for difficulty in EVAL_DIFFICULTIES:
                ap = report["ap"][name][metric][difficulty]
                ax.plot(recall_points(), curves[difficulty], label=f"{difficulty} (AP|R{mode} {ap:.2f})")
            ax.legend(loc="upper right", fontsize=8)
        ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("precision")
    fig.tight_layout()
    return fig


# Error plots: panel title, y label, then (label, report group, key) of each line.
ERROR_PANELS = (
    (
        "recall (any score)",
        "fraction of ground truth",
        (
            ("2D IoU 0.5", "recall", "2d@0.5"),
            ("3D IoU 0.5", "recall", "3d@0.5"),
            ("3D IoU 0.7", "recall", "3d@0.7"),
        ),
    ),
    (
        "depth error",
        "m",
        (
            ("|dz| median", "depth_abs_m", "median"),
            ("|dz| p90", "depth_abs_m", "p90"),
            ("bias median", "depth_bias_m", "median"),
        ),
    ),
    (
        "heading error (mod pi)",
        "rad",
        (("median", "heading_mod_pi_rad", "median"), ("p90", "heading_mod_pi_rad", "p90")),
    ),
    (
        "size error (mean |dh|,|dw|,|dl|)",
        "m",
        (("median", "size_abs_m", "median"), ("p90", "size_abs_m", "p90")),
    ),
)


def error_series(cells: Mapping[str, Any], group: str, key: str) -> list[float]:
    """The value of ``group``/``key`` in each distance-bin cell (``all`` left out), NaN where empty."""
    values = [cell[group][key] for label, cell in cells.items() if label != "all"]
    return [np.nan if v is None else float(v) for v in values]


def draw_error_plots(errors: Mapping[str, Any], name: str):
    """The figure of class ``name``'s errors per distance bin of an error analysis.

    Returns:
        A matplotlib Figure, one axes per :data:`ERROR_PANELS` entry, x = the distance bins
        (``distance_bins_m``, with the ground-truth count of each), one line per series.
    """
    plt = _pyplot()
    cells = errors["classes"][name]
    bins = [label for label in cells if label != "all"]
    ticks = [f"{label} m\n({cells[label]['num_gt']} GT)" for label in bins]
    fig, axes = plt.subplots(1, len(ERROR_PANELS), figsize=(15, 3.8), dpi=DPI)
    for ax, (title, unit, series) in zip(axes, ERROR_PANELS, strict=True):
        for label, group, key in series:
            ax.plot(range(len(bins)), error_series(cells, group, key), marker="o", label=label)
        ax.set_xticks(range(len(bins)), ticks, fontsize=8)
        ax.set(title=f"{name}: {title}", ylabel=unit)
        ax.axhline(0.0, color="grey", linewidth=0.5)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylim(0, 1.02)
    fig.suptitle(f"{errors['difficulty']} ground truth, {errors['num_frames']} frames; x: ground-truth depth")
    fig.tight_layout()
    return fig


def draw_seed_spread(values: Mapping[str, Sequence[float]], *, title: str):
    """One dot per run and the mean (horizontal bar) of one AP cell for each model (``values``:
    model -> the cell of each of its runs)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(1.6 * len(values) + 2, 3.8), dpi=DPI)
    for i, runs in enumerate(values.values()):
        ax.scatter([i] * len(runs), runs, color="tab:blue", zorder=3)
        if runs:
            ax.hlines(float(np.mean(runs)), i - 0.25, i + 0.25, color="tab:red")
    ax.set_xticks(range(len(values)), list(values), fontsize=8)
    ax.set(title=title, ylabel="AP")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def save(fig, path: str | Path) -> Path:
    """Write ``fig`` as PNG to ``path`` (folder created) and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    _pyplot().close(fig)
    return path
