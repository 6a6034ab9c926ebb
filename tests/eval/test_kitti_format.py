"""Reading label / result folders: layouts, empty files, and errors that name file and line."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from lib.datasets.kitti_io import KittiFormatError, read_label, write_label
from lib.eval.kitti_format import load_labels, load_results, result_frame_ids

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
    write_label(tmp_path / "out" / "000003.txt", read_label(folders / "pred" / "data" / "000003.txt"))
    write_label(tmp_path / "out" / "000005.txt", [])
    assert (tmp_path / "out" / "000005.txt").read_text() == ""
    again = load_results(tmp_path / "out", [3, 5])
    expected = DET_LINE.replace("-1 -1 -1.07", "-1.00 -1 -1.07").replace(" 0.87\n", " 0.870000\n")
    assert (tmp_path / "out" / "000003.txt").read_text() == expected
    np.testing.assert_array_equal(again.table.bbox, det.table.bbox)
    np.testing.assert_array_equal(again.table.score, det.table.score)
    assert list(again.offsets) == [0, 1, 1]
