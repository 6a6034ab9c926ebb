"""Draw KITTI frames as panel PNGs: 3D boxes, bird's-eye view, depth map and RPD bin map.

    python tools/visualize.py --data-dir data/KITTI3D --frame 000001 \\
        [--results outputs/student/data] [--score-threshold 0.2] [--depth-map P] [--out img/frame.png]
    python tools/visualize.py --data-dir data/KITTI3D --split val --results R --out-dir vis/
    python tools/visualize.py --data-dir data/KITTI3D --all-results --results R --out-dir vis/

One frame (``--frame``), every frame of an ImageSets split (``--split``) or every frame with a
result file (``--all-results``); the last two write ``<out-dir>/<frame>.png``. ``--results`` may also be a
run's ``results/<split>`` folder: its latest ``-e`` evaluation is drawn.

Left column: ground-truth (green) and predicted (red, from a KITTI results folder) 3D boxes on
the image; the depth map (``--depth-map``, else ``training/depth_dense/<frame>.png``, else the
Velodyne scan projected on the fly); its per-pixel RPD bin index (docs/method.md, 'Bins'). Right: the scan
and the boxes from above. Drawing lives in lib/visualize.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from lib.config import load_config
from lib.constants import DEPTH_BIN_MODES
from lib.errors import UserError, run_cli
from lib.utils import cli_types

if TYPE_CHECKING:  # the heavy modules (torch: seconds) load in the functions, after --help
    import numpy as np

BEV_MIN_RANGE = 70.0  # m: the bird's-eye view reaches at least this far, further for far objects ...
BEV_MAX_RANGE = 120.0  # m: ... up to this
BASE_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "base.yaml"  # the rpd defaults


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = load_config(BASE_CONFIG).rpd  # the bin layout's defaults (lib/depth_bins.py reads them)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="KITTI root (holds training/)")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--frame", help="frame id, e.g. 000001")
    which.add_argument("--split", help="every frame of ImageSets/<SPLIT>.txt, into --out-dir")
    which.add_argument("--all-results", action="store_true", help="every frame of --results, into --out-dir")
    parser.add_argument("--split-dir", default="training", help="training or testing")
    parser.add_argument("--results", type=Path, help="KITTI results folder (<frame>.txt or data/<frame>.txt)")
    parser.add_argument(
        "--depth-map", type=Path, help="uint16 depth PNG (default: depth_dense, else the scan)"
    )
    parser.add_argument("--out", type=Path, help="output PNG of --frame (default: <frame>_vis.png)")
    parser.add_argument("--out-dir", type=Path, help="output folder of --split / --all-results")
    parser.add_argument(
        "--score-threshold",
        type=cli_types.score,
        default=0.0,
        help="draw predictions whose score (the last column of the result file, as tools/infer.py "
        "writes and thresholds it) is >= S",
    )
    parser.add_argument(
        "--width", type=cli_types.render_width, default=960, help="width of the image column, pixels"
    )
    parser.add_argument("--bits", type=int, default=8, help="bits per colour channel kept (smaller PNGs)")
    parser.add_argument(
        "--rpd-mode", choices=DEPTH_BIN_MODES, default=defaults.mode, help="bin layout of the bin map"
    )
    parser.add_argument("--num-bins", type=cli_types.positive_int, default=defaults.num_bins)
    parser.add_argument("--depth-min", type=cli_types.positive_float, default=defaults.depth_min)
    parser.add_argument("--depth-max", type=cli_types.positive_float, default=defaults.depth_max)
    args = parser.parse_args(argv)
    if not 1 <= args.bits <= 8:
        parser.error(f"--bits must be in 1..8, got {args.bits}")
    if args.frame is not None and not args.frame.isdigit():
        parser.error(f"--frame must be a frame id like 000001, got {args.frame!r}")
    if args.depth_min >= args.depth_max:
        parser.error(f"--depth-min {args.depth_min:g} must be below --depth-max {args.depth_max:g}")
    if args.frame is None and args.out_dir is None:
        parser.error("--split and --all-results write into --out-dir")
    if args.all_results and args.results is None:
        parser.error("--all-results needs --results")
    return args


def find_results(results_dir: Path, name: str) -> Path:
    """The frame's results file, ``<dir>/data/<name>.txt`` or ``<dir>/<name>.txt``
    (lib/eval/kitti_format.py ``resolve_result_dir``)."""
    from lib.eval.kitti_format import frame_file_name, resolve_result_dir

    path = resolve_result_dir(results_dir) / frame_file_name(name)
    if not path.is_file():
        raise FileNotFoundError(f"no results for frame {name} in {results_dir} (looked for {path})")
    return path


def frame_names(args: argparse.Namespace) -> list[str]:
    """The frames to draw: ``--frame``, the ``--split`` list, or every result file's frame."""
    from lib.eval.kitti_format import resolve_result_dir, result_frame_ids
    from lib.kitti_io import read_split

    if args.frame is not None:
        return [f"{int(args.frame):06d}"]
    if args.split is not None:
        return [f"{i:06d}" for i in read_split(args.data_dir / "ImageSets" / f"{args.split}.txt")]
    names = [f"{i:06d}" for i in sorted(result_frame_ids(args.results))]
    if not names:
        raise UserError(f"{resolve_result_dir(args.results)}: no result files NNNNNN.txt")
    return names


