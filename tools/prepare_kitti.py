"""Prepare a downloaded KITTI 3D object dataset for training, in one command.

    python tools/prepare_kitti.py --kitti-root /path/to/KITTI3D [--workers 8]

Steps, in order; nothing but the extracted archives is written until every check has passed:

0. extract the official archives found in ``--kitti-root`` (``data_object_image_2.zip``,
   ``data_object_calib.zip``, ``data_object_label_2.zip``, ``data_object_velodyne.zip``, as
   downloaded: they hold ``training/`` and ``testing/``): every file not there yet or of another
   size, each written whole or not at all, so an interrupted extraction resumes; the zips stay;
1. check the tree: each folder of the KITTI archives is there with one file per frame of the
   split lists (which archive to download or re-extract when not); one Velodyne scan is parsed,
   and every image is decoded and every calib and label parsed as training reads them
   (lib/datasets/dataset_check.py: empty or truncated images, labels out of KITTI's ranges);
2. link ``data/KITTI3D`` to the dataset (an existing link or folder that points elsewhere is
   left alone unless ``--replace-link``);
3. install the standard split lists (``data/splits/``) as ``ImageSets/`` when the dataset has
   none (an existing ``ImageSets/`` is kept);
4. make the teacher's depth maps ``training/depth_dense/`` from the scans with
   ``tools/make_depth_maps.py`` (worker processes, a progress bar; maps already there are
   kept, so an interrupted run resumes);
5. print a summary.

The layout, the formats and the depth maps are described in docs/data.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from lib.constants import KITTI_SPLIT_SIZES
from lib.errors import UserError, run_cli
from lib.kitti_io import (
    STANDARD_SPLITS_DIR,
    KittiFormatError,
    find_split_file,
    read_split,
    read_velodyne,
)
from lib.utils.files import atomic_path

REPO_ROOT = Path(__file__).resolve().parents[1]
SPLITS = ("train", "val", "trainval", "test")
DEPTH_DIR = "depth_dense"
SHOWN_IDS = 5  # missing frame ids named in a message

# The KITTI 3D object archives (http://www.cvlibs.net/datasets/kitti/eval_object.php) and what
# each one holds.
IMAGES = "data_object_image_2.zip (left colour images, 12 GB)"
CALIB = "data_object_calib.zip (camera calibration matrices, 16 MB)"
LABELS = "data_object_label_2.zip (training labels, 5 MB)"
VELODYNE = "data_object_velodyne.zip (Velodyne point clouds, 29 GB)"


ARCHIVES = tuple(a.split(" ", 1)[0] for a in (IMAGES, CALIB, LABELS, VELODYNE))  # file names
EXTRACT_CHUNK = 1 << 20  # bytes copied at a time out of an archive


@dataclass(frozen=True)
class Folder:
    """One folder of the dataset: where, the file suffix, and the archive that holds it."""

    part: str  # training | testing
    name: str
    suffix: str
    archive: str

    @property
    def rel(self) -> str:
        return f"{self.part}/{self.name}"


TRAINING = (
    Folder("training", "image_2", ".png", IMAGES),
    Folder("training", "calib", ".txt", CALIB),
    Folder("training", "label_2", ".txt", LABELS),
    Folder("training", "velodyne", ".bin", VELODYNE),
)
TESTING = (Folder("testing", "image_2", ".png", IMAGES), Folder("testing", "calib", ".txt", CALIB))


@dataclass
class Report:
    """What the checks found: problems stop the run, notes are printed in the summary."""

    root: Path
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)  # folder -> files in it
    splits: dict[str, list[int]] = field(default_factory=dict)  # split -> frame ids
    depth_complete: bool = False  # a depth map for every trainval frame already


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kitti-root", type=Path, required=True, help="the extracted KITTI 3D object folder")
    parser.add_argument(
        "--link",
        type=Path,
        default=REPO_ROOT / "data" / "KITTI3D",
        help="link to create (default data/KITTI3D)",
    )
    parser.add_argument(
        "--replace-link", action="store_true", help="re-point an existing link that points elsewhere"
    )
    parser.add_argument(
        "--workers", type=int, default=min(8, os.cpu_count() or 1), help="depth-map processes"
    )
    parser.add_argument("--skip-depth", action="store_true", help="do not make the depth maps")
    return parser.parse_args(argv)


def archive_members(archive: Path) -> list[zipfile.ZipInfo]:
    """The files of a KITTI archive, each checked to land inside the extraction folder.

    Raises:
        UserError: not a zip file, or a member with an absolute path or ``..`` (named).
    """
    try:
        with zipfile.ZipFile(archive) as zf:
            members = [m for m in zf.infolist() if not m.is_dir()]
    except zipfile.BadZipFile as err:
        raise UserError(f"{archive}: not a readable zip file ({err}); download it again") from err
    for member in members:
        parts = Path(member.filename).parts
        if member.filename.startswith(("/", "\\")) or ".." in parts:
            raise UserError(f"{archive}: member {member.filename!r} would land outside the folder")
    return members


def extract_archives(root: Path) -> list[str]:
    """Extract the official KITTI archives (:data:`ARCHIVES`) that lie in ``root`` into it.

    Only files that are absent or of another size are written, each through a temporary file
    renamed into place, so a rerun after an interruption continues. Returns one summary line
    per archive found (none when ``root`` holds no archive).
    """
    lines = []
    for name in ARCHIVES:
        archive = root / name
        if not archive.is_file():
            continue
        members = archive_members(archive)
        todo = [m for m in members if not _extracted(root / m.filename, m.file_size)]
        if todo:
            print(f"extracting {len(todo)} of the {len(members)} files of {archive}", flush=True)
            with zipfile.ZipFile(archive) as zf:
                for member in todo:
                    _extract_one(zf, member, root / member.filename)
        lines.append(f"{name}: {len(todo)} files extracted, {len(members) - len(todo)} there already")
    return lines


def _extracted(path: Path, size: int) -> bool:
    return path.is_file() and path.stat().st_size == size


def _extract_one(zf: zipfile.ZipFile, member: zipfile.ZipInfo, target: Path) -> None:
    """One archive member to ``target``, complete or not at all (temporary file, then rename).
    Not flushed to disk one by one: a member cut short by a crash has the wrong size, and the
    next run extracts it again."""
    with (
        atomic_path(target, suffix=".part", durable=False) as tmp,
        open(tmp, "wb") as out,
        zf.open(member) as src,
    ):
        shutil.copyfileobj(src, out, EXTRACT_CHUNK)


def files_in(folder: Path, suffix: str) -> set[str]:
    """Frame names (file stems) of the ``suffix`` files in ``folder``; empty when it is absent."""
    if not folder.is_dir():
        return set()
    with os.scandir(folder) as entries:
        return {e.name[: -len(suffix)] for e in entries if e.name.endswith(suffix)}


def missing_message(folder: Folder, root: Path, missing: list[int], listed: int, present: int) -> str:
    """One line: which frames are missing from a folder and which archive to extract."""
    where = root / folder.rel
    shown = " ".join(f"{i:06d}" for i in missing[:SHOWN_IDS]) + (" ..." if len(missing) > SHOWN_IDS else "")
    if present == 0:
        what = "is missing" if not where.is_dir() else "is empty"
        return f"{where}: {what}; download {folder.archive} and extract it into {root}"
    return (
        f"{where}: {len(missing)} of the {listed} listed frames have no {folder.suffix} file "
        f"({shown}); re-extract {folder.archive}"
    )


def read_splits(report: Report) -> None:
    """The split lists the checks use: the dataset's ImageSets/, else the standard ones."""
    for name in SPLITS:
        path = find_split_file(report.root, name)
        if path.is_file():
            try:
                report.splits[name] = read_split(path)
            except KittiFormatError as err:
                report.problems.append(
                    f"{err}; fix or delete the file (without ImageSets/ the standard lists apply)"
                )
    if "trainval" not in report.splits and {"train", "val"} <= report.splits.keys():
        report.splits["trainval"] = sorted({*report.splits["train"], *report.splits["val"]})
    if "trainval" not in report.splits:
        report.problems.append(
            f"{report.root / 'ImageSets'}: no trainval.txt (nor train.txt and val.txt); add the split lists "
            f"or remove ImageSets/ to use the standard ones ({STANDARD_SPLITS_DIR})"
        )
    for name, ids in report.splits.items():
        if len(ids) != KITTI_SPLIT_SIZES[name]:
            report.notes.append(
                f"split {name}: {len(ids)} frame ids (KITTI's standard one has {KITTI_SPLIT_SIZES[name]})"
            )


