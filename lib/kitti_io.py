"""Read and write the KITTI 3D object files: label_2 / result lines, calib files, split lists.

Formats (KITTI object devkit ``readme.txt``):

* label line, 15 columns: ``type truncated occluded alpha x1 y1 x2 y2 h w l x y z rotation_y``;
  a result line appends a 16th column, the score. ``(x, y, z)`` is the bottom centre of the box
  in rectified camera coordinates (metres), ``h w l`` its height, width, length (metres).
* calib file: lines ``KEY: v1 v2 ...`` with P0..P3 (3x4), R0_rect (3x3), Tr_velo_to_cam and
  Tr_imu_to_velo (3x4).
* split file (``ImageSets/<split>.txt``): one frame id per line, e.g. ``000042``.

Every reader raises :class:`KittiFormatError` naming the file and the 1-based line number of
the first malformed line. Empty files are valid (a frame without objects).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lib.errors import UserError, writing
from lib.geometry import Calibration

LABEL_COLUMNS = 15
RESULT_COLUMNS = 16
DONT_CARE = "DontCare"  # KITTI's ignore regions: sizes -1, location -1000
# The object types of KITTI's label files (its devkit readme).
LABEL_TYPES = ("Car", "Van", "Truck", "Pedestrian", "Person_sitting", "Cyclist", "Tram", "Misc", DONT_CARE)
ALPHA_NOT_GIVEN = -10.0  # the alpha of a label without one (DontCare lines, hand-made labels)


class KittiFormatError(UserError, ValueError):
    """A KITTI file that does not follow the format; the message names file and line."""


@dataclass
class LabelTable:
    """The objects of one label or result file, column by column (N objects).

    Attributes:
        names: (N,) object class strings (``Car``, ``DontCare``, ...).
        truncated: (N,) float64 in [0, 1] (-1 for DontCare and detections).
        occluded: (N,) int64, 0..3 (-1 for DontCare and detections).
        alpha: (N,) float64 observation angle, radians.
        bbox: (N, 4) float64 image box x1, y1, x2, y2, pixels.
        dims: (N, 3) float64 h, w, l, metres (label column order).
        loc: (N, 3) float64 bottom centre x, y, z, rect camera, metres.
        rotation_y: (N,) float64 yaw around the camera y axis, radians.
        score: (N,) float64 detection score; None for a 15-column label file.
    """

    names: np.ndarray
    truncated: np.ndarray
    occluded: np.ndarray
    alpha: np.ndarray
    bbox: np.ndarray
    dims: np.ndarray
    loc: np.ndarray
    rotation_y: np.ndarray
    score: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.names)

    @classmethod
    def empty(cls, with_score: bool = False) -> LabelTable:
        z = np.zeros(0)
        return cls(
            names=np.zeros(0, dtype="<U16"),
            truncated=z,
            occluded=np.zeros(0, dtype=np.int64),
            alpha=z,
            bbox=np.zeros((0, 4)),
            dims=np.zeros((0, 3)),
            loc=np.zeros((0, 3)),
            rotation_y=z,
            score=z.copy() if with_score else None,
        )


@dataclass
class Object3d:
    """One KITTI object (a label line or a detection). Units as in :class:`LabelTable`.

    The field names are GUPNet's ``Object3d`` (``box2d``, ``h``/``w``/``l``, ``pos``, ``ry``;
    ``truncation`` for its misspelt ``trucation``), which the dataset, augmentation, targets and
    decoding code mirror line by line (docs/reference.md). :class:`LabelTable`, the evaluator's
    column view, keeps the devkit's names instead (``bbox``, ``dims``, ``loc``, ``rotation_y``,
    ``truncated``, ``occluded``), as the evaluator mirrors kitti-object-eval-python. The two meet
    only in this module (:func:`read_label` builds one from the other), so each part of the code
    uses the names of the reference it is compared with.
    """

    cls_type: str
    truncation: float
    occlusion: int
    alpha: float
    box2d: np.ndarray  # (4,) x1, y1, x2, y2, image pixels
    h: float
    w: float
    l: float  # noqa: E741  (KITTI's name for the length)
    pos: np.ndarray  # (3,) bottom centre, rect camera, metres
    ry: float
    score: float | None = None

    def to_line(self, score_decimals: int | None = None) -> str:
        """The KITTI line of this object (16 columns when it has a score).

        Geometry has the 2 decimals of KITTI's files; the score gets ``score_decimals``
        (``tester.score_decimals``, 6 in configs/base.yaml), required for a scored object: the
        evaluator ranks detections by it, and at 2 decimals every detection of a young model
        (GUPNet's score is heatmap peak x depth confidence, often < 0.01) ties at 0.00.
        """
        x1, y1, x2, y2 = (float(v) for v in self.box2d)
        x, y, z = (float(v) for v in self.pos)
        line = (
            f"{self.cls_type} {self.truncation:.2f} {int(self.occlusion)} {self.alpha:.2f} "
            f"{x1:.2f} {y1:.2f} {x2:.2f} {y2:.2f} {self.h:.2f} {self.w:.2f} {self.l:.2f} "
            f"{x:.2f} {y:.2f} {z:.2f} {self.ry:.2f}"
        )
        if self.score is not None:
            if score_decimals is None:
                raise ValueError(f"{self.cls_type} has a score: to_line needs score_decimals")
            line += f" {self.score:.{score_decimals}f}"
        return line


def parse_label_text(text: str, source: str | Path, with_score: bool | None = None) -> LabelTable:
    """Parse the text of a label (15 columns) or result (16 columns) file.

    Args:
        text: file contents.
        source: file name used in error messages.
        with_score: True to require 16 columns, False to require 15, None to accept either
            (all lines of one file must agree).

    Returns:
        The objects as a :class:`LabelTable` (``score`` is None for 15-column files).

    Raises:
        KittiFormatError: wrong column count, a non-numeric or non-finite value, mixed widths.
    """
    names: list[str] = []
    rows: list[list[float]] = []
    width = None if with_score is None else (RESULT_COLUMNS if with_score else LABEL_COLUMNS)
    for lineno, line in enumerate(text.splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if width is None and len(parts) in (LABEL_COLUMNS, RESULT_COLUMNS):
            width = len(parts)
        if len(parts) != width:
            expected = width if width is not None else f"{LABEL_COLUMNS} or {RESULT_COLUMNS}"
            raise KittiFormatError(f"{source}:{lineno}: expected {expected} columns, got {len(parts)}")
        try:
            values = [float(v) for v in parts[1:]]
        except ValueError as err:
            raise KittiFormatError(f"{source}:{lineno}: non-numeric field ({err})") from None
        if not all(map(math.isfinite, values)):
            raise KittiFormatError(f"{source}:{lineno}: NaN or infinite value in {line.strip()!r}")
        if width == LABEL_COLUMNS:
            check_label_values(parts[0], values, f"{source}:{lineno}")
        names.append(parts[0])
        rows.append(values)
    has_score = width == RESULT_COLUMNS if width is not None else bool(with_score)
    if not rows:
        return LabelTable.empty(with_score=has_score)
    a = np.asarray(rows, dtype=np.float64)
    return LabelTable(
        names=np.asarray(names),
        truncated=a[:, 0],
        occluded=a[:, 1].astype(np.int64),
        alpha=a[:, 2],
        bbox=a[:, 3:7],
        dims=a[:, 7:10],
        loc=a[:, 10:13],
        rotation_y=a[:, 13],
        score=a[:, 14] if has_score else None,
    )


ANGLE_SLACK = 0.01  # radians beyond pi accepted in labels (values are written with 2 decimals)


def check_label_values(name: str, values: list[float], where: str) -> None:
    """Refuse a ground-truth object whose values make no sense (``where`` is ``file:line``).

    A 3D size (h, w, l) <= 0 or a 2D box with x2 < x1 or y2 < y1: GUPNet's loader drops such a
    box without a word, and the evaluator scores it like any other. Truncation outside [0, 1],
    occlusion other than 0, 1, 2, 3 (the devkit's ranges): the difficulty of such an object is none
    of Easy, Moderate, Hard, so it would silently leave every evaluation; rotation_y and alpha
    outside [-pi, pi] (:data:`ANGLE_SLACK` for rounding; alpha may be :data:`ALPHA_NOT_GIVEN`)
    are no angles; a type outside :data:`LABEL_TYPES` (a misspelt class) would silently match no
    class. DontCare lines (-1 and -10 by KITTI's convention) are not checked beyond their type.
    Detections (16 columns) are not checked at all: a young model's values may be anything, and
    the evaluator must still score them.

    Raises:
        KittiFormatError: names the file, line and values.
    """
    if name not in LABEL_TYPES:
        raise KittiFormatError(f"{where}: unknown object type {name!r}; KITTI's are {', '.join(LABEL_TYPES)}")
    if name == DONT_CARE:
        return
    truncation, occlusion, alpha, ry = values[0], values[1], values[2], values[13]
    if not 0.0 <= truncation <= 1.0:
        raise KittiFormatError(f"{where}: {name} has truncation {truncation:g}; KITTI's is in [0, 1]")
    if occlusion not in (0, 1, 2, 3):
        raise KittiFormatError(f"{where}: {name} has occlusion {occlusion:g}; KITTI's is 0, 1, 2 or 3")
    if abs(ry) > math.pi + ANGLE_SLACK:
        raise KittiFormatError(f"{where}: {name} has rotation_y {ry:g}; KITTI's is in [-pi, pi]")
    if abs(alpha) > math.pi + ANGLE_SLACK and alpha != ALPHA_NOT_GIVEN:
        raise KittiFormatError(
            f"{where}: {name} has alpha {alpha:g}; KITTI's is in [-pi, pi] (or -10: not given)"
        )
    x1, y1, x2, y2 = values[3:7]
    h, w, l = values[7:10]  # noqa: E741  (KITTI's name for the length)
    if min(h, w, l) <= 0:
        raise KittiFormatError(f"{where}: {name} has a non-positive 3D size h w l = {h:g} {w:g} {l:g}")
    if x2 < x1 or y2 < y1:
        raise KittiFormatError(
            f"{where}: {name} has a 2D box with x2 < x1 or y2 < y1 ({x1:g} {y1:g} {x2:g} {y2:g})"
        )


def read_text(path: str | Path) -> str:
    """The text of a KITTI text file (label, result, calib, split list), decoded as UTF-8.

    Raises:
        FileNotFoundError (and other ``OSError``): as ``open``.
        KittiFormatError: the bytes are not UTF-8 text (names the first bad byte and its offset).
    """
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise KittiFormatError(
            f"{path}: not a text file: byte 0x{data[err.start]:02x} at offset {err.start} is not UTF-8 "
            "(KITTI files are plain ASCII text)"
        ) from None


def read_label_table(path: str | Path, with_score: bool | None = None) -> LabelTable:
    """Read a label_2 or result file into a :class:`LabelTable` (see :func:`parse_label_text`)."""
    path = Path(path)
    try:
        text = read_text(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"KITTI label/result file not found: {path}") from None
    return parse_label_text(text, path, with_score)


def read_label(path: str | Path) -> list[Object3d]:
    """Read a label_2 (or result) file into a list of :class:`Object3d`, in file order."""
    t = read_label_table(path)
    return [
        Object3d(
            cls_type=str(t.names[i]),
            truncation=float(t.truncated[i]),
            occlusion=int(t.occluded[i]),
            alpha=float(t.alpha[i]),
            box2d=t.bbox[i].copy(),
            h=float(t.dims[i, 0]),
            w=float(t.dims[i, 1]),
            l=float(t.dims[i, 2]),
            pos=t.loc[i].copy(),
            ry=float(t.rotation_y[i]),
            score=None if t.score is None else float(t.score[i]),
        )
        for i in range(len(t))
    ]


def write_label(path: str | Path, objects: list[Object3d], *, score_decimals: int | None = None) -> None:
    """Write objects as a KITTI label/result file (an empty file when there are none).

    ``score_decimals`` is required for detections (:meth:`Object3d.to_line`); result folders are
    written by :func:`lib.eval.kitti_format.write_results`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with writing(path):
        path.write_text("".join(obj.to_line(score_decimals) + "\n" for obj in objects))


_CALIB_SHAPES = {
    "P0": (3, 4),
    "P1": (3, 4),
    "P2": (3, 4),
    "P3": (3, 4),
    "R0_rect": (3, 3),
    "Tr_velo_to_cam": (3, 4),
    "Tr_imu_to_velo": (3, 4),
}


def read_calib(path: str | Path) -> Calibration:
    """Read a KITTI calib file (also the ``R_rect``/``Tr_velo_cam`` spellings of the raw set).

    Raises:
        FileNotFoundError: no such file.
        KittiFormatError: a malformed line, a wrong number of values, a missing matrix.
    """
    path = Path(path)
    try:
        text = read_text(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"KITTI calib file not found: {path}") from None
    aliases = {"R_rect": "R0_rect", "Tr_velo_cam": "Tr_velo_to_cam", "Tr_imu_velo": "Tr_imu_to_velo"}
    mats: dict[str, np.ndarray] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        key, sep, rest = line.partition(":")
        key = aliases.get(key.strip(), key.strip())
        if not sep:
            raise KittiFormatError(f"{path}:{lineno}: expected 'KEY: values', got {line.strip()!r}")
        if key not in _CALIB_SHAPES:
            continue
        try:
            values = np.array([float(v) for v in rest.split()], dtype=np.float64)
        except ValueError as err:
            raise KittiFormatError(f"{path}:{lineno}: non-numeric value in {key} ({err})") from None
        shape = _CALIB_SHAPES[key]
        if values.size != shape[0] * shape[1] or not np.isfinite(values).all():
            raise KittiFormatError(
                f"{path}:{lineno}: {key} needs {shape[0] * shape[1]} finite values, got {values.size}"
            )
        mats[key] = values.reshape(shape)
    missing = [k for k in ("P2", "R0_rect", "Tr_velo_to_cam") if k not in mats]
    if missing:
        raise KittiFormatError(f"{path}: missing calibration matrices {missing}")
    P = np.stack([mats.get(f"P{i}", mats["P2"]) for i in range(4)])
    return Calibration(
        P=P, R0=mats["R0_rect"], V2C=mats["Tr_velo_to_cam"], I2V=mats.get("Tr_imu_to_velo", np.eye(3, 4))
    )


def write_calib(path: str | Path, calib: Calibration) -> None:
    """Write a calib file in the KITTI object layout (12 / 9 values a line, ``%.12e``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [(f"P{i}", calib.P[i]) for i in range(4)]
    rows += [("R0_rect", calib.R0), ("Tr_velo_to_cam", calib.V2C), ("Tr_imu_to_velo", calib.I2V)]
    path.write_text("".join(f"{k}: " + " ".join(f"{v:.12e}" for v in m.ravel()) + "\n" for k, m in rows))


def read_split(path: str | Path) -> list[int]:
    """Read an ImageSets split file: frame ids (ints) in file order.

    Raises:
        FileNotFoundError: no such file.
        KittiFormatError: a line that is not a non-negative integer frame id, a frame id listed
            twice, or no frame id at all.
    """
    path = Path(path)
    try:
        text = read_text(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"KITTI split file not found: {path}") from None
    ids = []
    first_line: dict[int, int] = {}  # frame id -> line it is first listed on
    for lineno, line in enumerate(text.splitlines(), start=1):
        s = line.strip()
        if not s:
            continue
        if not s.isdigit():
            raise KittiFormatError(f"{path}:{lineno}: expected a frame id like 000042, got {s!r}")
        frame_id = int(s)
        if frame_id in first_line:
            raise KittiFormatError(
                f"{path}:{lineno}: frame {s} is listed twice (first on line {first_line[frame_id]}); "
                "it would be trained and scored twice"
            )
        first_line[frame_id] = lineno
        ids.append(frame_id)
    if not ids:
        raise KittiFormatError(f"{path}: empty split file (no frame ids)")
    return ids


def write_split(path: str | Path, frame_ids: list[int]) -> None:
    """Write an ImageSets split file (6-digit ids, one a line)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{i:06d}\n" for i in frame_ids))


# The standard KITTI 3D splits kept in the repository (train 3712, val 3769, trainval 7481,
# test 7518 frame ids; docs/data.md), used for a dataset root without ImageSets/.
STANDARD_SPLITS_DIR = Path(__file__).resolve().parents[1] / "data" / "splits"


def find_split_file(root: str | Path, split: str) -> Path:
    """The split list of ``split`` for the dataset at ``root``.

    ``root/ImageSets/<split>.txt`` when the dataset has an ``ImageSets/`` folder (its own lists
    win); otherwise the repository's ``data/splits/<split>.txt`` when that exists. When neither
    applies the ImageSets path is returned, so that the caller's "not found" names it.
    """
    image_sets = Path(root) / "ImageSets"
    standard = STANDARD_SPLITS_DIR / f"{split}.txt"
    if not image_sets.is_dir() and standard.is_file():
        return standard
    return image_sets / f"{split}.txt"


def read_velodyne(path: str | Path) -> np.ndarray:
    """Read a Velodyne scan: (N, 4) float32 x, y, z (metres, Velodyne frame), reflectance.

    Raises:
        FileNotFoundError: no such file.
        KittiFormatError: a file size that is not a whole number of 16-byte points.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"Velodyne scan not found: {path}") from None
    # Check the byte count, not the float count: np.fromfile drops a trailing partial float.
    if len(raw) % 16:
        raise KittiFormatError(f"{path}: size {len(raw)} bytes is not a multiple of 16 (x, y, z, r float32)")
    return np.frombuffer(raw, dtype=np.float32).reshape(-1, 4).copy()


DEPTH_PNG_SCALE = 256.0  # KITTI depth format: uint16 PNG, metres × 256, 0 = no depth
# A depth map smaller than its image is accepted only as the documented crop (docs/reference.md, 'The
# teacher's input'): the KITTI depth-completion maps are 1216 wide for 1224-1242 wide images, rows cut on top.
MAX_DEPTH_CROP_COLUMNS = 32


def write_depth_map(path: str | Path, depth: np.ndarray) -> None:
    """Write a (H, W) depth map in metres as a KITTI-format uint16 PNG (metres × 256).

    Depths are rounded to the nearest 1/256 m and clipped to the uint16 range (≈ 256 m).
    """
    import cv2

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    png = np.clip(np.round(np.asarray(depth, np.float64) * DEPTH_PNG_SCALE), 0, 65535).astype(np.uint16)
    if not cv2.imwrite(str(path), png):
        raise OSError(f"could not write depth map {path}")


def read_depth_map(path: str | Path, image_size: tuple[int, int] | None = None) -> np.ndarray:
    """Read a KITTI-format uint16 depth PNG as (H, W) float32 metres (0 = no depth).

    Args:
        path: the PNG (``training/depth_dense/NNNNNN.png``).
        image_size: (width, height) of the frame's image. A smaller map is one of the
            top-cropped maps MonoDistill / MonoSKD distribute: it is edge-padded as they do
            (docs/reference.md, 'The teacher's input'): the missing rows on top, (W − w) // 2 columns on the
            left and the rest on the right. Any other size is refused (:data:`MAX_DEPTH_CROP_COLUMNS`).

    Raises:
        FileNotFoundError: no such file. KittiFormatError: not a 16-bit single-channel PNG,
            larger than the image, or smaller than the documented crop allows.
    """
    import cv2

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"depth map not found: {path}")
    png = cv2.imread(str(path), cv2.IMREAD_ANYDEPTH)
    if png is None or png.ndim != 2 or png.dtype != np.uint16:
        raise KittiFormatError(f"{path}: expected a single-channel uint16 PNG (metres × 256)")
    depth = png.astype(np.float32) / DEPTH_PNG_SCALE
    if image_size is None:
        return depth
    width, height = image_size
    h, w = depth.shape
    if h > height or w > width:
        raise KittiFormatError(f"{path}: depth map {w}x{h} is larger than its image {width}x{height}")
    if width - w > MAX_DEPTH_CROP_COLUMNS or h < height / 2:
        raise KittiFormatError(
            f"{path}: depth map {w}x{h} does not fit its image {width}x{height}: a smaller map must be "
            f"a top crop (at most half the rows missing) at most {MAX_DEPTH_CROP_COLUMNS} columns narrower"
        )
    if (h, w) != (height, width):
        left = (width - w) // 2
        depth = np.pad(depth, ((height - h, 0), (left, width - w - left)), mode="edge")
    return depth
