"""Golden case of the evaluator's overlap test at exactly the threshold, from the official KITTI devkit.

    python tools/parity/eval_threshold.py --gupnet PATH [--out tests/data/kitti_eval/case_threshold]

PATH is a work tree of SuperMHP/GUPNet outside this repository. Its copy of the devkit
(``code/tools/kitti_eval/evaluate_object_3d_offline_ap40.cpp``) is built with g++ -O2 (Boost
headers needed) in a temporary folder, twice: as it is, and with its overlap test ``overlap >
MIN_OVERLAP`` turned into ``>=``. Both run on the case of :func:`case_lines`; the folder gets the
case (label_2, pred/data, ImageSets/val.txt) and ``expected_ap40.json`` (the devkit as it is) and
``expected_ap40_at_threshold.json`` (the ``>=`` build), in the schema of tests/data/kitti_eval
(README.md there). tests/eval/test_overlap_threshold.py needs only the folder.

The case: frames of integer-pixel 2D boxes and binary-exact 3D boxes (ry = 0) whose overlaps are
exactly the class threshold in double precision (Car 0.7 for 2D, BEV and 3D; Pedestrian 0.5),
beside exact matches and misses, plus a detection 70 % inside a DontCare box.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
DEVKIT = Path("code") / "tools" / "kitti_eval" / "evaluate_object_3d_offline_ap40.cpp"
SEED = 2026
NUM_FRAMES = 24
CLASSES = ("Car", "Pedestrian", "Cyclist")
METRICS = {"detection": "bbox", "orientation": "aos", "detection_ground": "bev", "detection_3d": "3d"}
MIN_OVERLAP = {"Car": 0.7, "Pedestrian": 0.5, "Cyclist": 0.5}
# Detection kinds per ground truth: exact copy, 2D box at the threshold (3D exact), 3D/BEV box at the
# threshold (2D exact), a miss (no detection) and a copy shifted 3 px / 0.2 m (IoU well above).
KINDS = ("exact", "at_2d", "at_3d", "miss", "shifted")
DIFFS = ("easy", "moderate", "hard")


def _line(cls: str, box: tuple, hwl: tuple, pos: tuple, score: float | None = None) -> str:
    values = [0.0, 0, 0.0, *box, *hwl, *pos, 0.0]
    text = cls + " " + " ".join(f"{v:.2f}" if isinstance(v, float) else str(v) for v in values)
    return text if score is None else f"{text} {score:.4f}"


def _object(cls: str, slot: int) -> tuple[tuple, tuple, tuple]:
    """Ground truth ``slot`` (0..3) of a frame: 2D box, (h, w, l), bottom centre; no two overlap."""
    x1 = 40.0 + 300.0 * slot
    if cls == "Car":  # 100 x 100 px, 1.5 x 2 x 5 m
        return (x1, 150.0, x1 + 100.0, 250.0), (1.5, 2.0, 5.0), (-12.0 + 8.0 * slot, 1.5, 20.0)
    # Pedestrian: 40 x 100 px, 1.75 x 1 x 1 m (BEV 1 x 1)
    return (x1 + 200.0, 120.0, x1 + 240.0, 220.0), (1.75, 1.0, 1.0), (-10.0 + 8.0 * slot, 1.5, 30.0)


def _detection(cls: str, kind: str, box: tuple, hwl: tuple, pos: tuple) -> tuple[tuple, tuple, tuple]:
    """A detection of ``kind`` (:data:`KINDS`) for a ground truth: overlaps exact in double precision."""
    frac = MIN_OVERLAP[cls]
    x1, y1, x2, y2 = box
    h, w, length = hwl
    if kind == "at_2d":  # inside the box, frac of its width: IoU = frac
        return (x1, y1, x1 + frac * (x2 - x1), y2), hwl, pos
    if kind == "at_3d":  # inside the footprint, frac of its length (along x at ry = 0): IoU = frac
        cut = (1.0 - frac) * length / 2
        return box, (h, w, frac * length), (pos[0] + cut, pos[1], pos[2])
    if kind == "shifted":
        return (x1 + 3.0, y1, x2 + 3.0, y2), hwl, (pos[0] + 0.25, pos[1], pos[2])
    return box, hwl, pos


def case_lines() -> dict[int, tuple[list[str], list[str]]]:
    """Frame id → (ground-truth lines, detection lines) of the case (module docstring)."""
    rng = np.random.default_rng(SEED)
    scores = rng.permutation(1000)[: NUM_FRAMES * 8] / 1000 + 0.0005  # distinct scores
    frames = {}
    k = 0
    for frame in range(NUM_FRAMES):
        gts, dets = [], []
        for slot, cls in enumerate(("Car", "Car", "Pedestrian", "Pedestrian")):
            box, hwl, pos = _object(cls, slot)
            gts.append(_line(cls, box, hwl, pos))
            kind = KINDS[rng.integers(len(KINDS))]
            if kind != "miss":
                dets.append(_line(cls, *_detection(cls, kind, box, hwl, pos), score=scores[k]))
                k += 1
        if frame % 4 == 0:  # a Car detection 70 % inside a DontCare box (overlap = intersection / det)
            gts.append("DontCare -1 -1 -10 1100.00 40.00 1200.00 140.00 -1 -1 -1 -1000 -1000 -1000 -10")
            dets.append(_line("Car", (1070.0, 40.0, 1170.0, 140.0), (1.5, 2.0, 5.0), (25.0, 1.5, 40.0), 0.9))
        if frame % 3 == 0:  # a false positive
            dets.append(_line("Car", (20.0, 300.0, 120.0, 360.0), (1.5, 2.0, 5.0), (-20.0, 1.5, 9.0), 0.5))
        frames[frame] = (gts, dets)
    return frames


def write_case(root: Path) -> None:
    """Write label_2, pred/data and ImageSets/val.txt of the case under ``root``."""
    for folder in ("label_2", "pred/data", "ImageSets"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    frames = case_lines()
    for frame, (gts, dets) in frames.items():
        (root / "label_2" / f"{frame:06d}.txt").write_text("\n".join(gts) + "\n")
        (root / "pred" / "data" / f"{frame:06d}.txt").write_text("\n".join(dets) + "\n")
    (root / "ImageSets" / "val.txt").write_text("".join(f"{f:06d}\n" for f in frames))


def build_devkit(source: Path, work: Path, at_threshold: bool) -> Path:
    """Compile the devkit (``at_threshold``: with its ``overlap>MIN_OVERLAP`` tests made ``>=``)."""
    text = source.read_text()
    if at_threshold:
        text, count = re.subn(r"overlap>MIN_OVERLAP", "overlap>=MIN_OVERLAP", text)
        if count != 4:
            raise RuntimeError(f"{source}: expected 4 overlap tests, found {count}")
    name = "devkit_ge" if at_threshold else "devkit"
    (work / f"{name}.cpp").write_text(text)
    (work / "mail.h").write_text((source.parent / "mail.h").read_text())
    subprocess.run(["g++", "-O2", "-w", "-o", str(work / name), str(work / f"{name}.cpp")], check=True)
    return work / name


def run_devkit(binary: Path, case: Path, work: Path) -> dict:
    """Run the devkit on the case; returns the expected-values JSON (tests/data/kitti_eval schema)."""
    result_dir = work / f"result_{binary.name}"
    (result_dir / "data").mkdir(parents=True)
    for path in (case / "pred" / "data").iterdir():
        (result_dir / "data" / path.name).write_text(path.read_text())
    proc = subprocess.run(
        [str(binary), str(case / "label_2"), str(result_dir)], check=True, capture_output=True, text=True
    )
    printed = dict(re.findall(r"^(\w+) AP: (.*)$", proc.stdout, flags=re.M))  # "car_detection AP: e m h"
    ap: dict = {c: {m: None for m in METRICS.values()} for c in CLASSES}
    curves: dict = {c: {m: None for m in METRICS.values()} for c in CLASSES}
    for cls in CLASSES:
        for stem, metric in METRICS.items():
            name = f"{cls.lower()}_{stem}"
            if name not in printed:
                continue
            ap[cls][metric] = dict(zip(DIFFS, map(float, printed[name].split()), strict=True))
            table = np.loadtxt(result_dir / "plot" / f"{name}.txt")  # 41 rows: recall, easy, moderate, hard
            curves[cls][metric] = {d: table[:, 1 + i].tolist() for i, d in enumerate(DIFFS)}
    return {
        "schema_version": 1,
        "evaluator": f"KITTI devkit {DEVKIT.name} (copy in SuperMHP/GUPNet), g++ -O2"
        + (", overlap tests made >=" if binary.name.endswith("_ge") else ""),
        "ap_mode": 40,
        "min_overlap": MIN_OVERLAP,
        "num_frames_listed": NUM_FRAMES,
        "num_frames_evaluated": NUM_FRAMES,
        "ap": ap,
        "precision_curves": curves,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gupnet", type=Path, required=True, help="SuperMHP/GUPNet checkout")
    parser.add_argument("--out", type=Path, default=REPO / "tests" / "data" / "kitti_eval" / "case_threshold")
    args = parser.parse_args(argv)
    source = args.gupnet / DEVKIT
    if not source.is_file():
        print(f"error: {source}: no devkit source in --gupnet", file=sys.stderr)
        return 2
    write_case(args.out)
    with tempfile.TemporaryDirectory(prefix="devkit_") as tmp:
        work = Path(tmp)
        for at_threshold, name in ((False, "expected_ap40.json"), (True, "expected_ap40_at_threshold.json")):
            expected = run_devkit(build_devkit(source, work, at_threshold), args.out, work)
            (args.out / name).write_text(json.dumps(expected, indent=1) + "\n")
            print(f"wrote {args.out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
