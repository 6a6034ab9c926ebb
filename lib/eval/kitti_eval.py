"""KITTI 3D object detection evaluation: 2D bbox AP, AOS, BEV AP and 3D AP at AP|R40 and AP|R11.

This is our numba reimplementation of the official KITTI object devkit's offline evaluator
(``evaluate_object_3d_offline.cpp`` by Andreas Geiger et al., in its ``_ap40`` / ``_ap11`` variants
as copied in github.com/SuperMHP/GUPNet ``code/tools/kitti_eval``), written from the protocol; its
results equal the devkit's printed numbers (tested against golden values in
``tests/data/kitti_eval``). What it reproduces, per class (Car, Pedestrian, Cyclist) and
difficulty (easy, moderate, hard):

* Difficulty filters on the ground truth in double arithmetic: ignored when ``y2 - y1 < 40/25/25`` px,
  occlusion ``> 0/1/2`` or truncation ``> 0.15/0.30/0.50``. Detections lower than the minimum height
  (``|y2 - y1|``, any class) are "ignored detections": they may absorb a ground truth but are never
  TP or FP.
* Neighbour classes (Van for Car, Person_sitting for Pedestrian) and ignored ground truth absorb their
  match without counting it as TP; unmatched, they are no FN. Van detections are never evaluated.
* Matching in ground-truth file order: to collect the recall thresholds the highest-scoring unassigned
  detection above the overlap threshold wins, to count TP/FP the largest-overlap one does.
* DontCare: an unmatched detection whose overlap with a DontCare box (intersection / detection area)
  exceeds the class threshold is not a FP. For BEV and 3D the DontCare 3D box (location -1000,
  dims -1) is used, so nothing is removed there.
* Recall thresholds from the sorted TP scores (``getThresholds``, 41 sample points), precision and
  orientation similarity max-filtered from the right, AP summed in single precision and rounded to
  the 6 decimals the devkit prints. AOS is only computed when no detection has alpha = -10, and a
  class/metric is only evaluated when some detection of the class has a valid box for it.

All frames are concatenated into flat arrays and processed by the whole-dataset numba kernels of
:mod:`lib.eval.kitti_kernels` (frames in parallel); the API is a pure function of its inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lib.constants import EVAL_CLASSES, EVAL_DIFFICULTIES, EVAL_METRICS
from lib.eval.iou import frame_overlaps
from lib.eval.kitti_kernels import (
    NUM_SAMPLE_PTS,
    FrameArrays,
    frame_statistics,
    precision_curves,
    recall_thresholds,
    true_positive_scores,
)
from lib.kitti_io import LabelTable

AP_MODES = (40, 11)
SCHEMA_VERSION = 1

# Integer class codes (object names are compared case-insensitively, as the devkit's strcasecmp).
_CAR, _PEDESTRIAN, _CYCLIST, _VAN, _PERSON_SITTING, _DONTCARE, _OTHER = range(7)
_CLASS_CODES = {
    "car": _CAR,
    "pedestrian": _PEDESTRIAN,
    "cyclist": _CYCLIST,
    "van": _VAN,
    "person_sitting": _PERSON_SITTING,
    "dontcare": _DONTCARE,
}
_NEIGHBOUR = {_CAR: _VAN, _PEDESTRIAN: _PERSON_SITTING, _CYCLIST: -1}

# Difficulty filters (easy, moderate, hard): minimum 2D height (px), maximum occlusion level,
# maximum truncation.
MIN_HEIGHT = (40, 25, 25)
MAX_OCCLUSION = (0, 1, 2)
MAX_TRUNCATION = (0.15, 0.3, 0.5)

# Minimum overlap for a true positive, per metric index (image, BEV, 3D) and class.
MIN_OVERLAP = {
    "Car": (0.7, 0.7, 0.7),
    "Pedestrian": (0.5, 0.5, 0.5),
    "Cyclist": (0.5, 0.5, 0.5),
}
MIN_OVERLAP_LOOSE = {
    "Car": (0.7, 0.5, 0.5),
    "Pedestrian": (0.5, 0.25, 0.25),
    "Cyclist": (0.5, 0.25, 0.25),
}
_IMAGE, _BEV, _BOX3D = range(3)
_METRIC_INDEX = {"bbox": _IMAGE, "bev": _BEV, "3d": _BOX3D}

_INVALID_ALPHA = -10.0  # a detection with this alpha disables AOS for the whole evaluation
_INVALID_LOCATION = -1000.0  # x (BEV) or y (3D) of a detection without that box

_AP_DEFINITION = {
    40: "mean of interpolated precision at sample points 1..40 of 41 (index 0 skipped), x100",
    11: "mean of interpolated precision at sample points 0,4,8,...,40 of 41, x100",
}
_EVALUATOR = (
    "MonoMMKD lib.eval.kitti_eval (numba reimplementation of the KITTI devkit "
    "evaluate_object_3d_offline_ap40/_ap11.cpp)"
)


@dataclass(frozen=True)
class FrameObjects:
    """The objects of F frames as one columnar table (frames concatenated, file order kept).

    Attributes:
        table: all N objects (``score`` set for detections, None for ground truth).
        offsets: (F + 1,) int64; frame f owns rows ``offsets[f]:offsets[f + 1]``.
    """

    table: LabelTable
    offsets: np.ndarray

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @classmethod
    def from_tables(cls, tables: Sequence[LabelTable]) -> FrameObjects:
        """Concatenate per-frame tables; all must have scores, or none."""
        offsets = np.zeros(len(tables) + 1, dtype=np.int64)
        np.cumsum([len(t) for t in tables], out=offsets[1:])
        with_score = [t.score is not None for t in tables]
        if any(with_score) and not all(with_score):
            raise ValueError("either all frames must have detection scores or none")
        if not tables:
            return cls(LabelTable.empty(), offsets)

        def cat(field: str) -> np.ndarray:
            return np.concatenate([getattr(t, field) for t in tables])

        table = LabelTable(
            names=cat("names"),
            truncated=cat("truncated"),
            occluded=cat("occluded"),
            alpha=cat("alpha"),
            bbox=cat("bbox"),
            dims=cat("dims"),
            loc=cat("loc"),
            rotation_y=cat("rotation_y"),
            score=cat("score") if all(with_score) else None,
        )
        return cls(table, offsets)


def _as_frame_objects(annos: Sequence[LabelTable] | FrameObjects) -> FrameObjects:
    return annos if isinstance(annos, FrameObjects) else FrameObjects.from_tables(list(annos))


def _class_codes(names: np.ndarray) -> np.ndarray:
    """(N,) int64 class code of each object name (case-insensitive); unknown names -> _OTHER."""
    if len(names) == 0:
        return np.zeros(0, dtype=np.int64)
    unique, inverse = np.unique(names, return_inverse=True)
    lut = np.array([_CLASS_CODES.get(str(u).lower(), _OTHER) for u in unique], dtype=np.int64)
    return lut[inverse.reshape(-1)]


def _average_precision(curve: np.ndarray, ap_mode: int) -> float:
    """AP|R40 or AP|R11 of a 41-point curve, summed in float32 and rounded to 6 decimals (``%f``)."""
    points = range(1, NUM_SAMPLE_PTS) if ap_mode == 40 else range(0, NUM_SAMPLE_PTS, 4)
    total = np.float32(0.0)
    for i in points:
        total = np.float32(float(total) + float(curve[i]))  # C: float += double
    ap = total / np.float32(len(points)) * np.float32(100.0)
    return float(f"{float(ap):.6f}")


def _printed(values: np.ndarray) -> list[float]:
    """A curve as the devkit writes it (``%f``)."""
    return [float(f"{float(v):.6f}") for v in values]


def _map_curves(curves: dict, fn) -> dict:
    """Apply ``fn`` to every curve of a class -> metric -> difficulty -> curve nesting (None kept)."""
    return {
        name: {m: None if v is None else {k: fn(x) for k, x in v.items()} for m, v in metrics.items()}
        for name, metrics in curves.items()
    }


@dataclass(frozen=True)
class _Prepared:
    """Everything the class loop needs, computed once per evaluate() call."""

    gt: FrameObjects
    det: FrameObjects
    gt_codes: np.ndarray  # (G,) int64
    det_codes: np.ndarray  # (D,) int64
    gt_height: np.ndarray  # (G,) y2 - y1, px
    det_height: np.ndarray  # (D,) |y2 - y1|, px
    arrays: tuple[FrameArrays, ...]  # the kernels' inputs for the image, BEV and 3D overlaps


def _prepare(gt: FrameObjects, det: FrameObjects, device: str) -> _Prepared:
    g, d = gt.table, det.table
    gt_codes = _class_codes(g.names)
    gt_dontcare = gt_codes == _DONTCARE

    def boxes3d(t: LabelTable) -> np.ndarray:
        return np.concatenate([t.dims, t.loc, t.rotation_y[:, None]], axis=1)  # (N, 7) h w l x y z ry

    score = np.zeros(0) if d.score is None else np.ascontiguousarray(d.score, dtype=np.float64)
    pair_offsets, overlaps = frame_overlaps(
        d.bbox, boxes3d(d), det.offsets, g.bbox, boxes3d(g), gt.offsets, gt_dontcare, device=device
    )
    arrays = FrameArrays(
        gt_offsets=np.ascontiguousarray(gt.offsets, dtype=np.int64),
        det_offsets=np.ascontiguousarray(det.offsets, dtype=np.int64),
        pair_offsets=pair_offsets,
        overlap=overlaps[_IMAGE],
        gt_dontcare=gt_dontcare,
        gt_alpha=np.ascontiguousarray(g.alpha, dtype=np.float64),
        det_alpha=np.ascontiguousarray(d.alpha, dtype=np.float64),
        score=score,
        det_order=np.lexsort((-score, np.repeat(np.arange(len(det)), np.diff(det.offsets)))),
    )
    return _Prepared(
        gt=gt,
        det=det,
        gt_codes=gt_codes,
        det_codes=_class_codes(d.names),
        gt_height=g.bbox[:, 3] - g.bbox[:, 1],
        det_height=np.abs(d.bbox[:, 1] - d.bbox[:, 3]),
        arrays=tuple(arrays._replace(overlap=row) for row in overlaps),  # (3, P): image, BEV, 3D
    )


def _gt_status(p: _Prepared, code: int, difficulty: int) -> np.ndarray:
    """(G,) int8 cleanData status of the ground truth for one class and difficulty."""
    g = p.gt.table
    ignore = (
        (g.occluded > MAX_OCCLUSION[difficulty])
        | (g.truncated > MAX_TRUNCATION[difficulty])
        | (p.gt_height < MIN_HEIGHT[difficulty])
    )
    own = p.gt_codes == code
    status = np.full(len(g), -1, dtype=np.int8)
    status[p.gt_codes == _NEIGHBOUR[code]] = 1
    status[own & ignore] = 1
    status[own & ~ignore] = 0
    return status


def _det_status(p: _Prepared, code: int, difficulty: int) -> np.ndarray:
    """(D,) int8 cleanData status of the detections for one class and difficulty."""
    status = np.where(p.det_codes == code, 0, -1).astype(np.int8)
    status[p.det_height < MIN_HEIGHT[difficulty]] = 1
    return status


def _metric_curves(
    p: _Prepared,
    metric: int,
    gt_status: np.ndarray,
    det_status: np.ndarray,
    min_overlap: np.ndarray,
    compute_aos: bool,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The devkit's eval_class for one metric and K (class, difficulty) combinations.

    Args:
        gt_status, det_status: (K, G) / (K, D) int8 cleanData statuses.
        min_overlap: (K,) overlap thresholds.

    Returns:
        K pairs of (41,) precision and AOS curves.
    """
    arrays = p.arrays[metric]
    tp_score = true_positive_scores(arrays, gt_status, det_status, min_overlap)  # (K, G)
    per_combo = []
    for k in range(len(gt_status)):
        scores = np.sort(tp_score[k][~np.isnan(tp_score[k])])[::-1].copy()
        per_combo.append(recall_thresholds(scores, float(np.count_nonzero(gt_status[k] == 0))))
    num_thresholds = np.array([len(t) for t in per_combo], dtype=np.int64)
    thresholds = np.zeros((len(per_combo), max(num_thresholds)))  # (K, T), zero padded
    for k, t in enumerate(per_combo):
        thresholds[k, : len(t)] = t
    tp, fp, similarity = frame_statistics(
        arrays, gt_status, det_status, thresholds, num_thresholds, min_overlap, compute_aos
    )
    return [
        precision_curves(tp[k, :, :n], fp[k, :, :n], similarity[k, :, :n], compute_aos)
        for k, n in enumerate(num_thresholds)
    ]


