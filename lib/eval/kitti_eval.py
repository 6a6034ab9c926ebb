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

All frames are concatenated into flat arrays and processed by whole-dataset numba kernels (frames
in parallel); the API is a pure function of its inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numba import njit, prange

from lib.constants import EVAL_CLASSES
from lib.datasets.kitti_io import LabelTable
from lib.eval.iou import frame_overlaps

METRICS = ("bbox", "aos", "bev", "3d")
DIFFICULTIES = ("easy", "moderate", "hard")
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

NUM_SAMPLE_PTS = 41
_NO_DETECTION = -10000000.0  # the devkit's "no candidate yet" score
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


# ----------------------------------------------------------------------------------------------
# numba kernels. Status codes follow the devkit's cleanData: ground truth 0 = valid (counts in the
# recall denominator), 1 = ignored (neighbour class or outside the difficulty), -1 = other class;
# detection 0 = valid, 1 = ignored (too low), -1 = other class. One kernel call handles one metric
# for K (class, difficulty) combinations at once: statuses are (K, G) / (K, D), min_overlap (K,).
# Overlaps are the flat per-frame (detection x ground truth) blocks of lib.eval.iou.frame_overlaps.
# ----------------------------------------------------------------------------------------------


@njit(parallel=True, cache=True)
def _true_positive_scores(
    gt_offsets, det_offsets, pair_offsets, overlap, gt_status, det_status, score, min_overlap
):
    """Scores of the true positives when each ground truth takes its best-scoring match.

    The devkit's first computeStatistics pass (compute_fp = false): every detection counts,
    whatever its score. Returns (K, G) float64: the TP score of each valid ground truth, NaN if none.
    """
    num_combos, num_gt = gt_status.shape
    tp_score = np.full((num_combos, num_gt), np.nan)
    for f in prange(gt_offsets.shape[0] - 1):
        g0 = gt_offsets[f]
        d0 = det_offsets[f]
        n_gt = gt_offsets[f + 1] - g0
        assigned = np.empty(det_offsets[f + 1] - d0, dtype=np.bool_)
        for c in range(num_combos):
            assigned[:] = False
            for i in range(g0, gt_offsets[f + 1]):
                if gt_status[c, i] == -1:
                    continue
                best = -1
                best_score = _NO_DETECTION
                for j in range(d0, det_offsets[f + 1]):
                    if det_status[c, j] == -1 or assigned[j - d0]:
                        continue
                    ov = overlap[pair_offsets[f] + (j - d0) * n_gt + (i - g0)]
                    if ov > min_overlap[c] and score[j] > best_score:
                        best = j
                        best_score = score[j]
                if best == -1:
                    continue
                assigned[best - d0] = True
                if gt_status[c, i] == 0 and det_status[c, best] == 0:
                    tp_score[c, i] = score[best]
    return tp_score


@njit(cache=True)
def _recall_thresholds(scores, n_gt):
    """The devkit's getThresholds: the scores at which recall passes each of the 40 recall steps.

    Args:
        scores: (M,) TP scores sorted in descending order.
        n_gt: number of valid ground-truth objects.
    """
    out = np.empty(scores.shape[0])
    k = 0
    current_recall = 0.0
    n = scores.shape[0]
    for i in range(n):
        l_recall = (i + 1) / n_gt
        r_recall = (i + 2) / n_gt if i < n - 1 else l_recall
        if (r_recall - current_recall) < (current_recall - l_recall) and i < n - 1:
            continue
        out[k] = scores[i]
        k += 1
        current_recall += 1.0 / (NUM_SAMPLE_PTS - 1.0)
    return out[:k]


