"""Evaluate a folder of KITTI result files against label_2 ground truth (KITTI devkit protocol).

Example::

    python tools/evaluate.py --label-dir data/KITTI3D/training/label_2 \\
        --result-dir outputs/run1/data --split data/KITTI3D/ImageSets/val.txt --json outputs/run1/ap.json

By default every frame of the split is evaluated and a frame without a result file counts as having
no detections. ``--only-result-frames`` evaluates only the frames that have a result file, as the
official offline evaluator does (its numbers, but a missing file then silently drops that frame's
ground truth). Prints AP|R40 and AP|R11 tables and the error analysis
(:mod:`lib.eval.error_analysis`: recall and box errors per distance); ``--json`` writes
``{"ap40": ..., "ap11": ...}`` and the error analysis beside it as ``<name>.error_analysis.json``.
``--report-dir DIR`` writes what an evaluation during training writes (lib/eval/report.py
``write_reports``): ap.json, ap.md, error_analysis.json, the precision-recall curves and error
plots of each class as PNG, and ``DIR/report.md`` showing them with the tables; a folder that
already holds a report.md, and an existing ``--json`` file, are only replaced with
``--overwrite``. Neither may be, lie inside or hold an input (the result and label folders, the
split file; lib/utils/outputs.py), whatever the flags.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lib.constants import EVAL_CLASSES, EVAL_DEVICES
from lib.errors import UserError, run_cli
from lib.eval.kitti_format import load_labels, load_results, result_class_notes, result_frame_ids
from lib.eval.report import REPORT_MARKDOWN, format_error_table, format_table, write_json, write_reports
from lib.kitti_io import read_split
from lib.utils.outputs import check_outputs


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--label-dir", required=True, help="folder of ground-truth NNNNNN.txt (label_2)")
    parser.add_argument("--result-dir", required=True, help="folder of result NNNNNN.txt (or its data/)")
    parser.add_argument("--split", required=True, help="ImageSets split file listing the frames")
    parser.add_argument("--classes", nargs="+", default=list(EVAL_CLASSES), choices=EVAL_CLASSES)
    parser.add_argument("--json", default=None, help="write the results as JSON to this path")
    parser.add_argument("--report-dir", type=Path, default=None, help="write report.md, plots and JSON here")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the report of --report-dir and an existing --json file",
    )
    parser.add_argument(
        "--only-result-frames",
        action="store_true",
        help="evaluate only frames that have a result file (the official devkit's behaviour)",
    )
    parser.add_argument("--loose", action="store_true", help="loose overlaps: BEV/3D 0.5 Car, 0.25 Ped/Cyc")
    parser.add_argument(
        "--device", default="cpu", choices=EVAL_DEVICES, help="where BEV overlaps are computed"
    )
    args = parser.parse_args(argv)
    if args.device == "cuda" and not cuda_available():
        parser.error("--device cuda: no CUDA GPU is available")
    return args


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def check_targets(args: argparse.Namespace) -> None:
    """What ``--json`` and ``--report-dir`` write may not be, lie inside or hold an input (the label
    and result folders, the split file: lib/utils/outputs.py); an earlier report is replaced only
    with ``--overwrite``, and so is an existing ``--json`` file."""
    outputs = {"--report-dir": args.report_dir, "--json": args.json}
    inputs = {"--result-dir": args.result_dir, "--label-dir": args.label_dir, "--split": args.split}
    check_outputs(outputs, inputs)
    if args.json is not None and Path(args.json).is_file() and not args.overwrite:
        raise UserError(f"{args.json}: exists; pass --overwrite to replace it (--json)")
    if args.report_dir is None:
        return
    if (args.report_dir / REPORT_MARKDOWN).exists() and not args.overwrite:
        raise UserError(f"{args.report_dir}: holds the report of an earlier evaluation; pass --overwrite")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    check_targets(args)
    split = read_split(args.split)
    frames = split
    if args.only_result_frames:
        have = result_frame_ids(args.result_dir)
        frames = [f for f in split if f in have]
        rule = "only frames of the split that have a result file (official offline evaluator behaviour)"
    else:
        rule = "every frame of the split; a frame without a result file has no detections"
    gt = load_labels(args.label_dir, frames, split_file=args.split)
    det = load_results(args.result_dir, frames)
    for note in result_class_notes(gt, det, args.classes):  # classes the tables cannot show
        print(f"note: {note}", file=sys.stderr)
    from lib.eval.error_analysis import analyse_errors  # numba: compiled after --help and argument checks
    from lib.eval.kitti_eval import evaluate

    reports = evaluate(gt, det, args.classes, loose=args.loose, device=args.device)
    errors = analyse_errors(gt, det, classes=args.classes)
    for report in reports.values():
        report["frames_evaluated_rule"] = rule
        report["num_frames_listed"] = len(split)
    print(format_table(reports), end="")
    print(format_error_table(errors), end="")
    if args.json:
        write_json(args.json, reports)
        json_path = Path(args.json)
        write_json(json_path.with_name(json_path.stem + ".error_analysis.json"), errors)
    if args.report_dir is not None:
        write_reports(args.report_dir, reports, errors, title=f"Evaluation of {args.result_dir}")
        print(f"report: {args.report_dir / REPORT_MARKDOWN}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