def _check_inputs(
    gt: FrameObjects, det: FrameObjects, classes: Sequence[str], ap_modes: Sequence[int]
) -> None:
    if len(gt) != len(det):
        raise ValueError(f"ground truth has {len(gt)} frames but detections have {len(det)}")
    if det.table.score is None and len(det.table):
        raise ValueError("detections need a score column (16-column KITTI result lines)")
    unknown = [c for c in classes if c not in EVAL_CLASSES]
    if unknown or not classes:
        raise ValueError(f"unknown classes {unknown}; choose from {EVAL_CLASSES}")
    bad_modes = [m for m in ap_modes if m not in AP_MODES]
    if bad_modes:
        raise ValueError(f"unknown AP modes {bad_modes}; choose from {AP_MODES}")


def ap_ceiling(num_gt: int, ap_mode: int) -> float:
    """The largest AP (percent) the protocol can give with ``num_gt`` valid ground-truth objects.

    Below 41 objects every true positive becomes one recall threshold (``getThresholds``), so the
    precision curve is non-zero at sample points 0..num_gt-1 only: AP|R40 (points 1..40) is at
    most (N - 1) / 40, AP|R11 (points 0, 4, ..., 40) at most (floor((N - 1) / 4) + 1) / 11.
    """
    if num_gt <= 0:
        return 0.0
    if num_gt >= NUM_SAMPLE_PTS:
        return 100.0
    points = num_gt - 1 if ap_mode == 40 else (num_gt - 1) // 4 + 1
    return 100.0 * points / (NUM_SAMPLE_PTS - 1 if ap_mode == 40 else 11)


