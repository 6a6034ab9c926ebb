"""Decode the detector's eval outputs into KITTI 3D boxes (docs/reference.md, 'Decoding and testing',
docs/parity.md).

The model already picks the top-K heatmap peaks per image in eval mode and runs its RoI
heads on them (lib/models/detector.py: ``preds['topk']``, RoI rows in (image, peak) order). Decoding is
pure numpy on the original image: feature-grid quantities are mapped back through the sample's
``coord_range``, the original-px window of the input, as the RoI head maps its boxes in training
(x = x_feat / W_feat · (x1 − x0) + x0, likewise y; lib/datasets/augment.py ``input_window``:
exact, or GUPNet's per-axis ratio with ``dataset.inverse_affine: reference``, docs/reference.md,
'Known bugs and quirks: Per-axis input window'), and the 3D centre is back-projected with the file calib.

Which value the score threshold applies to depends on the model type, as in each reference's
``lib/helpers/decode_helper.py`` (:data:`THRESHOLD_ON`): GUPNet keeps a peak when
heatmap peak × depth confidence ≥ threshold; DID-M3D and MonoSKD keep it when the heatmap peak
alone is ≥ threshold, and only then multiply by the depth confidence. The written score is
peak × confidence in both.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from lib.box_coding import decode_heading
from lib.config import ConfigError
from lib.constants import HEATMAP_CLASSES, MEAN_SIZES, NUM_HEADING_BIN
from lib.geometry import alpha_to_ry_pixel, unproject_to_rect
from lib.kitti_io import Object3d

logger = logging.getLogger(__name__)


def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def heading_to_alpha(heading: np.ndarray) -> np.ndarray:
    """Multi-bin heading outputs → alpha (docs/reference.md, 'Heading'): the argmax bin and its residual.

    Args:
        heading: (N, 2·NB) bin logits, then per-bin residuals (radians), NB = 12.

    Returns:
        (N,) alpha in (-π, π] (:func:`lib.box_coding.decode_heading`).
    """
    bins = heading[:, :NUM_HEADING_BIN].argmax(axis=1)  # (N,)
    residual = heading[np.arange(len(bins)), NUM_HEADING_BIN + bins]
    return decode_heading(bins, residual)


# Which value the score threshold applies to, per model type (``model.type``):
#   "score": peak × depth confidence (GUPNet decode_helper: the product is thresholded);
#   "peak":  the heatmap peak alone (DID-M3D / MonoSKD decode_helper: the product comes after).
THRESHOLD_ON: dict[str, str] = {"gupnet": "score", "did": "peak"}

# How the projected 3D centre (u, v) at depth z becomes a rect point (``tester.backprojection``):
#   "exact": the inverse of P2 with its P2[2, 3] term (lib/geometry.unproject_to_rect: rect z = z);
#   "reference": GUPNet / DID-M3D / MonoSKD's Calibration.img_to_rect, x = (u - cu)·z/fu + tx with
#   tx = -P2[0, 3]/fu (y likewise), which ignores P2[2, 3] (~2.7 mm in KITTI: x, y off by a few mm).
BACKPROJECTIONS = ("exact", "reference")
MAX_SCORE_DECIMALS = 12  # float64 scores carry ~16 digits; KITTI's evaluator reads any


def check_result_options(backprojection: str, score_decimals: int) -> None:
    """Validate ``tester.backprojection`` and ``tester.score_decimals`` before a run starts (a typo
    must not surface at the first evaluation, epochs later).

    Raises:
        ConfigError: naming the key and the allowed values.
    """
    if backprojection not in BACKPROJECTIONS:
        allowed = ", ".join(BACKPROJECTIONS)
        raise ConfigError(f"tester.backprojection: {backprojection!r} is not one of {allowed}")
    if not 0 <= score_decimals <= MAX_SCORE_DECIMALS:
        raise ConfigError(f"tester.score_decimals must be in 0..{MAX_SCORE_DECIMALS}, got {score_decimals}")


def score_rule(model_type: str) -> str:
    """The :data:`THRESHOLD_ON` entry of ``model_type`` (a clear error for an unknown type)."""
    if model_type not in THRESHOLD_ON:
        raise ValueError(f"decode: unknown model type {model_type!r} (known: {', '.join(THRESHOLD_ON)})")
    return THRESHOLD_ON[model_type]


def back_project(uv: np.ndarray, depth: np.ndarray, P: np.ndarray, formula: str = "exact") -> np.ndarray:
    """Pixels (N, 2) at rect depths z (N,) → rect points (N, 3) by ``formula`` (:data:`BACKPROJECTIONS`)."""
    if formula == "exact":
        return unproject_to_rect(uv, depth + P[2, 3], P)
    if formula == "reference":
        fu, fv, cu, cv = P[0, 0], P[1, 1], P[0, 2], P[1, 2]
        x = (uv[:, 0] - cu) * depth / fu - P[0, 3] / fu
        y = (uv[:, 1] - cv) * depth / fv - P[1, 3] / fv
        return np.stack([x, y, depth], axis=1)
    raise ValueError(f"tester.backprojection: {formula!r} is not one of {', '.join(BACKPROJECTIONS)}")


@dataclass(frozen=True)
class FeatureToOriginal:
    """Feature px → original px through an input window (lib/models/detector.py
    ``boxes_to_original`` maps the training RoIs the same way).

    Attributes:
        window: (2, 2) [[x0, y0], [x1, y1]] original px (the sample's ``coord_range``).
        grid: (2,) W_feat, H_feat.
    """

    window: np.ndarray
    grid: np.ndarray

    def points(self, xy: np.ndarray) -> np.ndarray:
        """(..., 2) feature px → original px: x / W_feat · (x1 − x0) + x0, likewise y."""
        return self.lengths(xy) + self.window[0]

    def lengths(self, wh: np.ndarray) -> np.ndarray:
        """(..., 2) feature-px extents (sizes) → original px."""
        return wh / self.grid * (self.window[1] - self.window[0])


def _gather(preds: Mapping[str, Any], num_images: int, k: int) -> dict[str, np.ndarray]:
    """Per-peak arrays (B, K, ...) of the eval outputs: dense 2D heads read at the peak cells,
    RoI rows (B·K, ...) reshaped."""
    topk = preds["topk"]
    out = {
        "peak": _to_numpy(topk["scores"]),
        "cls": _to_numpy(topk["cls"]).astype(np.int64),
        "cell": np.stack([np.rint(_to_numpy(topk[a])).astype(np.int64) for a in ("xs", "ys")], axis=-1),
    }
    rows, xs, ys = np.arange(num_images)[:, None], out["cell"][..., 0], out["cell"][..., 1]
    for name in ("offset_2d", "size_2d"):
        out[name] = _to_numpy(preds[name])[rows, :, ys, xs]  # (B, K, 2)
    if "depth_confidence" not in preds:
        raise ValueError("decode_detections: preds has no 'depth_confidence' (the model's eval outputs)")
    for name in ("offset_3d", "size_3d", "heading", "depth", "depth_confidence"):
        value = _to_numpy(preds[name])
        if value.shape[0] != num_images * k:
            raise ValueError(
                f"decode_detections: preds['{name}'] has {value.shape[0]} rows, "
                f"expected B·K = {num_images * k}"
            )
        out[name] = value.reshape(num_images, k, *value.shape[1:])
    return out


def decode_detections(
    preds: Mapping[str, Any],
    *,
    calib: Any,
    coord_range: Any,
    model_type: str,
    threshold: float,
    backprojection: str,
    classes: Sequence[str] = HEATMAP_CLASSES,
    mean_sizes: np.ndarray = MEAN_SIZES,
) -> list[list[Object3d]]:
    """KITTI objects of every image of an eval batch.

    Per peak (cell x, y of class c, heatmap peak s): 2D centre = (x, y) + offset_2d and 2D
    size = size_2d, both mapped to original px through ``coord_range``; projected 3D centre =
    (x, y) + offset_3d, mapped the same way, back-projected at the predicted depth z with the calib
    (:func:`back_project`), then y += h/2 for the bottom centre; dims = residuals + class mean
    (peaks with a negative dim are dropped); alpha from the heading bins, ry = alpha +
    atan2(u_2D - cu, fu) with the 2D box centre u_2D. Score = s × depth confidence; a peak is
    kept when the value named by :data:`THRESHOLD_ON` for ``model_type`` is ≥ ``threshold``
    (docs/reference.md, 'Decoding and testing', docs/parity.md). Peaks with a non-finite box, position or
    score (a diverged or barely trained model) are dropped with a warning: a result file must not
    hold NaN.

    Args:
        preds: eval outputs (lib/models/detector.py): ``topk`` {scores, cls, xs, ys: (B, K)}, dense
            ``offset_2d``, ``size_2d`` (B, 2, Hf, Wf); RoI rows (B·K, ...) ``offset_3d`` (·, 2),
            ``size_3d`` (·, 3), ``heading`` (·, 24), ``depth`` (·, 2) [z metres, log σ²],
            ``depth_confidence`` (·,) (gupnet exp(-σ), did Σp²/Σp).
        calib: (B, 3, 4) P2 of the ORIGINAL images (the files' calib), numpy or tensor.
        coord_range: (B, 2, 2) [[x0, y0], [x1, y1]] original-px window of each input (the batch's
            ``coord_range``), numpy or tensor.
        model_type: ``gupnet`` or ``did`` (``model.type``): selects the threshold rule.
        threshold: minimal peak (did) or score (gupnet) kept.
        backprojection: ``exact`` or ``reference`` (:data:`BACKPROJECTIONS`).
        classes: class names in heatmap-channel order.
        mean_sizes: (num_classes, 3) class mean h, w, l (metres), same order.

    Returns:
        B lists of :class:`Object3d` (truncation 0, occlusion 0, score set), peak order.
    """
    rule = score_rule(model_type)
    num_images, k = _to_numpy(preds["topk"]["scores"]).shape
    g = _gather(preds, num_images, k)
    scores = g["peak"] * g["depth_confidence"].reshape(num_images, k)
    gated = scores if rule == "score" else g["peak"]
    calibs = _to_numpy(calib).reshape(num_images, 3, 4)
    windows = _to_numpy(coord_range).reshape(num_images, 2, 2)
    grid = np.array(preds["offset_2d"].shape[:-3:-1], dtype=np.float64)  # (W_feat, H_feat)
    options = dict(threshold=threshold, backprojection=backprojection, classes=classes)
    options["mean_sizes"] = np.asarray(mean_sizes, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):  # non-finite peaks: dropped with our warning
        return [
            _decode_image(
                g, i, scores[i], gated[i], calibs[i], FeatureToOriginal(windows[i], grid), **options
            )
            for i in range(num_images)
        ]


def _decode_image(
    g: Mapping[str, np.ndarray],
    i: int,
    scores: np.ndarray,
    gated: np.ndarray,
    P: np.ndarray,
    to_original: FeatureToOriginal,
    *,
    threshold: float,
    backprojection: str,
    classes: Sequence[str],
    mean_sizes: np.ndarray,
) -> list[Object3d]:
    """The kept objects of image ``i`` of the gathered peaks ``g`` (:func:`decode_detections`).

    ``scores`` (K,) are peak × confidence, ``gated`` (K,) the values the threshold applies to,
    ``P`` (3, 4) the image's file calib, ``to_original`` its feature → original px map.
    """
    k = len(scores)
    centre_2d = to_original.points(g["cell"][i] + g["offset_2d"][i])  # (K, 2) pixels
    half_2d = to_original.lengths(g["size_2d"][i]) / 2
    boxes = np.concatenate([centre_2d - half_2d, centre_2d + half_2d], axis=1)  # (K, 4)
    dims = g["size_3d"][i] + mean_sizes[g["cls"][i]]  # (K, 3) h, w, l
    centre_3d_px = to_original.points(g["cell"][i] + g["offset_3d"][i])  # (K, 2)
    pos = back_project(centre_3d_px, g["depth"][i][:, 0], P, backprojection)  # (K, 3) rect
    pos[:, 1] += dims[:, 0] / 2  # bottom centre
    alpha = heading_to_alpha(g["heading"][i])
    ry = alpha_to_ry_pixel(alpha, centre_2d[:, 0], P)
    finite = np.isfinite(np.concatenate([boxes, dims, pos, np.stack([ry, scores], 1)], 1)).all(1)
    if not finite.all():
        logger.warning(
            "decode_detections: dropped %d of %d peaks of image %d with a non-finite box or score "
            "(a diverged or barely trained model)",
            int((~finite).sum()),
            k,
            i,
        )
    keep = finite & (gated >= threshold) & (dims >= 0).all(axis=1)
    return [
        Object3d(
            cls_type=classes[g["cls"][i, j]],
            truncation=0.0,
            occlusion=0,
            alpha=float(alpha[j]),
            box2d=boxes[j],
            h=float(dims[j, 0]),
            w=float(dims[j, 1]),
            l=float(dims[j, 2]),
            pos=pos[j],
            ry=float(ry[j]),
            score=float(scores[j]),
        )
        for j in np.flatnonzero(keep)
    ]
