"""Can the network memorise a few frames? Train on N frames, evaluate on the same frames.

    python tools/sanity_check.py --config configs/sanity/did_teacher.yaml            # 8 synthetic frames
    python tools/sanity_check.py --config configs/sanity/gupnet_student.yaml --frames 16
    python tools/sanity_check.py --jobs 2 --config configs/sanity/did_teacher.yaml \\
        --config configs/sanity/did_student.yaml                                    # side by side
    python tools/sanity_check.py --config configs/student.yaml --kitti-root data/KITTI3D \\
        --frame-list my_frames.txt dataset.resolution=[640,192]

The first debugging step of a detector: with augmentation off and the evaluation frames equal to
the training frames, a working pipeline recovers nearly every object. The frames are synthetic by
default (lib/datasets/synthetic.py, written once into ``<output-dir>/data-…``, with the teacher's
depth maps), or the frames of ``--frame-list`` (one frame id per line) of a KITTI tree, which is
only read (the split files go into the output folder, ``training/`` is linked).

The config is trained with ``tools/train_val.py`` (random flip and crop, colour jitter off; the
given overrides after those) and evaluated on the same frames: the AP table, then the error
analysis (lib/eval/error_analysis.py: recall, matched depth / size / heading errors per distance).
The verdict is the recall at 3D IoU 0.7 of the Moderate cars at any score: the fraction of them
that some detection recovers. Unlike AP|R40 it is meaningful on a few dozen objects (with N < 41
ground-truth objects AP|R40 cannot exceed (N - 1) / 40). Exit status: 0 when every config's
recall reaches ``--min-recall``, 1 when one is below it, 2 for a user error.
``<output-dir>/<config name>/sanity.json`` keeps the recall, the bar, the error analysis and the
wall and CPU seconds. A second check of the same config needs ``--overwrite``
(``tools/train_val.py`` then moves the earlier run folder aside).

Several configs are checked one after the other on the same frames, or ``--jobs N`` at a time,
each then with ``OMP_NUM_THREADS`` = CPU cores / N unless set and its output in
``<output-dir>/<config name>.log`` (lib/utils/jobs.py): on 2 cores two checks side by side take
~1.1x the time of one (BENCHMARKS.md). Each check's verdict line is printed as it ends.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from functools import partial
from pathlib import Path

from lib.config import ExperimentSettings, load_config
from lib.errors import UserError, run_cli
from lib.eval.kitti_format import latest_result_dir, load_labels, load_results
from lib.eval.report import format_error_table, write_json
from lib.kitti_io import read_split, write_split
from lib.utils import cli_types
from lib.utils.jobs import job_output, run_command, run_side_by_side, say
from lib.utils.outputs import check_outputs
from lib.utils.run_lock import run_folder_lock

SPLIT = "sanity"  # the frames, trained on and evaluated on
CLASS = "Car"
DIFFICULTY = "moderate"
MIN_RECALL = 0.9  # the bar on the recall at 3D IoU 0.7 of the Moderate cars
# Synthetic frames: more and nearer cars than the generator's default (2-8 at 5-60 m), so that
# 8 frames hold ~50 Moderate cars (a car beyond ~40 m is below the Moderate 25 px at KITTI size).
SYNTHETIC_OBJECTS = (4, 10)
SYNTHETIC_DEPTH_RANGE = (5.0, 40.0)
NO_AUGMENTATION = (
    "dataset.random_flip=0",
    "dataset.random_crop=0",
    "dataset.color_aug=false",
    "dataset.drop_last_train=false",
    "dataset.check_split_sizes=false",
    "trainer.eval_frequency=0",
)


class SanityError(UserError):
    """A bad frame list or KITTI folder, or frames without a Moderate car (the message names it)."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--config", type=Path, action="append", required=True, help="experiment YAML; repeat for several"
    )
    parser.add_argument("--jobs", type=int, default=1, help="checks run at once (default 1)")
    parser.add_argument("--frames", type=int, default=8, help="synthetic frames (default 8)")
    parser.add_argument("--seed", type=cli_types.non_negative_int, default=0, help="synthetic data seed")
    parser.add_argument("--kitti-root", type=Path, default=None, help="a KITTI tree instead of synthetic")
    parser.add_argument("--frame-list", type=Path, default=None, help="frame ids of --kitti-root, one a line")
    parser.add_argument(
        "--min-recall", type=cli_types.score, default=MIN_RECALL, help=f"bar, default {MIN_RECALL}"
    )
    parser.add_argument("--output-dir", type=Path, default=Path("outputs/sanity"), help="outputs/sanity")
    parser.add_argument(
        "--overwrite", action="store_true", help="retrain over an earlier run of the config (moved aside)"
    )
    parser.add_argument("overrides", nargs="*", help="config overrides key.sub=value (after the check's own)")
    args = parser.parse_args(argv)
    if (args.kitti_root is None) != (args.frame_list is None):
        parser.error("--kitti-root and --frame-list go together")
    if args.frames < 1:
        parser.error(f"--frames must be >= 1, got {args.frames}")
    if args.jobs < 1:
        parser.error(f"--jobs must be >= 1, got {args.jobs}")
    names = [config.stem for config in args.config]
    if len(set(names)) < len(names):
        twice = next(name for name in names if names.count(name) > 1)
        parser.error(f"--config: two configs named {twice!r} (a check's run folder is <output-dir>/<name>)")
    if not 0.0 <= args.min_recall <= 1.0:
        parser.error(f"--min-recall must be in [0, 1], got {args.min_recall}")
    return args


