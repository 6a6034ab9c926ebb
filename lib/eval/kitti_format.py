"""KITTI label and result folders: the one reader and the one writer of result files.

A label folder is ``label_2/`` with one ``NNNNNN.txt`` (15 columns) per frame. A result folder is
the devkit's layout ``<result_dir>/data/NNNNNN.txt`` (16 columns, the last one the score; our runs
write ``<run>/results/<split>/data/``); the reader also accepts the files directly in
``<result_dir>`` (the layout of other tools). :func:`write_results` writes it (the tester,
``tools/infer.py``), :func:`load_results` and :func:`load_labels` read folders for the evaluator
(:class:`FrameObjects`). Lines are written and parsed by :mod:`lib.kitti_io`, so every
format error names the file and line.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from lib.errors import UserError
from lib.kitti_io import LabelTable, Object3d, parse_label_text, read_text, write_label
from lib.utils.files import sha256_file

if TYPE_CHECKING:  # the evaluator loads numba (seconds): imported where FrameObjects are made
    from lib.eval.kitti_eval import FrameObjects

RESULT_SUBDIR = "data"  # <result_dir>/data/NNNNNN.txt, the devkit's layout
LATEST_FILE = "latest.txt"  # in results/<split>/: the folder name of the latest -e evaluation
SHORT_SHA = 8  # hex digits of a checkpoint's sha256 in its result folder's name


def run_result_dir(run_dir: str | Path, split: str) -> Path:
    """``<run>/results/<split>``: where a run's evaluations during training put their predictions
    of a split and their reports."""
    return Path(run_dir) / "results" / split


def checkpoint_result_dir(run_dir: str | Path, split: str, checkpoint: str | Path) -> Path:
    """``<run>/results/<split>/<checkpoint stem>-<first 8 hex of its sha256>``: where ``-e`` puts
    its evaluation of one checkpoint file, so that evaluating another checkpoint, or the same
    file after it changed, never replaces earlier results."""
    checkpoint = Path(checkpoint)
    tag = sha256_file(checkpoint)[:SHORT_SHA]
    return run_result_dir(run_dir, split) / f"{checkpoint.stem}-{tag}"


def mark_latest(result_dir: str | Path) -> None:
    """Record ``result_dir`` (a :func:`checkpoint_result_dir`) as its split's latest ``-e`` result."""
    result_dir = Path(result_dir)
    (result_dir.parent / LATEST_FILE).write_text(result_dir.name + "\n")


def latest_result_dir(run_dir: str | Path, split: str) -> Path:
    """The folder of the latest ``-e`` evaluation of ``split`` in a run (:func:`mark_latest`), else
    :func:`run_result_dir` (a run evaluated only during training)."""
    base = run_result_dir(run_dir, split)
    latest = base / LATEST_FILE
    return base / latest.read_text().strip() if latest.is_file() else base


def result_data_dir(result_dir: str | Path) -> Path:
    """``<result_dir>/data``, the folder :func:`write_results` writes the files into."""
    return Path(result_dir) / RESULT_SUBDIR


def frame_file_name(frame: int | str) -> str:
    """``NNNNNN.txt`` for a frame id, ``<name>.txt`` for a frame named otherwise (an image stem)."""
    return f"{frame}.txt" if isinstance(frame, str) else f"{int(frame):06d}.txt"