def check_folders(
    report: Report, folders: tuple[Folder, ...], ids: list[int], optional: tuple[str, ...] = ()
) -> None:
    """File counts, and one problem per folder that lacks frames of ``ids``."""
    for folder in folders:
        names = files_in(report.root / folder.rel, folder.suffix)
        report.counts[folder.rel] = len(names)
        missing = [i for i in ids if f"{i:06d}" not in names]
        if not missing:
            continue
        message = missing_message(folder, report.root, missing, len(ids), len(names))
        (report.notes if folder.rel in optional else report.problems).append(message)


def parse_one(report: Report, path: Path, reader, archive: str) -> None:
    """Parse one file with ``reader``; a failure is a problem naming the archive."""
    try:
        reader(path)
    except (KittiFormatError, OSError) as err:
        report.problems.append(f"{err}; re-extract {archive}")


def parse_samples(report: Report) -> None:
    """One Velodyne scan (the depth maps read them all; every other file: :func:`check_every_frame`)."""
    if report.problems:  # a folder is missing frames: say that first
        return
    scan = report.root / "training" / "velodyne" / f"{report.splits['trainval'][0]:06d}.bin"
    if scan.exists():  # absent only when every depth map is there (check_tree)
        parse_one(report, scan, read_velodyne, VELODYNE)


