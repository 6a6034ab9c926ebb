"""Reading label / result folders: layouts, empty files, and errors that name file and line."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from lib.eval.kitti_format import (
    RESULT_SUBDIR,
    frame_file_name,
    load_labels,
    load_results,
    result_data_dir,
    result_frame_ids,
    run_result_dir,
    write_results,
)
from lib.kitti_io import KittiFormatError, Object3d, read_label, write_label

GT_LINE = "Car 0.00 0 -1.07 473.91 179.00 525.81 223.87 1.38 1.63 3.33 -6.44 1.76 42.68 -1.22\n"
DET_LINE = "Car -1 -1 -1.07 473.91 179.00 525.81 223.87 1.38 1.63 3.33 -6.44 1.76 42.68 -1.22 0.87\n"


@pytest.fixture
def folders(tmp_path):
    """label_2/ with frames 3 and 7, pred/data/ with a result for frame 3 only, a split naming both."""
    (tmp_path / "label_2").mkdir()
    (tmp_path / "label_2" / "000003.txt").write_text(GT_LINE * 2)
    (tmp_path / "label_2" / "000007.txt").write_text("")
    (tmp_path / "pred" / "data").mkdir(parents=True)
    (tmp_path / "pred" / "data" / "000003.txt").write_text(DET_LINE)
    (tmp_path / "val.txt").write_text("000003\n000007\n")
    return tmp_path


def test_load_folders_in_frame_order(folders):
    gt = load_labels(folders / "label_2", [7, 3])
    assert list(gt.offsets) == [0, 0, 2]
    det = load_results(folders / "pred", [3, 7])  # frame 7 has no result file: no detections
    assert list(det.offsets) == [0, 1, 1]
    assert det.table.score.tolist() == [0.87]
    assert result_frame_ids(folders / "pred") == {3}


def test_result_files_directly_in_the_folder(folders):
    shutil.move(folders / "pred" / "data", folders / "flat")
    assert load_results(folders / "flat", [3]).table.score.tolist() == [0.87]
    assert result_frame_ids(folders / "flat") == {3}


def test_empty_files_are_valid(folders):
    (folders / "pred" / "data" / "000007.txt").write_text("")
    det = load_results(folders / "pred", [3, 7], missing_ok=False)
    assert len(det) == 2 and len(det.table) == 1


def test_missing_result_file_can_be_an_error(folders):
    with pytest.raises(FileNotFoundError, match="000007.txt"):
        load_results(folders / "pred", [7], missing_ok=False)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (DET_LINE.replace(" 0.87", ""), "expected 16 columns, got 15"),
        (DET_LINE.replace("473.91", "47x.91"), "non-numeric"),
        (DET_LINE.replace("0.87", "nan"), "NaN"),
    ],
)
def test_bad_result_line_names_file_and_line(folders, line, message):
    (folders / "pred" / "data" / "000003.txt").write_text(DET_LINE + line)
    with pytest.raises(KittiFormatError, match=message) as err:
        load_results(folders / "pred", [3])
    assert "000003.txt:2:" in str(err.value)


def test_split_frame_without_label_file_names_split_line(folders):
    (folders / "val.txt").write_text("000003\n000007\n000009\n")
    with pytest.raises(FileNotFoundError, match=r"val\.txt:3: frame 000009 has no label file"):
        load_labels(folders / "label_2", [3, 7, 9], split_file=folders / "val.txt")


def test_missing_folders(folders):
    with pytest.raises(FileNotFoundError, match="label directory"):
        load_labels(folders / "nope", [3])
    with pytest.raises(FileNotFoundError, match="result directory"):
        load_results(folders / "nope", [3])


def test_write_then_load_round_trip(tmp_path, folders):
    det = load_results(folders / "pred", [3])
    write_label(
        tmp_path / "out" / "000003.txt",
        read_label(folders / "pred" / "data" / "000003.txt"),
        score_decimals=6,
    )
    write_label(tmp_path / "out" / "000005.txt", [])
    assert (tmp_path / "out" / "000005.txt").read_text() == ""
    again = load_results(tmp_path / "out", [3, 5])
    expected = DET_LINE.replace("-1 -1 -1.07", "-1.00 -1 -1.07").replace(" 0.87\n", " 0.870000\n")
    assert (tmp_path / "out" / "000003.txt").read_text() == expected
    np.testing.assert_array_equal(again.table.bbox, det.table.bbox)
    np.testing.assert_array_equal(again.table.score, det.table.score)
    assert list(again.offsets) == [0, 1, 1]


def detection(score: float, x: float = -6.44) -> Object3d:
    """A Car detection with KITTI-rounded geometry (2 decimals survive the writer exactly)."""
    box, pos = np.array([473.91, 179.0, 525.81, 223.87]), np.array([x, 1.76, 42.68])
    return Object3d("Car", -1.0, -1, -1.07, box, 1.38, 1.63, 3.33, pos, -1.22, score)


def test_the_reader_reads_back_what_the_writer_wrote(tmp_path):
    """write_results -> load_results: the devkit layout <dir>/data/NNNNNN.txt, every column back,
    an empty file for a frame without detections, the score at the given decimals."""
    results = {12: [detection(0.1234567), detection(0.5, x=3.0)], 4: []}
    data = write_results(tmp_path / "run", results, score_decimals=6)
    assert data == tmp_path / "run" / RESULT_SUBDIR == result_data_dir(tmp_path / "run")
    assert sorted(p.name for p in data.iterdir()) == ["000004.txt", "000012.txt"]
    det = load_results(tmp_path / "run", [12, 4], missing_ok=False)
    assert list(det.offsets) == [0, 2, 2]
    assert det.table.names.tolist() == ["Car", "Car"]
    np.testing.assert_array_equal(det.table.score, [0.123457, 0.5])
    np.testing.assert_array_equal(det.table.loc, [[-6.44, 1.76, 42.68], [3.0, 1.76, 42.68]])
    np.testing.assert_array_equal(det.table.bbox[0], [473.91, 179.0, 525.81, 223.87])
    np.testing.assert_array_equal(det.table.dims[0], [1.38, 1.63, 3.33])
    assert (det.table.alpha[0], det.table.rotation_y[0], det.table.truncated[0]) == (-1.07, -1.22, -1.0)
    assert result_frame_ids(tmp_path / "run") == {4, 12}
    write_results(tmp_path / "run", {12: [detection(0.9)]}, score_decimals=2)
    assert (data / "000012.txt").read_text().endswith(" 0.90\n")


def test_the_writer_replaces_a_folder_unless_told_to_keep_it(tmp_path):
    write_results(tmp_path, {1: [detection(0.5)], 2: []}, score_decimals=6)
    (tmp_path / "data" / "notes.md").write_text("mine")  # not a result file: never removed
    write_results(tmp_path, {3: []}, score_decimals=6)
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["000003.txt", "notes.md"]
    write_results(tmp_path, {"frame_a": [detection(0.5)]}, score_decimals=6, keep_old=True)
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["000003.txt", "frame_a.txt", "notes.md"]


def test_result_file_names_and_run_layout(tmp_path):
    assert frame_file_name(7) == "000007.txt" == frame_file_name(np.int64(7))
    assert frame_file_name("clip_000003") == "clip_000003.txt"
    assert run_result_dir(tmp_path, "val") == tmp_path / "results" / "val"


def test_a_scored_object_needs_score_decimals(tmp_path):
    with pytest.raises(ValueError, match="to_line needs score_decimals"):
        detection(0.5).to_line()
    assert detection(0.5).to_line(3).endswith(" -1.22 0.500")
