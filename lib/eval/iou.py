"""Box overlaps for the KITTI evaluator: image-plane, rotated bird's-eye-view (BEV) and 3D, in float64.

The KITTI devkit (``evaluate_object_3d_offline.cpp``) measures overlaps with Boost.Geometry polygons
in double precision; this module reproduces its formulas (``imageBoxOverlap``, ``groundBoxOverlap``,
``box3DOverlap``) with numba. The BEV footprint of a box is a convex quadrilateral in the camera x-z
plane; two of them are intersected by Sutherland-Hodgman clipping, whose crossing points are
interpolated from signed distances, so coincident edges (a detection identical to its ground truth)
stay exact to rounding instead of producing degenerate intersection points as a float32 vertex-sort
IoU does.

Overlaps are computed for every (detection, ground truth) pair *within* each frame, for all frames at
once: frame ``f`` owns the block ``pair_offsets[f]:pair_offsets[f + 1]`` of the flat output, laid out
detection-major, ``pair_offsets[f] + j * n_gt_f + i`` for its j-th detection and i-th ground truth.

The BEV intersection areas, the only costly part, can run on a CUDA GPU (``device="cuda"``); that path
lives in :mod:`lib.eval.iou_cuda`, imported only when asked for, and returns bit-identical areas
(see :func:`lib.eval.polygon.rounded_mul`).
"""

from __future__ import annotations

import glob
import os

import numpy as np
from numba import njit, prange

from lib.constants import EVAL_DEVICES
from lib.eval.polygon import CLIP_BUFFER, quad_intersection_area

# Boxes of this module use the KITTI label column order:
#   boxes2d: (N, 4) x1, y1, x2, y2, image pixels;
#   boxes3d: (N, 7) h, w, l (metres), x, y, z (bottom centre, rect camera, metres), rotation_y (rad).
_H, _W, _L, _X, _Y, _Z, _RY = range(7)


@njit(cache=True)
def bev_corners(boxes3d):
    """BEV footprints of 3D boxes as clockwise quadrilaterals, in the devkit's ``toPolygon`` order.

    Args:
        boxes3d: (N, 7) h, w, l, x, y, z, ry (rect camera).

    Returns:
        xs, zs: (N, 4) corner coordinates in the camera x-z plane (metres). Absolute l and w are used,
        so a box with negative dims (DontCare: -1) still is a clockwise 1 x 1 square.
    """
    n = boxes3d.shape[0]
    xs = np.empty((n, 4))
    zs = np.empty((n, 4))
    for k in range(n):
        c = np.cos(boxes3d[k, _RY])
        s = np.sin(boxes3d[k, _RY])
        hl = abs(boxes3d[k, _L]) / 2
        hw = abs(boxes3d[k, _W]) / 2
        for v in range(4):
            lx = hl if v < 2 else -hl
            lz = hw if v == 0 or v == 3 else -hw
            xs[k, v] = (c * lx + s * lz) + boxes3d[k, _X]
            zs[k, v] = (-s * lx + c * lz) + boxes3d[k, _Z]
    return xs, zs


@njit(cache=True)
def frame_pair_offsets(det_offsets, gt_offsets):
    """(F + 1,) int64 start of each frame's (detection x ground truth) block in the flat pair arrays."""
    num_frames = det_offsets.shape[0] - 1
    out = np.zeros(num_frames + 1, dtype=np.int64)
    for f in range(num_frames):
        n_det = det_offsets[f + 1] - det_offsets[f]
        n_gt = gt_offsets[f + 1] - gt_offsets[f]
        out[f + 1] = out[f] + n_det * n_gt
    return out


@njit(parallel=True, cache=True, error_model="numpy")
def _bev_intersections_cpu(det_xs, det_zs, gt_xs, gt_zs, det_offsets, gt_offsets, pair_offsets):
    """(P,) BEV intersection area of every in-frame (detection, ground truth) pair; frames in parallel."""
    out = np.zeros(pair_offsets[-1])
    for f in prange(det_offsets.shape[0] - 1):
        px = np.empty(CLIP_BUFFER)
        pz = np.empty(CLIP_BUFFER)
        qx = np.empty(CLIP_BUFFER)
        qz = np.empty(CLIP_BUFFER)
        n_gt = gt_offsets[f + 1] - gt_offsets[f]
        for j in range(det_offsets[f], det_offsets[f + 1]):
            row = pair_offsets[f] + (j - det_offsets[f]) * n_gt
            for i in range(gt_offsets[f], gt_offsets[f + 1]):
                out[row + i - gt_offsets[f]] = quad_intersection_area(
                    det_xs[j], det_zs[j], gt_xs[i], gt_zs[i], px, pz, qx, qz
                )
    return out