def _few_ground_truth_warnings(num_gt: dict[str, dict[str, int]], ap_mode: int) -> list[str]:
    """One line per class/difficulty with fewer than 41 valid objects, naming the AP ceiling."""
    return [
        f"{name} {level}: {n} ground-truth objects (< {NUM_SAMPLE_PTS}), so AP|R{ap_mode} cannot "
        f"exceed {ap_ceiling(n, ap_mode):.2f} (one recall point per true positive; devkit protocol)"
        for name, levels in num_gt.items()
        for level, n in levels.items()
        if n < NUM_SAMPLE_PTS
    ]


def _empty_curves(p: _Prepared, classes: Sequence[str], compute_aos: bool) -> dict[str, dict]:
    """class -> metric -> {} for every evaluated metric of a class, None for the others.

    A class is evaluated for a metric only if one of its detections has a valid box for it, and
    for AOS only if it is evaluated for bbox and no detection disables AOS.
    """
    d = p.det.table
    curves: dict[str, dict[str, dict[str, np.ndarray] | None]] = {}
    for name in classes:
        of_class = p.det_codes == _CLASS_CODES[name.lower()]
        has_bbox = bool(np.any(of_class & (d.bbox[:, 0] >= 0)))
        evaluated = {
            "bbox": has_bbox,
            "aos": has_bbox and compute_aos,
            "bev": np.any(of_class & (d.loc[:, 0] != _INVALID_LOCATION)),
            "3d": np.any(of_class & (d.loc[:, 1] != _INVALID_LOCATION)),
        }
        curves[name] = {metric: {} if evaluated[metric] else None for metric in EVAL_METRICS}
    return curves