def check_testing(report: Report) -> None:
    """testing/ is only needed for a test-server submission: its absence is a note, a partly
    extracted one a problem."""
    if not (report.root / "testing").is_dir():
        report.notes.append(
            f"{report.root / 'testing'}: not found; needed only to submit to the KITTI server "
            f"(download {IMAGES} and {CALIB})"
        )
        return
    if "test" not in report.splits:
        report.notes.append(f"{report.root / 'ImageSets'}: no test.txt; testing/ is not checked")
        return
    check_folders(report, TESTING, report.splits["test"])


def check_tree(root: Path) -> Report:
    """Every check of the downloaded tree (docs/data.md); nothing is written."""
    report = Report(root)
    if not root.is_dir():
        report.problems.append(
            f"{root}: not found; download {IMAGES}, {CALIB}, {LABELS} and {VELODYNE} and extract them there"
        )
        return report
    read_splits(report)
    if report.problems:
        return report
    ids = report.splits["trainval"]
    depth_maps = files_in(root / "training" / DEPTH_DIR, ".png")
    report.depth_complete = all(f"{i:06d}" in depth_maps for i in ids)  # then no scan is needed
    check_folders(report, TRAINING, ids, optional=("training/velodyne",) if report.depth_complete else ())
    report.counts[f"training/{DEPTH_DIR}"] = len(depth_maps)
    check_testing(report)
    parse_samples(report)
    check_every_frame(report)
    return report


def check_every_frame(report: Report) -> None:
    """Decode every image and parse every calib and label of the splits, as training reads them
    (lib/datasets/dataset_check.py); its errors are problems, its warnings notes."""
    from lib.datasets.dataset_check import MAX_ERRORS_SHOWN, check_dataset  # loads torch: not for --help

    if report.problems:  # a folder is missing frames: say that first
        return
    splits = [s for s in ("train", "val", "trainval") if s in report.splits]
    splits = [s for s in splits if s != "trainval"] or splits  # trainval = train + val: read once
    if "test" in report.splits and (report.root / "testing" / "calib").is_dir():
        splits.append("test")
    checked = check_dataset(report.root, splits)
    archives = {f"/{folder.name}/": folder.archive for folder in TRAINING}
    for error in checked.errors[:MAX_ERRORS_SHOWN]:
        archive = next((a for name, a in archives.items() if name in error), None)
        report.problems.append(f"{error}; re-extract {archive}" if archive else error)
    if len(checked.errors) > MAX_ERRORS_SHOWN:
        report.problems.append(
            f"... and {len(checked.errors) - MAX_ERRORS_SHOWN} more files that cannot be read"
        )
    report.notes += [
        f"{count} {kind} (e.g. {checked.examples[kind]})" for kind, count in checked.warnings.items()
    ]


