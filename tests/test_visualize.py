"""Drawing functions (lib/visualize.py) and the panel tool (tools/visualize.py)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from lib.config import load_config
from lib.datasets.synthetic import synthetic_calibration
from lib.depth_bins import RpdSettings
from lib.geometry import box3d_corners, project_to_image, rect_to_velo
from lib.kitti_io import Object3d, read_label
from lib.visualize import (
    colorize_bins,
    colorize_depth,
    compose_panel,
    count_undrawable,
    depth_bin_map,
    draw_bev,
    draw_boxes_3d,
    grow_sparse_depth,
    image_drawable,
    render_detections,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
TOOL = REPO_ROOT / "tools" / "visualize.py"
CALIB = synthetic_calibration((400, 120))


def make_object(x: float, z: float, *, cls_type: str = "Car", score: float | None = None) -> Object3d:
    return Object3d(
        cls_type=cls_type, truncation=0.0, occlusion=0, alpha=0.0, box2d=np.zeros(4),
        h=1.5, w=1.6, l=3.9, pos=np.array([x, 1.65, z]), ry=0.3, score=score,
    )  # fmt: skip


def greenish(patch: np.ndarray) -> bool:
    """Whether some pixel of a patch is drawn in a green line colour (anti-aliased lines blend)."""
    rgb = patch.reshape(-1, 3).astype(int)
    return bool(((rgb[:, 1] - rgb[:, 0] > 60) & (rgb[:, 1] - rgb[:, 2] > 60)).any())


def projected_bounds(obj: Object3d) -> np.ndarray:
    corners = box3d_corners(np.array([[obj.h, obj.w, obj.l]]), obj.pos[None], np.array([obj.ry]))[0]
    uv, _ = project_to_image(corners, CALIB.P2)
    return np.concatenate([uv.min(axis=0), uv.max(axis=0)])


def test_draw_boxes_3d_draws_on_the_projected_box_only() -> None:
    image = np.full((120, 400, 3), 50, np.uint8)
    obj = make_object(0.0, 15.0)
    out = draw_boxes_3d(image, [obj], CALIB.P2, thickness=1)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert (image == 50).all()  # the input is left alone
    changed = (out != image).any(axis=2)
    x1, y1, x2, y2 = projected_bounds(obj)
    rows, cols = np.nonzero(changed)
    assert rows.size > 100
    assert cols.min() >= x1 - 2 and cols.max() <= x2 + 2 and rows.min() >= y1 - 2 and rows.max() <= y2 + 2
    corners = box3d_corners(np.array([[1.5, 1.6, 3.9]]), obj.pos[None], np.array([0.3]))[0]
    for col, row in np.round(project_to_image(corners, CALIB.P2)[0]).astype(int):
        assert greenish(out[row - 1 : row + 2, col - 1 : col + 2])


def test_draw_boxes_3d_skips_dontcare_and_boxes_behind_the_camera() -> None:
    image = np.zeros((120, 400, 3), np.uint8)
    dontcare = Object3d(
        "DontCare", -1, -1, -10, np.array([10, 10, 50, 50.0]), -1, -1, -1, np.full(3, -1000.0), -10
    )
    behind = make_object(0.0, -10.0)
    assert (draw_boxes_3d(image, [dontcare, behind], CALIB.P2) == 0).all()


def absurd_boxes() -> list[Object3d]:
    """Finite boxes no camera can show: a young network's output (depth 1e9 m, 1e9 m aside,
    behind the camera, beside the image, 1e12 m tall)."""
    tall = make_object(0.0, 10.0, score=0.01)
    tall.h = 1e12
    return [
        make_object(0.0, 1e9, score=0.01),
        make_object(1e9, 20.0, score=0.01),
        make_object(0.0, -5.0, score=0.01),
        make_object(200.0, 10.0, score=0.01),  # 200 m right at 10 m ahead: left of nothing, off the image
        tall,
    ]


def test_absurd_boxes_are_skipped_and_counted_not_an_error() -> None:
    image = np.full((120, 400, 3), 50, np.uint8)
    good = make_object(2.0, 15.0, score=0.7)
    absurd = absurd_boxes()
    assert image_drawable([good, *absurd], CALIB.P2, (400, 120)) == [True] + [False] * 5
    assert count_undrawable([good, *absurd], CALIB.P2, (400, 120)) == 5
    # the drawable box is drawn exactly as alone; the others leave no pixel
    alone = draw_boxes_3d(image, [good], CALIB.P2, show_score=True)
    assert (draw_boxes_3d(image, [good, *absurd], CALIB.P2, show_score=True) == alone).all()
    assert (draw_boxes_3d(image, absurd, CALIB.P2) == 50).all()
    # the bird's-eye view of the panel skips the footprints outside it (all but the tall box's)
    assert (render_detections(image, [good, *absurd[:4]], CALIB.P2, width=400)
            == render_detections(image, [good], CALIB.P2, width=400)).all()  # fmt: skip


def test_draw_bev_puts_points_and_boxes_where_they_are() -> None:
    point_rect = np.array([[5.05, 1.0, 20.05]])  # 0.65 m above the ground, 5 m right, 20 m ahead
    scan = np.concatenate([rect_to_velo(point_rect, CALIB), [[0.5]]], axis=1).astype(np.float32)
    obj = make_object(-10.0, 40.0)
    bev = draw_bev(scan, CALIB, gt=[obj], x_range=(-20.0, 20.0), z_range=(0.0, 50.0), resolution=0.1)
    assert bev.shape == (500, 400, 3) and bev.dtype == np.uint8
    row, col = 299, 250  # pixel centres 0.05 m from the point: (50 - 20.05) / 0.1, (5.05 + 20) / 0.1
    assert (bev[row, col] != 20).any()  # the point
    footprint = box3d_corners(np.array([[1.5, 1.6, 3.9]]), obj.pos[None], np.array([0.3]))[0, :4]
    cols = np.round((footprint[:, 0] + 20.0) / 0.1).astype(int)
    rows = np.round((50.0 - footprint[:, 2]) / 0.1).astype(int)
    for r, c in zip(rows, cols, strict=True):
        assert greenish(bev[r - 1 : r + 2, c - 1 : c + 2])
    empty = draw_bev(np.zeros((0, 4), np.float32), CALIB, x_range=(-20.0, 20.0), z_range=(0.0, 50.0))
    assert (empty[:, :, 1] <= 60).all()  # only the background and the range rings


def test_colorize_depth() -> None:
    depth = np.array([[0.0, 5.0, 70.0]], np.float32)
    rgb = colorize_depth(depth, max_depth=80.0)
    assert rgb.shape == (1, 3, 3) and rgb.dtype == np.uint8
    assert (rgb[0, 0] == 0).all()
    assert rgb[0, 1, 0] > rgb[0, 1, 2] and rgb[0, 2, 2] > rgb[0, 2, 0]  # near red, far blue


def test_depth_bin_map_follows_the_bin_edges() -> None:
    bins = RpdSettings.from_config(load_config(REPO_ROOT / "configs" / "base.yaml")).bins
    edges = bins.edges()
    mids = (edges[:-1] + edges[1:]) / 2  # (K,) one depth inside each bin
    depth = np.concatenate([mids, edges[:-1] + 1e-6, [0.0, 1.0, 90.0]])[None]
    index = depth_bin_map(depth, bins)[0]
    k = bins.num_bins
    assert np.array_equal(index[:k], np.arange(k)) and np.array_equal(index[k : 2 * k], np.arange(k))
    assert list(index[2 * k :]) == [-1, k, k]  # no depth, nearer than depth_min, beyond depth_max
    rgb = colorize_bins(index[None], k)
    assert rgb.shape == (1, depth.shape[1], 3)
    assert (rgb[0, 2 * k] == 0).all() and (rgb[0, 2 * k + 1] == 128).all()
    assert len({tuple(c) for c in rgb[0, :k]}) == k  # every bin its own colour


def test_grow_sparse_depth_keeps_the_nearest() -> None:
    depth = np.zeros((5, 5), np.float32)
    depth[2, 1], depth[2, 2] = 10.0, 5.0
    grown = grow_sparse_depth(depth, size=3)
    assert grown[2, 1] == pytest.approx(5.0) and grown[2, 0] == pytest.approx(10.0)
    assert grown[0, 0] == 0.0 and grown[1, 3] == pytest.approx(5.0)


def test_compose_panel_shapes() -> None:
    wide, bev = np.zeros((100, 400, 3), np.uint8), np.zeros((300, 200, 3), np.uint8)
    assert compose_panel([wide, wide], bev, width=200).shape == (100, 200 + 67, 3)
    assert compose_panel([wide], width=400).shape == (100, 400, 3)
    with pytest.raises(ValueError, match="at least one image"):
        compose_panel([])


def test_cli_writes_a_panel(kitti_sample: Path, tmp_path: Path) -> None:
    training = kitti_sample / "training"
    gt = read_label(training / "label_2" / "000001.txt")
    results = tmp_path / "results" / "data"
    results.mkdir(parents=True)
    car = next(o for o in gt if o.cls_type == "Car")
    car.score, car.pos = 0.9, car.pos + np.array([1.0, 0.0, 0.0])
    (results / "000001.txt").write_text(car.to_line(score_decimals=6) + "\n")
    out = tmp_path / "panel.png"
    cmd = [sys.executable, str(TOOL), "--data-dir", str(kitti_sample), "--frame", "000001",
           "--results", str(results.parent), "--out", str(out), "--width", "400"]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT, check=False)
    assert result.returncode == 0, result.stderr
    panel = cv2.imread(str(out))
    assert panel is not None and panel.shape[0] == 3 * round(375 * 400 / 1242) and panel.shape[1] > 400
    assert "7 gt, 1 predicted" in result.stdout
    bev = panel[:, 400:, ::-1].astype(int)  # RGB; its background and point colours are never red
    assert ((bev[..., 0] > 180) & (bev[..., 1] < 90) & (bev[..., 2] < 90)).sum() > 10  # the prediction

    spec = importlib.util.spec_from_file_location("visualize_tool", TOOL)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    with pytest.raises(FileNotFoundError, match="--depth-map not found"):
        tool.main([*cmd[2:], "--depth-map", str(tmp_path / "nope.png")])


def test_render_detections_draws_the_box_and_its_footprint() -> None:
    image = np.full((120, 400, 3), 50, np.uint8)
    obj = make_object(2.0, 15.0, score=0.7)
    panel = render_detections(image, [obj], CALIB.P2, width=400)
    assert panel.shape[0] == 120 and panel.shape[1] == 400 + round(
        600 * 120 / 700
    )  # the 60 m x 70 m view at the image height
    x1, y1, x2, y2 = projected_bounds(obj)
    box = panel[int(y1) : int(y2) + 1, int(x1) : int(x2) + 1].reshape(-1, 3).astype(int)
    assert ((box[:, 0] > 180) & (box[:, 1] < 120)).any()  # red lines on the image
    bev = panel[:, 400:].reshape(-1, 3).astype(int)
    assert (
        (bev[:, 0] > 180) & (bev[:, 1] < 90) & (bev[:, 2] < 90)
    ).sum() >= 2  # its footprint, a few px at this scale
    assert render_detections(image, [], CALIB.P2, width=400)[:, :400].max() == 50  # nothing drawn


def test_cli_renders_a_split_or_all_results_with_a_score_threshold(
    kitti_sample: Path, tmp_path: Path
) -> None:
    training = kitti_sample / "training"
    cars = [o for o in read_label(training / "label_2" / "000001.txt") if o.cls_type != "DontCare"][:2]
    cars[0].score, cars[1].score = 0.9, 0.1
    results = tmp_path / "results"
    results.mkdir()
    (results / "000001.txt").write_text("".join(o.to_line(score_decimals=6) + "\n" for o in cars))
    spec = importlib.util.spec_from_file_location("visualize_tool", TOOL)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    common = ["--data-dir", str(kitti_sample), "--results", str(results), "--width", "200"]
    args = tool.parse_args([*common, "--frame", "1", "--score-threshold", "0.5"])
    assert [o.score for o in tool.read_predictions(args, "000001")] == [0.9]
    assert tool.read_predictions(tool.parse_args([*common, "--frame", "1"]), "000001")[1].score == 0.1
    assert tool.main([*common, "--split", "trainval", "--out-dir", str(tmp_path / "split")]) == 0
    assert sorted(p.name for p in (tmp_path / "split").iterdir()) == [
        "000000.png",
        "000001.png",
        "000002.png",
    ]
    assert tool.main([*common, "--all-results", "--out-dir", str(tmp_path / "all")]) == 0
    assert [p.name for p in (tmp_path / "all").iterdir()] == ["000001.png"]
    with pytest.raises(SystemExit):
        tool.parse_args([*common, "--split", "trainval"])  # no --out-dir


def test_results_of_a_run_split_draw_its_latest_evaluation(
    kitti_sample: Path, tmp_path: Path, capsys
) -> None:
    """--results <run>/results/val follows latest.txt to the newest -e folder (its data/ files)."""
    cars = [
        o for o in read_label(kitti_sample / "training" / "label_2" / "000001.txt") if o.cls_type == "Car"
    ]
    for o in cars:
        o.score = 0.9
    split = tmp_path / "run" / "results" / "val"
    (split / "last-0123abcd" / "data").mkdir(parents=True)
    (split / "last-0123abcd" / "data" / "000001.txt").write_text("".join(o.to_line(6) + "\n" for o in cars))
    (split / "latest.txt").write_text("last-0123abcd\n")
    spec = importlib.util.spec_from_file_location("visualize_tool", TOOL)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    argv = ["--data-dir", str(kitti_sample), "--frame", "1", "--results", str(split), "--width", "200"]
    assert tool.main([*argv, "--out", str(tmp_path / "frame.png")]) == 0
    assert f"{len(cars)} predicted objects" in capsys.readouterr().out and len(cars) > 0
