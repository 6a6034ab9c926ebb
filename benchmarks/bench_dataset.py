"""Throughput of KittiDataset.__getitem__ in one process (= one DataLoader worker).

Runs on a copy of the three sample frames (tests/data/kitti_sample) with dense depth maps
made by lib.datasets.depth_maps, at the training resolution, with augmentation and every
target (teacher depth input, DID-M3D and RPD depth targets). Also times the stages of one
sample so the expensive ones are visible.

    .venv/bin/python benchmarks/bench_dataset.py [--iters 60] [--threads 1]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import cv2
import torch

from lib.config import load_config
from lib.datasets.augment import augment_sample
from lib.datasets.depth_maps import build_depth_map
from lib.datasets.kitti import KittiDataset, build_dataset
from lib.datasets.targets import build_detection_targets, build_targets
from lib.kitti_io import write_depth_map

SAMPLE_DIR = Path(__file__).resolve().parents[1] / "tests" / "data" / "kitti_sample"
BASE_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "base.yaml"


def make_dataset(
    root: Path, resolution: tuple[int, int], *, train: bool, load_depth: bool, color_aug: bool = False
) -> KittiDataset:
    """base.yaml's dataset of the frames at ``root``, at ``resolution``."""
    overrides = [f"dataset.root_dir={root}", f"dataset.resolution={list(resolution)}"]
    overrides += ["dataset.check_split_sizes=false", f"dataset.color_aug={str(color_aug).lower()}"]
    return build_dataset(load_config(BASE_CONFIG, overrides), "trainval", train=train, load_depth=load_depth)


def prepare(root: Path) -> None:
    """Copy the sample frames to ``root`` and write their dense depth maps."""
    shutil.copytree(SAMPLE_DIR, root)
    training = root / "training"
    for image in sorted((training / "image_2").glob("*.png")):
        frame = image.stem
        depth = build_depth_map(
            training / "velodyne" / f"{frame}.bin", training / "calib" / f"{frame}.txt", image
        )
        write_depth_map(training / "depth_dense" / f"{frame}.png", depth)


def samples_per_second(ds: KittiDataset, iters: int) -> float:
    for i in range(3):  # warm-up: imports, allocator, file cache
        ds[i % len(ds)]
    start = time.perf_counter()
    for i in range(iters):
        ds.set_epoch(i // len(ds))
        ds[i % len(ds)]
    return iters / (time.perf_counter() - start)


def time_ms(fn, iters: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - start) / iters * 1e3


def print_throughput(root: Path, resolution: tuple[int, int], iters: int) -> None:
    """Samples per second of the dataset in its train (with and without depth maps) and eval modes."""
    variants = {
        "train, aug + colour, depth input + all targets": dict(train=True, load_depth=True, color_aug=True),
        "train, aug, no depth maps (zeros for depth targets)": dict(train=True, load_depth=False),
        "eval, depth input + all targets": dict(train=False, load_depth=True),
    }
    for name, kwargs in variants.items():
        ds = make_dataset(root, resolution, **kwargs)
        print(f"  {name:<55} {samples_per_second(ds, iters):6.1f} samples/s")


def print_stages(root: Path, resolution: tuple[int, int], iters: int) -> None:
    """Milliseconds of each stage of one augmented sample of frame 000002 (the frame with a kept car)."""
    ds = make_dataset(root, resolution, train=True, load_depth=True, color_aug=True)
    frame, index = 2, 2
    image, p2 = ds._read_image(frame), ds.get_calib(frame).P2
    size = (image.shape[1], image.shape[0])
    depth, objects = ds._read_depth(frame, size), ds.get_labels(frame)

    def augment():
        return augment_sample(
            image, depth, objects, p2, ds.sample_rng(index), resolution=resolution, **ds.augment_args
        )

    aug = augment()
    target_args = dict(feature_size=ds.feature_size, downsample=ds.downsample)
    stages = {
        "read image (PNG decode)": lambda: ds._read_image(frame),
        "read depth map (PNG decode)": lambda: ds._read_depth(frame, size),
        "augment (flip, crop, warp image + depth, colour)": augment,
        "detection targets": lambda: build_detection_targets(aug.objects, aug.P2, aug.trans, **target_args),
        "all targets (+ DID RoI depth, RPD, fg mask)": lambda: build_targets(
            aug.objects,
            aug.P2,
            aug.trans,
            depth=aug.depth,
            crop_scale=aug.crop_scale,
            bins=ds.bins,
            **target_args,
        ),
    }
    print("  stages of one sample (ms):")
    for name, fn in stages.items():
        print(f"    {name:<53} {time_ms(fn, max(iters // 3, 5)):7.2f}")
    sample = ds[index]
    nbytes = sum(v.nbytes for v in [sample["rgb"], sample["depth"], *sample["targets"].values()])
    depth_bytes = sample["depth"].nbytes
    print(
        f"  sample size: {nbytes / 2**20:.1f} MiB, "
        f"of which the teacher's depth input {depth_bytes / 2**20:.1f} MiB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=60, help="samples per measurement")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch / OpenCV threads (DataLoader workers: 1)"
    )
    parser.add_argument("--resolution", type=int, nargs=2, default=(1280, 384), metavar=("W", "H"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    resolution = tuple(args.resolution)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "kitti"
        prepare(root)
        print(
            f"KittiDataset.__getitem__ at {resolution[0]}x{resolution[1]}, {args.threads} thread(s), 3 frames"
        )
        print_throughput(root, resolution, args.iters)
        print_stages(root, resolution, args.iters)


if __name__ == "__main__":
    main()