def link_problem(root: Path, link: Path, replace: bool) -> str | None:
    """Why ``link`` cannot be made to point at ``root`` (None when it can, or already does)."""
    if link.is_symlink():
        if link.resolve() == root.resolve() or replace:
            return None
        return f"{link}: already links to {os.readlink(link)}; pass --replace-link to point it at {root}"
    if link.exists() and link.resolve() != root.resolve():
        return (
            f"{link}: a folder or file is already there (not a link); move it away or pass --link OTHER_PATH"
        )
    return None


def make_link(root: Path, link: Path) -> str:
    """Point ``link`` at ``root`` (checked by :func:`link_problem`). Returns what was done."""
    target = root.resolve()
    if link.resolve() == target:
        return "kept" if link.is_symlink() else "is the dataset folder itself"
    if link.is_symlink():
        link.unlink()
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target, target_is_directory=True)
    return "created"


def install_splits(root: Path) -> str:
    """Copy the standard split lists to ``root/ImageSets`` unless the dataset has its own."""
    image_sets = root / "ImageSets"
    if image_sets.is_dir():
        return f"{image_sets} kept (the dataset's own lists)"
    tmp = root / "ImageSets.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for name in SPLITS:
        shutil.copyfile(STANDARD_SPLITS_DIR / f"{name}.txt", tmp / f"{name}.txt")
    tmp.rename(image_sets)  # all four lists or none
    return f"{image_sets} written from {STANDARD_SPLITS_DIR}"


def make_depth_maps(root: Path, workers: int) -> None:
    """``tools/make_depth_maps.py`` on trainval: its progress bar and summary go to the terminal."""
    command = [sys.executable, str(REPO_ROOT / "tools" / "make_depth_maps.py"), "--data-dir", str(root)]
    command += ["--split", "trainval", "--depth-dir", DEPTH_DIR, "--workers", str(workers)]
    if subprocess.run(command, check=False).returncode != 0:
        raise UserError(
            f"{root / 'training' / DEPTH_DIR}: some depth maps failed (frames named above); fix or "
            "re-extract their files and run this command again (finished maps are kept)"
        )


def print_summary(report: Report, steps: list[str]) -> None:
    """Folder counts, splits, the steps taken and the notes."""
    print(f"\nKITTI 3D object dataset at {report.root}")
    for rel, count in report.counts.items():
        print(f"  {rel:<22}{count:>6} files")
    print("  splits: " + ", ".join(f"{name} {len(ids)}" for name, ids in report.splits.items()))
    for step in steps:
        print(f"  {step}")
    for note in report.notes:
        print(f"  note: {note}")
    print("next: python tools/train_val.py --config configs/teacher.yaml")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.workers < 1:
        raise UserError(f"--workers: must be >= 1, got {args.workers}")
    root = args.kitti_root.expanduser().resolve()
    extracted = extract_archives(root) if root.is_dir() else []
    report = check_tree(root)
    problem = link_problem(root, args.link, args.replace_link)
    if problem:
        report.problems.append(problem)
    if report.problems:
        for line in report.problems:
            print(f"problem: {line}", file=sys.stderr)
        raise UserError(
            f"{root}: {len(report.problems)} problem(s) above; fix them and run this command again"
        )

    steps = [*extracted, f"link {args.link} -> {root}: {make_link(root, args.link)}", install_splits(root)]
    depth_dir = root / "training" / DEPTH_DIR
    if report.depth_complete or args.skip_depth:
        why = "all there" if report.depth_complete else "skipped (--skip-depth)"
        steps.append(f"depth maps: {why}; {report.counts[f'training/{DEPTH_DIR}']} in {depth_dir}")
    else:
        make_depth_maps(root, args.workers)
        report.counts[f"training/{DEPTH_DIR}"] = len(files_in(depth_dir, ".png"))
        steps.append(f"depth maps: made; one per trainval frame in {depth_dir}")
    print_summary(report, steps)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