@njit(cache=True)
def _same_bev_box(a, b):
    """Whether two (7,) boxes have the same footprint parameters x, z, l, w, ry."""
    return a[_X] == b[_X] and a[_Z] == b[_Z] and a[_L] == b[_L] and a[_W] == b[_W] and a[_RY] == b[_RY]


@njit(parallel=True, cache=True, error_model="numpy")
def _overlaps_from_intersections(
    det_boxes2d,
    det_boxes3d,
    det_offsets,
    gt_boxes2d,
    gt_boxes3d,
    gt_offsets,
    gt_dontcare,
    pair_offsets,
    inter,
):
    """(3, P) image / BEV / 3D overlaps of all in-frame pairs, from the BEV intersection areas.

    Real ground truth gets the devkit's IoU (criterion -1). DontCare columns get intersection over the
    detection's own area or volume (criterion 0), the value the devkit tests against DontCare regions.
    Identical boxes get exactly 1.0 (Boost's polygon union/intersection give 1 within 1e-15).
    """
    out = np.zeros((3, pair_offsets[-1]))
    for f in prange(det_offsets.shape[0] - 1):
        n_gt = gt_offsets[f + 1] - gt_offsets[f]
        for j in range(det_offsets[f], det_offsets[f + 1]):
            d2 = det_boxes2d[j]
            d3 = det_boxes3d[j]
            d_area2 = (d2[2] - d2[0]) * (d2[3] - d2[1])
            d_area_bev = abs(d3[_L]) * abs(d3[_W])
            d_vol = d3[_H] * d3[_L] * d3[_W]
            row = pair_offsets[f] + (j - det_offsets[f]) * n_gt
            for i in range(gt_offsets[f], gt_offsets[f + 1]):
                p = row + i - gt_offsets[f]
                g2 = gt_boxes2d[i]
                g3 = gt_boxes3d[i]
                # Image plane (imageBoxOverlap): 0 unless the intersection has positive width and height.
                w = min(d2[2], g2[2]) - max(d2[0], g2[0])
                h = min(d2[3], g2[3]) - max(d2[1], g2[1])
                if w > 0.0 and h > 0.0:
                    inter2 = w * h
                    if gt_dontcare[i]:
                        out[0, p] = inter2 / d_area2
                    else:
                        g_area2 = (g2[2] - g2[0]) * (g2[3] - g2[1])
                        out[0, p] = inter2 / (d_area2 + g_area2 - inter2)
                # BEV and 3D (groundBoxOverlap, box3DOverlap); y points down, boxes span [y - h, y].
                a = inter[p]
                y_top = max(d3[_Y] - d3[_H], g3[_Y] - g3[_H])
                y_bottom = min(d3[_Y], g3[_Y])
                inter_vol = a * max(0.0, y_bottom - y_top)
                if gt_dontcare[i]:
                    out[1, p] = a / d_area_bev
                    out[2, p] = inter_vol / d_vol
                elif _same_bev_box(d3, g3):
                    out[1, p] = 1.0
                    same_height = d3[_Y] == g3[_Y] and d3[_H] == g3[_H]
                    g_vol = g3[_H] * g3[_L] * g3[_W]
                    out[2, p] = 1.0 if same_height else inter_vol / (d_vol + g_vol - inter_vol)
                else:
                    g_area_bev = abs(g3[_L]) * abs(g3[_W])
                    g_vol = g3[_H] * g3[_L] * g3[_W]
                    out[1, p] = a / (d_area_bev + g_area_bev - a)
                    out[2, p] = inter_vol / (d_vol + g_vol - inter_vol)
    return out


