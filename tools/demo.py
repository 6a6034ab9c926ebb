"""``make demo``: the whole pipeline on CPU in minutes (``tools/reproduce.py --demo``), then a picture.

Writes a synthetic KITTI-format set with depth maps, trains the LiDAR-depth teacher, the RGB
student, MonoMMKD and its control (MonoMMKD's steps from the same student with the DualKL weight
at 0: the same compute without the distillation term) on it (configs/demo/*.yaml), prints the
Car AP40 table (outputs/demo/table.md) and writes outputs/demo/report.md: the tables with each
model's precision-recall curves and errors by distance. Then draws the MonoMMKD student's
detections with a score of at least
``--picture-threshold`` (red, with their scores) and the ground truth (green) on the val frame
with the most Moderate cars, the image beside the bird's-eye view, and prints the PNG's path
(``<output-dir>/monommkd_val_<frame>.png``). The teacher and the student train side by side
(``--jobs 2`` unless given). Other arguments go to reproduce.py, e.g.
``python tools/demo.py --output-dir /tmp/demo trainer.max_epoch=2``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from reproduce import main as reproduce_main
from reproduce import parse_args as reproduce_args

from lib.errors import run_cli

if TYPE_CHECKING:  # the picture's modules (torch: seconds) load in its functions, after --help
    from lib.kitti_io import Object3d

PICTURE_STAGE = "monommkd"
PICTURE_THRESHOLD = 0.05  # a young model's scores (peak x depth confidence) are low
PICTURE_WIDTH = 960
# The teacher and the student train side by side, one thread each (reproduce.py --jobs): more
# steps per second than one two-thread training on the 2-core CPU the demo is sized for
# (BENCHMARKS.md, '2026-12-01 (b): side-by-side training').
DEMO_JOBS = "2"


def pop_threshold(argv: list[str]) -> tuple[float, list[str]]:
    """``--picture-threshold T`` out of the arguments (the rest go to reproduce.py)."""
    if "--picture-threshold" not in argv:
        return PICTURE_THRESHOLD, argv
    i = argv.index("--picture-threshold")
    try:
        return float(argv[i + 1]), argv[:i] + argv[i + 2 :]
    except (IndexError, ValueError):
        raise SystemExit("error: --picture-threshold needs a number, e.g. --picture-threshold 0.1") from None


def busiest_frame(root: Path, frames: list[int]) -> int:
    """The frame with the most Car labels KITTI scores (Moderate or Hard); the first on a tie."""
    import numpy as np

    from lib.datasets.targets import has_difficulty
    from lib.kitti_io import read_label

    labels = [read_label(root / "training" / "label_2" / f"{f:06d}.txt") for f in frames]
    counts = [sum(o.cls_type == "Car" and has_difficulty(o) for o in objects) for objects in labels]
    return frames[int(np.argmax(counts))]


def detections_above(result_file: Path, threshold: float) -> list[Object3d]:
    """The detections of a KITTI result file with a score of at least ``threshold``."""
    from lib.kitti_io import read_label

    return [o for o in read_label(result_file) if o.score is not None and o.score >= threshold]


def picture(run_dir: Path, *, threshold: float) -> Path:
    """Draw ``run_dir``'s val detections (score >= threshold) and the ground truth of one frame."""
    import cv2
    import numpy as np

    from lib.config import load_config
    from lib.eval.kitti_format import latest_result_dir, resolve_result_dir
    from lib.geometry import Calibration
    from lib.kitti_io import find_split_file, read_calib, read_label, read_split
    from lib.visualize import PRED_COLOUR, add_title, compose_panel, draw_bev, draw_boxes_3d

    cfg = load_config(run_dir / "config.yaml")
    root, split = Path(cfg.dataset.root_dir), cfg.tester.split
    frame = busiest_frame(root, read_split(find_split_file(root, split)))
    name = f"{frame:06d}"
    gt = [o for o in read_label(root / "training" / "label_2" / f"{name}.txt") if o.cls_type == "Car"]
    det = detections_above(resolve_result_dir(latest_result_dir(run_dir, split)) / f"{name}.txt", threshold)
    calib = read_calib(root / "training" / "calib" / f"{name}.txt")
    image = cv2.cvtColor(cv2.imread(str(root / "training" / "image_2" / f"{name}.png")), cv2.COLOR_BGR2RGB)
    drawn = draw_boxes_3d(image, gt, calib.P2)
    drawn = draw_boxes_3d(drawn, det, calib.P2, colour=PRED_COLOUR, show_score=True)
    title = f"{PICTURE_STAGE} student, val {name}: {len(det)} detections >= {threshold:g} (red), GT (green)"
    camera = Calibration(P=np.repeat(calib.P2[None], 4, axis=0), R0=np.eye(3), V2C=np.eye(3, 4))
    bev = draw_bev(np.zeros((0, 3)), camera, gt=gt, pred=det, z_range=(0.0, 50.0))
    panel = compose_panel([add_title(drawn, title)], bev, width=PICTURE_WIDTH)
    out = run_dir.parent / f"{PICTURE_STAGE}_{split}_{name}.png"
    cv2.imwrite(str(out), cv2.cvtColor(panel, cv2.COLOR_RGB2BGR))
    return out


def main(argv: list[str] | None = None) -> int:
    threshold, rest = pop_threshold(list(sys.argv[1:] if argv is None else argv))
    if "--jobs" not in rest:
        rest = ["--jobs", DEMO_JOBS, *rest]
    code = reproduce_main(["--demo", *rest])
    if code != 0:
        return code
    out_dir = (reproduce_args(["--demo", *rest]).output_dir or Path("outputs/demo")).resolve()
    path = picture(out_dir / PICTURE_STAGE, threshold=threshold)
    print(f"picture of the {PICTURE_STAGE} student's val detections: {path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
