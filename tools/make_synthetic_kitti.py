"""Write a synthetic dataset in the KITTI 3D object layout (lib/datasets/synthetic.py).

    python tools/make_synthetic_kitti.py --out data/synthetic --frames 200 --seed 0 --size 1242x375 \
        [--objects 2-8] [--depth-range 5-60] [--camera-height 1.2-2.1] [--object-scale 0.8-1.2]

Writes ``<out>/training/{image_2,calib,label_2,velodyne}/NNNNNN.*`` and
``<out>/ImageSets/{train,val,trainval}.txt`` (the last ``--val-fraction`` of the frames are val).
The same seed gives byte-identical files. The teacher's depth maps
(``training/depth_dense/``, tools/make_depth_maps.py) are made in the same call unless
``--no-depth-maps``. ``--out`` must be new, empty, or, with ``--overwrite``, an earlier
output of this tool (it holds the marker file ``.synthetic_kitti``): a real KITTI copy is
never overwritten.

``--camera-height`` and ``--object-scale`` (off by default: the frames stay those of earlier
versions) make monocular depth ambiguous while the LiDAR stays exact: each frame's road lies
a random height below the camera although its calibration file is KITTI's, and each object's
size gets a random factor, so neither the ground contact row nor the image size of an object
tells its distance; the depth maps made from the scan do.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lib.datasets.synthetic import DEPTH_RANGE, IMAGE_SIZE, NUM_OBJECTS, write_dataset
from lib.datasets.synthetic_scene import CAMERA_HEIGHT
from lib.errors import UserError, run_cli
from lib.utils import cli_types
from lib.utils.jobs import REPO_ROOT, run_command

MARKER = ".synthetic_kitti"  # written first into --out: the folder is this tool's to rewrite
SET_FOLDERS = ("training", "testing", "ImageSets")  # what --overwrite removes before writing


def parse_size(text: str) -> tuple[int, int]:
    """``WIDTHxHEIGHT`` (e.g. ``1242x375``) → (width, height)."""
    match = re.fullmatch(r"(\d+)[xX](\d+)", text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"--size must look like 1242x375 (WIDTHxHEIGHT), got {text!r}")
    return int(match.group(1)), int(match.group(2))


def parse_range(cast: Callable[[str], Any]) -> Callable[[str], tuple]:
    """A parser of ``LOW-HIGH`` (e.g. ``2-8``, ``5-60.5``) into ``(cast(LOW), cast(HIGH))``."""

    def parse(text: str) -> tuple:
        low, sep, high = text.strip().partition("-")
        try:
            if not sep:
                raise ValueError
            return cast(low), cast(high)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected LOW-HIGH (e.g. 2-8), got {text!r}") from None

    return parse


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="dataset root to write (created)")
    parser.add_argument("--frames", type=int, required=True, help="number of frames")
    parser.add_argument("--overwrite", action="store_true", help="rewrite an earlier synthetic set in --out")
    parser.add_argument(
        "--seed", type=cli_types.non_negative_int, default=0, help="frame i: default_rng([seed, i])"
    )
    parser.add_argument(
        "--size", type=parse_size, default=IMAGE_SIZE, help="image WIDTHxHEIGHT (default 1242x375, KITTI's)"
    )
    parser.add_argument("--val-fraction", type=float, default=0.25, help="fraction of frames in val.txt")
    parser.add_argument(
        "--objects",
        type=parse_range(int),
        default=NUM_OBJECTS,
        help=f"objects per frame, MIN-MAX inclusive (default {NUM_OBJECTS[0]}-{NUM_OBJECTS[1]})",
    )
    parser.add_argument(
        "--depth-range",
        type=parse_range(float),
        default=DEPTH_RANGE,
        help=f"object centre rect z in m, NEAR-FAR (default {DEPTH_RANGE[0]:g}-{DEPTH_RANGE[1]:g})",
    )
    parser.add_argument(
        "--camera-height",
        type=parse_range(float),
        default=None,
        help="camera height above each frame's road in m, MIN-MAX, calibration unchanged (default: "
        f"{CAMERA_HEIGHT:g} m, KITTI's)",
    )
    parser.add_argument(
        "--object-scale",
        type=parse_range(float),
        default=None,
        help="factor of each object's h, w, l, MIN-MAX (default: none)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=min(8, os.cpu_count() or 1),
        help="processes (default: cores, at most 8)",
    )
    parser.add_argument(
        "--no-depth-maps",
        action="store_true",
        help="skip the teacher's depth maps (tools/make_depth_maps.py makes them later)",
    )
    args = parser.parse_args(argv)
    check_args(parser, args)
    return args


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exit with the parser's usage error (status 2) on a value outside its range."""
    if args.workers < 1:
        parser.error(f"--workers must be >= 1, got {args.workers}")
    if args.frames < 1:
        parser.error(f"--frames must be >= 1, got {args.frames}")
    if not 0.0 <= args.val_fraction < 1.0:
        parser.error(f"--val-fraction must be in [0, 1), got {args.val_fraction}")
    if min(args.size) < 16:
        parser.error(f"--size must be at least 16x16, got {args.size[0]}x{args.size[1]}")
    if not 1 <= args.objects[0] <= args.objects[1]:
        parser.error(
            f"--objects must be MIN-MAX with 1 <= MIN <= MAX, got {args.objects[0]}-{args.objects[1]}"
        )
    if not 0 < args.depth_range[0] < args.depth_range[1]:
        parser.error(f"--depth-range must be NEAR-FAR with 0 < NEAR < FAR, got {args.depth_range}")
    for name in ("camera_height", "object_scale"):
        bounds = getattr(args, name)
        if bounds is not None and not 0 < bounds[0] <= bounds[1]:
            option = "--" + name.replace("_", "-")
            parser.error(f"{option} must be MIN-MAX with 0 < MIN <= MAX, got {bounds[0]:g}-{bounds[1]:g}")


