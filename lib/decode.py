"""Decode the detector's eval outputs into KITTI 3D boxes (GUPNet decode, REFERENCE §4).

The model already picks the top-K heatmap peaks per image in eval mode and runs its RoI
heads on them (lib/models/detector.py: ``preds['topk']``, RoI rows in (image, peak) order). Decoding is
pure numpy on the original image: feature-grid quantities are mapped back with the per-axis
``bbox_downsample_ratio`` (image size / feature size, GUPNet's approximation of the inverse
affine, ~1 px off in y for a full KITTI frame, REFERENCE §9.10), and the 3D centre is
back-projected with the file calib.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lib.constants import CLASSES, MEAN_SIZES, NUM_HEADING_BIN
from lib.datasets.kitti_io import Object3d, write_label
from lib.datasets.targets import decode_heading
from lib.geometry import alpha_to_ry_pixel, unproject_to_rect

logger = logging.getLogger(__name__)


def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def heading_to_alpha(heading: np.ndarray) -> np.ndarray:
    """Multi-bin heading outputs → alpha (REFERENCE §1.6): the argmax bin and its residual.

    Args:
        heading: (N, 2·NB) bin logits, then per-bin residuals (radians), NB = 12.

    Returns:
        (N,) alpha in (-π, π] (:func:`lib.datasets.targets.decode_heading`).
    """
    bins = heading[:, :NUM_HEADING_BIN].argmax(axis=1)  # (N,)
    residual = heading[np.arange(len(bins)), NUM_HEADING_BIN + bins]
    return decode_heading(bins, residual)


def decode_detections(
    preds: Mapping[str, Any],
    *,
    calib: Any,
    info: Mapping[str, Any],
    threshold: float = 0.2,
    classes: Sequence[str] = CLASSES,
    mean_sizes: np.ndarray = MEAN_SIZES,
) -> list[list[Object3d]]:
    """KITTI objects of every image of an eval batch.

    Per peak (cell x, y of class c, heatmap score s): 2D centre = (x, y) + offset_2d and 2D
    size = size_2d, both × ``bbox_downsample_ratio``; projected 3D centre = (x, y) +
    offset_3d, scaled the same way, back-projected at the predicted depth z with the calib
    (rect z = predicted z exactly: the inverse of :func:`lib.geometry.project_to_image`),
    then y += h/2 for the bottom centre; dims = residuals + class mean (peaks with a negative
    dim are dropped); alpha from the heading bins, ry = alpha + atan2(u_2D - cu, fu) with the
    2D box centre u_2D. Score = s × depth confidence; peaks with score < ``threshold`` are
    dropped (REFERENCE §4). Peaks with a non-finite box, position or score (a diverged or
    barely trained model) are dropped with a warning: a result file must not hold NaN.

    Args:
        preds: eval outputs (lib/models/detector.py): ``topk`` {scores, cls, xs, ys: (B, K)}, dense
            ``offset_2d``, ``size_2d`` (B, 2, Hf, Wf); RoI rows (B·K, ...) ``offset_3d`` (·, 2),
            ``size_3d`` (·, 3), ``heading`` (·, 24), ``depth`` (·, 2) [z metres, log σ²],
            ``depth_confidence`` (·,) (gupnet exp(-σ), did Σp²/Σp).
        calib: (B, 3, 4) P2 of the ORIGINAL images (the files' calib), numpy or tensor.
        info: batch info with ``bbox_downsample_ratio`` (B, 2) (original size / feature size).
        threshold: minimal score kept.
        classes: class names in heatmap-channel order.
        mean_sizes: (num_classes, 3) class mean h, w, l (metres), same order.

    Returns:
        B lists of :class:`Object3d` (truncation 0, occlusion 0, score set), peak order.
    """
    topk = preds["topk"]
    scores = _to_numpy(topk["scores"])  # (B, K)
    num_images, k = scores.shape
    cls_ids = _to_numpy(topk["cls"]).astype(np.int64)
    xs = np.rint(_to_numpy(topk["xs"])).astype(np.int64)  # (B, K) feature cells
    ys = np.rint(_to_numpy(topk["ys"])).astype(np.int64)
    rows = np.arange(num_images)[:, None]
    offset_2d = _to_numpy(preds["offset_2d"])[rows, :, ys, xs]  # (B, K, 2)
    size_2d = _to_numpy(preds["size_2d"])[rows, :, ys, xs]  # (B, K, 2)

    def roi(name: str) -> np.ndarray:  # RoI rows (B·K, ...) → (B, K, ...)
        value = _to_numpy(preds[name])
        if value.shape[0] != num_images * k:
            raise ValueError(
                f"decode_detections: preds['{name}'] has {value.shape[0]} rows, "
                f"expected B·K = {num_images * k}"
            )
        return value.reshape(num_images, k, *value.shape[1:])

    if "depth_confidence" not in preds:
        raise ValueError("decode_detections: preds has no 'depth_confidence' (the model's eval outputs)")
    offset_3d, size_3d, heading = roi("offset_3d"), roi("size_3d"), roi("heading")
    depth = roi("depth")[..., 0]  # (B, K) z, metres
    final_scores = scores * roi("depth_confidence").reshape(num_images, k)
    calibs = _to_numpy(calib).reshape(num_images, 3, 4)
    ratios = _to_numpy(info["bbox_downsample_ratio"]).reshape(num_images, 2)
    mean_sizes = np.asarray(mean_sizes, dtype=np.float64)

    results: list[list[Object3d]] = []
    for i in range(num_images):
        P, ratio = calibs[i], ratios[i]
        centre_2d = (np.stack([xs[i], ys[i]], axis=1) + offset_2d[i]) * ratio  # (K, 2) pixels
        half_2d = size_2d[i] * ratio / 2
        boxes = np.concatenate([centre_2d - half_2d, centre_2d + half_2d], axis=1)  # (K, 4)
        dims = size_3d[i] + mean_sizes[cls_ids[i]]  # (K, 3) h, w, l
        centre_3d_px = (np.stack([xs[i], ys[i]], axis=1) + offset_3d[i]) * ratio  # (K, 2)
        pos = unproject_to_rect(centre_3d_px, depth[i] + P[2, 3], P)  # (K, 3) 3D centre, rect
        pos[:, 1] += dims[:, 0] / 2  # bottom centre
        alpha = heading_to_alpha(heading[i])
        ry = alpha_to_ry_pixel(alpha, centre_2d[:, 0], P)
        finite = np.isfinite(np.concatenate([boxes, dims, pos, np.stack([ry, final_scores[i]], 1)], 1)).all(1)
        if not finite.all():
            logger.warning(
                "decode_detections: dropped %d of %d peaks of image %d with a non-finite box or score "
                "(a diverged or barely trained model)",
                int((~finite).sum()),
                k,
                i,
            )
        keep = finite & (final_scores[i] >= threshold) & (dims >= 0).all(axis=1)
        results.append(
            [
                Object3d(
                    cls_type=classes[cls_ids[i, j]],
                    truncation=0.0,
                    occlusion=0,
                    alpha=float(alpha[j]),
                    box2d=boxes[j],
                    h=float(dims[j, 0]),
                    w=float(dims[j, 1]),
                    l=float(dims[j, 2]),
                    pos=pos[j],
                    ry=float(ry[j]),
                    score=float(final_scores[i, j]),
                )
                for j in np.flatnonzero(keep)
            ]
        )
    return results


def write_kitti_results(
    output_dir: str | Path, img_ids: Sequence[int], detections: Sequence[list[Object3d]]
) -> None:
    """Write ``<output_dir>/<img_id:06d>.txt`` per image in KITTI result format (REFERENCE §4).

    An image without detections gets an empty file, so the evaluator scores it.
    """
    if len(img_ids) != len(detections):
        raise ValueError(
            f"write_kitti_results: {len(img_ids)} image ids for {len(detections)} detection lists"
        )
    output_dir = Path(output_dir)
    for img_id, objects in zip(img_ids, detections, strict=True):
        write_label(output_dir / f"{int(img_id):06d}.txt", objects)
