"""Pure camera and box geometry for KITTI (numpy).

Frames: *velo* = Velodyne (x forward, y left, z up); *ref* = reference camera; *rect* =
rectified camera (x right, y down, z forward), where labels live; *image* = pixels of a
camera given by its 3x4 projection P (rect → image). A 3D box is (h, w, l) with its
bottom centre (x, y, z) in rect and yaw ``ry`` around the rect y axis; ``ry = 0`` points
the box's length along +x.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Calibration:
    """The cameras of a KITTI calib file (``kitti_io.read_calib``); matrices map homogeneous columns.

    Attributes:
        P: (4, 3, 4) projection matrices P0..P3, rectified camera → image of camera i.
        R0: (3, 3) rectifying rotation, reference camera → rectified camera.
        V2C: (3, 4) Tr_velo_to_cam, Velodyne → reference camera.
        I2V: (3, 4) Tr_imu_to_velo, IMU → Velodyne (absent in some files: identity then).
    """

    P: np.ndarray
    R0: np.ndarray
    V2C: np.ndarray
    I2V: np.ndarray = field(default_factory=lambda: np.eye(3, 4))

    @property
    def P2(self) -> np.ndarray:
        """(3, 4) projection of the left colour camera (image_2)."""
        return self.P[2]


def to_homogeneous(pts: np.ndarray) -> np.ndarray:
    """(N, D) → (N, D+1) with a trailing column of ones."""
    return np.concatenate([pts, np.ones((pts.shape[0], 1), dtype=pts.dtype)], axis=1)


def velo_to_rect(pts_velo: np.ndarray, calib: Calibration) -> np.ndarray:
    """Velodyne points (N, 3) → rect camera points (N, 3): x_rect = R0 · Tr_velo_to_cam · x_velo."""
    pts_ref = to_homogeneous(pts_velo[:, :3].astype(np.float64)) @ calib.V2C.T
    return pts_ref @ calib.R0.T


def rect_to_velo(pts_rect: np.ndarray, calib: Calibration) -> np.ndarray:
    """Rect camera points (N, 3) → Velodyne points (N, 3); the inverse of :func:`velo_to_rect`."""
    pts_ref = pts_rect.astype(np.float64) @ np.linalg.inv(calib.R0).T
    rot, trans = calib.V2C[:, :3], calib.V2C[:, 3]
    return (pts_ref - trans) @ np.linalg.inv(rot).T


def project_to_image(pts_rect: np.ndarray, P: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project rect points (N, 3) with P (3, 4).

    Returns:
        uv: (N, 2) pixel coordinates; depth: (N,) depth along the optical axis (P's third
        row, i.e. z plus the camera's small z offset), metres.
    """
    proj = to_homogeneous(pts_rect.astype(np.float64)) @ P.T  # (N, 3)
    depth = proj[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = proj[:, :2] / depth[:, None]
    return uv, depth


def unproject_to_rect(uv: np.ndarray, depth: np.ndarray, P: np.ndarray) -> np.ndarray:
    """Pixels (N, 2) at depths (N,) → rect points (N, 3); the inverse of :func:`project_to_image`.

    With P = [[fu, 0, cu, p03], [0, fv, cv, p13], [0, 0, 1, p23]]: z = depth - p23,
    x = (u·depth - cu·z - p03) / fu, y = (v·depth - cv·z - p13) / fv.
    """
    fu, fv, cu, cv = P[0, 0], P[1, 1], P[0, 2], P[1, 2]
    z = depth - P[2, 3]
    x = (uv[:, 0] * depth - P[0, 3] - cu * z) / fu
    y = (uv[:, 1] * depth - P[1, 3] - cv * z) / fv
    return np.stack([x, y, z], axis=1)


def box3d_corners(dims: np.ndarray, loc: np.ndarray, ry: np.ndarray) -> np.ndarray:
    """Corners of 3D boxes in rect coordinates.

    Args:
        dims: (N, 3) h, w, l (metres). loc: (N, 3) bottom centre (rect). ry: (N,) yaw.

    Returns:
        (N, 8, 3) corners: 0-3 the bottom face (y = loc_y), 4-7 the top face, both in the
        order (+l/2, +w/2), (+l/2, -w/2), (-l/2, -w/2), (-l/2, +w/2) in the box frame.
    """
    dims = np.asarray(dims, dtype=np.float64).reshape(-1, 3)
    loc = np.asarray(loc, dtype=np.float64).reshape(-1, 3)
    ry = np.asarray(ry, dtype=np.float64).reshape(-1)
    h, w, l = dims[:, 0:1], dims[:, 1:2], dims[:, 2:3]  # noqa: E741
    x = np.concatenate([l, l, -l, -l, l, l, -l, -l], axis=1) / 2  # (N, 8)
    z = np.concatenate([w, -w, -w, w, w, -w, -w, w], axis=1) / 2
    y = np.concatenate([np.zeros_like(h).repeat(4, 1), -h.repeat(4, 1)], axis=1)
    c, s = np.cos(ry)[:, None], np.sin(ry)[:, None]
    # Rotation about rect y: x' = c x + s z, z' = -s x + c z.
    xr = c * x + s * z
    zr = -s * x + c * z
    return np.stack([xr, y, zr], axis=2) + loc[:, None, :]


def box3d_to_box2d(
    corners: np.ndarray, P: np.ndarray, image_size: tuple[int, int] | None = None
) -> np.ndarray:
    """2D image boxes enclosing projected 3D boxes.

    Args:
        corners: (N, 8, 3) rect corners (:func:`box3d_corners`). P: (3, 4).
        image_size: (width, height) to clip the box to, or None.

    Returns:
        (N, 4) x1, y1, x2, y2 pixels.
    """
    n = corners.shape[0]
    uv, _ = project_to_image(corners.reshape(-1, 3), P)
    uv = uv.reshape(n, 8, 2)
    box = np.concatenate([uv.min(axis=1), uv.max(axis=1)], axis=1)
    if image_size is not None:
        w, h = image_size
        box[:, [0, 2]] = box[:, [0, 2]].clip(0, w - 1)
        box[:, [1, 3]] = box[:, [1, 3]].clip(0, h - 1)
    return box


def wrap_angle(angle: np.ndarray | float) -> np.ndarray | float:
    """Wrap radians to [-pi, pi)."""
    return (np.asarray(angle) + np.pi) % (2 * np.pi) - np.pi


def ry_to_alpha(ry: np.ndarray | float, x: np.ndarray | float, z: np.ndarray | float) -> np.ndarray | float:
    """Observation angle alpha from yaw and the box's rect position: alpha = ry - atan2(x, z)."""
    return wrap_angle(np.asarray(ry) - np.arctan2(x, z))


def alpha_to_ry(
    alpha: np.ndarray | float, x: np.ndarray | float, z: np.ndarray | float
) -> np.ndarray | float:
    """Yaw from the observation angle and the box's rect position: ry = alpha + atan2(x, z)."""
    return wrap_angle(np.asarray(alpha) + np.arctan2(x, z))


def alpha_to_ry_pixel(alpha: np.ndarray | float, u: np.ndarray | float, P: np.ndarray) -> np.ndarray | float:
    """GUPNet's pixel form (docs/reference.md, 'Heading' and 'Decoding and testing'): ry = alpha + atan2(u -
    cu, fu), wrapped."""
    return wrap_angle(np.asarray(alpha) + np.arctan2(np.asarray(u) - P[0, 2], P[0, 0]))


def ry_to_alpha_pixel(ry: np.ndarray | float, u: np.ndarray | float, P: np.ndarray) -> np.ndarray | float:
    """GUPNet's pixel form (docs/reference.md, 'Heading'): alpha = ry - atan2(u - cu, fu), wrapped."""
    return wrap_angle(np.asarray(ry) - np.arctan2(np.asarray(u) - P[0, 2], P[0, 0]))


def get_affine_transform(
    center: np.ndarray, crop_size: np.ndarray, out_size: np.ndarray, inv: bool = False
) -> np.ndarray:
    """Similarity that maps a crop (centre, width×height in source pixels) onto an output image.

    GUPNet's convention (docs/reference.md, 'GUPNet data pipeline'): the scale comes from the crop *width*
    only (s = out_w / crop_w), no rotation, and the crop centre maps to the output centre.

    Args:
        center: (2,) crop centre, source pixels. crop_size: (2,) crop w, h (only w is used).
        out_size: (2,) output w, h. inv: return the output → source map instead.

    Returns:
        (2, 3) float64 affine matrix for ``cv2.warpAffine`` / :func:`affine_transform`.
    """
    s = float(out_size[0]) / float(crop_size[0])
    if inv:
        s = 1.0 / s
        src_c, dst_c = np.asarray(out_size, np.float64) / 2, np.asarray(center, np.float64)
    else:
        src_c, dst_c = np.asarray(center, np.float64), np.asarray(out_size, np.float64) / 2
    return np.array([[s, 0.0, dst_c[0] - s * src_c[0]], [0.0, s, dst_c[1] - s * src_c[1]]])


def affine_transform(pts: np.ndarray, trans: np.ndarray) -> np.ndarray:
    """Apply a (2, 3) affine to points (..., 2)."""
    pts = np.asarray(pts, dtype=np.float64)
    return pts @ trans[:, :2].T + trans[:, 2]
