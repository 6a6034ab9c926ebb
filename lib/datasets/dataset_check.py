"""Check a KITTI-layout dataset before training: every listed frame's files, read once, in parallel.

A bad frame otherwise surfaces only when the loader reaches it, part-way through an epoch, and
one problem at a time. :func:`check_dataset` reads each frame of the splits once (the image
decoded whole by the dataset's own reader, calib, label, and optionally depth map and Velodyne
scan size) with a thread pool and collects every problem: errors (what training or evaluation
would refuse anyway: a missing, empty, truncated or malformed file, a label value out of KITTI's
ranges, a duplicate or empty split, a depth map that does not fit its image, an empty scan) and
warnings with their counts (2D boxes outside the image, blank depth maps, frames listed in two
of the splits).
``tools/check_dataset.py`` prints the report; ``dataset.check_on_start`` runs it in
``tools/train_val.py`` and stops before training when there are errors.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lib.config import Config
from lib.datasets.kitti import needs_depth_maps, read_kitti_image
from lib.errors import UserError
from lib.kitti_io import (
    DONT_CARE,
    KittiFormatError,
    find_split_file,
    read_calib,
    read_depth_map,
    read_label_table,
    read_split,
)

logger = logging.getLogger(__name__)

# KITTI's 2D label boxes are clipped to the image (the truncation column says how much of the
# object is outside), so a box beyond the border by more than rounding is not the image's box.
BOX_MARGIN = 1.0  # pixels
MAX_ERRORS_SHOWN = 30
WARN_BOX_OUTSIDE = "2D boxes outside their image by more than 1 px (labels of another image?)"
WARN_BLANK_DEPTH = "depth maps without any depth (blank)"


class DatasetCheckError(UserError):
    """The dataset check found errors; the message lists them (file:line: what)."""


@dataclass
class CheckReport:
    """What :func:`check_dataset` found: ``errors`` (one line each), ``warnings`` (kind → count)."""

    frames: int = 0
    errors: list[str] = field(default_factory=list)
    warnings: Counter = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)  # warning kind → first file

    def warn(self, kind: str, where: str, count: int = 1) -> None:
        self.warnings[kind] += count
        self.examples.setdefault(kind, where)

    def merge(self, other: CheckReport) -> None:
        self.frames += other.frames
        self.errors += other.errors
        for kind, count in other.warnings.items():
            self.warn(kind, other.examples[kind], count)


@dataclass(frozen=True)
class FrameFiles:
    """Which files of a frame to read: the split folder, the frame id and the optional parts."""

    data_dir: Path
    frame_id: int
    labels: bool
    depth_dir: str | None
    scans: bool


def _check_labels(path: Path, image_size: tuple[int, int], report: CheckReport) -> None:
    table = read_label_table(path, with_score=False)  # raises on non-positive sizes (file:line)
    keep = table.names != DONT_CARE
    width, height = image_size
    box = table.bbox[keep]  # (N, 4) x1, y1, x2, y2
    outside = (box[:, :2] < -BOX_MARGIN).any(axis=1) | (box[:, 2] > width - 1 + BOX_MARGIN)
    outside |= box[:, 3] > height - 1 + BOX_MARGIN
    if outside.any():
        report.warn(WARN_BOX_OUTSIDE, str(path), int(outside.sum()))


def check_frame(files: FrameFiles) -> CheckReport:
    """Read one frame's files; every problem goes into the returned report (nothing raises)."""
    report = CheckReport(frames=1)
    name = f"{files.frame_id:06d}"
    d = files.data_dir
    try:
        image = read_kitti_image(d / "image_2" / f"{name}.png")  # decoded whole, as training does
        image_size = (image.shape[1], image.shape[0])
        read_calib(d / "calib" / f"{name}.txt")
        if files.labels:
            _check_labels(d / "label_2" / f"{name}.txt", image_size, report)
        if files.depth_dir is not None:
            depth_path = d / files.depth_dir / f"{name}.png"
            if not np.any(read_depth_map(depth_path, image_size)):
                report.warn(WARN_BLANK_DEPTH, str(depth_path))
        if files.scans:
            scan = d / "velodyne" / f"{name}.bin"
            size = scan.stat().st_size
            if size == 0 or size % 16:
                report.errors.append(f"{scan}: {size} bytes: empty, or not whole 16-byte points")
    except (KittiFormatError, OSError) as err:
        report.errors.append(str(err))
    return report


