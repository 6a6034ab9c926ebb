"""Write the teacher's LiDAR depth maps: ``<data-dir>/training/depth_dense/NNNNNN.png``.

Each frame's Velodyne scan is projected into image_2 with the frame's calibration and
densified (lib/datasets/depth_maps.py); ``--sparse`` keeps the raw projection. The PNGs are
KITTI-format uint16 (metres × 256, 0 = no depth) at the image size.

    python tools/make_depth_maps.py --data-dir data/KITTI3D --split trainval --workers 4

Existing maps are skipped unless ``--overwrite``. A frame whose scan, calib or image is
missing or malformed, or whose scan is empty or implausible (too few points in the image), is
reported by name and skipped; the run ends with a summary and exits with status 1 if any frame
failed. A bad split file or an unwritable output folder ends the run with one line and status 2.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import cv2
from tqdm import tqdm

from lib.datasets.depth_maps import build_depth_map
from lib.errors import run_cli
from lib.kitti_io import KittiFormatError, find_split_file, read_split, write_depth_map
from lib.utils.outputs import check_outputs

# Thread pools of the maths libraries, one thread each in a worker process. N workers with a
# pool of N threads each oversubscribe the CPU: OpenBLAS then spins, and the (points × 4) @ (4 × 3)
# products of the projection get 10-30x slower.
WORKER_THREAD_ENV = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")

Task = tuple[Path, int, str, bool, bool]  # split dir, frame id, output folder name, dense, overwrite


def expected_tree(root: Path, split: str, folder: str, depth_dir: str) -> str:
    """The folder layout this tool reads and writes, for the error message."""
    rows = [
        (f"{root}/", ""),
        (f"  ImageSets/{split}.txt", "frame ids, one a line"),
        (f"  {folder}/", ""),
        ("    velodyne/NNNNNN.bin", "Velodyne scans (float32 x, y, z, reflectance)"),
        ("    calib/NNNNNN.txt", "calibration (P2, R0_rect, Tr_velo_to_cam)"),
        ("    image_2/NNNNNN.png", "left colour images (the map size)"),
        (f"    {depth_dir}/NNNNNN.png", "written by this tool"),
    ]
    width = max(len(path) for path, _ in rows) + 2
    return "expected layout:\n" + "\n".join(f"  {path.ljust(width)}{note}".rstrip() for path, note in rows)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=Path("data/KITTI3D"), help="KITTI 3D root")
    parser.add_argument("--split", default="trainval", help="ImageSets/<split>.txt (test → testing/)")
    parser.add_argument(
        "--depth-dir", default="depth_dense", help="output folder beside velodyne/ (config dataset.depth_dir)"
    )
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    parser.add_argument("--sparse", action="store_true", help="write the raw projection, no densification")
    parser.add_argument("--overwrite", action="store_true", help="rewrite existing maps")
    return parser.parse_args(argv)


def process_frame(task: Task) -> tuple[str, str, str]:
    """Make one frame's map. Returns (frame name, "written" | "skipped" | "failed", error)."""
    split_dir, frame_id, out_name, dense, overwrite = task
    name = f"{frame_id:06d}"
    out_path = split_dir / out_name / f"{name}.png"
    if out_path.exists() and not overwrite:
        return name, "skipped", ""
    try:
        depth = build_depth_map(
            split_dir / "velodyne" / f"{name}.bin",
            split_dir / "calib" / f"{name}.txt",
            split_dir / "image_2" / f"{name}.png",
            dense=dense,
        )
    except (OSError, KittiFormatError) as err:
        return name, "failed", str(err)
    # Write under a temporary name, then rename: an interrupted run leaves no truncated PNG
    # that a later run would skip.
    tmp_path = out_path.with_name(f"{name}.partial.png")
    write_depth_map(tmp_path, depth)
    os.replace(tmp_path, out_path)
    return name, "written", ""


def _init_worker() -> None:
    cv2.setNumThreads(1)


def iterate_results(tasks: list[Task], workers: int) -> Iterator[tuple[str, str, str]]:
    """:func:`process_frame` over the tasks, in this process or in a pool (completion order)."""
    if workers == 1:
        yield from map(process_frame, tasks)
        return
    # Spawned (not forked) workers import numpy afresh, so they see the thread limits.
    for name in WORKER_THREAD_ENV:
        os.environ.setdefault(name, "1")
    with multiprocessing.get_context("spawn").Pool(workers, initializer=_init_worker) as pool:
        # Small chunks keep the progress bar moving and the workers evenly loaded.
        yield from pool.imap_unordered(process_frame, tasks, chunksize=4)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    folder = "testing" if args.split == "test" else "training"
    split_dir = args.data_dir / folder
    split_file = find_split_file(args.data_dir, args.split)  # ImageSets/, else data/splits/
    inputs = (split_file, split_dir / "velodyne", split_dir / "calib", split_dir / "image_2")
    missing = [p for p in inputs if not p.exists()]
    if missing:
        print(f"error: not found: {', '.join(map(str, missing))}", file=sys.stderr)
        print(expected_tree(args.data_dir, args.split, folder, args.depth_dir), file=sys.stderr)
        return 2
    if args.workers < 1:
        print(f"error: --workers must be >= 1, got {args.workers}", file=sys.stderr)
        return 2

    sources = ("image_2", "velodyne", "calib", "label_2")
    inputs = {f"{folder}/{name}": split_dir / name for name in sources} | {"the split list": split_file}
    check_outputs({"--depth-dir": split_dir / args.depth_dir}, inputs)  # --overwrite never replaces them
    frame_ids = read_split(split_file)  # a malformed, duplicate or empty list: run_cli's one line
    (split_dir / args.depth_dir).mkdir(exist_ok=True)
    tasks = [(split_dir, i, args.depth_dir, not args.sparse, args.overwrite) for i in frame_ids]
    counts = {"written": 0, "skipped": 0, "failed": 0}
    failed: list[str] = []
    results = iterate_results(tasks, args.workers)
    for name, status, error in tqdm(results, total=len(tasks), desc="depth maps", unit="frame"):
        counts[status] += 1
        if status == "failed":
            failed.append(name)
            tqdm.write(f"frame {name} failed: {error}", file=sys.stderr)

    kind = "sparse" if args.sparse else "dense"
    print(
        f"{kind} depth maps in {split_dir / args.depth_dir}: {counts['written']} written, "
        f"{counts['skipped']} skipped (existing), {counts['failed']} failed"
    )
    if failed:
        print(f"failed frames: {' '.join(sorted(failed))}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
