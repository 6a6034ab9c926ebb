"""Training targets of a KITTI frame, as pure functions of (labels, P2, affine, depth map).

* GUPNet's CenterNet-style detection targets (docs/reference.md, 'GUPNet data pipeline' and 'Heading'): a
  class heatmap of gaussians at the projected 3D centres, and per-object regression targets in up to
  ``max_objs`` slots (slot = label line index, docs/reference.md, 'Known bugs and quirks: First 50 label
  lines').
* DID-M3D's per-RoI depth targets (docs/reference.md, 'The DID-M3D variant used by SKD' and 'The teacher's
  input'): LiDAR depth at the 7 × 7 RoI cells of each GT box (``vis_depth``) and the remainder to the object
  depth (``att_depth``).
* RPD depth-branch targets (docs/method.md, 'Targets from projected LiDAR') and the foreground mask that
  weights them.

Frames: objects and P2 are in the (flipped) original image; ``trans`` maps original pixels to
network-input pixels; targets are in feature pixels (input pixels / ``downsample``).

Reference switches (docs/parity.md; config keys of ``dataset``): ``heatmap_cell: trunc``
(GUPNet's int cast), ``projection: reference`` (GUPNet's u = P2[0]·X / z without P2[2, 3]),
``depth_downsample: area`` (MonoSKD: cv2 INTER_AREA and RoIAlign with empty pixels as 0 m).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch
from torchvision.ops import roi_align

from lib.box_coding import draw_gaussian, encode_heading, gaussian_radius
from lib.constants import CLASS_TO_ID, HEATMAP_CLASSES, MEAN_SIZES, ROI_SIZE
from lib.datasets.masks import foreground_mask
from lib.depth_bins import DepthBins, downsample_depth, rpd_valid
from lib.geometry import affine_transform, project_to_image, ry_to_alpha_pixel
from lib.kitti_io import Object3d

MIN_OBJECT_DEPTH = 2.0  # m: GUPNet skips closer objects
# Limits of KITTI's loosest difficulty ("Hard"); GUPNet skips objects beyond them ("UnKnown").
MIN_BOX_HEIGHT = 25.0  # px, y2 - y1 + 1
MAX_TRUNCATION = 0.5
MAX_OCCLUSION = 2
# With class merging these paint the Car heatmap channel but get no regression targets.
MERGED_CLASSES = {"Van": "Car", "Truck": "Car"}
DID_DEPTH_TOLERANCE = 3.0  # m: RoI cells whose LiDAR depth is farther from z are not the object
HEATMAP_CELLS = ("floor", "trunc")
# exact: pixels = P2·X divided by P2's third row (z + P2[2, 3]); reference: divided by rect z
# (GUPNet's Calibration.rect_to_img; the centres move by u·P2[2, 3]/z, ~0.2 px at 10 m).
PROJECTIONS = ("exact", "reference")
DEPTH_DOWNSAMPLES = ("valid_mean", "area")


def has_difficulty(obj: Object3d) -> bool:
    """Whether the object is KITTI Easy, Moderate or Hard (GUPNet's level is not 'UnKnown')."""
    box_height = float(obj.box2d[3] - obj.box2d[1] + 1)
    return (
        box_height >= MIN_BOX_HEIGHT and obj.truncation <= MAX_TRUNCATION and obj.occlusion <= MAX_OCCLUSION
    )


def projection_model(P2: np.ndarray, projection: str) -> np.ndarray:
    """P2 as the targets project with it: unchanged (``exact``) or with P2[2, 3] = 0, so that
    u = P2[0]·X / z (``reference``, :data:`PROJECTIONS`)."""
    if projection not in PROJECTIONS:
        raise ValueError(f"dataset.projection: {projection!r} is not one of {PROJECTIONS}")
    P = np.array(P2, dtype=np.float64)
    if projection == "reference":
        P[2, 3] = 0.0
    return P


def _affine_box(box: np.ndarray, trans: np.ndarray) -> np.ndarray:
    """(4,) x1, y1, x2, y2 through a scale + translation affine (corners stay corners)."""
    return np.concatenate([affine_transform(box[:2], trans), affine_transform(box[2:], trans)])


def check_target_options(writelist: Sequence[str], heatmap_cell: str) -> None:
    """Raise ValueError for a ``writelist`` class outside HEATMAP_CLASSES or an unknown ``heatmap_cell``."""
    unknown = sorted(set(writelist) - set(HEATMAP_CLASSES))
    if unknown:
        raise ValueError(
            f"writelist classes {unknown} are not among {HEATMAP_CLASSES} (Van/Truck: use class_merging)"
        )
    if heatmap_cell not in HEATMAP_CELLS:
        raise ValueError(f"dataset.heatmap_cell: {heatmap_cell!r} is not one of {HEATMAP_CELLS}")


def build_detection_targets(
    objects: Sequence[Object3d],
    P2: np.ndarray,
    trans: np.ndarray,
    *,
    feature_size: tuple[int, int],
    downsample: int,
    max_objs: int = 50,
    writelist: Sequence[str] = HEATMAP_CLASSES,
    class_merging: bool = False,
    heatmap_cell: str = "floor",
    projection: str = "exact",
) -> dict[str, np.ndarray]:
    """GUPNet's detection targets (docs/reference.md, 'GUPNet data pipeline').

    Objects are skipped when their class is not trained (not in ``writelist``, and not
    Van/Truck with ``class_merging``), when they have no KITTI difficulty, when z < 2 m, or
    when their heatmap cell falls outside the grid. The heatmap cell is the floor of the
    projected 3D centre (GUPNet truncates towards zero, which also keeps centres in
    (−1, 0)); the alpha of the heading target is recomputed from ry and the 2D box centre.

    Args:
        objects: labels in slot order; only the first ``max_objs`` are used.
        P2: (3, 4) projection of the image the labels are in. trans: (2, 3) original →
            input pixels. feature_size: (W_f, H_f). downsample: input px per feature px.
        writelist: trained classes, a subset of HEATMAP_CLASSES.
        heatmap_cell: ``floor`` or ``trunc`` (GUPNet: centres in (−1, 0) go to cell 0).
        projection: ``exact`` or ``reference`` (:data:`PROJECTIONS`).

    Returns:
        heatmap (3, H_f, W_f) float32; with M = max_objs: indices (M,) int64 (y·W_f + x),
        cls_ids (M,) int64, mask_2d (M,) bool, size_2d / offset_2d / offset_3d (M, 2)
        float32 (feature px), depth (M, 1) float32 (z, m), size_3d (M, 3) float32 (hwl −
        class mean), src_size_3d (M, 3) float32 (hwl, m), heading_bin (M, 1) int64,
        heading_res (M, 1) float32, box2d (M, 4) float32 (feature px).
    """
    check_target_options(writelist, heatmap_cell)
    to_cell = np.floor if heatmap_cell == "floor" else np.trunc
    P_model = projection_model(P2, projection)
    wf, hf = feature_size
    t = _empty_detection_targets(max_objs, feature_size)
    for i, obj in enumerate(objects[:max_objs]):
        trained = obj.cls_type in writelist
        merged = class_merging and obj.cls_type in MERGED_CLASSES
        if not (trained or merged) or not has_difficulty(obj) or obj.pos[2] < MIN_OBJECT_DEPTH:
            continue
        box = _affine_box(np.asarray(obj.box2d, dtype=np.float64), trans) / downsample  # (4,) feature px
        center_3d_rect = np.asarray(obj.pos, dtype=np.float64) + [0.0, -obj.h / 2, 0.0]
        center_3d_px = project_to_image(center_3d_rect[None], P_model)[0][0]
        center_3d = affine_transform(center_3d_px, trans) / downsample
        cell = to_cell(center_3d).astype(np.int64)  # (2,) x, y
        if not (0 <= cell[0] < wf and 0 <= cell[1] < hf):
            continue
        radius = max(0, int(gaussian_radius(box[2] - box[0], box[3] - box[1])))
        cls_id = CLASS_TO_ID[obj.cls_type if trained else MERGED_CLASSES[obj.cls_type]]
        draw_gaussian(t["heatmap"][cls_id], (int(cell[0]), int(cell[1])), radius)
        if trained:
            _fill_slot(t, i, obj, P2, cls_id=cls_id, cell=cell, box=box, center_3d=center_3d)
    return t


def _empty_detection_targets(m: int, feature_size: tuple[int, int]) -> dict[str, np.ndarray]:
    """The :func:`build_detection_targets` arrays for ``m`` slots, all zero / False."""
    wf, hf = feature_size
    shapes = {"indices": (), "cls_ids": (), "mask_2d": (), "size_2d": (2,), "offset_2d": (2,)}
    shapes |= {"offset_3d": (2,), "depth": (1,), "size_3d": (3,), "src_size_3d": (3,)}
    shapes |= {"heading_bin": (1,), "heading_res": (1,), "box2d": (4,)}
    dtypes = {"indices": np.int64, "cls_ids": np.int64, "mask_2d": bool, "heading_bin": np.int64}
    t = {"heatmap": np.zeros((len(HEATMAP_CLASSES), hf, wf), dtype=np.float32)}
    return t | {
        key: np.zeros((m, *shape), dtype=dtypes.get(key, np.float32)) for key, shape in shapes.items()
    }


def _fill_slot(
    t: dict[str, np.ndarray],
    i: int,
    obj: Object3d,
    P2: np.ndarray,
    *,
    cls_id: int,
    cell: np.ndarray,
    box: np.ndarray,
    center_3d: np.ndarray,
) -> None:
    """Write the regression targets of ``obj`` into slot ``i`` of ``t`` (:func:`build_detection_targets`):
    its heatmap ``cell`` (2,) and ``box`` (4,) and projected 3D centre (2,) in feature px."""
    wf = t["heatmap"].shape[2]
    alpha = ry_to_alpha_pixel(obj.ry, (obj.box2d[0] + obj.box2d[2]) / 2, P2)
    heading_bin, heading_res = encode_heading(alpha)
    size = np.array([obj.h, obj.w, obj.l])
    t["indices"][i] = cell[1] * wf + cell[0]
    t["cls_ids"][i] = cls_id
    t["mask_2d"][i] = True
    t["size_2d"][i] = box[2] - box[0], box[3] - box[1]
    t["offset_2d"][i] = (box[:2] + box[2:]) / 2 - cell
    t["offset_3d"][i] = center_3d - cell
    t["depth"][i] = obj.pos[2]
    t["size_3d"][i] = size - MEAN_SIZES[cls_id]
    t["src_size_3d"][i] = size
    t["heading_bin"][i] = heading_bin
    t["heading_res"][i] = heading_res
    t["box2d"][i] = box


def build_did_depth_targets(
    depth_map: np.ndarray | None,
    boxes: np.ndarray,
    depth: np.ndarray,
    mask: np.ndarray,
    *,
    roi_size: int = ROI_SIZE,
    tolerance: float = DID_DEPTH_TOLERANCE,
    valid_only: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """DID-M3D's per-RoI depth targets (docs/reference.md, 'The DID-M3D variant used by SKD' and 'The
    teacher's input').

    The feature-grid depth map is RoI-aligned (``torchvision.ops.roi_align``, spatial scale
    1, adaptive sampling, aligned=False, as MonoSKD) over each GT box. Empty cells are not
    mixed in: the depth and its validity are aligned together and divided, so each RoI cell
    is the mean of the valid depths it samples (identical to MonoSKD on a dense map). A cell
    is kept when 0 < d and |d − z| < ``tolerance``. ``valid_only=False`` aligns the map as it
    is, empty pixels counting as 0 m (MonoSKD; a cell half on an empty region halves its depth).

    Args:
        depth_map: (H_f, W_f) metres, 0 = none (not scaled by the crop), or None.
        boxes: (M, 4) GT boxes, feature px. depth: (M, 1) or (M,) object z, m.
        mask: (M,) bool, the slots that hold an object.

    Returns:
        vis_depth (M, r, r) float32 (LiDAR depth of the kept cells), att_depth (M, r, r)
        float32 (z − vis_depth on kept cells), depth_mask (M, r, r) bool; zeros / False
        elsewhere and everywhere without a depth map.
    """
    m = len(mask)
    vis = np.zeros((m, roi_size, roi_size), dtype=np.float32)
    att = np.zeros_like(vis)
    keep = np.zeros(vis.shape, dtype=bool)
    slots = np.flatnonzero(mask)
    if depth_map is None or slots.size == 0:
        return vis, att, keep
    valid = (depth_map > 0 if valid_only else np.ones(depth_map.shape, dtype=bool)).astype(np.float32)
    feature = torch.from_numpy(np.stack([depth_map * valid, valid]))[None]  # (1, 2, H_f, W_f)
    rois = torch.from_numpy(np.asarray(boxes, dtype=np.float32)[slots])  # (K, 4)
    out = roi_align(
        feature, [rois], output_size=roi_size, spatial_scale=1.0, sampling_ratio=-1, aligned=False
    )
    weight = out[:, 1].numpy()  # (K, r, r)
    roi_depth = np.where(weight > 0, out[:, 0].numpy() / np.maximum(weight, 1e-12), 0.0)
    z = np.asarray(depth, dtype=np.float32).reshape(m)[slots, None, None]  # (K, 1, 1)
    kept = (roi_depth > 0) & (np.abs(roi_depth - z) < tolerance)
    vis[slots] = np.where(kept, roi_depth, 0.0)
    att[slots] = np.where(kept, z - roi_depth, 0.0)
    keep[slots] = kept
    return vis, att, keep


def build_rpd_depth(
    depth_map: np.ndarray | None,
    *,
    crop_scale: float,
    bins: DepthBins,
    supervise_beyond: bool,
    feature_size: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray]:
    """The depth the RPD targets encode, and which cells they supervise (docs/method.md, 'Targets from
    projected LiDAR').

    The feature-grid depth is multiplied by the crop scale factor as the teacher's input is, so
    a zoomed crop asks for the depth the zoomed image looks like (docs/method.md, 'Framework'). The (K+1, H_f,
    W_f) soft two-hot target itself is made on the training device from this (H_f, W_f) map
    (:func:`lib.depth_bins.soft_targets`, in the criterion): ~80x less to ship per sample.

    Args:
        depth_map: (H_f, W_f) metres, 0 = none, or None. feature_size: (W_f, H_f).

    Returns:
        rpd_depth (H_f, W_f) float32 metres × crop scale (0 = none), rpd_mask (H_f, W_f) bool
        (zeros / False without depth).
    """
    if depth_map is None:
        wf, hf = feature_size
        return np.zeros((hf, wf), dtype=np.float32), np.zeros((hf, wf), dtype=bool)
    depth = (depth_map * np.float32(crop_scale)).astype(np.float32, copy=False)
    # float64 comparisons, as soft_targets makes them (depth_min/max need not be float32 values)
    return depth, rpd_valid(depth.astype(np.float64), bins, supervise_beyond=supervise_beyond)


def feature_depth(
    depth: np.ndarray | None, feature_size: tuple[int, int], downsample: int, depth_downsample: str
) -> np.ndarray | None:
    """(H_f·downsample, W_f·downsample) depth map, metres (0 = none) → (H_f, W_f) float32, or None:
    ``valid_mean`` (:func:`lib.depth_bins.downsample_depth`, empty pixels ignored) or ``area``
    (MonoSKD: cv2 INTER_AREA, empty pixels averaged in as 0 m)."""
    if depth_downsample not in DEPTH_DOWNSAMPLES:
        raise ValueError(f"dataset.depth_downsample: {depth_downsample!r} is not one of {DEPTH_DOWNSAMPLES}")
    if depth is None:
        return None
    if depth_downsample == "area":
        return cv2.resize(depth, tuple(feature_size), interpolation=cv2.INTER_AREA).astype(np.float32)
    return downsample_depth(depth, downsample)


def build_targets(
    objects: Sequence[Object3d],
    P2: np.ndarray,
    trans: np.ndarray,
    *,
    depth: np.ndarray | None,
    crop_scale: float,
    feature_size: tuple[int, int],
    downsample: int,
    bins: DepthBins,
    supervise_beyond: bool = False,
    max_objs: int = 50,
    writelist: Sequence[str] = HEATMAP_CLASSES,
    class_merging: bool = False,
    heatmap_cell: str = "floor",
    projection: str = "exact",
    depth_downsample: str = "valid_mean",
) -> dict[str, np.ndarray]:
    """Every target of one frame (``targets`` of the batch layout, lib/datasets/kitti.py).

    Args:
        objects, P2, trans, heatmap_cell, projection: as :func:`build_detection_targets`.
        depth: (H_f·downsample, W_f·downsample) warped depth map, metres (0 = none), or None.
        crop_scale: crop width / image width of the sample's augmentation.
        feature_size: (W_f, H_f). bins, supervise_beyond: RPD settings (docs/method.md, 'Bins').
        depth_downsample: as :func:`feature_depth`; ``area`` also RoI-aligns the DID depths with
            empty pixels as 0 m (MonoSKD).

    Returns:
        The :func:`build_detection_targets` dict plus vis_depth, att_depth, depth_mask
        (M, 7, 7), rpd_depth (H_f, W_f) float32, rpd_mask and fg_mask (H_f, W_f) bool.
    """
    wf, hf = feature_size
    if depth is not None and depth.shape != (hf * downsample, wf * downsample):
        raise ValueError(f"depth map {depth.shape} does not match the feature grid {hf}x{wf} x {downsample}")
    t = build_detection_targets(
        objects,
        P2,
        trans,
        feature_size=feature_size,
        downsample=downsample,
        max_objs=max_objs,
        writelist=writelist,
        class_merging=class_merging,
        heatmap_cell=heatmap_cell,
        projection=projection,
    )
    depth_feature = feature_depth(depth, feature_size, downsample, depth_downsample)
    t["vis_depth"], t["att_depth"], t["depth_mask"] = build_did_depth_targets(
        depth_feature, t["box2d"], t["depth"], t["mask_2d"], valid_only=depth_downsample != "area"
    )
    t["rpd_depth"], t["rpd_mask"] = build_rpd_depth(
        depth_feature,
        crop_scale=crop_scale,
        bins=bins,
        supervise_beyond=supervise_beyond,
        feature_size=feature_size,
    )
    t["fg_mask"] = foreground_mask(t["box2d"], height=hf, width=wf, valid=t["mask_2d"])
    return t
