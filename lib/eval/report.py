"""Every report of an evaluation: console and markdown tables, JSON files, the reproduction table.

Inputs are the evaluator's reports (:func:`lib.eval.kitti_eval.evaluate`:
``{"ap40": report, "ap11": report}``) and the error analysis
(:func:`lib.eval.error_analysis.analyse_errors`). The console table uses the layout KITTI users
know from OpenPCDet / kitti-object-eval-python::

    Car AP_R40@0.70, 0.70, 0.70:
    bbox AP:97.1234, 90.1234, 88.1234
    bev  AP:...
    3d   AP:...
    aos  AP:...

with the overlaps of bbox, BEV and 3D after the ``@``, and ``-`` where the devkit outputs nothing.
An evaluated result folder holds ``ap.json``, ``ap.md`` and ``error_analysis.json``
(:func:`write_reports`); ``tools/reproduce.py`` reads them back into its comparison tables
(:func:`format_results_table`, :func:`format_error_summary`).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lib.eval.kitti_eval import DIFFICULTIES, METRICS

AP_JSON, AP_MARKDOWN, ERROR_JSON = "ap.json", "ap.md", "error_analysis.json"  # of a result folder
KEY_CLASS, KEY_METRIC, KEY_DIFFICULTY = "Car", "3d", "moderate"  # the best-checkpoint criterion
_ROWS = (("bbox", "bbox"), ("bev", "bev "), ("3d", "3d  "), ("aos", "aos "))


def format_table(reports: Mapping[str, dict]) -> str:
    """The KITTI table of every AP mode in ``reports`` (``{"ap40": report, "ap11": report}``)."""
    blocks = []
    for report in reports.values():
        mode = report["ap_mode"]
        blocks.append(
            f"KITTI AP|R{mode}: {report['num_frames_evaluated']} frames evaluated "
            f"of {report['num_frames_listed']} listed ({report['frames_evaluated_rule']})"
        )
        for name, metrics in report["ap"].items():
            ov_2d = report["min_overlap"][name]
            ov_3d = report["min_overlap_3d"][name]
            lines = [f"{name} AP_R{mode}@{ov_2d:.2f}, {ov_3d:.2f}, {ov_3d:.2f}:"]
            for metric, label in _ROWS:
                values = metrics[metric]
                cells = "-, -, -" if values is None else ", ".join(f"{v:.4f}" for v in values.values())
                lines.append(f"{label} AP:{cells}")
            blocks.append("\n".join(lines))
        blocks += [f"warning: {w}" for w in report.get("warnings", ())]
    return "\n".join(blocks) + "\n"


def format_markdown(reports: Mapping[str, Any]) -> str:
    """A markdown table per AP mode: one row per class and metric, Easy / Mod / Hard columns."""
    lines = []
    for mode, report in reports.items():
        lines += [
            f"### {mode.upper()}",
            "",
            "| class | metric | Easy | Mod | Hard |",
            "|---|---|---|---|---|",
        ]
        for name, metrics in report["ap"].items():
            for metric in METRICS:
                values = metrics.get(metric)
                cells = [f"{values[d]:.2f}" if values else "-" for d in DIFFICULTIES]
                lines.append(f"| {name} | {metric} | {' | '.join(cells)} |")
        lines.append("")
    return "\n".join(lines)


def key_metric(reports: Mapping[str, Any]) -> float:
    """Car 3D Moderate AP40 (the best-checkpoint criterion); 0 when Car was not evaluated or
    had no 3D detections."""
    table = reports["ap40"]["ap"].get(KEY_CLASS) or {}
    values = table.get(KEY_METRIC)
    return float(values[KEY_DIFFICULTY]) if values else 0.0


def ap_summary(reports: Mapping[str, Any]) -> dict[str, Any]:
    """The AP numbers only (no precision curves): {mode: class -> metric -> difficulty -> AP}."""
    return {mode: report["ap"] for mode, report in reports.items()}


def write_json(path: str | Path, data: Mapping[str, Any]) -> Path:
    """Write a report as indented JSON (the evaluator's ``{"ap40": ..., "ap11": ...}``, or an
    error analysis), creating the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")
    return path


def write_reports(out_dir: str | Path, reports: Mapping[str, Any], errors: Mapping[str, Any]) -> Path:
    """``ap.json`` (full reports), ``ap.md`` (:func:`format_markdown`) and ``error_analysis.json``
    into ``out_dir`` (a result folder); returns ``ap.json``'s path."""
    out_dir = Path(out_dir)
    json_path = write_json(out_dir / AP_JSON, reports)
    (out_dir / AP_MARKDOWN).write_text(format_markdown(reports))
    write_json(out_dir / ERROR_JSON, errors)
    return json_path


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