@njit(cache=True)
def _count_frame(
    g0,
    g1,
    d0,
    d1,
    pair_offset,
    overlap,
    gt_status,
    det_status,
    gt_dontcare,
    score,
    det_order,
    gt_alpha,
    det_alpha,
    thresholds,
    min_overlap,
    compute_aos,
    tp,
    fp,
    similarity,
):
    """One frame of the devkit's second computeStatistics pass, at every threshold.

    Ground truth g0:g1 and detections d0:d1 of the frame; ``gt_status`` / ``det_status`` are (G,) / (D,)
    for one (class, difficulty); thresholds (T,) descending. Writes tp, fp, similarity (T,): the sum
    of (1 + cos(delta alpha)) / 2 over the TPs, left at -1 when the frame has neither TP nor FP.
    """
    n_gt = g1 - g0
    n_det = d1 - d0
    dets = np.empty(n_det, dtype=np.int64)  # relevant detections (status 0 or 1), file order
    n_dets = 0
    for j in range(d0, d1):
        if det_status[j] != -1:
            dets[n_dets] = j
            n_dets += 1
    # Candidate lists in file order (CSR): the relevant detections above the overlap threshold of
    # each relevant ground truth (rows 0..n_rows_gt-1), then the valid ones of each DontCare region.
    rows = np.empty(n_gt, dtype=np.int64)
    row_start = np.zeros(n_gt + 1, dtype=np.int64)
    cand_det = np.empty(n_gt * n_dets, dtype=np.int64)
    cand_ov = np.empty(n_gt * n_dets)
    n_rows = 0
    n_rows_gt = 0
    n_cand = 0
    for dontcare_pass in range(2):
        if dontcare_pass:
            n_rows_gt = n_rows
        for i in range(g0, g1):
            if not (gt_dontcare[i] if dontcare_pass else gt_status[i] != -1):
                continue
            for k in range(n_dets):
                j = dets[k]
                if dontcare_pass and det_status[j] != 0:
                    continue
                ov = overlap[pair_offset + (j - d0) * n_gt + (i - g0)]
                if ov > min_overlap:
                    cand_det[n_cand] = j
                    cand_ov[n_cand] = ov
                    n_cand += 1
            rows[n_rows] = i
            n_rows += 1
            row_start[n_rows] = n_cand
    # Thresholds are descending, so the kept detections (score >= threshold) only grow: walk them
    # in score order, and copy the previous counts while the kept set does not change.
    assigned = np.zeros(n_det, dtype=np.bool_)
    next_in_order = d0
    kept = 0
    valid_kept = 0
    prev_kept = -1
    for t in range(thresholds.shape[0]):
        thr = thresholds[t]
        while next_in_order < d1 and score[det_order[next_in_order]] >= thr:
            j = det_order[next_in_order]
            next_in_order += 1
            if det_status[j] != -1:
                kept += 1
            if det_status[j] == 0:
                valid_kept += 1
        if kept == prev_kept:
            tp[t] = tp[t - 1]
            fp[t] = fp[t - 1]
            similarity[t] = similarity[t - 1]
            continue
        prev_kept = kept
        assigned[:] = False
        n_tp = 0
        n_fp = valid_kept
        sim = 0.0
        for r in range(n_rows_gt):
            i = rows[r]
            det_idx = -1
            max_overlap = 0.0
            assigned_ignored = False
            for c in range(row_start[r], row_start[r + 1]):
                j = cand_det[c]
                if assigned[j - d0] or score[j] < thr:
                    continue
                if det_status[j] == 0 and (cand_ov[c] > max_overlap or assigned_ignored):
                    max_overlap = cand_ov[c]
                    det_idx = j
                    assigned_ignored = False
                elif det_status[j] == 1 and det_idx == -1:
                    det_idx = j
                    assigned_ignored = True
            if det_idx == -1:
                continue
            assigned[det_idx - d0] = True
            if det_status[det_idx] == 0:
                n_fp -= 1  # counted in valid_kept, but assigned
            if gt_status[i] == 0 and det_status[det_idx] == 0:
                n_tp += 1
                if compute_aos:
                    sim += (1.0 + np.cos(gt_alpha[i] - det_alpha[det_idx])) / 2.0
        # Unassigned valid detections inside a DontCare region are not false positives.
        for r in range(n_rows_gt, n_rows):
            for c in range(row_start[r], row_start[r + 1]):
                j = cand_det[c]
                if not assigned[j - d0] and score[j] >= thr:
                    assigned[j - d0] = True
                    n_fp -= 1
        tp[t] = n_tp
        fp[t] = n_fp
        if compute_aos and (n_tp > 0 or n_fp > 0):
            similarity[t] = sim


