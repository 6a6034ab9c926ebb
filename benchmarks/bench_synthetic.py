"""Frames per second of the synthetic KITTI generator (lib/datasets/synthetic.py), one process.

For each image size, times ``generate_frame`` alone (render + labels + LiDAR scan) and
``generate_frame`` + ``write_frame`` (PNG, calib, label, velodyne files, as
tools/make_synthetic_kitti.py runs it), and prints the median rate over repeats of ``--frames``
frames. OpenCV runs on one thread; numpy's element-wise work is single-threaded anyway.

    python benchmarks/bench_synthetic.py [--frames 20] [--repeats 3] [--sizes 1242x375 640x192]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from lib.datasets.synthetic import generate_frame, write_frame


def frames_per_second(
    size: tuple[int, int], *, frames: int, repeats: int, out_dir: Path | None
) -> tuple[float, float]:
    """Median frames/s over ``repeats`` runs of ``frames`` frames (files written when out_dir is
    set), by wall clock and by the process's CPU time (less sensitive to a busy machine)."""
    wall, cpu = [], []
    for repeat in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        for i in range(frames):
            frame = generate_frame(np.random.default_rng([repeat, i]), image_size=size)
            if out_dir is not None:
                write_frame(out_dir, i, frame)
        wall.append(frames / (time.perf_counter() - start))
        cpu.append(frames / (time.process_time() - start_cpu))
    return statistics.median(wall), statistics.median(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", nargs="+", default=["1242x375", "640x192"], help="WIDTHxHEIGHT")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    generate_frame(np.random.default_rng(0))  # warm-up: imports, allocator
    print(f"{platform.processor() or platform.machine()}, numpy {np.__version__}, OpenCV {cv2.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        for text in args.sizes:
            width, height = (int(v) for v in text.lower().split("x"))
            for label, out_dir in (("generate", None), ("generate + write", Path(tmp))):
                wall, cpu = frames_per_second(
                    (width, height), frames=args.frames, repeats=args.repeats, out_dir=out_dir
                )
                print(f"{width}x{height} {label:>16}: {wall:6.1f} frames/s wall, {cpu:6.1f} frames/s CPU")


if __name__ == "__main__":
    main()