def synthetic_frames(out_dir: Path, *, frames: int, seed: int) -> Path:
    """The synthetic set of ``frames`` frames with depth maps under ``out_dir`` (made once).

    It is written into a folder of this process and renamed into place when complete, so that
    checks started side by side (``make sanity``) neither read a half-written set nor write into
    each other's; the one that finishes second discards its copy.
    """
    from lib.datasets.synthetic import write_dataset  # OpenCV: not for --help

    lo, hi = SYNTHETIC_OBJECTS
    near, far = SYNTHETIC_DEPTH_RANGE
    root = out_dir / f"data-synthetic-{frames}f-seed{seed}-{lo}-{hi}obj-{near:g}-{far:g}m"
    if (root / "ImageSets" / f"{SPLIT}.txt").is_file():
        return root
    staging = root.with_name(f"{root.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    write_dataset(
        staging, frames=frames, seed=seed, val_fraction=0.0, num_objects=(lo, hi), depth_range=(near, far)
    )
    run_command([sys.executable, "tools/make_depth_maps.py", "--data-dir", str(staging), "--split", "train"])
    write_split(staging / "ImageSets" / f"{SPLIT}.txt", list(range(frames)))
    try:
        staging.rename(root)
    except OSError:  # another check renamed its copy first
        shutil.rmtree(staging)
    return root


def kitti_frames(out_dir: Path, kitti_root: Path, frame_list: Path) -> Path:
    """A view of ``kitti_root`` holding only the frames of ``frame_list``; the tree is not written."""
    frame_ids = read_split(frame_list)  # names the file and line of a bad id
    training = kitti_root.resolve() / "training"
    if not (training / "label_2").is_dir():
        raise SanityError(f"{kitti_root}: no training/label_2 folder (a KITTI 3D object tree is expected)")
    root = out_dir / f"data-kitti-{frame_list.stem}"
    root.mkdir(parents=True, exist_ok=True)
    link = root / "training"
    if link.is_symlink() and link.resolve() != training:
        link.unlink()
    if not link.exists():
        link.symlink_to(training, target_is_directory=True)
    write_split(root / "ImageSets" / f"{SPLIT}.txt", frame_ids)
    return root


def moderate_car_recall(report: dict) -> tuple[float, int]:
    """(recall at 3D IoU 0.7, number of Moderate cars) from an :func:`analyse_errors` report.

    Raises:
        SanityError: the frames hold no Moderate car, so there is nothing to recover.
    """
    cell = report["classes"][CLASS]["all"]
    if cell["num_gt"] == 0:
        raise SanityError(f"the frames hold no {DIFFICULTY} {CLASS}: nothing to memorise")
    return float(cell["recall"]["3d@0.7"]), int(cell["num_gt"])


def check_overrides(root: Path, name: str, given: list[str]) -> list[str]:
    """The overrides of one check: the frames of ``root`` for training and evaluation, the run
    folder ``name``, augmentation off, then the user's ``given`` ones."""
    return [
        f"dataset.root_dir={root}",
        f"dataset.train_split={SPLIT}",
        f"dataset.val_split={SPLIT}",
        f"tester.split={SPLIT}",
        f"experiment.name={name}",
        *NO_AUGMENTATION,
        *given,
    ]


