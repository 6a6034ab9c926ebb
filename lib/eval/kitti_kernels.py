"""The numba kernels of the KITTI evaluator (:mod:`lib.eval.kitti_eval`): the devkit's matching passes.

``evaluate_object_3d_offline.cpp`` (``computeStatistics``, ``getThresholds``, ``eval_class``) written
from the protocol for whole datasets: all frames are concatenated into flat arrays (one
:class:`FrameArrays`) and the per-frame loops run in parallel over frames.

Status codes follow the devkit's cleanData: ground truth 0 = valid (counts in the recall
denominator), 1 = ignored (neighbour class or outside the difficulty), -1 = other class; detection
0 = valid, 1 = ignored (too low), -1 = other class. One kernel call handles one metric for K
(class, difficulty) combinations at once: statuses are (K, G) / (K, D), min_overlap (K,). Overlaps
are the flat per-frame (detection x ground truth) blocks of :func:`lib.eval.iou.frame_overlaps`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit, prange

NUM_SAMPLE_PTS = 41  # recall sample points of the precision curve (the devkit's array size)
_NO_DETECTION = -10000000.0  # the devkit's "no candidate yet" score


class FrameArrays(NamedTuple):
    """The objects of F frames as the kernels read them: contiguous flat arrays, frames concatenated.

    Ground truth ``gt_offsets[f]:gt_offsets[f + 1]`` and detections ``det_offsets[f]:det_offsets[f + 1]``
    belong to frame f; the overlap of its j-th detection and i-th ground truth is
    ``overlap[pair_offsets[f] + j * n_gt_f + i]``.
    """

    gt_offsets: np.ndarray  # (F + 1,) int64
    det_offsets: np.ndarray  # (F + 1,) int64
    pair_offsets: np.ndarray  # (F + 1,) int64
    overlap: np.ndarray  # (P,) float64, one metric (image, BEV or 3D)
    gt_dontcare: np.ndarray  # (G,) bool
    gt_alpha: np.ndarray  # (G,) float64, rad
    det_alpha: np.ndarray  # (D,) float64, rad
    score: np.ndarray  # (D,) float64
    det_order: np.ndarray  # (D,) int64 detection indices by descending score within each frame


@njit(parallel=True, cache=True)
def true_positive_scores(a, gt_status, det_status, min_overlap):
    """Scores of the true positives when each ground truth takes its best-scoring match.

    The devkit's first computeStatistics pass (compute_fp = false): every detection counts,
    whatever its score. ``a`` is a :class:`FrameArrays`. Returns (K, G) float64: the TP score of
    each valid ground truth, NaN if none.
    """
    num_combos, num_gt = gt_status.shape
    tp_score = np.full((num_combos, num_gt), np.nan)
    for f in prange(a.gt_offsets.shape[0] - 1):
        g0 = a.gt_offsets[f]
        d0 = a.det_offsets[f]
        n_gt = a.gt_offsets[f + 1] - g0
        assigned = np.empty(a.det_offsets[f + 1] - d0, dtype=np.bool_)
        for c in range(num_combos):
            assigned[:] = False
            for i in range(g0, a.gt_offsets[f + 1]):
                if gt_status[c, i] == -1:
                    continue
                best = -1
                best_score = _NO_DETECTION
                for j in range(d0, a.det_offsets[f + 1]):
                    if det_status[c, j] == -1 or assigned[j - d0]:
                        continue
                    ov = a.overlap[a.pair_offsets[f] + (j - d0) * n_gt + (i - g0)]
                    if ov > min_overlap[c] and a.score[j] > best_score:
                        best = j
                        best_score = a.score[j]
                if best == -1:
                    continue
                assigned[best - d0] = True
                if gt_status[c, i] == 0 and det_status[c, best] == 0:
                    tp_score[c, i] = a.score[best]
    return tp_score


@njit(cache=True)
def recall_thresholds(scores, n_gt):
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

    Ground truth g0:g1 and detections d0:d1 of the frame, the :class:`FrameArrays` fields as flat
    arguments; ``gt_status`` / ``det_status`` are (G,) / (D,) for one (class, difficulty);
    thresholds (T,) descending. Writes tp, fp, similarity (T,): the sum of (1 + cos(delta alpha)) / 2
    over the TPs, left at -1 when the frame has neither TP nor FP.

    A numba kernel kept in one piece and with flat arguments: splitting out the candidate lists
    made the evaluator ~10 % slower, and passing it the FrameArrays struct (or tuples of the
    arrays) cost ~2-3 s more compilation on every cold start at the same run time.
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
def frame_statistics(a, gt_status, det_status, thresholds, num_thresholds, min_overlap, compute_aos):
    """TP, FP and orientation similarity of every frame at every recall threshold (frames in parallel).

    The devkit's second computeStatistics pass (compute_fp = true): detections scoring below the
    threshold are dropped, each ground truth takes the unassigned valid detection of largest overlap
    (an ignored detection only while no valid one qualifies), then unassigned valid detections inside
    DontCare regions are removed from the FP. False negatives do not enter the AP: not counted.

    Args:
        a: the :class:`FrameArrays` of the metric.
        gt_status, det_status: (K, G) / (K, D) int8 cleanData statuses; min_overlap: (K,).
        thresholds: (K, T) descending recall thresholds of each combination, the first
            ``num_thresholds[k]`` valid.

    Returns:
        tp, fp: (K, F, T) int64; similarity: (K, F, T) float64, -1 where a frame has neither TP nor FP
        (it then does not contribute, as in the devkit).
    """
    num_combos = gt_status.shape[0]
    num_frames = a.gt_offsets.shape[0] - 1
    shape = (num_combos, num_frames, thresholds.shape[1])
    tp = np.zeros(shape, dtype=np.int64)
    fp = np.zeros(shape, dtype=np.int64)
    similarity = np.full(shape, -1.0)
    for f in prange(num_frames):
        for c in range(num_combos):
            t = num_thresholds[c]
            _count_frame(
                a.gt_offsets[f],
                a.gt_offsets[f + 1],
                a.det_offsets[f],
                a.det_offsets[f + 1],
                a.pair_offsets[f],
                a.overlap,
                gt_status[c],
                det_status[c],
                a.gt_dontcare,
                a.score,
                a.det_order,
                a.gt_alpha,
                a.det_alpha,
                thresholds[c, :t],
                min_overlap[c],
                compute_aos,
                tp[c, f, :t],
                fp[c, f, :t],
                similarity[c, f, :t],
            )
    return tp, fp, similarity


@njit(cache=True, error_model="numpy")
def precision_curves(tp, fp, similarity, compute_aos):
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