# The error-analysis table: column title, width, cell of a (class, distance bin) report cell.
_ERROR_TABLE = (
    ("GT", 5, lambda c: str(c["num_gt"])),
    ("R2D.5", 6, lambda c: _fmt(c["recall"]["2d@0.5"], ".2f")),
    ("R3D.5", 6, lambda c: _fmt(c["recall"]["3d@0.5"], ".2f")),
    ("R3D.7", 6, lambda c: _fmt(c["recall"]["3d@0.7"], ".2f")),
    ("dz med", 7, lambda c: _fmt(c["depth_abs_m"]["median"], ".2f")),
    ("dz p90", 7, lambda c: _fmt(c["depth_abs_m"]["p90"], ".2f")),
    ("dz rel", 7, lambda c: _fmt(c["depth_rel"]["median"], ".3f")),
    ("bias", 7, lambda c: _fmt(c["depth_bias_m"]["median"], "+.2f")),
    ("dx med", 7, lambda c: _fmt(c["lateral_abs_m"]["median"], ".2f")),
    ("size", 6, lambda c: _fmt(c["size_abs_m"]["median"], ".2f")),
    ("head", 6, lambda c: _fmt(c["heading_abs_rad"]["median"], ".2f")),
    ("h%pi", 6, lambda c: _fmt(c["heading_mod_pi_rad"]["median"], ".2f")),
    ("TP", 5, lambda c: str(c["num_tp"])),
    ("FP", 5, lambda c: str(c["num_fp"])),
    ("s TP", 5, lambda c: _fmt(c["score_tp"]["median"], ".2f")),
    ("s FP", 5, lambda c: _fmt(c["score_fp"]["median"], ".2f")),
)
_ERROR_LEGEND = (
    "range: ground-truth depth (m); R: recall at any score at 2D / 3D IoU; dz, dx, size (m) and head, "
    "h%pi (rad): medians over matched pairs (dz p90: 90th percentile); dz rel: |dz| / z; bias: median "
    "z_det - z_gt; s TP / s FP: median scores"
)


def format_error_table(report: Mapping[str, Any]) -> str:
    """A short text table of an error analysis: one row per class and distance bin.

    Recalls are fractions; dz / dx / size in metres, heading in radians (medians unless marked
    p90); ``bias`` is the median of ``z_det - z_gt``; ``s TP`` / ``s FP`` the median scores.
    """
    head = f"{'class':<11}{'range':<7}" + "".join(f"{t:>{w}}" for t, w, _ in _ERROR_TABLE)
    lines = [
        f"Error analysis ({report['difficulty']}; {report['match']}; {report['num_frames']} frames)",
        head,
    ]
    for name, cells in report["classes"].items():
        for label, cell in cells.items():
            lines.append(f"{name:<11}{label:<7}" + "".join(f"{f(cell):>{w}}" for _, w, f in _ERROR_TABLE))
    lines.append(_ERROR_LEGEND)
    return "\n".join(lines) + "\n"


# The reproduction tables (tools/reproduce.py): Car AP40 per model, and a summary of its errors.
TABLE_CLASS = "Car"
METRIC_NAMES = {"3d": "3D", "bev": "BEV", "bbox": "2D"}
# Error summary (Car, Moderate, every distance): column, (report group, key). Recall is a fraction
# of the ground truth; errors of the 2D-matched pairs.
ERROR_COLUMNS = (
    ("recall 2D 0.5", ("recall", "2d@0.5")),
    ("recall 3D 0.5", ("recall", "3d@0.5")),
    ("recall 3D 0.7", ("recall", "3d@0.7")),
    ("depth err median (m)", ("depth_abs_m", "median")),
    ("depth err p90 (m)", ("depth_abs_m", "p90")),
    ("depth bias (m)", ("depth_bias_m", "median")),
    ("heading mod pi median (rad)", ("heading_mod_pi_rad", "median")),
)


def table_cell(values: list[float | None]) -> str:
    """One AP, or ``mean ± std`` (sample standard deviation, n - 1) of several runs; "-" when a
    run has no value."""
    if not values or any(v is None for v in values):
        return "-"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def _table_row(name: str, reports: dict | list[dict], metrics: tuple[str, ...]) -> str:
    """A model's row from its reports (a list: one per seed, cells mean ± std)."""
    runs = reports if isinstance(reports, list) else [reports]
    aps = [r["ap40"]["ap"].get(TABLE_CLASS) or {} for r in runs]
    cells = []
    for metric in metrics:
        for d in DIFFICULTIES:
            cells.append(table_cell([ap[metric][d] if ap.get(metric) else None for ap in aps]))
    return f"| {name} | " + " | ".join(cells) + " |"


def format_results_table(
    rows: Mapping[str, dict | list[dict]], *, title: str, metrics: tuple[str, ...] = ("3d", "bev")
) -> str:
    """Markdown: one row per model, Car AP40 Easy / Mod / Hard of each metric (3D, BEV: the paper's)."""
    columns = [f"{METRIC_NAMES[m]} {d}" for m in metrics for d in ("Easy", "Mod", "Hard")]
    header = [
        f"**{title}**",
        "",
        "| model | " + " | ".join(columns) + " |",
        "|---" * (len(columns) + 1) + "|",
    ]
    return "\n".join(header + [_table_row(name, reports, metrics) for name, reports in rows.items()]) + "\n"


def format_error_summary(rows: Mapping[str, list[dict | None]], *, title: str) -> str:
    """Markdown: one row per model, the :data:`ERROR_COLUMNS` of its Car errors (mean ± std over
    seeds when there are several reports; "-" for a run without an error analysis)."""
    lines = [
        f"**{title}**",
        "",
        "| model | " + " | ".join(column for column, _ in ERROR_COLUMNS) + " |",
        "|---" * (len(ERROR_COLUMNS) + 1) + "|",
    ]
    for name, reports in rows.items():
        cells = [((r or {}).get("classes", {}).get(TABLE_CLASS) or {}).get("all") or {} for r in reports]
        values = [[(c.get(group) or {}).get(key) for c in cells] for _, (group, key) in ERROR_COLUMNS]
        lines.append(f"| {name} | " + " | ".join(table_cell(v) for v in values) + " |")
    return "\n".join(lines) + "\n"