def claim_output(out: Path, command: str, *, overwrite: bool) -> None:
    """Refuse a non-empty ``out`` that this tool did not write, or did without ``overwrite``; mark
    it as ours otherwise.

    Raises:
        UserError: ``out`` is a file, a non-empty folder without :data:`MARKER`, or an earlier
            set of this tool and ``overwrite`` is false (with it, that set's folders are removed).
    """
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise UserError(
            f"{out}: not empty and not written by this tool (no {MARKER}); "
            "its files would be overwritten: choose a new or empty folder"
        )
    if (out / MARKER).is_file() and not overwrite:
        raise UserError(f"{out}: holds an earlier synthetic set; pass --overwrite to rewrite it")
    for part in SET_FOLDERS:  # --overwrite: no frame or depth map of the earlier set stays beside the new
        shutil.rmtree(out / part, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text(command + "\n")


def main(argv: list[str] | None = None) -> int:
    """Write the dataset; user errors go to :func:`lib.errors.run_cli` (one line, exit 2)."""
    args = parse_args(argv)
    command = "make_synthetic_kitti.py " + " ".join(sys.argv[1:] if argv is None else argv)
    claim_output(args.out, command, overwrite=args.overwrite)
    start = time.perf_counter()
    splits = write_dataset(
        args.out,
        frames=args.frames,
        seed=args.seed,
        image_size=args.size,
        val_fraction=args.val_fraction,
        num_objects=args.objects,
        depth_range=args.depth_range,
        camera_height=args.camera_height,
        object_scale=args.object_scale,
        workers=args.workers,
    )
    seconds = time.perf_counter() - start
    width, height = args.size
    print(
        f"wrote {args.frames} synthetic frames ({width}x{height}, seed {args.seed}) to {args.out} "
        f"in {seconds:.1f} s: train {len(splits['train'])}, val {len(splits['val'])}"
    )
    if not args.no_depth_maps:
        tool = REPO_ROOT / "tools" / "make_depth_maps.py"
        command = [sys.executable, str(tool), "--data-dir", str(args.out.resolve()), "--workers"]
        run_command([*command, str(args.workers)])
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