@njit(parallel=True, cache=True)
def _frame_statistics(
    gt_offsets,
    det_offsets,
    pair_offsets,
    overlap,
    gt_status,
    det_status,
    gt_dontcare,
    score,
    det_order,
    gt_alpha,
    det_alpha,
    thresholds,
    num_thresholds,
    min_overlap,
    compute_aos,
):
    """TP, FP and orientation similarity of every frame at every recall threshold (frames in parallel).

    The devkit's second computeStatistics pass (compute_fp = true): detections scoring below the
    threshold are dropped, each ground truth takes the unassigned valid detection of largest overlap
    (an ignored detection only while no valid one qualifies), then unassigned valid detections inside
    DontCare regions are removed from the FP. False negatives do not enter the AP: not counted.

    Args:
        thresholds: (K, T) descending recall thresholds of each combination, the first
            ``num_thresholds[k]`` valid.
        det_order: (D,) detection indices sorted by descending score within each frame.

    Returns:
        tp, fp: (K, F, T) int64; similarity: (K, F, T) float64, -1 where a frame has neither TP nor FP
        (it then does not contribute, as in the devkit).
    """
    num_combos = gt_status.shape[0]
    num_frames = gt_offsets.shape[0] - 1
    shape = (num_combos, num_frames, thresholds.shape[1])
    tp = np.zeros(shape, dtype=np.int64)
    fp = np.zeros(shape, dtype=np.int64)
    similarity = np.full(shape, -1.0)
    for f in prange(num_frames):
        for c in range(num_combos):
            t = num_thresholds[c]
            _count_frame(
                gt_offsets[f],
                gt_offsets[f + 1],
                det_offsets[f],
                det_offsets[f + 1],
                pair_offsets[f],
                overlap,
                gt_status[c],
                det_status[c],
                gt_dontcare,
                score,
                det_order,
                gt_alpha,
                det_alpha,
                thresholds[c, :t],
                min_overlap[c],
                compute_aos,
                tp[c, f, :t],
                fp[c, f, :t],
                similarity[c, f, :t],
            )
    return tp, fp, similarity


@njit(cache=True, error_model="numpy")
def _precision_curves(tp, fp, similarity, compute_aos):
    """Sum the frames (in frame order) and build the max-filtered 41-point precision and AOS curves.

    Args:
        tp, fp, similarity: (F, T) counts of one combination at its T thresholds.

    Returns:
        precision, aos: (41,) float64; entries past the last threshold stay 0. A 0/0 entry is NaN and,
        like std::max_element in the devkit, stays NaN through the filter.
    """
    num_frames, num_thr = tp.shape
    num_thr = min(num_thr, NUM_SAMPLE_PTS)  # getThresholds yields at most 41 (the devkit's array size)
    precision = np.zeros(NUM_SAMPLE_PTS)
    aos = np.zeros(NUM_SAMPLE_PTS)
    for t in range(num_thr):
        n_tp = 0
        n_fp = 0
        sim = 0.0
        for f in range(num_frames):
            n_tp += tp[f, t]
            n_fp += fp[f, t]
            if similarity[f, t] != -1.0:
                sim += similarity[f, t]
        precision[t] = float(n_tp) / float(n_tp + n_fp)
        if compute_aos:
            aos[t] = sim / float(n_tp + n_fp)
    for curve in (precision, aos):
        running = -np.inf
        for t in range(num_thr - 1, -1, -1):
            if not np.isnan(curve[t]):
                running = max(running, curve[t])
                curve[t] = running
    return precision, aos


