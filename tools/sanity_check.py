"""Can the network memorise a few frames? Train on N frames, evaluate on the same frames.

    python tools/sanity_check.py --config configs/sanity/did_teacher.yaml            # 8 synthetic frames
    python tools/sanity_check.py --config configs/sanity/gupnet_student.yaml --frames 16
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
ground-truth objects AP|R40 cannot exceed (N - 1) / 40). Exit status: 0 when the recall reaches
``--min-recall``, 1 below it, 2 for a user error. ``<output-dir>/<experiment name>/sanity.json``
keeps the recall, the bar, the error analysis and the wall and CPU seconds. A second check of the
same config needs ``--overwrite`` (``tools/train_val.py`` then moves the earlier run folder aside).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

from lib.config import ExperimentSettings, load_config
from lib.datasets.synthetic import write_dataset
from lib.errors import UserError, run_cli
from lib.eval.error_analysis import analyse_errors
from lib.eval.kitti_format import load_labels, load_results, run_result_dir
from lib.eval.report import format_error_table, write_json
from lib.kitti_io import read_split, write_split

REPO_ROOT = Path(__file__).resolve().parents[1]
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
    """A bad frame list, KITTI folder or training subprocess (the message names it)."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, required=True, help="experiment YAML (teacher or student)")
    parser.add_argument("--frames", type=int, default=8, help="synthetic frames (default 8)")
    parser.add_argument("--seed", type=int, default=0, help="synthetic data seed")
    parser.add_argument("--kitti-root", type=Path, default=None, help="a KITTI tree instead of synthetic")
    parser.add_argument("--frame-list", type=Path, default=None, help="frame ids of --kitti-root, one a line")
    parser.add_argument("--min-recall", type=float, default=MIN_RECALL, help=f"bar (default {MIN_RECALL})")
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
    if not 0.0 <= args.min_recall <= 1.0:
        parser.error(f"--min-recall must be in [0, 1], got {args.min_recall}")
    return args


def synthetic_frames(out_dir: Path, *, frames: int, seed: int) -> Path:
    """The synthetic set of ``frames`` frames with depth maps under ``out_dir`` (made once).

    It is written into a folder of this process and renamed into place when complete, so that
    checks started side by side (``make sanity``) neither read a half-written set nor write into
    each other's; the one that finishes second discards its copy.
    """
    lo, hi = SYNTHETIC_OBJECTS
    near, far = SYNTHETIC_DEPTH_RANGE
    root = out_dir / f"data-synthetic-{frames}f-seed{seed}-{lo}-{hi}obj-{near:g}-{far:g}m"
    if (root / "ImageSets" / f"{SPLIT}.txt").is_file():
        return root
    partial = root.with_name(f"{root.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    write_dataset(
        partial, frames=frames, seed=seed, val_fraction=0.0, num_objects=(lo, hi), depth_range=(near, far)
    )
    run([sys.executable, "tools/make_depth_maps.py", "--data-dir", str(partial), "--split", "train"])
    write_split(partial / "ImageSets" / f"{SPLIT}.txt", list(range(frames)))
    try:
        partial.rename(root)
    except OSError:  # another check renamed its copy first
        shutil.rmtree(partial)
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


def run(cmd: list[str]) -> None:
    """Run a CLI of this repository (its output shows); raise SanityError when it fails."""
    print("$ " + " ".join(cmd), flush=True)
    env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    code = subprocess.run(cmd, cwd=REPO_ROOT, check=False, env=env).returncode
    if code != 0:
        raise SanityError(f"command failed with exit code {code}: {' '.join(cmd)}")


def moderate_car_recall(report: dict) -> tuple[float, int]:
    """(recall at 3D IoU 0.7, number of Moderate cars) from an :func:`analyse_errors` report.

    Raises:
        SanityError: the frames hold no Moderate car, so there is nothing to recover.
    """
    cell = report["classes"][CLASS]["all"]
    if cell["num_gt"] == 0:
        raise SanityError(f"the frames hold no {DIFFICULTY} {CLASS}: nothing to memorise")
    return float(cell["recall"]["3d@0.7"]), int(cell["num_gt"])


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and its finished children."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    out_dir = args.output_dir.resolve()
    if args.kitti_root is not None:
        root = kitti_frames(out_dir, args.kitti_root, args.frame_list)
    else:
        root = synthetic_frames(out_dir, frames=args.frames, seed=args.seed)
    name = args.config.stem
    overrides = [
        f"dataset.root_dir={root}",
        f"dataset.train_split={SPLIT}",
        f"dataset.val_split={SPLIT}",
        f"tester.split={SPLIT}",
        f"experiment.name={name}",
        *NO_AUGMENTATION,
        *args.overrides,
    ]
    cfg = load_config(args.config, overrides)  # a bad key or value fails before anything runs
    base = [sys.executable, "tools/train_val.py", "--config", str(args.config), "--output-dir", str(out_dir)]
    run(base + (["--overwrite"] if args.overwrite else []) + overrides)
    run(base + ["-e"] + overrides)
    run_dir = out_dir / ExperimentSettings.from_config(cfg).name
    frames = read_split(root / "ImageSets" / f"{SPLIT}.txt")
    gt = load_labels(root / "training" / "label_2", frames)
    det = load_results(run_result_dir(run_dir, SPLIT), frames)
    report = analyse_errors(gt, det, classes=[CLASS], difficulty=DIFFICULTY)
    print(format_error_table(report), end="")
    recall, num_gt = moderate_car_recall(report)
    passed = recall >= args.min_recall
    summary = {
        "config": str(args.config),
        "frames": len(frames),
        "moderate_cars": num_gt,
        "recall_3d@0.7": recall,
        "min_recall": args.min_recall,
        "passed": passed,
        "wall_s": round(time.perf_counter() - start, 1),
        "cpu_s": round(cpu_seconds(), 1),
        "error_analysis": report,
    }
    write_json(run_dir / "sanity.json", summary)
    verdict = "PASS" if passed else "FAIL"
    print(
        f"{verdict}: {recall:.1%} of {num_gt} {DIFFICULTY} {CLASS.lower()}s recovered at 3D IoU 0.7 "
        f"(bar {args.min_recall:.0%}); {summary['wall_s']:.0f} s wall, {summary['cpu_s']:.0f} CPU-s; "
        f"{run_dir / 'sanity.json'}",
        flush=True,
    )
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(run_cli(main))