def check_config(config: Path, root: Path, args: argparse.Namespace, *, width: int = 1) -> dict:
    """Train ``config`` on the frames of ``root``, evaluate it on them and judge the recall; its
    summary, also written to ``<run dir>/sanity.json``. With ``width`` > 1 it runs beside other
    checks: its output goes to ``<output-dir>/<config name>.log`` and it gets its share of the
    cores; only its verdict line is printed."""
    from lib.eval.error_analysis import analyse_errors  # numba (seconds): not for --help

    start = time.perf_counter()
    out_dir = args.output_dir.resolve()
    overrides = check_overrides(root, config.stem, args.overrides)
    side_by_side = job_output(out_dir / f"{config.stem}.log", width)
    base = [sys.executable, "tools/train_val.py", "--config", str(config), "--output-dir", str(out_dir)]
    cpu_s = run_command(base + (["--overwrite"] if args.overwrite else []) + overrides, **side_by_side)
    cpu_s += run_command(base + ["-e"] + overrides, **side_by_side)
    run_dir = out_dir / ExperimentSettings.from_config(load_config(config, overrides)).name
    frames = read_split(root / "ImageSets" / f"{SPLIT}.txt")
    gt = load_labels(root / "training" / "label_2", frames)
    det = load_results(latest_result_dir(run_dir, SPLIT), frames)
    report = analyse_errors(gt, det, classes=[CLASS], difficulty=DIFFICULTY)
    recall, num_gt = moderate_car_recall(report)
    summary = {
        "config": str(config),
        "frames": len(frames),
        "moderate_cars": num_gt,
        "recall_3d@0.7": recall,
        "min_recall": args.min_recall,
        "passed": recall >= args.min_recall,
        "wall_s": round(time.perf_counter() - start, 1),
        "cpu_s": round(cpu_s, 1),
        "error_analysis": report,
    }
    write_json(run_dir / "sanity.json", summary)
    verdict = verdict_line(summary, run_dir / "sanity.json")
    if width > 1:
        with side_by_side["log"].open("a") as log:
            log.write(format_error_table(report) + verdict + "\n")
    else:
        print(format_error_table(report), end="")
    say(verdict)
    return summary


def verdict_line(summary: dict, path: Path) -> str:
    """``PASS: ...`` or ``FAIL: ...``: the recall against the bar, the time, the summary file."""
    return (
        f"{'PASS' if summary['passed'] else 'FAIL'}: {Path(summary['config']).stem}: "
        f"{summary['recall_3d@0.7']:.1%} of {summary['moderate_cars']} {DIFFICULTY} {CLASS.lower()}s "
        f"recovered at 3D IoU 0.7 (bar {summary['min_recall']:.0%}); {summary['wall_s']:.0f} s wall, "
        f"{summary['cpu_s']:.0f} CPU-s; {path}"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    out_dir = args.output_dir.resolve()
    inputs = {"--kitti-root": args.kitti_root, "--frame-list": args.frame_list}
    check_outputs({"--output-dir": out_dir}, inputs)
    with run_folder_lock(out_dir):
        return run_checks(args, out_dir, start)


def run_checks(args: argparse.Namespace, out_dir: Path, start: float) -> int:
    """The frames, then every check (``out_dir`` locked by the caller); 0 when all passed."""
    if args.kitti_root is not None:
        root = kitti_frames(out_dir, args.kitti_root, args.frame_list)
    else:
        root = synthetic_frames(out_dir, frames=args.frames, seed=args.seed)
    for config in args.config:  # a bad key or value fails before anything runs
        load_config(config, check_overrides(root, config.stem, args.overrides))
    checks = [partial(check_config, config, root, args) for config in args.config]
    summaries = run_side_by_side(checks, width=args.jobs)
    passed = sum(summary["passed"] for summary in summaries)
    if len(summaries) > 1:
        say(f"{passed} of {len(summaries)} checks passed; {time.perf_counter() - start:.0f} s")
    return 0 if passed == len(summaries) else 1


if __name__ == "__main__":
    sys.exit(run_cli(main))
