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
An evaluated result folder holds ``ap.json``, ``ap.md``, ``error_analysis.json``, the
precision-recall curves and error plots (``pr_<class>.png``, ``errors_<class>.png``:
:mod:`lib.eval.plots`) and ``report.md`` showing them with the tables (:func:`write_reports`);
``tools/reproduce.py`` reads them back into its comparison tables
(:func:`format_results_table`, :func:`format_error_summary`).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lib.constants import EVAL_DIFFICULTIES, EVAL_METRICS
from lib.errors import writing
from lib.utils.files import atomic_write_text

AP_JSON, AP_MARKDOWN, ERROR_JSON = "ap.json", "ap.md", "error_analysis.json"  # of a result folder
REPORT_MARKDOWN = "report.md"
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
            for metric in EVAL_METRICS:
                values = metrics.get(metric)
                cells = [f"{values[d]:.2f}" if values else "-" for d in EVAL_DIFFICULTIES]
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
    with writing(path):  # a full disk's error names the file
        path.write_text(json.dumps(data, indent=1) + "\n")
    return path


def write_reports(
    out_dir: str | Path, reports: Mapping[str, Any], errors: Mapping[str, Any], *, title: str = "Evaluation"
) -> Path:
    """Everything an evaluation leaves in ``out_dir`` (a result folder): ``ap.json`` (full
    reports), ``ap.md`` (:func:`format_markdown`), ``error_analysis.json``, the pictures of
    :func:`write_pictures` and ``report.md`` (:func:`format_report`, headed ``title``) showing
    them with the tables; returns ``ap.json``'s path."""
    out_dir = Path(out_dir)
    json_path = write_json(out_dir / AP_JSON, reports)
    (out_dir / AP_MARKDOWN).write_text(format_markdown(reports))
    write_json(out_dir / ERROR_JSON, errors)
    pictures = write_pictures(out_dir, reports, errors)
    atomic_write_text(out_dir / REPORT_MARKDOWN, format_report(reports, errors, pictures, title=title))
    return json_path


def write_pictures(out_dir: Path, reports: Mapping[str, Any], errors: Mapping[str, Any]) -> dict[str, dict]:
    """``pr_<class>.png`` (the precision-recall curves of the first report's class,
    :func:`lib.eval.plots.draw_pr_curves`) and ``errors_<class>.png``
    (:func:`lib.eval.plots.draw_error_plots`) of every class in ``out_dir``; returns
    ``{"pr": {class: file name}, "errors": {class: file name}}``."""
    from lib.eval import plots  # matplotlib: imported only when a picture is drawn

    report = next(iter(reports.values()))  # AP|R40 and AP|R11 share their precision curves
    pictures: dict[str, dict] = {"pr": {}, "errors": {}}
    for name in report["ap"]:
        pictures["pr"][name] = plots.save(plots.draw_pr_curves(report, name), out_dir / f"pr_{name}.png").name
    for name in errors["classes"]:
        figure = plots.draw_error_plots(errors, name)
        pictures["errors"][name] = plots.save(figure, out_dir / f"errors_{name}.png").name
    return pictures


def format_report(
    reports: Mapping[str, Any], errors: Mapping[str, Any], pictures: Mapping[str, dict], *, title: str
) -> str:
    """``report.md`` of one evaluation: the AP tables, the precision-recall curves and error plots
    (``pictures`` of :func:`write_pictures`, linked by file name), the error table and the data files."""
    lines = [f"# {title}", "", format_markdown(reports), "## Precision-recall curves", ""]
    lines += [f"![{name} precision-recall]({file})" for name, file in pictures["pr"].items()]
    lines += ["", "## Errors by distance", ""]
    lines += [f"![{name} errors by distance]({file})" for name, file in pictures["errors"].items()]
    lines += ["", "```", format_error_table(errors).rstrip(), "```", ""]
    lines += ["Data: " + ", ".join(f"[{f}]({f})" for f in (AP_JSON, AP_MARKDOWN, ERROR_JSON)), ""]
    return "\n".join(lines)


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


def range_cell(values: list[float | None]) -> str:
    """``min–max`` of several runs; "-" when a run has no value."""
    if not values or any(v is None for v in values):
        return "-"
    return f"{min(values):.2f}–{max(values):.2f}"


