"""Where the error is: detections matched to ground truth, with recall and box errors per distance.

AP answers "how good", not "what is wrong". This module matches the detections of each frame to
its ground truth and summarises, per class and distance bin of the ground truth's depth (0-20,
20-40, 40+ m by default, plus ``all``):

* recall at 2D IoU 0.5 and at 3D IoU 0.5 / 0.7, at any score (the most AP can ever recover);
* for the 2D-matched pairs: depth error (absolute, relative to the true depth, signed bias
  ``z_det - z_gt``), lateral error ``|x_det - x_gt|``, size error (mean of ``|dh|, |dw|, |dl|``),
  heading error (raw, and modulo pi: a box turned by pi has the same 3D IoU);
* the scores of true and false positives (is the score ranking the problem?).

Matching is greedy per frame and class: detections in descending score order each take the
unmatched ground truth of their class with the largest overlap, if it is >= the threshold. Ground
truth of the class outside the difficulty may absorb a detection (it is then neither TP nor FP), as
in the KITTI protocol; an unmatched detection that overlaps a neighbour-class box (Van for Car,
Person_sitting for Pedestrian) with 2D IoU >= 0.5, or lies inside a DontCare region, is not a false
positive. Overlaps are the evaluator's (:func:`lib.eval.iou.frame_overlaps`: the devkit's image IoU
and rotated 3D IoU). Units: metres, radians.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise

import numpy as np
from numba import njit

from lib.constants import EVAL_CLASSES, EVAL_DIFFICULTIES
from lib.eval.iou import frame_overlaps
from lib.eval.kitti_eval import (
    MAX_OCCLUSION,
    MAX_TRUNCATION,
    MIN_HEIGHT,
    FrameObjects,
)
from lib.kitti_io import LabelTable

SCHEMA = "monommkd.error_analysis/1"
MATCH_IOU_2D = 0.5  # the 2D match that defines TP / FP and the pairs whose errors are measured
RECALL_IOU_3D = (0.5, 0.7)
DONTCARE_OVERLAP = 0.5  # intersection / detection area above which a detection is "in" a DontCare box
_NEIGHBOUR = {"car": "van", "pedestrian": "person_sitting"}
_IMAGE, _BOX3D = 0, 2  # rows of frame_overlaps' output


@njit(cache=True)
def _greedy_match(gt_offsets, det_offsets, pair_offsets, overlap, gt_mask, det_mask, det_order, min_overlap):
    """One-to-one greedy matching in every frame (detections by descending score).

    Each detection in ``det_mask``, in ``det_order``, takes the untaken ground truth in ``gt_mask`` of
    its frame with the largest ``overlap`` (the first in file order on ties), if that is >=
    ``min_overlap``. ``overlap`` (P,) is one row of :func:`frame_overlaps`' output.

    Returns:
        (D,) int64 global index of the ground truth matched to each detection, -1 for none.
    """
    match = np.full(det_mask.shape[0], -1, dtype=np.int64)
    taken = np.zeros(gt_mask.shape[0], dtype=np.bool_)
    for f in range(gt_offsets.shape[0] - 1):
        g0, g1, d0 = gt_offsets[f], gt_offsets[f + 1], det_offsets[f]
        for k in range(d0, det_offsets[f + 1]):
            j = det_order[k]
            if not det_mask[j]:
                continue
            best = -1
            best_overlap = -np.inf
            for i in range(g0, g1):
                ov = overlap[pair_offsets[f] + (j - d0) * (g1 - g0) + (i - g0)]
                if gt_mask[i] and not taken[i] and ov > best_overlap:
                    best = i
                    best_overlap = ov
            if best >= 0 and best_overlap >= min_overlap:
                match[j] = best
                taken[best] = True
    return match


@njit(cache=True)
def _max_overlap(gt_offsets, det_offsets, pair_offsets, overlap, gt_mask):
    """(D,) largest ``overlap`` of each detection with a ground truth in ``gt_mask`` of its frame
    (-inf when none)."""
    out = np.full(det_offsets[-1], -np.inf)
    for f in range(gt_offsets.shape[0] - 1):
        g0, g1, d0 = gt_offsets[f], gt_offsets[f + 1], det_offsets[f]
        for j in range(d0, det_offsets[f + 1]):
            for i in range(g0, g1):
                if gt_mask[i]:
                    out[j] = max(out[j], overlap[pair_offsets[f] + (j - d0) * (g1 - g0) + (i - g0)])
    return out


def _valid_gt(table: LabelTable, difficulty: str | None) -> np.ndarray:
    """(N,) bool: inside the KITTI difficulty filter (every object when ``difficulty`` is None)."""
    if difficulty is None:
        return np.ones(len(table), dtype=bool)
    level = EVAL_DIFFICULTIES.index(difficulty)
    height = table.bbox[:, 3] - table.bbox[:, 1]
    return (
        (table.occluded <= MAX_OCCLUSION[level])
        & (table.truncated <= MAX_TRUNCATION[level])
        & (height >= MIN_HEIGHT[level])
    )


def _match_class(
    gt: FrameObjects,
    det: FrameObjects,
    offsets: np.ndarray,
    overlaps: np.ndarray,
    name: str,
    valid: np.ndarray,
) -> dict[str, np.ndarray]:
    """Match one class in every frame.

    Args:
        gt, det: :class:`FrameObjects` of ground truth and detections.
        offsets: (F + 1,) pair offsets of ``overlaps`` (3, P) from :func:`frame_overlaps`.
        name: the class, lower case.
        valid: (G,) bool ground truth inside the difficulty.

    Returns:
        ``gt`` (V,) indices of the valid ground truth of the class; ``recalled_2d`` and
        ``recalled_3d@t`` (V,) bool; ``tp_gt`` / ``tp_det`` (M,) indices of the 2D-matched valid
        pairs; ``fp`` (K,) indices of false-positive detections.
    """
    gt_names = np.char.lower(gt.table.names.astype(str))
    det_names = np.char.lower(det.table.names.astype(str))
    score = det.table.score if det.table.score is not None else np.zeros(len(det.table))
    frame = np.repeat(np.arange(len(det)), np.diff(det.offsets))
    order = np.lexsort((-score, frame))  # (D,) by frame, then descending score (stable)
    frames = (gt.offsets, det.offsets, offsets)
    of_class, det_of_class = gt_names == name, det_names == name
    thresholds = {"2d": (_IMAGE, MATCH_IOU_2D)} | {f"3d@{t}": (_BOX3D, t) for t in RECALL_IOU_3D}
    counted = np.flatnonzero(of_class & valid)
    out = {"gt": counted}
    for key, (metric, min_overlap) in thresholds.items():
        match = _greedy_match(*frames, overlaps[metric], of_class, det_of_class, order, min_overlap)
        out["recalled_" + key] = np.isin(counted, match[match >= 0])
        if key == "2d":
            match_2d = match
    tp = np.flatnonzero(match_2d >= 0)
    tp = tp[valid[match_2d[tp]]]  # a match with ground truth outside the difficulty is neither TP nor FP
    neighbour = _max_overlap(*frames, overlaps[_IMAGE], gt_names == _NEIGHBOUR.get(name, ""))
    dontcare = _max_overlap(*frames, overlaps[_IMAGE], gt_names == "dontcare")  # intersection / det area
    ignored = (neighbour >= MATCH_IOU_2D) | (dontcare > DONTCARE_OVERLAP)
    out |= {
        "tp_gt": match_2d[tp],
        "tp_det": tp,
        "fp": np.flatnonzero(det_of_class & (match_2d < 0) & ~ignored),
    }
    return out


def _stats(values: np.ndarray, quantiles: dict[str, float]) -> dict[str, float | int | None]:
    """``{"count": n, name: quantile, ...}``; None quantiles when empty."""
    out: dict[str, float | int | None] = {"count": int(len(values))}
    for key, q in quantiles.items():
        out[key] = float(np.quantile(values, q)) if len(values) else None
    return out


_SPREAD = {"median": 0.5, "p90": 0.9}
_SCORE_SPREAD = {"p10": 0.1, "median": 0.5, "p90": 0.9}


def _pair_errors(gt: LabelTable, det: LabelTable) -> dict[str, dict]:
    """Error summaries of matched pairs (rows of ``gt`` and ``det`` aligned)."""
    dz = det.loc[:, 2] - gt.loc[:, 2]
    heading = np.abs((det.rotation_y - gt.rotation_y + math.pi) % (2 * math.pi) - math.pi)  # [0, pi]
    return {
        "depth_abs_m": _stats(np.abs(dz), _SPREAD),
        "depth_rel": _stats(np.abs(dz) / np.maximum(gt.loc[:, 2], 1e-6), _SPREAD),
        "depth_bias_m": _stats(dz, {"median": 0.5}) | {"mean": float(dz.mean()) if len(dz) else None},
        "lateral_abs_m": _stats(np.abs(det.loc[:, 0] - gt.loc[:, 0]), _SPREAD),
        "size_abs_m": _stats(np.abs(det.dims - gt.dims).mean(axis=1), _SPREAD),
        "heading_abs_rad": _stats(heading, _SPREAD),
        "heading_mod_pi_rad": _stats(np.minimum(heading, math.pi - heading), _SPREAD),
    }


def _bin_labels(edges: Sequence[float]) -> list[str]:
    return [f"{lo:g}+" if math.isinf(hi) else f"{lo:g}-{hi:g}" for lo, hi in pairwise(edges)]


def _rows(table: LabelTable, index: np.ndarray) -> LabelTable:
    return LabelTable(**{k: None if v is None else v[index] for k, v in vars(table).items()})


def _cell(gt: FrameObjects, det: FrameObjects, m: dict[str, np.ndarray], gt_in, det_in) -> dict:
    """One (class, distance bin) cell; ``gt_in`` / ``det_in`` select by the gt / detection depth."""
    keep = gt_in(m["gt"])
    n_gt = int(keep.sum())
    recall = {
        key.removeprefix("recalled_"): (float(m[key][keep].mean()) if n_gt else None)
        for key in m
        if key.startswith("recalled_")
    }
    pairs = gt_in(m["tp_gt"]) if len(m["tp_gt"]) else np.zeros(0, bool)
    tp_gt, tp_det = m["tp_gt"][pairs], m["tp_det"][pairs]
    fp = m["fp"][det_in(m["fp"])] if len(m["fp"]) else m["fp"]
    score = det.table.score if det.table.score is not None else np.zeros(len(det.table))
    return {
        "num_gt": n_gt,
        "num_tp": len(tp_gt),
        "num_fp": len(fp),
        "recall": {"2d@0.5" if k == "2d" else k: v for k, v in recall.items()},
        **_pair_errors(_rows(gt.table, tp_gt), _rows(det.table, tp_det)),
        "score_tp": _stats(score[tp_det], _SCORE_SPREAD),
        "score_fp": _stats(score[fp], _SCORE_SPREAD),
    }


def analyse_errors(
    gt_tables: Sequence[LabelTable] | FrameObjects,
    det_tables: Sequence[LabelTable] | FrameObjects,
    *,
    classes: Sequence[str] = EVAL_CLASSES,
    distance_bins: Sequence[float] = (0.0, 20.0, 40.0, math.inf),
    difficulty: str | None = "moderate",
) -> dict:
    """Match detections to ground truth and summarise the errors per class and distance bin.

    Args:
        gt_tables: ground truth of F frames (one :class:`LabelTable` per frame, as for
            :func:`lib.eval.kitti_eval.evaluate`), or a :class:`FrameObjects`.
        det_tables: detections of the same F frames, same order (tables with ``score``).
        classes: which classes to analyse (KITTI names).
        distance_bins: increasing bin edges on the depth z (metres); ground truth and its errors
            are binned by the ground truth's z, false positives by their own z.
        difficulty: "easy", "moderate" or "hard" (the KITTI filter deciding which ground truth
            counts), or None for every ground-truth object of the class.

    Returns:
        A JSON-serialisable dict: ``classes`` -> class -> bin label (``"0-20"``, ..., ``"all"``) ->
        cell with ``num_gt``, ``num_tp``, ``num_fp``, ``recall`` (``2d@0.5``, ``3d@0.5``,
        ``3d@0.7``; None without ground truth), error summaries (``count``, ``median``, ``p90``)
        and score summaries of TPs and FPs (:func:`lib.eval.report.format_error_table` prints it).
    """
    gt = gt_tables if isinstance(gt_tables, FrameObjects) else FrameObjects.from_tables(list(gt_tables))
    det = det_tables if isinstance(det_tables, FrameObjects) else FrameObjects.from_tables(list(det_tables))
    edges = [float(e) for e in distance_bins]
    _check_inputs(gt, det, edges, difficulty, distance_bins)
    g, d = gt.table, det.table
    dontcare = np.char.lower(g.names.astype(str)) == "dontcare"
    offsets, overlaps = frame_overlaps(
        d.bbox, _boxes3d(d), det.offsets, g.bbox, _boxes3d(g), gt.offsets, dontcare
    )
    valid = _valid_gt(g, difficulty)
    report_classes = {}
    for name in classes:
        matches = _match_class(gt, det, offsets, overlaps, name.lower(), valid)
        report_classes[name] = _class_cells(gt, det, matches, edges)
    return {
        "schema": SCHEMA,
        "difficulty": difficulty or "all",
        "match": f"greedy by descending score per frame and class, 2D IoU >= {MATCH_IOU_2D}",
        "distance_bins_m": _bin_labels(edges),
        "num_frames": len(gt),
        "classes": report_classes,
    }


def _check_inputs(
    gt: FrameObjects, det: FrameObjects, edges: list[float], difficulty: str | None, given: Sequence[float]
) -> None:
    """The ValueErrors of :func:`analyse_errors`' arguments (``given``: the bins as passed)."""
    if len(gt) != len(det):
        raise ValueError(f"ground truth has {len(gt)} frames but detections have {len(det)}")
    if len(edges) < 2 or any(b <= a for a, b in pairwise(edges)):
        raise ValueError(f"distance_bins must be at least two increasing edges, got {given}")
    if difficulty is not None and difficulty not in EVAL_DIFFICULTIES:
        raise ValueError(f"difficulty must be one of {EVAL_DIFFICULTIES} or None, got {difficulty!r}")


def _boxes3d(t: LabelTable) -> np.ndarray:
    """(N, 7) h w l x y z ry, the boxes of :func:`frame_overlaps`."""
    return np.concatenate([t.dims, t.loc, t.rotation_y[:, None]], axis=1)


def _class_cells(gt: FrameObjects, det: FrameObjects, m: dict[str, np.ndarray], edges: list[float]) -> dict:
    """The cells of one class (matches ``m`` of :func:`_match_class`): one per distance bin, then
    ``all``."""
    g, d = gt.table, det.table
    cells = {}
    for label, (lo, hi) in zip(_bin_labels(edges), pairwise(edges), strict=True):
        cells[label] = _cell(
            gt,
            det,
            m,
            lambda i, lo=lo, hi=hi: (g.loc[i, 2] >= lo) & (g.loc[i, 2] < hi),
            lambda j, lo=lo, hi=hi: (d.loc[j, 2] >= lo) & (d.loc[j, 2] < hi),
        )
    cells["all"] = _cell(gt, det, m, lambda i: np.ones(len(i), bool), lambda j: np.ones(len(j), bool))
    return cells
