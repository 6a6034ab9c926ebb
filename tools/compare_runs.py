"""Compare evaluations cell by cell and say which differences are larger than the noise.

    python tools/compare_runs.py outputs/demo outputs/demo-2                 # two reproductions
    python tools/compare_runs.py outputs/demo/student outputs/demo/monommkd  # two runs
    python tools/compare_runs.py outputs/seeds:control outputs/seeds:monommkd  # two stages of one

Each argument is a reproduction folder (tools/reproduce.py ``--output-dir``: one run folder per
stage, or ``seed_<k>/`` folders of them), a run folder (its ``-e`` evaluation in
``results/<tester.split>/ap.json``), a result folder holding ``ap.json``, or ``FOLDER:STAGE``,
one stage of a reproduction. The first argument is the reference: for every other one, each
stage they share (two runs or stages compare as ``run``) and each Car AP40 cell (3D and BEV,
Easy / Mod / Hard; ``--metrics``) gets its mean over the seeds, the delta to the reference and
the noise it is judged against: the seed spread, the widest min–max range of the cell among the
two when one of them has several seeds, else ``--noise`` AP (default 1, the run-to-run
difference the reference codebases' maintainers call normal). A delta no larger than the noise
is marked not significant.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from lib.config import load_config
from lib.constants import EVAL_DIFFICULTIES
from lib.errors import UserError, run_cli
from lib.eval.kitti_format import latest_result_dir
from lib.eval.report import AP_JSON, METRIC_NAMES, TABLE_CLASS, cell_values

SINGLE = "run"  # the stage name of a run or result folder
NOISE_AP = 1.0
LEVELS = {"easy": "Easy", "moderate": "Mod", "hard": "Hard"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="reproduction, run or result folders; FOLDER:STAGE")
    parser.add_argument("--metrics", nargs="+", default=["3d", "bev"], choices=list(METRIC_NAMES))
    parser.add_argument(
        "--noise", type=float, default=NOISE_AP, help=f"AP when no seed spread (default {NOISE_AP:g})"
    )
    args = parser.parse_args(argv)
    if len(args.runs) < 2:
        parser.error("give at least two folders to compare")
    if not args.noise >= 0.0:
        parser.error(f"--noise must be >= 0, got {args.noise}")
    return args


def read_ap(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"{path}: cannot read the evaluation ({err})") from err


def run_evaluation(run_dir: Path) -> Path:
    """The ap.json of a run folder's ``-e`` evaluation."""
    return latest_result_dir(run_dir, load_config(run_dir / "config.yaml").tester.split) / AP_JSON


def stage_folders(folder: Path) -> dict[str, list[Path]]:
    """Stage -> its run folders (one per seed) of a reproduction folder; empty when it is none."""
    chains = sorted(folder.glob("seed_*"), key=lambda p: int(p.name.split("_")[1])) or [folder]
    stages: dict[str, list[Path]] = {}
    for chain in chains:
        for run_dir in sorted(p.parent for p in chain.glob("*/config.yaml")):
            if run_evaluation(run_dir).is_file():
                stages.setdefault(run_dir.name, []).append(run_dir)
    return stages


def load_runs(spec: str) -> dict[str, list[dict]]:
    """Stage -> the evaluator reports of its runs, for one command-line argument.

    Raises:
        UserError: no evaluation found, or an unknown stage.
    """
    path, _, stage = spec.rpartition(":") if ":" in spec and not Path(spec).exists() else (spec, "", "")
    folder = Path(path)
    if (folder / AP_JSON).is_file():
        return {SINGLE: [read_ap(folder / AP_JSON)]}
    if (folder / "config.yaml").is_file() and run_evaluation(folder).is_file():
        return {SINGLE: [read_ap(run_evaluation(folder))]}
    stages = stage_folders(folder) if folder.is_dir() else {}
    if not stages:
        raise UserError(f"{folder}: no evaluation (ap.json, a run folder or a tools/reproduce.py folder)")
    if stage:
        if stage not in stages:
            raise UserError(f"{spec}: no stage {stage!r} (there: {', '.join(stages)})")
        stages = {SINGLE: stages[stage]}
    return {name: [read_ap(run_evaluation(d)) for d in dirs] for name, dirs in stages.items()}


def compare_cell(reference: list[float], other: list[float], noise: float) -> dict:
    """One cell: means, delta (other - reference), the noise it is judged against and the verdict.

    The noise is the widest min–max range of the runs of ``reference`` and ``other`` that have
    several (the seed spread), else ``noise``; the delta is significant when larger than it.
    """
    ranges = [max(v) - min(v) for v in (reference, other) if len(v) > 1]
    spread = max(ranges) if ranges else noise
    delta = statistics.mean(other) - statistics.mean(reference)
    return {
        "reference": statistics.mean(reference),
        "other": statistics.mean(other),
        "delta": delta,
        "noise": spread,
        "noise_from": "seeds" if ranges else "default",
        "significant": abs(delta) > spread,
    }


def compare(reference: dict[str, list[dict]], other: dict[str, list[dict]], metrics: list[str], noise: float):
    """``[(stage, cell name, :func:`compare_cell`)]`` of every shared stage and cell (a cell
    missing in a run is left out)."""
    rows = []
    names = [f"{METRIC_NAMES[m]} {LEVELS[d]}" for m in metrics for d in EVAL_DIFFICULTIES]
    for stage in [s for s in reference if s in other]:
        cells_a, cells_b = (
            cell_values(reference[stage], tuple(metrics)),
            cell_values(other[stage], tuple(metrics)),
        )
        for name, a, b in zip(names, cells_a, cells_b, strict=True):
            if None not in a and None not in b:
                rows.append((stage, name, compare_cell(a, b, noise)))
    return rows


def format_comparison(title: str, rows: list) -> str:
    """A markdown table of :func:`compare`'s rows under ``title``."""
    lines = [
        f"**{title}**",
        "",
        "| stage | cell | reference | other | delta | noise | significant |",
        "|---|---|---|---|---|---|---|",
    ]
    for stage, name, c in rows:
        verdict = "yes" if c["significant"] else "no (within noise)"
        values = f"{c['reference']:.2f} | {c['other']:.2f} | {c['delta']:+.2f}"
        lines.append(f"| {stage} | {name} | {values} | ±{c['noise']:.2f} ({c['noise_from']}) | {verdict} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    runs = [load_runs(spec) for spec in args.runs]
    for spec, other in zip(args.runs[1:], runs[1:], strict=True):
        rows = compare(runs[0], other, args.metrics, args.noise)
        if not rows:
            raise UserError(f"{spec} and {args.runs[0]} share no stage with {TABLE_CLASS} AP to compare")
        title = f"{spec} vs {args.runs[0]}: {TABLE_CLASS} AP40, delta = other - reference"
        print(format_comparison(title, rows))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