def _class_curves(
    p: _Prepared, classes: Sequence[str], overlaps_by_class: dict, compute_aos: bool
) -> tuple[dict[str, dict], dict[str, dict[str, int]]]:
    """The 41-point curves (class -> metric -> difficulty) and the valid ground-truth counts."""
    # Every (class, difficulty) combination; cleanData does not depend on the metric.
    combos = [(name, level) for name in classes for level in range(len(EVAL_DIFFICULTIES))]
    gt_status = np.stack([_gt_status(p, _CLASS_CODES[n.lower()], level) for n, level in combos])  # (K, G)
    det_status = np.stack([_det_status(p, _CLASS_CODES[n.lower()], level) for n, level in combos])  # (K, D)
    curves = _empty_curves(p, classes, compute_aos)
    for metric_name, metric in _METRIC_INDEX.items():
        rows = [k for k, (name, _) in enumerate(combos) if curves[name][metric_name] is not None]
        if not rows:
            continue
        with_aos = compute_aos and metric == _IMAGE
        min_overlap = np.array([overlaps_by_class[combos[k][0]][metric] for k in rows])
        results = _metric_curves(p, metric, gt_status[rows], det_status[rows], min_overlap, with_aos)
        for k, (precision, aos) in zip(rows, results, strict=True):
            name, level = combos[k]
            curves[name][metric_name][EVAL_DIFFICULTIES[level]] = precision
            if with_aos:
                curves[name]["aos"][EVAL_DIFFICULTIES[level]] = aos
    num_gt: dict[str, dict[str, int]] = {name: {} for name in classes}
    for k, (name, level) in enumerate(combos):
        num_gt[name][EVAL_DIFFICULTIES[level]] = int(np.count_nonzero(gt_status[k] == 0))
    return curves, num_gt


