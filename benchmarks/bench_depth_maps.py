"""Frames per second of depth-map generation (lib/datasets/depth_maps.py), one process.

Runs every stage of tools/make_depth_maps.py on the real sample frames, repeated, and prints
the median rate of each: read (scan, calib, image size), project (sparse map), densify, write
(uint16 PNG), and the end-to-end sparse and dense pipelines. OpenCV runs on one thread, as in
each of the tool's worker processes.

    python benchmarks/bench_depth_maps.py [--data-dir tests/data/kitti_sample] [--repeats 20]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2

from lib.datasets.depth_maps import densify, project_scan, read_image_size
from lib.kitti_io import read_calib, read_split, read_velodyne, write_depth_map

DEFAULT_DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "kitti_sample"


def frames_per_second(step: Callable[[int], object], num_frames: int, repeats: int) -> tuple[float, float]:
    """Median and min-max spread (%) of frames/s over ``repeats`` passes of ``step`` over the frames."""
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(num_frames):
            step(i)
        rates.append(num_frames / (time.perf_counter() - start))
    median = statistics.median(rates)
    return median, 100.0 * (max(rates) - min(rates)) / median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA, help="KITTI layout with the frames")
    parser.add_argument("--repeats", type=int, default=20, help="passes over the frames per stage")
    args = parser.parse_args()
    cv2.setNumThreads(1)

    training = args.data_dir / "training"
    names = [f"{i:06d}" for i in read_split(args.data_dir / "ImageSets" / "trainval.txt")]

    def read(i: int) -> tuple:
        name = names[i]
        return (
            read_velodyne(training / "velodyne" / f"{name}.bin"),
            read_calib(training / "calib" / f"{name}.txt"),
            read_image_size(training / "image_2" / f"{name}.png"),
        )

    inputs = [read(i) for i in range(len(names))]
    sparse = [project_scan(*frame) for frame in inputs]
    dense = [densify(s) for s in sparse]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        stages: dict[str, Callable[[int], object]] = {
            "read scan + calib + size": read,
            "project_scan": lambda i: project_scan(*inputs[i]),
            "densify": lambda i: densify(sparse[i]),
            "write PNG (dense)": lambda i: write_depth_map(out / f"{i}.png", dense[i]),
            "sparse end-to-end": lambda i: write_depth_map(out / f"{i}.png", project_scan(*read(i))),
            "dense end-to-end": lambda i: write_depth_map(out / f"{i}.png", densify(project_scan(*read(i)))),
        }
        points = sum(len(frame[0]) for frame in inputs) / len(inputs)
        print(f"{len(names)} frames ({points:.0f} points each on average), {args.repeats} passes, ")
        print(f"{platform.processor() or platform.machine()}, OpenCV {cv2.__version__} on 1 thread")
        for label, step in stages.items():
            rate, spread = frames_per_second(step, len(names), args.repeats)
            print(f"  {label:<26} {rate:8.1f} frames/s  ({1000 / rate:6.2f} ms/frame, spread {spread:.0f} %)")


if __name__ == "__main__":
    main()
