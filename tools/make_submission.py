"""Check a folder of KITTI test-split results and zip it for the KITTI benchmark server.

    python tools/make_submission.py outputs/monommkd_trainval/results/test [--out monommkd.zip]

RESULTS_DIR holds one ``NNNNNN.txt`` per test frame, directly or in its ``data/`` folder (what
``tools/train_val.py -e`` writes for ``tester.split=test``). Before anything is written:

* every frame of the split (``data/splits/test.txt``: 7518 ids; ``--split`` for another list)
  has a file, and no file belongs to a frame outside it;
* every line has KITTI's 16 result columns (type, truncation, occlusion, alpha, 2D box, h w l,
  x y z, rotation_y, score) with finite numbers, and a KITTI object type.

The zip holds the ``.txt`` files at its top level, with no folder: the server reads
``000000.txt`` ... ``007517.txt`` from the archive root (GUPNet's README; a folder inside the
zip makes the server report that it cannot read ``000000.txt``). Upload it at
http://www.cvlibs.net/datasets/kitti/user_submit.php. The zip goes beside the folder of result
files unless ``--out``; never into that folder nor over the split file (lib/utils/outputs.py), and
an existing ``--out`` is kept unless ``--overwrite``.
"""

from __future__ import annotations

import argparse
import os
import sys
import zipfile
from collections import Counter
from pathlib import Path

from lib.errors import UserError, run_cli, writing
from lib.eval.kitti_format import frame_file_name, resolve_result_dir, result_frame_ids
from lib.kitti_io import LABEL_TYPES, STANDARD_SPLITS_DIR, parse_label_text, read_split, read_text
from lib.utils.outputs import check_outputs

SHOWN_IDS = 10  # frame ids named in an error message
SUBMIT_URL = "http://www.cvlibs.net/datasets/kitti/user_submit.php"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "results_dir", type=Path, help="folder of NNNNNN.txt result files (or their data/ parent)"
    )
    parser.add_argument(
        "--out", type=Path, help="zip to write (default: submission.zip beside the folder of result files)"
    )
    parser.add_argument(
        "--split",
        type=Path,
        default=STANDARD_SPLITS_DIR / "test.txt",
        help="frame ids the submission must cover",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    return parser.parse_args(argv)


def id_list(ids: list[int]) -> str:
    """The first :data:`SHOWN_IDS` ids as 6-digit names, with the count of the rest."""
    shown = " ".join(f"{i:06d}" for i in ids[:SHOWN_IDS])
    return shown + (f" ... ({len(ids) - SHOWN_IDS} more)" if len(ids) > SHOWN_IDS else "")


def check_frames(folder: Path, frame_ids: list[int], split: Path) -> None:
    """Exactly one result file per frame of the split."""
    have = result_frame_ids(folder)
    missing = sorted(set(frame_ids) - have)
    if missing:
        raise UserError(
            f"{folder}: {len(missing)} of the {len(frame_ids)} frames of {split} have no result file: "
            f"{id_list(missing)} (run tools/train_val.py -e with tester.split=test; every frame needs a "
            "file, an empty one when nothing was detected)"
        )
    extra = sorted(have - set(frame_ids))
    if extra:
        raise UserError(f"{folder}: result files of frames that are not in {split}: {id_list(extra)}")


def check_file(path: Path) -> Counter:
    """Validate one result file; returns its detections per class.

    Raises:
        KittiFormatError, UserError: the file and line of the first bad line.
    """
    text = read_text(path)
    table = parse_label_text(text, path, with_score=True)  # 16 finite columns on every line
    lines = [(n, line.split()[0]) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
    for lineno, name in lines:
        if name not in LABEL_TYPES:  # the server scores Car, Pedestrian and Cyclist, ignores the others
            raise UserError(
                f"{path}:{lineno}: unknown object type {name!r} (KITTI's: {', '.join(LABEL_TYPES)})"
            )
    return Counter(table.names.tolist())


def write_zip(out: Path, folder: Path, frame_ids: list[int]) -> None:
    """The files at the archive's top level, in frame order; written under a temporary name
    and renamed, so an interrupted run leaves no partial zip."""
    tmp = out.with_name(out.name + ".partial")
    try:
        with writing(out), zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for frame_id in sorted(frame_ids):
                name = frame_file_name(frame_id)
                archive.write(folder / name, arcname=name)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, out)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    folder = resolve_result_dir(args.results_dir)
    out = args.out if args.out is not None else folder.resolve().parent / "submission.zip"
    check_outputs({"--out": out}, {"RESULTS_DIR": folder, "--split": args.split})
    if out.is_dir():
        raise UserError(f"{out}: is a folder; --out names the zip file to write")
    if out.exists() and not args.overwrite:
        raise UserError(f"{out}: already exists; pass --overwrite to replace it or choose another --out")
    frame_ids = read_split(args.split)
    check_frames(folder, frame_ids, args.split)
    counts: Counter = Counter()
    empty = 0
    for frame_id in frame_ids:
        found = check_file(folder / frame_file_name(frame_id))
        counts += found
        empty += not found
    out.parent.mkdir(parents=True, exist_ok=True)
    write_zip(out, folder, frame_ids)
    per_class = ", ".join(f"{name} {n}" for name, n in sorted(counts.items())) or "none"
    print(f"{len(frame_ids)} frames checked ({empty} without detections); detections: {per_class}")
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, {len(frame_ids)} files at its top level)")
    print(f"upload it at {SUBMIT_URL}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