def evaluate(
    gt_annos: Sequence[LabelTable] | FrameObjects,
    det_annos: Sequence[LabelTable] | FrameObjects,
    classes: Sequence[str] = EVAL_CLASSES,
    *,
    ap_modes: Sequence[int] = AP_MODES,
    loose: bool = False,
    device: str = "cpu",
) -> dict[str, dict]:
    """Evaluate detections against ground truth exactly as the KITTI devkit does.

    Args:
        gt_annos: ground truth of F frames, one :class:`LabelTable` per frame (15-column labels, incl.
            DontCare) or a :class:`FrameObjects`.
        det_annos: detections of the same F frames, in the same order (tables with ``score``); an
            empty table for a frame without detections.
        classes: subset of ("Car", "Pedestrian", "Cyclist").
        ap_modes: which of 40 (AP|R40) and 11 (AP|R11) to report.
        loose: use the loose overlaps (BEV/3D 0.5 for Car, 0.25 for Pedestrian/Cyclist) instead of
            the devkit's 0.7/0.5/0.5 for every metric.
        device: "cpu", "cuda" or "auto": where the BEV box intersections are computed (same results).

    Returns:
        ``{"ap40": report, "ap11": report}`` (the requested modes), each report following the schema of
        ``tests/data/kitti_eval`` (``ap`` and ``precision_curves`` nested class -> metric ->
        difficulty, None where the devkit outputs nothing; AP in percent, values rounded to the
        6 decimals the devkit prints), plus ``min_overlap_3d`` (the BEV/3D thresholds),
        ``num_ground_truth`` (valid objects per class and difficulty) and ``warnings`` (one line
        per class/difficulty whose few objects cap the AP, see :func:`ap_ceiling`).
    """
    gt = _as_frame_objects(gt_annos)
    det = _as_frame_objects(det_annos)
    _check_inputs(gt, det, classes, ap_modes)
    compute_aos = not bool(np.any(det.table.alpha == _INVALID_ALPHA))
    overlaps_by_class = MIN_OVERLAP_LOOSE if loose else MIN_OVERLAP
    curves, num_gt = _class_curves(_prepare(gt, det, device), classes, overlaps_by_class, compute_aos)
    return {
        f"ap{mode}": {
            "schema_version": SCHEMA_VERSION,
            "evaluator": _EVALUATOR,
            "ap_mode": mode,
            "ap_definition": _AP_DEFINITION[mode],
            "min_overlap": {c: overlaps_by_class[c][_IMAGE] for c in classes},
            "min_overlap_3d": {c: overlaps_by_class[c][_BOX3D] for c in classes},
            "frames_evaluated_rule": "every frame passed to evaluate()",
            "num_frames_listed": len(gt),
            "num_frames_evaluated": len(gt),
            "ap": _map_curves(curves, lambda curve, mode=mode: _average_precision(curve, mode)),
            "precision_curves": _map_curves(curves, _printed),
            "num_ground_truth": num_gt,
            "warnings": _few_ground_truth_warnings(num_gt, mode),
        }
        for mode in ap_modes
    }