def cell_values(reports: dict | list[dict], metrics: tuple[str, ...]) -> list[list[float | None]]:
    """The Car AP40 of each run (a list of reports: one per seed) for every metric and difficulty,
    metric-major: ``[[run 0, run 1, ...] of (metrics[0], easy), (metrics[0], moderate), ...]``."""
    runs = reports if isinstance(reports, list) else [reports]
    aps = [r["ap40"]["ap"].get(TABLE_CLASS) or {} for r in runs]
    return [[ap[m][d] if ap.get(m) else None for ap in aps] for m in metrics for d in EVAL_DIFFICULTIES]


def _table_row(name: str, reports: dict | list[dict], metrics: tuple[str, ...]) -> str:
    """A model's rows from its reports. A list of several (one per seed) gives one row per seed
    (``name seed k``), then ``name`` with mean ± std and ``name min–max``."""
    values = cell_values(reports, metrics)
    rows = [f"| {name} | " + " | ".join(table_cell(v) for v in values) + " |"]
    if isinstance(reports, list) and len(reports) > 1:
        seeds = [
            f"| {name} seed {k} | " + " | ".join(table_cell([v[k]]) for v in values) + " |"
            for k in range(len(reports))
        ]
        rows = seeds + rows + [f"| {name} min–max | " + " | ".join(range_cell(v) for v in values) + " |"]
    return "\n".join(rows)


def format_results_table(
    rows: Mapping[str, dict | list[dict]], *, title: str, metrics: tuple[str, ...] = ("3d", "bev")
) -> str:
    """Markdown: one row per model, Car AP40 Easy / Mod / Hard of each metric (3D, BEV: the paper's);
    a model with several runs gets its per-seed rows, mean ± std and min–max (:func:`_table_row`)."""
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


# The last and the best epoch of a run that evaluates during training (tools/train_val.py).
EVAL_LOG, EPOCHS_MARKDOWN = "eval.jsonl", "epochs.md"
SCORE_KEY = "car_3d_moderate_ap40"  # the score of an eval.jsonl record (lib/engine/metrics.py)


def read_evaluations(path: str | Path) -> list[dict]:
    """The evaluations during training of an ``eval.jsonl``, in file order (the records of ``-e``
    evaluations, ``"type": "test"``, left out)."""
    records = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    return [r for r in records if r.get("type") != "test"]


def format_epoch_summary(records: list[dict]) -> str:
    """Markdown: the last and the best evaluated epoch side by side, and why the best is optimistic.

    Args:
        records: ``eval.jsonl`` records (``epoch``, :data:`SCORE_KEY`, ``ap40`` class -> metric ->
            difficulty -> AP), in the order they were written.

    The best epoch is the first with the highest Car 3D Moderate AP40, the one ``best.pth`` keeps.
    """
    last = records[-1]
    best = max(records, key=lambda r: r[SCORE_KEY])  # max keeps the first of equal scores
    rows = {
        f"last epoch ({last['epoch']})": {"ap40": {"ap": last["ap40"]}},
        f"best epoch on val ({best['epoch']})": {"ap40": {"ap": best["ap40"]}},
    }
    gain = best[SCORE_KEY] - last[SCORE_KEY]
    table = format_results_table(
        rows, title=f"{TABLE_CLASS} AP40 on val, last and best of {len(records)} evaluations"
    )
    note = (
        f"The best epoch is chosen on the same val frames it is scored on, so its AP is optimistic "
        f"(here {gain:+.2f} Car 3D Mod AP40 over the last epoch): report the last epoch, or choose "
        "the epoch on frames that are not reported."
    )
    return table + "\n" + note + "\n"


def write_epoch_summary(run_dir: str | Path) -> Path | None:
    """``<run_dir>/epochs.md`` (:func:`format_epoch_summary`) from ``<run_dir>/eval.jsonl``; None
    (nothing written) when the run made no evaluation."""
    log = Path(run_dir) / EVAL_LOG
    records = read_evaluations(log) if log.is_file() else []
    if not records:
        return None
    return atomic_write_text(Path(run_dir) / EPOCHS_MARKDOWN, format_epoch_summary(records))