def read_predictions(args: argparse.Namespace, name: str) -> list:
    """The frame's predictions with score >= --score-threshold; a frame of a --split without a
    result file has none (as the evaluator counts it), a missing file of --frame is an error."""
    from lib.kitti_io import read_label

    if args.results is None:
        return []
    try:
        pred = read_label(find_results(args.results, name))
    except FileNotFoundError:
        if args.frame is not None:
            raise
        return []
    return [o for o in pred if o.score is None or o.score >= args.score_threshold]


def render_frame(args: argparse.Namespace, name: str) -> tuple[np.ndarray, int, int, int]:
    """The panel of one frame (RGB), its numbers of ground-truth and predicted objects above the
    threshold, and how many of those boxes cannot be drawn on the image (lib/visualize.py
    ``image_drawable``: behind the camera, absurd depth or size, off the image)."""
    import dataclasses

    import cv2
    import numpy as np

    from lib.datasets.depth_maps import project_scan
    from lib.depth_bins import RpdSettings
    from lib.kitti_io import read_calib, read_depth_map, read_label, read_velodyne
    from lib.visualize import (
        PRED_COLOUR,
        add_title,
        colorize_bins,
        colorize_depth,
        compose_panel,
        count_undrawable,
        depth_bin_map,
        draw_bev,
        draw_boxes_3d,
        grow_sparse_depth,
        resize_to,
    )

    split_dir = args.data_dir / args.split_dir
    image_path = split_dir / "image_2" / f"{name}.png"
    bgr = cv2.imread(str(image_path))
    if bgr is None:
        raise FileNotFoundError(f"image not found or unreadable: {image_path}")
    image = bgr[..., ::-1]
    image_size = (image.shape[1], image.shape[0])
    calib = read_calib(split_dir / "calib" / f"{name}.txt")
    label_path = split_dir / "label_2" / f"{name}.txt"
    gt = read_label(label_path) if label_path.is_file() else []
    pred = read_predictions(args, name)
    velodyne_path = split_dir / "velodyne" / f"{name}.bin"
    scan = read_velodyne(velodyne_path) if velodyne_path.is_file() else np.zeros((0, 4), np.float32)

    if args.depth_map is not None and not args.depth_map.is_file():
        raise FileNotFoundError(f"--depth-map not found: {args.depth_map}")
    depth_path = args.depth_map or split_dir / "depth_dense" / f"{name}.png"
    if depth_path.is_file():
        depth, source = read_depth_map(depth_path, image_size), depth_path.parent.name
    else:
        depth, source = grow_sparse_depth(project_scan(scan, calib, image_size)), "projected scan"
    bins = dataclasses.replace(
        RpdSettings.from_config(load_config(BASE_CONFIG)).bins,
        mode=args.rpd_mode,
        depth_min=args.depth_min,
        depth_max=args.depth_max,
        num_bins=args.num_bins,
    )

    boxes = draw_boxes_3d(
        draw_boxes_3d(image, gt, calib.P2), pred, calib.P2, colour=PRED_COLOUR, show_score=True
    )
    column = [
        (boxes, f"frame {name}: ground truth green" + (", predicted red" if pred else "")),
        (colorize_depth(depth, max_depth=args.depth_max), f"depth ({source}), near red - far blue"),
        (
            colorize_bins(depth_bin_map(depth, bins), bins.num_bins),
            f"{bins.mode} bin index, K={bins.num_bins}",
        ),
    ]
    column = [add_title(resize_to(im, width=args.width), title) for im, title in column]
    far = max([BEV_MIN_RANGE] + [o.pos[2] + 8.0 for o in gt + pred if o.cls_type != "DontCare"])
    far = min(far, BEV_MAX_RANGE)
    bev = draw_bev(scan, calib, gt=gt, pred=pred, z_range=(0.0, 10.0 * np.ceil(far / 10.0)))
    side = add_title(resize_to(bev, height=sum(im.shape[0] for im in column)), "bird's-eye view")
    skipped = count_undrawable(gt + pred, calib.P2, image_size)
    return compose_panel(column, side, width=args.width), len(gt), len(pred), skipped


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)  # --help and usage errors come before the heavy imports
    import cv2
    from tqdm import tqdm

    from lib.eval.kitti_format import LATEST_FILE
    from lib.utils.outputs import check_outputs
    from lib.visualize import MAX_DRAW_DEPTH

    if args.results is not None and (args.results / LATEST_FILE).is_file():  # a run's results/<split>
        args.results = args.results / (args.results / LATEST_FILE).read_text().strip()  # its latest -e
    inputs = {"--data-dir": args.data_dir, "--results": args.results, "--depth-map": args.depth_map}
    check_outputs({"--out": args.out, "--out-dir": args.out_dir}, inputs)
    names = frame_names(args)
    undrawn = 0
    for name in tqdm(names, desc="panels", unit="frame", disable=len(names) == 1):
        panel, num_gt, num_pred, skipped = render_frame(args, name)
        undrawn += skipped
        drop = 8 - args.bits  # posterise: keep the top bits, centred in the dropped range
        if drop:
            panel = (panel >> drop << drop) + (1 << (drop - 1))
        if args.frame is not None:
            out = args.out or Path(f"{name}_vis.png")
        else:
            out = args.out_dir / f"{name}.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(out), panel[..., ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 9]):
            raise OSError(f"could not write {out}")
        if args.frame is not None:
            print(
                f"wrote {out} ({panel.shape[1]}x{panel.shape[0]}, {num_gt} gt, {num_pred} predicted objects)"
            )
    if args.frame is None:
        print(f"wrote {len(names)} panels to {args.out_dir}")
    if undrawn:
        where = f"behind the camera, beyond {MAX_DRAW_DEPTH:g} m or off it"
        print(f"{undrawn} boxes not drawn on the image ({where})")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