def check_dataset(
    root: str | Path,
    splits: Iterable[str],
    *,
    depth_dir: str | None = None,
    depth_splits: Sequence[str] = (),
    scans: bool = False,
    workers: int | None = None,
) -> CheckReport:
    """Check every frame listed in ``root``'s splits; each frame is read once.

    Args:
        root: the dataset folder (ImageSets/, training/, testing/).
        splits: split names; ``test`` reads testing/ (no labels).
        depth_dir: folder name of the depth maps, read for the splits in ``depth_splits``.
        scans: check the Velodyne scans' sizes (non-empty, whole points).
        workers: threads (default: the CPU count, at most 8).

    Returns:
        The merged :class:`CheckReport` (a frame listed in several splits counts once).
    """
    root = Path(root)
    report = CheckReport()
    tasks: dict[tuple[str, int], FrameFiles] = {}
    listed: dict[str, tuple[str, set[int]]] = {}  # split -> (its folder, its frame ids)
    for split in splits:
        data_dir = root / ("testing" if split == "test" else "training")
        depth = depth_dir if split in depth_splits else None
        folders = ["image_2", "calib"] + (["label_2"] if split != "test" else []) + ([depth] if depth else [])
        missing = [str(data_dir / f) for f in folders if not (data_dir / f).is_dir()]
        if missing:  # one line, not one per frame
            report.errors.append(f"{root}: split '{split}' needs the missing folders {', '.join(missing)}")
            continue
        try:
            ids = read_split(find_split_file(root, split))
        except (KittiFormatError, OSError) as err:
            report.errors.append(str(err))
            continue
        _warn_overlap(report, split, data_dir.name, set(ids), listed)
        listed[split] = (data_dir.name, set(ids))
        for frame_id in ids:
            key = (data_dir.name, frame_id)
            old = tasks.get(key)
            tasks[key] = FrameFiles(
                data_dir,
                frame_id,
                labels=split != "test",
                depth_dir=depth or (old.depth_dir if old else None),
                scans=scans,
            )
    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:  # file reads and cv2 release the GIL
        for frame_report in pool.map(check_frame, tasks.values()):
            report.merge(frame_report)
    return report


def _warn_overlap(
    report: CheckReport, split: str, folder: str, ids: set[int], listed: dict[str, tuple[str, set[int]]]
) -> None:
    """Warn about frames of ``split`` that an earlier split of the same folder lists too (a frame
    in both train and val is evaluated on what it was trained on)."""
    for other, (other_folder, other_ids) in listed.items():
        both = sorted(ids & other_ids) if folder == other_folder and other != split else []
        if both:
            report.warn(
                f"frames listed in both '{other}' and '{split}' (evaluated on what was trained on, "
                "unless one split contains the other on purpose, as trainval)",
                f"{both[0]:06d}",
                len(both),
            )


def format_report(report: CheckReport, *, max_errors: int = MAX_ERRORS_SHOWN) -> str:
    """The report as text: a summary line, the errors (up to ``max_errors``), the warnings."""
    warnings = sum(report.warnings.values())
    lines = [f"{report.frames} frames checked: {len(report.errors)} error(s), {warnings} warning(s)"]
    lines += [f"  {err}" for err in report.errors[:max_errors]]
    if len(report.errors) > max_errors:
        lines.append(f"  ... and {len(report.errors) - max_errors} more errors")
    lines += [
        f"  warning: {count} {kind} (e.g. {report.examples[kind]})" for kind, count in report.warnings.items()
    ]
    return "\n".join(lines)


def check_splits(cfg: Config, splits: Sequence[str], *, load_depth: bool | None = None) -> CheckReport:
    """``dataset.check_on_start``: check a config's splits; stop on errors, log the warnings.

    Args:
        cfg: the resolved config. splits: split names.
        load_depth: whether the run reads depth maps (as ``build_dataset``'s argument); None:
            :func:`lib.datasets.kitti.needs_depth_maps` per split.

    Raises:
        DatasetCheckError: every error found, one a line.
    """
    d = cfg.dataset
    depth_splits = [s for s in splits if (needs_depth_maps(cfg, s) if load_depth is None else load_depth)]
    report = check_dataset(
        d.root_dir, splits, depth_dir=d.depth_dir, depth_splits=depth_splits, workers=max(1, d.num_workers)
    )
    if report.errors:
        raise DatasetCheckError(f"{d.root_dir}: the dataset check found problems\n{format_report(report)}")
    _log_warnings(report)
    logger.info("dataset check: %d frames of %s are fine", report.frames, ", ".join(splits))
    return report


def _log_warnings(report: CheckReport) -> None:
    for kind, count in report.warnings.items():
        logger.warning("dataset check: %d %s (e.g. %s)", count, kind, report.examples[kind])


def warn_split_overlap(root: str | Path, splits: Sequence[str]) -> CheckReport:
    """Log the warning of :func:`check_dataset` for frames listed in two of ``splits``, reading
    only the split files (for a run that does not check those splits' frames). A split file that
    cannot be read is left to the dataset that reads it.

    Returns:
        The report (its warnings only).
    """
    report = CheckReport()
    listed: dict[str, tuple[str, set[int]]] = {}
    for split in dict.fromkeys(splits):
        folder = "testing" if split == "test" else "training"
        try:
            ids = set(read_split(find_split_file(Path(root), split)))
        except (KittiFormatError, OSError):
            continue
        _warn_overlap(report, split, folder, ids, listed)
        listed[split] = (folder, ids)
    _log_warnings(report)
    return report
