"""Check a KITTI-layout dataset: read every listed frame once, in parallel, report all problems.

    python tools/check_dataset.py --data-dir data/KITTI3D --splits train val --depth --scans
    python tools/check_dataset.py --config configs/monommkd.yaml        # the config's splits and needs

Decodes each frame's image as training does, reads its calib and label (and with ``--depth`` its
depth map, with ``--scans`` its Velodyne scan size) and prints every error (a missing, empty,
truncated or malformed file, ``file:line`` for label lines with a non-positive size or a value
outside KITTI's ranges, duplicate or empty splits, depth maps that do not fit their image, empty
scans) and the warnings with their counts (boxes outside the image, blank depth maps, frames in
two splits; lib/datasets/dataset_check.py). Exit status 0: no errors; 1: errors found; 2: a bad command
line or config. ``dataset.check_on_start`` runs the same check in ``tools/train_val.py``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lib.config import load_config
from lib.errors import UserError, run_cli
from lib.utils import cli_types


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=None, help="dataset root (ImageSets/, training/)")
    parser.add_argument("--config", default=None, help="take root, splits and depth needs from a config")
    parser.add_argument("--splits", nargs="+", default=None, help="split names (default: train val)")
    parser.add_argument("--depth", action="store_true", help="also read the depth maps")
    parser.add_argument("--depth-dir", default="depth_dense", help="depth map folder beside image_2/")
    parser.add_argument("--scans", action="store_true", help="also check the Velodyne scan sizes")
    parser.add_argument(
        "--workers", type=cli_types.positive_int, default=None, help="threads (default: CPU count, <= 8)"
    )
    parser.add_argument("overrides", nargs="*", help="config overrides key.sub=value (with --config)")
    args = parser.parse_args(argv)
    if (args.data_dir is None) == (args.config is None):
        parser.error("give exactly one of --data-dir and --config")
    if args.overrides and args.config is None:
        parser.error("overrides need --config")
    return args


def main(argv: list[str] | None = None) -> int:
    """Print the report; 1 when it has errors. User errors go to :func:`lib.errors.run_cli`."""
    args = parse_args(argv)  # --help and usage errors come before the heavy imports
    from lib.datasets import dataset_check  # torch (seconds), through lib.datasets.kitti
    from lib.datasets.kitti import needs_depth_maps
    from lib.kitti_io import find_split_file

    if args.config is not None:
        cfg = load_config(args.config, args.overrides)
        root = Path(cfg.dataset.root_dir)
        splits = args.splits or [cfg.dataset.train_split, cfg.dataset.val_split]
        depth_dir = cfg.dataset.depth_dir
        depth_splits = [s for s in splits if args.depth or needs_depth_maps(cfg, s)]
    else:
        root, splits, depth_dir = args.data_dir, args.splits or ["train", "val"], args.depth_dir
        depth_splits = splits if args.depth else []
    if not root.is_dir():
        raise UserError(f"{root}: dataset folder not found")
    missing = [str(f) for f in (find_split_file(root, split) for split in splits) if not f.is_file()]
    if missing:  # a split named on the command line or in the config: a bad command, not a bad set
        raise UserError(f"split file not found: {', '.join(missing)} (--splits / the config's splits)")
    report = dataset_check.check_dataset(
        root, splits, depth_dir=depth_dir, depth_splits=depth_splits, scans=args.scans, workers=args.workers
    )
    print(f"{root} ({', '.join(splits)}): {dataset_check.format_report(report)}")
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