# ----------------------------------------------------------------------------------------------
# Python driver
# ----------------------------------------------------------------------------------------------


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
    gt_dontcare: np.ndarray  # (G,) bool
    gt_height: np.ndarray  # (G,) y2 - y1, px
    det_height: np.ndarray  # (D,) |y2 - y1|, px
    gt_alpha: np.ndarray  # (G,) contiguous float64 copies for the kernels
    det_alpha: np.ndarray  # (D,)
    det_score: np.ndarray  # (D,)
    det_order: np.ndarray  # (D,) int64 detection indices by descending score within each frame
    gt_offsets: np.ndarray  # (F + 1,) int64
    det_offsets: np.ndarray  # (F + 1,) int64
    pair_offsets: np.ndarray  # (F + 1,) int64
    overlaps: np.ndarray  # (3, P) image / BEV / 3D


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
    return _Prepared(
        gt=gt,
        det=det,
        gt_codes=gt_codes,
        det_codes=_class_codes(d.names),
        gt_dontcare=gt_dontcare,
        gt_height=g.bbox[:, 3] - g.bbox[:, 1],
        det_height=np.abs(d.bbox[:, 1] - d.bbox[:, 3]),
        gt_alpha=np.ascontiguousarray(g.alpha, dtype=np.float64),
        det_alpha=np.ascontiguousarray(d.alpha, dtype=np.float64),
        det_score=score,
        det_order=np.lexsort((-score, np.repeat(np.arange(len(det)), np.diff(det.offsets)))),
        gt_offsets=np.ascontiguousarray(gt.offsets, dtype=np.int64),
        det_offsets=np.ascontiguousarray(det.offsets, dtype=np.int64),
        pair_offsets=pair_offsets,
        overlaps=overlaps,
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
    overlap = p.overlaps[metric]
    args = (p.gt_offsets, p.det_offsets, p.pair_offsets, overlap, gt_status, det_status)
    tp_score = _true_positive_scores(*args, p.det_score, min_overlap)  # (K, G)
    per_combo = []
    for k in range(len(gt_status)):
        scores = np.sort(tp_score[k][~np.isnan(tp_score[k])])[::-1].copy()
        per_combo.append(_recall_thresholds(scores, float(np.count_nonzero(gt_status[k] == 0))))
    num_thresholds = np.array([len(t) for t in per_combo], dtype=np.int64)
    thresholds = np.zeros((len(per_combo), max(num_thresholds)))  # (K, T), zero padded
    for k, t in enumerate(per_combo):
        thresholds[k, : len(t)] = t
    tp, fp, similarity = _frame_statistics(
        *args,
        p.gt_dontcare,
        p.det_score,
        p.det_order,
        p.gt_alpha,
        p.det_alpha,
        thresholds,
        num_thresholds,
        min_overlap,
        compute_aos,
    )
    return [
        _precision_curves(tp[k, :, :n], fp[k, :, :n], similarity[k, :, :n], compute_aos)
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
    p = _prepare(gt, det, device)
    d = det.table
    compute_aos = not bool(np.any(d.alpha == _INVALID_ALPHA))
    overlaps_by_class = MIN_OVERLAP_LOOSE if loose else MIN_OVERLAP

    # Every (class, difficulty) combination; cleanData does not depend on the metric.
    combos = [(name, level) for name in classes for level in range(len(DIFFICULTIES))]
    gt_status = np.stack([_gt_status(p, _CLASS_CODES[n.lower()], level) for n, level in combos])  # (K, G)
    det_status = np.stack([_det_status(p, _CLASS_CODES[n.lower()], level) for n, level in combos])  # (K, D)

    curves: dict[str, dict[str, dict[str, np.ndarray] | None]] = {
        name: dict.fromkeys(METRICS) for name in classes
    }
    for name in classes:
        of_class = p.det_codes == _CLASS_CODES[name.lower()]
        # A class is evaluated for a metric only if one of its detections has a valid box for it.
        evaluated = {
            "bbox": np.any(of_class & (d.bbox[:, 0] >= 0)),
            "bev": np.any(of_class & (d.loc[:, 0] != _INVALID_LOCATION)),
            "3d": np.any(of_class & (d.loc[:, 1] != _INVALID_LOCATION)),
        }
        for metric_name, flag in evaluated.items():
            if flag:
                curves[name][metric_name] = {}
        if evaluated["bbox"] and compute_aos:
            curves[name]["aos"] = {}
    for metric_name, metric in _METRIC_INDEX.items():
        rows = [k for k, (name, _) in enumerate(combos) if curves[name][metric_name] is not None]
        if not rows:
            continue
        with_aos = compute_aos and metric == _IMAGE
        min_overlap = np.array([overlaps_by_class[combos[k][0]][metric] for k in rows])
        results = _metric_curves(p, metric, gt_status[rows], det_status[rows], min_overlap, with_aos)
        for k, (precision, aos) in zip(rows, results, strict=True):
            name, level = combos[k]
            curves[name][metric_name][DIFFICULTIES[level]] = precision
            if with_aos:
                curves[name]["aos"][DIFFICULTIES[level]] = aos

    num_frames = len(gt)
    num_gt: dict[str, dict[str, int]] = {name: {} for name in classes}
    for k, (name, level) in enumerate(combos):
        num_gt[name][DIFFICULTIES[level]] = int(np.count_nonzero(gt_status[k] == 0))
    reports = {}
    for mode in ap_modes:
        reports[f"ap{mode}"] = {
            "schema_version": SCHEMA_VERSION,
            "evaluator": _EVALUATOR,
            "ap_mode": mode,
            "ap_definition": _AP_DEFINITION[mode],
            "min_overlap": {c: overlaps_by_class[c][_IMAGE] for c in classes},
            "min_overlap_3d": {c: overlaps_by_class[c][_BOX3D] for c in classes},
            "frames_evaluated_rule": "every frame passed to evaluate()",
            "num_frames_listed": num_frames,
            "num_frames_evaluated": num_frames,
            "ap": _map_curves(curves, lambda curve, mode=mode: _average_precision(curve, mode)),
            "precision_curves": _map_curves(curves, _printed),
            "num_ground_truth": num_gt,
            "warnings": _few_ground_truth_warnings(num_gt, mode),
        }
    return reports