def write_results(
    result_dir: str | Path,
    results: Mapping[int | str, Sequence[Object3d]],
    *,
    score_decimals: int,
    keep_old: bool = False,
) -> Path:
    """Write one KITTI result file per frame into ``<result_dir>/data/``; returns that folder.

    A frame without detections gets an empty file, so the evaluator scores it. The ``.txt`` files
    already in the folder are removed first (a result folder is one prediction of one split)
    unless ``keep_old`` (``tools/infer.py`` writes batch after batch into a folder the user named).

    Args:
        result_dir: the result folder (``<run>/results/<split>``).
        results: frame id (``NNNNNN.txt``) or name (``<name>.txt``) -> its detections (with scores).
        score_decimals: decimals of the score (``tester.score_decimals``; geometry gets KITTI's 2,
            :meth:`lib.kitti_io.Object3d.to_line`).
    """
    data_dir = result_data_dir(result_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    if not keep_old:
        for old in data_dir.glob("*.txt"):
            old.unlink()
    for frame, objects in results.items():
        write_label(data_dir / frame_file_name(frame), list(objects), score_decimals=score_decimals)
    return data_dir


def resolve_result_dir(result_dir: str | Path) -> Path:
    """The folder that holds the result files: ``result_dir/data`` if it exists, else ``result_dir``.

    Raises:
        FileNotFoundError: ``result_dir`` is not a directory.
        UserError: ``NNNNNN.txt`` files both at the top level and in ``data/`` (which set is meant
            cannot be told; reading one would silently drop the other).
    """
    result_dir = Path(result_dir)
    if not result_dir.is_dir():
        raise FileNotFoundError(f"result directory not found: {result_dir}")
    data = result_dir / RESULT_SUBDIR
    if not data.is_dir():
        return result_dir
    top = _frame_files(result_dir)
    if top:
        raise UserError(
            f"{result_dir}: holds result files both at its top level ({len(top)}, e.g. {min(top):06d}.txt) "
            f"and in {RESULT_SUBDIR}/ ({len(_frame_files(data))}); keep one set: move the other away"
        )
    return data


def _frame_files(folder: Path) -> set[int]:
    """Frame ids of the ``NNNNNN.txt`` files directly in ``folder``."""
    ids = set()
    with os.scandir(folder) as entries:
        for entry in entries:
            stem, ext = os.path.splitext(entry.name)
            if ext == ".txt" and stem.isdigit() and entry.is_file():
                ids.add(int(stem))
    return ids


def result_class_notes(gt: FrameObjects, det: FrameObjects, classes: Sequence[str]) -> list[str]:
    """What an evaluation of ``classes`` leaves out of the results, one line each: detections of
    a class that is not evaluated (they are ignored), and evaluated classes that have detections
    but no ground-truth object in the labels (their AP says nothing)."""
    found = Counter(det.table.names.tolist())
    labelled = set(gt.table.names.tolist())
    notes = [
        f"{count} result line(s) of class {name!r} are not scored (evaluated classes: {', '.join(classes)})"
        for name, count in sorted(found.items())
        if name not in classes and name != "DontCare"
    ]
    notes += [
        f"{found[name]} {name} detection(s) but no {name} in the labels of these frames: its AP means nothing"
        for name in classes
        if found[name] and name not in labelled
    ]
    return notes


def result_frame_ids(result_dir: str | Path) -> set[int]:
    """Frame ids that have a result file (``NNNNNN.txt``) in a result folder (see resolve_result_dir)."""
    return _frame_files(resolve_result_dir(result_dir))


def _split_line_of(split_file: Path, frame_id: int) -> int | None:
    """1-based line of ``frame_id`` in a split file (for error messages)."""
    for lineno, line in enumerate(split_file.read_text().splitlines(), start=1):
        s = line.strip()
        if s.isdigit() and int(s) == frame_id:
            return lineno
    return None


def _read_text(path: Path) -> str | None:
    try:
        return read_text(path)
    except FileNotFoundError:
        return None


def load_labels(
    label_dir: str | Path, frame_ids: Sequence[int], *, split_file: str | Path | None = None
) -> FrameObjects:
    """Read the ground truth of the given frames (in that order) from a ``label_2`` folder.

    Args:
        label_dir: folder with ``NNNNNN.txt`` label files.
        frame_ids: frames to read.
        split_file: the split the ids came from, named (with the line) when a label file is missing.

    Raises:
        FileNotFoundError: ``label_dir`` or a frame's label file does not exist.
        KittiFormatError: a malformed label line (message names file and line).
    """
    from lib.eval.kitti_eval import FrameObjects

    label_dir = Path(label_dir)
    if not label_dir.is_dir():
        raise FileNotFoundError(f"label directory not found: {label_dir}")
    tables = []
    for frame_id in frame_ids:
        path = label_dir / frame_file_name(frame_id)
        text = _read_text(path)
        if text is None:
            where = ""
            if split_file is not None:
                lineno = _split_line_of(Path(split_file), frame_id)
                where = f"{split_file}:{lineno}: " if lineno is not None else f"{split_file}: "
            raise FileNotFoundError(f"{where}frame {frame_id:06d} has no label file {path}")
        tables.append(parse_label_text(text, path, with_score=False))
    return FrameObjects.from_tables(tables)


def load_results(
    result_dir: str | Path, frame_ids: Sequence[int], *, missing_ok: bool = True
) -> FrameObjects:
    """Read the detections of the given frames (in that order) from a result folder.

    Args:
        result_dir: folder with ``NNNNNN.txt`` result files, directly or in ``data/``.
        frame_ids: frames to read.
        missing_ok: a frame without a result file has no detections (True) or is an error (False).

    Raises:
        FileNotFoundError: no such folder, or a missing file when ``missing_ok`` is False.
        KittiFormatError: a malformed result line, e.g. a wrong column count or a NaN score.
    """
    from lib.eval.kitti_eval import FrameObjects

    folder = resolve_result_dir(result_dir)
    tables = []
    for frame_id in frame_ids:
        path = folder / frame_file_name(frame_id)
        text = _read_text(path)
        if text is None:
            if not missing_ok:
                raise FileNotFoundError(f"result file not found: {path}")
            tables.append(LabelTable.empty(with_score=True))
        else:
            tables.append(parse_label_text(text, path, with_score=True))
    return FrameObjects.from_tables(tables)
