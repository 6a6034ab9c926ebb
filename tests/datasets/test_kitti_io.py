"""KITTI file reading and writing (lib/kitti_io.py)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from lib.kitti_io import (
    DEPTH_PNG_SCALE,
    KittiFormatError,
    Object3d,
    parse_label_text,
    read_calib,
    read_depth_map,
    read_label,
    read_label_table,
    read_split,
    read_velodyne,
    write_calib,
    write_depth_map,
    write_label,
    write_split,
)

CAR_LINE = "Car 0.00 0 1.85 387.63 181.54 423.81 203.12 1.67 1.87 3.69 -16.53 2.39 58.49 1.57"


@pytest.fixture(scope="module")
def sample(kitti_sample_dir: Path) -> Path:
    return kitti_sample_dir


# --- labels ---------------------------------------------------------------------------------


def test_read_sample_labels(sample: Path) -> None:
    table = read_label_table(sample / "training" / "label_2" / "000001.txt")
    assert len(table) == 7 and table.score is None
    assert list(table.names) == ["Truck", "Car", "Cyclist"] + ["DontCare"] * 4
    np.testing.assert_array_equal(table.occluded, [0, 0, 3, -1, -1, -1, -1])
    car = 1
    np.testing.assert_allclose(table.bbox[car], [387.63, 181.54, 423.81, 203.12])
    np.testing.assert_allclose(table.dims[car], [1.67, 1.87, 3.69])  # h, w, l
    np.testing.assert_allclose(table.loc[car], [-16.53, 2.39, 58.49])
    assert table.alpha[car] == 1.85 and table.rotation_y[car] == 1.57 and table.truncated[car] == 0.0
    np.testing.assert_allclose(table.loc[3], [-1000, -1000, -1000])  # DontCare placeholders

    (ped,) = read_label(sample / "training" / "label_2" / "000000.txt")
    assert ped.cls_type == "Pedestrian" and ped.occlusion == 0 and ped.score is None
    assert (ped.h, ped.w, ped.l, ped.ry, ped.alpha) == (1.89, 0.48, 1.20, 0.01, -0.20)
    np.testing.assert_allclose(ped.box2d, [712.40, 143.00, 810.73, 307.92])
    np.testing.assert_allclose(ped.pos, [1.84, 1.47, 8.41])


def test_label_round_trip(sample: Path, tmp_path: Path) -> None:
    for name in ("000000", "000001", "000002"):
        objects = read_label(sample / "training" / "label_2" / f"{name}.txt")
        write_label(tmp_path / "out" / f"{name}.txt", objects)
        again = read_label(tmp_path / "out" / f"{name}.txt")
        assert len(again) == len(objects)
        for a, b in zip(objects, again, strict=True):
            assert (a.cls_type, a.truncation, a.occlusion, a.alpha) == (
                b.cls_type,
                b.truncation,
                b.occlusion,
                b.alpha,
            )
            assert (a.h, a.w, a.l, a.ry, a.score) == (b.h, b.w, b.l, b.ry, b.score)
            np.testing.assert_array_equal(a.box2d, b.box2d)
            np.testing.assert_array_equal(a.pos, b.pos)


def result_object(score: float) -> Object3d:
    """A Car detection with fixed geometry and the given score."""
    box, pos = np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 1.5, 20.0])
    return Object3d("Car", -1.0, -1, 0.5, box, 1.5, 1.6, 3.9, pos, 0.2, score)


def test_result_lines_carry_a_score(tmp_path: Path) -> None:
    det = result_object(0.875)
    write_label(tmp_path / "000007.txt", [det], score_decimals=6)
    line = (tmp_path / "000007.txt").read_text()
    assert line == "Car -1.00 -1 0.50 1.00 2.00 3.00 4.00 1.50 1.60 3.90 1.00 1.50 20.00 0.20 0.875000\n"
    (back,) = read_label(tmp_path / "000007.txt")
    assert back.score == 0.875 and back.occlusion == -1
    assert read_label_table(tmp_path / "000007.txt").score.tolist() == [0.875]


def test_small_scores_keep_their_order(tmp_path: Path) -> None:
    """Young models score < 0.01: the written scores must still rank the detections."""
    objects = [result_object(s) for s in (0.0042, 0.0013, 0.0031)]
    write_label(tmp_path / "000001.txt", objects, score_decimals=6)
    scores = read_label_table(tmp_path / "000001.txt").score
    np.testing.assert_allclose(scores, [0.0042, 0.0013, 0.0031])
    assert np.argsort(scores).tolist() == [1, 2, 0]


def test_empty_label_file(tmp_path: Path) -> None:
    write_label(tmp_path / "empty.txt", [])
    assert (tmp_path / "empty.txt").read_text() == ""
    assert read_label(tmp_path / "empty.txt") == []
    table = read_label_table(tmp_path / "empty.txt")
    assert len(table) == 0 and table.bbox.shape == (0, 4) and table.loc.shape == (0, 3)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (CAR_LINE + "\nCar 0.00 0 1.85 387.63 181.54\n", r"bad\.txt:2: expected 15 columns, got 6"),
        ("\n" + CAR_LINE.replace("181.54", "18l.54"), r"bad\.txt:2: non-numeric field"),
        (CAR_LINE.replace("58.49", "nan"), r"bad\.txt:1: NaN or infinite value"),
        (CAR_LINE.replace("58.49", "inf"), r"bad\.txt:1: NaN or infinite value"),
        (CAR_LINE + "\n" + CAR_LINE + " 0.9\n", r"bad\.txt:2: expected 15 columns, got 16"),
        ("Car 1 2 3\n", r"bad\.txt:1: expected 15 or 16 columns, got 4"),
    ],
    ids=["short-line", "non-numeric", "nan", "inf", "mixed-widths", "first-line"],
)
def test_malformed_labels_name_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.txt"
    path.write_text(text)
    with pytest.raises(KittiFormatError, match=message):
        read_label_table(path)


def test_label_width_can_be_required() -> None:
    with pytest.raises(KittiFormatError, match="det.txt:1: expected 16 columns, got 15"):
        parse_label_text(CAR_LINE, "det.txt", with_score=True)
    assert parse_label_text(CAR_LINE + " 0.5", "det.txt", with_score=True).score.tolist() == [0.5]


def test_missing_label_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="000009.txt"):
        read_label(tmp_path / "000009.txt")


# --- calibration ----------------------------------------------------------------------------


def test_read_sample_calib(sample: Path) -> None:
    calib = read_calib(sample / "training" / "calib" / "000000.txt")
    assert calib.P.shape == (4, 3, 4) and calib.R0.shape == (3, 3) and calib.V2C.shape == (3, 4)
    np.testing.assert_array_equal(calib.P2, calib.P[2])
    np.testing.assert_allclose(
        calib.P2,
        [
            [707.0493, 0.0, 604.0814, 45.75831],
            [0.0, 707.0493, 180.5066, -0.3454157],
            [0.0, 0.0, 1.0, 4.981016e-03],
        ],
    )
    assert calib.P[1, 0, 3] == pytest.approx(-379.7842)  # P0..P3 are kept apart
    np.testing.assert_allclose(calib.R0[0], [9.999128e-01, 1.009263e-02, -8.511932e-03])
    np.testing.assert_allclose(calib.V2C[:, 3], [-2.457729e-02, -6.127237e-02, -3.321029e-01])
    np.testing.assert_allclose(calib.I2V[0, 3], -8.086759e-01)


def test_calib_round_trip(sample: Path, tmp_path: Path) -> None:
    calib = read_calib(sample / "training" / "calib" / "000001.txt")
    write_calib(tmp_path / "calib.txt", calib)
    again = read_calib(tmp_path / "calib.txt")
    for a, b in ((calib.P, again.P), (calib.R0, again.R0), (calib.V2C, again.V2C), (calib.I2V, again.I2V)):
        np.testing.assert_allclose(b, a, rtol=1e-12)


def test_calib_accepts_raw_data_spellings(tmp_path: Path) -> None:
    p2 = " ".join(map(str, range(1, 13)))
    path = tmp_path / "raw.txt"
    path.write_text(
        f"calib_time: 09-Jan-2012 13:57:47\nP2: {p2}\nR_rect: 1 0 0 0 1 0 0 0 1\nTr_velo_cam: {p2}\n"
    )
    calib = read_calib(path)
    np.testing.assert_array_equal(calib.V2C, np.arange(1, 13).reshape(3, 4))
    np.testing.assert_array_equal(calib.R0, np.eye(3))
    np.testing.assert_array_equal(calib.P[0], calib.P2)  # absent P0 falls back to P2
    np.testing.assert_array_equal(calib.I2V, np.eye(3, 4))


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        ("P2 7.07e2 0 6.04e2", r"calib\.txt:3: expected 'KEY: values'"),
        ("P2: 1 2 3", r"calib\.txt:3: P2 needs 12 finite values, got 3"),
        ("P2: 1 2 3 4 5 6 7 8 9 10 11 x", r"calib\.txt:3: non-numeric value in P2"),
        ("P2: 1 2 3 4 5 6 7 8 9 10 11 nan", r"calib\.txt:3: P2 needs 12 finite values"),
        ("R0_rect: 1 0 0 0 1 0 0 0", r"calib\.txt:5: R0_rect needs 9 finite values, got 8"),
        (None, r"calib\.txt: missing calibration matrices \['Tr_velo_to_cam'\]"),
    ],
)
def test_malformed_calib_names_file_and_line(
    sample: Path, tmp_path: Path, broken: str | None, message: str
) -> None:
    lines = (sample / "training" / "calib" / "000000.txt").read_text().splitlines()
    key = "Tr_velo_to_cam" if broken is None else broken.split(":")[0].split()[0]
    index = next(i for i, line in enumerate(lines) if line.startswith(key))
    if broken is None:
        del lines[index]
    else:
        lines[index] = broken
    path = tmp_path / "calib.txt"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(KittiFormatError, match=message):
        read_calib(path)


# --- splits, scans ----------------------------------------------------------------------------


def test_split_read_and_round_trip(sample: Path, tmp_path: Path) -> None:
    assert read_split(sample / "ImageSets" / "trainval.txt") == [0, 1, 2]
    assert read_split(sample / "ImageSets" / "val.txt") == [2]
    write_split(tmp_path / "ImageSets" / "mini.txt", [42, 7, 7480])
    assert (tmp_path / "ImageSets" / "mini.txt").read_text() == "000042\n000007\n007480\n"
    assert read_split(tmp_path / "ImageSets" / "mini.txt") == [42, 7, 7480]


def test_malformed_split(tmp_path: Path) -> None:
    path = tmp_path / "split.txt"
    path.write_text("000001\n\n00004x\n")
    with pytest.raises(
        KittiFormatError, match=r"split\.txt:3: expected a frame id like 000042, got '00004x'"
    ):
        read_split(path)


def test_read_velodyne(sample: Path, tmp_path: Path) -> None:
    points = read_velodyne(sample / "training" / "velodyne" / "000000.bin")
    assert points.shape == (115384, 4) and points.dtype == np.float32
    assert np.isfinite(points).all() and (points[:, 3] >= 0).all() and (points[:, 3] <= 1).all()
    scan = np.arange(8, dtype=np.float32).reshape(2, 4)
    scan.tofile(tmp_path / "two.bin")
    np.testing.assert_array_equal(read_velodyne(tmp_path / "two.bin"), scan)
    for size in (10, 18):  # 18 bytes: four whole floats but not a whole point
        (tmp_path / "bad.bin").write_bytes(bytes(size))
        with pytest.raises(KittiFormatError, match=f"bad.bin: size {size} bytes is not a multiple of 16"):
            read_velodyne(tmp_path / "bad.bin")
    with pytest.raises(FileNotFoundError, match="none.bin"):
        read_velodyne(tmp_path / "none.bin")


# --- depth PNGs -----------------------------------------------------------------------------


def test_depth_png_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    depth = rng.uniform(0.5, 90.0, size=(7, 11)).astype(np.float32)
    depth[rng.random(depth.shape) < 0.5] = 0.0  # no depth
    depth[0, 0] = 300.0  # beyond the uint16 range: clipped to 65535 / 256
    write_depth_map(tmp_path / "depth" / "000003.png", depth)
    raw = cv2.imread(str(tmp_path / "depth" / "000003.png"), cv2.IMREAD_ANYDEPTH)
    assert raw.dtype == np.uint16 and raw.shape == (7, 11) and raw[0, 0] == 65535
    back = read_depth_map(tmp_path / "depth" / "000003.png")
    assert back.dtype == np.float32
    expected = depth.copy()
    expected[0, 0] = 65535 / DEPTH_PNG_SCALE
    np.testing.assert_allclose(back, expected, atol=0.5 / DEPTH_PNG_SCALE + 1e-6)
    np.testing.assert_array_equal(back == 0, expected == 0)


def test_read_depth_map_pads_top_cropped_maps(tmp_path: Path) -> None:
    # docs/reference.md, 'The teacher's input': a 4x3 map of a 7x5 image covers the bottom rows, centred: 2
    # rows are padded on top, (7 − 4) // 2 = 1 column on the left, 2 on the right, by edge values.
    crop = np.array([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0], [9.0, 10.0, 11.0, 12.0]])
    write_depth_map(tmp_path / "crop.png", crop)
    padded = read_depth_map(tmp_path / "crop.png", image_size=(7, 5))
    expected = np.array(
        [
            [1, 1, 2, 3, 4, 4, 4],
            [1, 1, 2, 3, 4, 4, 4],
            [1, 1, 2, 3, 4, 4, 4],
            [5, 5, 6, 7, 8, 8, 8],
            [9, 9, 10, 11, 12, 12, 12],
        ],
        dtype=np.float32,
    )
    np.testing.assert_array_equal(padded, expected)
    np.testing.assert_array_equal(read_depth_map(tmp_path / "crop.png", image_size=(4, 3)), crop)
    with pytest.raises(KittiFormatError, match=r"crop\.png: depth map 4x3 is larger than its image 3x5"):
        read_depth_map(tmp_path / "crop.png", image_size=(3, 5))


def test_read_depth_map_rejects_other_pngs(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "rgb.png"), np.zeros((4, 5, 3), dtype=np.uint8))
    with pytest.raises(KittiFormatError, match=r"rgb\.png: expected a single-channel uint16 PNG"):
        read_depth_map(tmp_path / "rgb.png")
    with pytest.raises(FileNotFoundError, match="000004.png"):
        read_depth_map(tmp_path / "000004.png")
