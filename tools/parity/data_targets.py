"""Golden fixtures of the dataset targets: GUPNet's and MonoSKD's ``lib/datasets/kitti.py``.

``generate`` builds a small KITTI tree (:func:`build_inputs`: the three real sample frames,
four synthetic frames and one hand-written edge frame, each with the depth map our
``lib.datasets.depth_maps`` makes), runs each reference dataset on it in a child process
(tools/parity/targets_driver.py) under four fixed augmentations (:data:`SETTINGS`: none, flip,
crop/scale/shift, flip + a crop whose draws hit the clip limits) and writes
``tests/fixtures/parity/targets_{gupnet,monoskd}.npz`` plus ``targets_inputs.json`` (the cases,
the crop draws and a SHA-256 of every input file: the test rebuilds the inputs and checks them).

Kept per case: every target array, P2, coord_range, the info sizes, and the input image and
the teacher's depth input at :data:`NUM_PIXELS` fixed pixels (whole images would be MBs).
Called by tools/parity/make_fixtures.py; tests/parity/test_targets_parity.py needs only the
fixtures and the sample frames.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

from lib.constants import IMAGENET_MEAN, IMAGENET_STD
from lib.datasets.depth_maps import build_depth_map, read_image_size
from lib.datasets.synthetic import generate_frame, write_frame
from lib.geometry import unproject_to_rect
from lib.kitti_io import read_calib, write_depth_map

HERE = Path(__file__).resolve().parent
DRIVER = HERE / "targets_driver.py"
RESOLUTION = (1280, 384)  # both references hard-code it (W, H)

REAL_FRAMES = (0, 1, 2)  # tests/data/kitti_sample, same ids
SYNTH_SEED = 7
SYNTH_FRAMES = (3, 4, 5, 6)  # synthetic frame k is default_rng([SYNTH_SEED, k])
EDGE_FRAME = 7  # the image, calib and scan of synthetic frame 3 with EDGE_LABELS
FRAMES = REAL_FRAMES + SYNTH_FRAMES + (EDGE_FRAME,)
# (folder, extension) of a frame's files, in build_depth_map's argument order for the last three
FRAME_FILES = (("label_2", "txt"), ("velodyne", "bin"), ("calib", "txt"), ("image_2", "png"))

# name → (flip, crop draws). The draws are the three N(0, 1) values of GUPNet's crop:
# scale = clip(z0·0.4 + 1, 0.6, 1.4), centre += size·clip(z·0.1, −0.2, 0.2) per axis.
# "crop": scale 0.875 and shifts of 1/16 W, −1/20 H (float32-exact centre and crop width,
# as the reference computes its affine from float32 points); "flip_crop": every draw clipped.
SETTINGS: dict[str, tuple[bool, list[float] | None]] = {
    "plain": (False, None),
    "flip": (True, None),
    "crop": (False, [-0.3125, 0.625, -0.5]),
    "flip_crop": (True, [1.5, 2.5, -3.0]),
}
# MonoSKD's colour augmentation (GUPNet has none) at fixed draws: the order of brightness (0),
# contrast (1), saturation (2), their factors 1 + uniform and the 3 PCA lighting coefficients.
COLOR_CASES: dict[str, tuple[int, str, dict]] = {
    "f0_color": (
        0,
        "plain",
        {"order": [2, 0, 1], "uniform": [0.3, -0.25, 0.1], "normal": [0.05, -0.12, 0.2]},
    ),
    "f3_flip_crop_color": (
        3,
        "flip_crop",
        {"order": [1, 2, 0], "uniform": [-0.35, 0.2, 0.39], "normal": [-0.15, 0.08, -0.02]},
    ),
}
# GUPNet's class_merging (Van and Truck paint the Car channel): frame 1's Truck, the edge frame's Van.
MERGE_CASES: dict[str, tuple[int, str]] = {"f1_plain_merge": (1, "plain"), "f7_flip_merge": (7, "flip")}
KINDS = {"gupnet": "gupnet", "monoskd": "monoskd"}  # fixture kind → refs key
NUM_PIXELS = 1024  # input-image / teacher-input pixels kept per case
PIXEL_SEED = 2026


def edge_labels(P2: np.ndarray, image_width: int) -> list[str]:
    """Hand-written label lines for the edge frame: boundary cases of the target rules.

    Two cars whose projected 3D centres lie 2 px outside the left / 1 px outside the right
    border (heatmap cell truncation vs floor, flip about W vs W − 1), a car at z = 1.9 m, a
    Van, a truncation-0.6 car, cars 24.9 and exactly 25 px tall, a heading near ±π, a
    pedestrian, a cyclist and a DontCare box. Positions carry 6 decimals so the projections
    land where intended.
    """

    def car_at(u: float, v: float, z: float, h: float) -> tuple[float, float, float]:
        depth = z + P2[2, 3]  # along P2's third row
        x, y, _ = unproject_to_rect(np.array([[u, v]]), np.array([depth]), P2)[0]
        return x, y + h / 2, z  # bottom centre

    def line(cls: str, trunc: float, occ: int, box: tuple, hwl: tuple, pos: tuple, ry: float) -> str:
        values = [trunc, occ, -10.0, *box, *hwl, *pos, ry]
        return cls + " " + " ".join(f"{v:.6f}" if isinstance(v, float) else str(v) for v in values)

    hwl, ped, cyc = (1.5, 1.6, 3.9), (1.7, 0.6, 0.8), (1.7, 0.6, 1.8)
    right = image_width + 1.0
    return [
        line("Car", 0.3, 0, (0.0, 150.0, 60.0, 230.0), hwl, car_at(-2.0, 190.0, 15.0, 1.5), 1.2),
        line("Car", 0.3, 1, (1181.0, 150.0, 1241.0, 230.0), hwl, car_at(right, 190.0, 15.0, 1.5), -1.0),
        line("Car", 0.0, 0, (500.0, 150.0, 700.0, 300.0), hwl, car_at(600.0, 220.0, 1.9, 1.5), 0.3),
        line(
            "Van", 0.0, 0, (300.0, 160.0, 380.0, 220.0), (2.2, 1.9, 5.0), car_at(340.0, 190.0, 20.0, 2.2), 0.1
        ),
        line("Car", 0.6, 0, (900.0, 160.0, 980.0, 220.0), hwl, car_at(940.0, 190.0, 20.0, 1.5), 0.5),
        line("Car", 0.0, 0, (700.0, 180.0, 740.0, 203.9), hwl, car_at(720.0, 190.0, 45.0, 1.5), -0.4),
        line("Car", 0.0, 0, (760.0, 180.0, 800.0, 204.0), hwl, car_at(780.0, 190.0, 45.0, 1.5), 2.0),
        line("Car", 0.0, 2, (560.0, 170.0, 640.0, 230.0), hwl, car_at(600.0, 200.0, 25.0, 1.5), -3.13),
        line("Pedestrian", 0.0, 0, (420.0, 150.0, 450.0, 230.0), ped, car_at(435.0, 190.0, 12.0, 1.7), 0.0),
        line("Cyclist", 0.1, 1, (1000.0, 150.0, 1040.0, 230.0), cyc, car_at(1020.0, 190.0, 14.0, 1.7), 1.6),
        "DontCare -1 -1 -10 503.89 169.71 590.61 190.13 -1 -1 -1 -1000 -1000 -1000 -10",
    ]


def build_inputs(real_dir: Path, out_root: Path) -> Path:
    """Write the input tree ``out_root/KITTI`` (module docstring) and return that folder.

    Layout: ImageSets/train.txt (all :data:`FRAMES`) and training/{image_2, calib, label_2,
    velodyne, depth_dense}. Depth maps are made by lib.datasets.depth_maps from each scan.
    """
    kitti = out_root / "KITTI"
    training = kitti / "training"
    for folder in ("image_2", "calib", "label_2", "velodyne", "depth_dense"):
        (training / folder).mkdir(parents=True, exist_ok=True)
    for i in REAL_FRAMES:
        for folder, ext in FRAME_FILES:
            name = f"{i:06d}.{ext}"
            shutil.copyfile(real_dir / "training" / folder / name, training / folder / name)
    for i in SYNTH_FRAMES:
        write_frame(training, i, generate_frame(np.random.default_rng([SYNTH_SEED, i])))
    source = f"{SYNTH_FRAMES[0]:06d}"
    for folder, ext in (("image_2", "png"), ("calib", "txt"), ("velodyne", "bin")):
        shutil.copyfile(training / folder / f"{source}.{ext}", training / folder / f"{EDGE_FRAME:06d}.{ext}")
    P2 = read_calib(training / "calib" / f"{source}.txt").P2
    width = read_image_size(training / "image_2" / f"{source}.png")[0]
    (training / "label_2" / f"{EDGE_FRAME:06d}.txt").write_text("\n".join(edge_labels(P2, width)) + "\n")
    for i in FRAMES:
        name = f"{i:06d}"
        files = [training / folder / f"{name}.{ext}" for folder, ext in FRAME_FILES if folder != "label_2"]
        depth = build_depth_map(*files)
        write_depth_map(training / "depth_dense" / f"{name}.png", depth)
    (kitti / "ImageSets").mkdir(exist_ok=True)
    (kitti / "ImageSets" / "train.txt").write_text("\n".join(f"{i:06d}" for i in FRAMES) + "\n")
    return kitti


def input_digests(kitti: Path) -> dict[str, str]:
    """SHA-256 of every input under ``kitti/training`` except the scans, by relative path.

    PNGs are hashed as decoded pixels (their bytes depend on the PNG encoder's version), text
    files as bytes.
    """
    digests = {}
    paths = (p for p in (kitti / "training").rglob("*") if p.is_file() and p.parent.name != "velodyne")
    for path in sorted(paths):
        if path.suffix == ".png":
            pixels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            data = str((pixels.shape, pixels.dtype.str)).encode() + np.ascontiguousarray(pixels).tobytes()
        else:
            data = path.read_bytes()
        digests[str(path.relative_to(kitti))] = hashlib.sha256(data).hexdigest()
    return digests


def cases() -> list[dict]:
    """Every (frame, setting) case: name ``f<frame>_<setting>``, dataset index, flip, crop draws."""
    return [
        {"name": f"f{frame}_{setting}", "index": index, "flip": flip, "crop": crop}
        for index, frame in enumerate(FRAMES)
        for setting, (flip, crop) in SETTINGS.items()
    ]


def merge_cases() -> list[dict]:
    """GUPNet's class_merging cases (:data:`MERGE_CASES`): a case of :func:`cases` plus the flag."""
    out = []
    for name, (frame, setting) in MERGE_CASES.items():
        flip, crop = SETTINGS[setting]
        out.append(
            {"name": name, "index": FRAMES.index(frame), "flip": flip, "crop": crop, "class_merging": True}
        )
    return out


def extra_cases(kind: str) -> list[dict]:
    """The cases beyond :func:`cases` of a kind: colour (MonoSKD), class merging (GUPNet)."""
    return {"monoskd": color_cases(), "gupnet": merge_cases()}.get(kind, [])


def color_cases() -> list[dict]:
    """MonoSKD's colour cases (:data:`COLOR_CASES`): a case of :func:`cases` plus ``color``."""
    out = []
    for name, (frame, setting, color) in COLOR_CASES.items():
        flip, crop = SETTINGS[setting]
        out.append({"name": name, "index": FRAMES.index(frame), "flip": flip, "crop": crop, "color": color})
    return out


def sample_pixels() -> np.ndarray:
    """(NUM_PIXELS, 2) int64 (row, col) of the input-image pixels kept per case."""
    rng = np.random.default_rng(PIXEL_SEED)
    width, height = RESOLUTION
    return np.stack([rng.integers(0, height, NUM_PIXELS), rng.integers(0, width, NUM_PIXELS)], axis=1)


def run_reference(
    kind: str, ref_dir: Path, root: Path, work: Path, all_cases: list[dict] | None = None
) -> Path:
    """Run the driver in ``ref_dir`` on ``all_cases`` (default: every case of this module's tree);
    returns the folder of per-case .npz."""
    spec = work / f"{kind}_spec.json"
    if all_cases is None:
        all_cases = cases() + extra_cases(kind)
    spec.write_text(json.dumps({"root": str(root), "cases": all_cases}))
    out = work / f"{kind}_out"
    cmd = [sys.executable, str(DRIVER), kind, str(ref_dir), str(spec), str(out)]
    env = {**os.environ, "PYTHONPATH": str(ref_dir), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=ref_dir, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{kind} reference dataset failed in {ref_dir}:\n{proc.stderr[-4000:]}")
    return out


def rgb_levels(rgb: np.ndarray) -> np.ndarray:
    """ImageNet-normalised (3, ...) values of a warped uint8 image → its uint8 grey levels."""
    shape = (3,) + (1,) * (rgb.ndim - 1)
    mean, std = (np.asarray(v, dtype=np.float32).reshape(shape) for v in (IMAGENET_MEAN, IMAGENET_STD))
    unit = rgb * std + mean  # [0, 1]
    levels = np.round(unit * 255.0)
    if np.abs(levels / 255.0 - unit).max() > 1e-5:
        raise RuntimeError("the input image is not a normalised uint8 image (colour augmentation on?)")
    return levels.astype(np.uint8)


def reduce_case(
    sample: dict[str, np.ndarray], pixels: np.ndarray, color: bool = False
) -> dict[str, np.ndarray]:
    """The fixture part of one dumped case: images at ``pixels``, everything else whole.

    The input image is kept as the uint8 grey levels the reference's warp produced (its
    normalisation is exact to 1e-7), or as float32 after colour augmentation (``color``); the
    teacher input as float32 (one of its 3 equal channels).
    """
    rows, cols = pixels.T
    out = {k: v for k, v in sample.items() if k not in ("rgb", "depth", "t_box2d_gt_head")}
    rgb = sample["rgb"][:, rows, cols]
    if color:
        out["rgb_pixels"] = rgb.astype(np.float32)  # (3, N)
    else:
        out["rgb_levels"] = rgb_levels(rgb)  # (3, N) uint8
    if "depth" in sample:
        channels = sample["depth"]
        if not (np.array_equal(channels[0], channels[1]) and np.array_equal(channels[0], channels[2])):
            raise RuntimeError("the reference teacher input has channels that differ")
        out["depth_pixels"] = channels[0][rows, cols].astype(np.float32)  # (N,)
    return out


def check_did_equals_monoskd(did_dumps: Path, monoskd_dumps: Path) -> None:
    """DID-M3D's own dataset (no colour aug, no teacher input) gives MonoSKD's arrays exactly.

    Raises:
        RuntimeError: naming the first case and array that differ.
    """
    for case in cases():
        with (
            np.load(did_dumps / f"{case['name']}.npz") as did,
            np.load(monoskd_dumps / f"{case['name']}.npz") as skd,
        ):
            for key in did.files:
                if not np.array_equal(did[key], skd[key]):
                    raise RuntimeError(
                        f"DID-M3D's dataset differs from MonoSKD's: case {case['name']}, {key}"
                    )


def generate(refs: dict[str, Path | None], out_dir: Path) -> list[Path]:
    """Write the target fixtures of every reference given in ``refs`` (module docstring).

    Args:
        refs: checkouts by key ('gupnet': SuperMHP/GUPNet root, 'monoskd': Senwang98/MonoSKD
            root, 'did': SPengLiang/DID-M3D root, checked to give MonoSKD's targets bit for bit
            and not stored; 'monodistill' is not used here). A missing key or None skips it.
        out_dir: tests/fixtures/parity.

    Returns:
        The files written.
    """
    real_dir = Path(__file__).resolve().parents[2] / "tests" / "data" / "kitti_sample"
    gupnet = refs.get("gupnet")
    ref_dirs = {"gupnet": gupnet and Path(gupnet) / "code", "monoskd": refs.get("monoskd")}
    written: list[Path] = []
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="targets_parity_") as tmp:
        work = Path(tmp)
        kitti = build_inputs(real_dir, work / "tree")
        pixels = sample_pixels()
        for kind, ref_dir in ref_dirs.items():
            if ref_dir is None:
                continue
            dumps = run_reference(kind, Path(ref_dir), work / "tree", work)
            arrays = {}
            for case in cases() + extra_cases(kind):
                with np.load(dumps / f"{case['name']}.npz") as f:
                    reduced = reduce_case(dict(f), pixels, color="color" in case)
                arrays.update({f"{case['name']}/{k}": v for k, v in reduced.items()})
            path = out_dir / f"targets_{kind}.npz"
            np.savez_compressed(path, **arrays)
            written.append(path)
            if kind == "monoskd" and refs.get("did") is not None:
                check_did_equals_monoskd(run_reference("did", Path(refs["did"]), work / "tree", work), dumps)
        meta = {
            "frames": list(FRAMES),
            "settings": {k: {"flip": f, "crop": c} for k, (f, c) in SETTINGS.items()},
            "pixel_seed": PIXEL_SEED,
            "num_pixels": NUM_PIXELS,
            "inputs_sha256": input_digests(kitti),
        }
        path = out_dir / "targets_inputs.json"
        path.write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
        written.append(path)
    return written
