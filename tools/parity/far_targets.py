"""Golden heatmaps of far, narrow objects from GUPNet's dataset: the minimum Gaussian radius.

    python tools/parity/far_targets.py --gupnet PATH [--out tests/fixtures/parity/targets_far_gupnet.npz]

PATH is a work tree of SuperMHP/GUPNet outside this repository. GUPNet's ``lib/datasets/kitti.py``
draws each object's heatmap Gaussian with radius ``max(0, int(gaussian_radius(w, h)))``; boxes
narrower than about 4 feature cells (about 9 px wide at KITTI size, far pedestrians and cyclists)
get radius 0, a single cell. :func:`far_labels` writes such objects (and a few of radius 1 and 2)
into the image and calibration of sample frame 0 (tests/data/kitti_sample); GUPNet's dataset runs
on that frame (tools/parity/targets_driver.py) under the augmentations of
tools/parity/data_targets.py ``SETTINGS`` and the detection targets of each are written.
tests/parity/test_far_targets.py rebuilds the frame from the fixture's label text.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))  # data_targets imports its helpers from this folder
import data_targets as dt  # noqa: E402

from lib.geometry import unproject_to_rect  # noqa: E402
from lib.kitti_io import read_calib  # noqa: E402

FRAME = 0  # tests/data/kitti_sample frame whose image and calibration are used
# (class, x1, y1, width, height px, z m): 5-7 px wide boxes give radius 0 at 1280x384 (also zoomed by
# the crop setting), 12-16 px 1, 24 px 2.
OBJECTS = (
    ("Pedestrian", 100.0, 170.0, 5.0, 25.0, 55.0),
    ("Pedestrian", 260.0, 168.0, 6.0, 26.0, 50.0),
    ("Pedestrian", 420.0, 165.0, 7.0, 28.0, 45.0),
    ("Cyclist", 560.0, 170.0, 6.0, 25.0, 52.0),
    ("Cyclist", 700.0, 166.0, 7.0, 27.0, 48.0),
    ("Pedestrian", 840.0, 160.0, 12.0, 32.0, 40.0),
    ("Cyclist", 980.0, 158.0, 16.0, 30.0, 42.0),
    ("Car", 1120.0, 170.0, 24.0, 25.0, 60.0),
)
DIMS = {"Pedestrian": (1.7, 0.6, 0.8), "Cyclist": (1.7, 0.6, 1.8), "Car": (1.5, 1.6, 3.9)}
TARGET_KEYS = ("heatmap", "indices", "cls_ids", "mask_2d", "size_2d")


def far_labels(P2: np.ndarray) -> str:
    """Label text of :data:`OBJECTS`: each 3D centre projects to its 2D box centre at depth z."""
    lines = []
    for cls, x1, y1, w, h, z in OBJECTS:
        hh, ww, ll = DIMS[cls]
        u, v = x1 + w / 2, y1 + h / 2
        x, y, _ = unproject_to_rect(np.array([[u, v]]), np.array([z + P2[2, 3]]), P2)[0]
        values = [0.0, 0, 0.0, x1, y1, x1 + w, y1 + h, hh, ww, ll, x, y + hh / 2, z, 0.0]
        lines.append(cls + " " + " ".join(f"{v:.6f}" if isinstance(v, float) else str(v) for v in values))
    return "\n".join(lines) + "\n"


def build_tree(sample_dir: Path, out_root: Path, labels: str) -> Path:
    """``out_root/KITTI`` with frame 000000 = sample frame :data:`FRAME`'s image and calib, ``labels``."""
    training = out_root / "KITTI" / "training"
    name = f"{FRAME:06d}"
    for folder, ext in (("image_2", "png"), ("calib", "txt")):
        (training / folder).mkdir(parents=True, exist_ok=True)
        source = sample_dir / "training" / folder / f"{name}.{ext}"
        shutil.copyfile(source, training / folder / f"000000.{ext}")
    (training / "label_2").mkdir(parents=True, exist_ok=True)
    (training / "label_2" / "000000.txt").write_text(labels)
    (out_root / "KITTI" / "ImageSets").mkdir(parents=True, exist_ok=True)
    (out_root / "KITTI" / "ImageSets" / "train.txt").write_text("000000\n")
    return out_root / "KITTI"


def cases() -> list[dict]:
    """One case per data_targets SETTINGS entry, on the single frame."""
    return [{"name": s, "index": 0, "flip": f, "crop": c} for s, (f, c) in dt.SETTINGS.items()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gupnet", type=Path, required=True, help="SuperMHP/GUPNet checkout")
    parser.add_argument(
        "--out", type=Path, default=REPO / "tests" / "fixtures" / "parity" / "targets_far_gupnet.npz"
    )
    args = parser.parse_args(argv)
    if not (args.gupnet / "code" / "lib" / "datasets" / "kitti.py").is_file():
        print(f"error: {args.gupnet}: not a SuperMHP/GUPNet checkout (no code/lib/datasets/kitti.py)")
        return 2
    sample_dir = REPO / "tests" / "data" / "kitti_sample"
    labels = far_labels(read_calib(sample_dir / "training" / "calib" / f"{FRAME:06d}.txt").P2)
    arrays: dict[str, np.ndarray] = {"labels": np.array(labels)}
    with tempfile.TemporaryDirectory(prefix="far_targets_") as tmp:
        work = Path(tmp)
        build_tree(sample_dir, work / "tree", labels)
        dumps = dt.run_reference("gupnet", args.gupnet / "code", work / "tree", work, cases())
        for case in cases():
            with np.load(dumps / f"{case['name']}.npz") as f:
                arrays.update({f"{case['name']}/{k}": f[f"t_{k}"] for k in TARGET_KEYS})
    np.savez_compressed(args.out, **arrays)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