def cuda_is_available() -> bool:
    """Whether a CUDA GPU is usable. Imports ``numba.cuda`` only if an NVIDIA device node exists."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    if not (glob.glob("/dev/nvidia[0-9]*") or os.path.exists("/dev/dxg")):
        return False
    from numba import cuda

    return bool(cuda.is_available())


def resolve_device(device: str) -> str:
    """Map ``"auto"`` to ``"cuda"`` or ``"cpu"``; check that ``"cuda"`` is usable."""
    if device not in EVAL_DEVICES:
        raise ValueError(f"device must be one of {EVAL_DEVICES}, got {device!r}")
    if device == "auto":
        return "cuda" if cuda_is_available() else "cpu"
    if device == "cuda" and not cuda_is_available():
        raise RuntimeError("device='cuda' was requested but no CUDA GPU is available")
    return device


def frame_overlaps(
    det_boxes2d: np.ndarray,
    det_boxes3d: np.ndarray,
    det_offsets: np.ndarray,
    gt_boxes2d: np.ndarray,
    gt_boxes3d: np.ndarray,
    gt_offsets: np.ndarray,
    gt_dontcare: np.ndarray,
    *,
    device: str = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """Image, BEV and 3D overlaps of every (detection, ground truth) pair of the same frame.

    Args:
        det_boxes2d: (D, 4) x1, y1, x2, y2 (image pixels) of all detections, frames concatenated.
        det_boxes3d: (D, 7) h, w, l, x, y, z, ry (rect camera) of all detections.
        det_offsets: (F + 1,) detections of frame f are rows ``det_offsets[f]:det_offsets[f + 1]``.
        gt_boxes2d, gt_boxes3d, gt_offsets: the same for the G ground-truth objects.
        gt_dontcare: (G,) bool; for these columns the overlap is intersection / detection area
            (or volume), the devkit's DontCare criterion, instead of IoU.
        device: "cpu", "cuda" or "auto"; where the BEV intersections are computed.

    Returns:
        pair_offsets: (F + 1,) int64 start of each frame's block in the pair axis.
        overlaps: (3, P) float64 image / BEV / 3D overlap, pair ``pair_offsets[f] + j * n_gt_f + i``.
    """
    det_boxes2d = np.ascontiguousarray(det_boxes2d, dtype=np.float64)
    det_boxes3d = np.ascontiguousarray(det_boxes3d, dtype=np.float64)
    gt_boxes2d = np.ascontiguousarray(gt_boxes2d, dtype=np.float64)
    gt_boxes3d = np.ascontiguousarray(gt_boxes3d, dtype=np.float64)
    det_offsets = np.ascontiguousarray(det_offsets, dtype=np.int64)
    gt_offsets = np.ascontiguousarray(gt_offsets, dtype=np.int64)
    gt_dontcare = np.ascontiguousarray(gt_dontcare, dtype=np.bool_)
    pair_offsets = frame_pair_offsets(det_offsets, gt_offsets)
    det_xs, det_zs = bev_corners(det_boxes3d)
    gt_xs, gt_zs = bev_corners(gt_boxes3d)
    corners = (det_xs, det_zs, gt_xs, gt_zs, det_offsets, gt_offsets, pair_offsets)
    if resolve_device(device) == "cuda":
        from lib.eval.iou_cuda import bev_intersections_cuda  # numba.cuda only when asked for

        inter = bev_intersections_cuda(*corners)
    else:
        inter = _bev_intersections_cpu(*corners)
    overlaps = _overlaps_from_intersections(
        det_boxes2d,
        det_boxes3d,
        det_offsets,
        gt_boxes2d,
        gt_boxes3d,
        gt_offsets,
        gt_dontcare,
        pair_offsets,
        inter,
    )
    return pair_offsets, overlaps


def _single_frame_overlaps(a2d, a3d, b2d, b3d, metric: int, device: str) -> np.ndarray:
    n, m = len(a3d), len(b3d)
    _, overlaps = frame_overlaps(
        a2d, a3d, np.array([0, n]), b2d, b3d, np.array([0, m]), np.zeros(m, dtype=bool), device=device
    )
    return overlaps[metric].reshape(n, m)


def image_overlaps(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """(N, M) IoU of image boxes (N, 4) and (M, 4), x1, y1, x2, y2 in pixels (devkit imageBoxOverlap)."""
    a = np.asarray(boxes_a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(boxes_b, dtype=np.float64).reshape(-1, 4)
    return _single_frame_overlaps(a, np.zeros((len(a), 7)), b, np.zeros((len(b), 7)), 0, "cpu")


def bev_overlaps(boxes_a: np.ndarray, boxes_b: np.ndarray, *, device: str = "cpu") -> np.ndarray:
    """(N, M) rotated BEV IoU of 3D boxes (N, 7) and (M, 7), h, w, l, x, y, z, ry (groundBoxOverlap)."""
    a = np.asarray(boxes_a, dtype=np.float64).reshape(-1, 7)
    b = np.asarray(boxes_b, dtype=np.float64).reshape(-1, 7)
    return _single_frame_overlaps(np.zeros((len(a), 4)), a, np.zeros((len(b), 4)), b, 1, device)


def box3d_overlaps(boxes_a: np.ndarray, boxes_b: np.ndarray, *, device: str = "cpu") -> np.ndarray:
    """(N, M) 3D IoU of boxes (N, 7) and (M, 7), h, w, l, x, y, z, ry (devkit box3DOverlap)."""
    a = np.asarray(boxes_a, dtype=np.float64).reshape(-1, 7)
    b = np.asarray(boxes_b, dtype=np.float64).reshape(-1, 7)
    return _single_frame_overlaps(np.zeros((len(a), 4)), a, np.zeros((len(b), 4)), b, 2, device)
