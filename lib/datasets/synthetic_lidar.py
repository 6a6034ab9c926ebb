"""Simulated LiDAR of the synthetic KITTI generator (lib/datasets/synthetic.py): a Velodyne
HDL-64E (64 beams, +2° to -24.8°) ray-cast against the ground plane and the objects' boxes, so
the points lie on the rendered surfaces."""

from __future__ import annotations

import numpy as np

from lib.datasets.synthetic_render import Part, ground_material, object_parts
from lib.datasets.synthetic_scene import Road, SceneObject
from lib.geometry import Calibration, box3d_corners, rect_to_velo

# --- LiDAR (Velodyne HDL-64E) -------------------------------------------------------------------
# Upper block +2° to -8.33° in 1/3° steps, lower block -8.83° to -24.8° in ~1/2° steps.
HDL64_ELEVATIONS_DEG = np.concatenate([np.linspace(2.0, -8.33, 32), np.linspace(-8.83, -24.8, 32)])
NUM_AZIMUTHS = 1000  # columns over the camera's horizontal field of view (~0.09° apart)
AZIMUTH_MARGIN_DEG = 2.0  # scan a little beyond the image edges
LIDAR_MAX_RANGE = 120.0  # m
RANGE_NOISE = 0.02  # m, std of the range noise


# --- LiDAR --------------------------------------------------------------------------------------
def _ray_box_distance(origin: np.ndarray, dirs: np.ndarray, part: Part) -> np.ndarray:
    """Distance along each ray (R, 3) from ``origin`` (3,) to a part's box (slab method), inf on a miss."""
    c, s = np.cos(part.ry), np.sin(part.ry)
    rel = origin - part.centre
    # Into the box frame (the inverse of box3d_corners' rotation about rect y).
    o_local = np.array([c * rel[0] - s * rel[2], rel[1], s * rel[0] + c * rel[2]])
    d_local = np.stack([c * dirs[:, 0] - s * dirs[:, 2], dirs[:, 1], s * dirs[:, 0] + c * dirs[:, 2]], axis=1)
    d_local = np.where(np.abs(d_local) < 1e-12, 1e-12, d_local)  # (R, 3)
    half = np.array([part.dims[2], part.dims[0], part.dims[1]]) / 2  # local x: l, y: h, z: w
    t1 = (-half - o_local) / d_local
    t2 = (half - o_local) / d_local
    t_near = np.minimum(t1, t2).max(axis=1)
    t_far = np.maximum(t1, t2).min(axis=1)
    return np.where((t_near <= t_far) & (t_near > 0), t_near, np.inf)


def _nearest_hits(
    origin: np.ndarray, dirs: np.ndarray, parts: list[Part], t_ground: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest hit of each ray (R, 3) among the ground and the parts.

    Only the rays inside a part's image are tested against it. The image is taken in the
    scanner-centred plane z = 1 (x/z, y/z), where the convex box stays convex, so the bounds of
    its corners' images bound every ray that can hit it. Parts and rays lie ahead of the scanner.

    Returns:
        t: (R,) distance along the ray (inf: no hit). first: (R,) 0 = ground, q + 1 = parts[q].
    """
    t, first = t_ground.copy(), np.zeros(t_ground.shape, np.int64)
    ray_xy = dirs[:, :2] / dirs[:, 2:]  # (R, 2)
    for q, part in enumerate(parts):
        corners = box3d_corners(part.dims[None], part.loc[None], np.array([part.ry]))[0] - origin  # (8, 3)
        corner_xy = corners[:, :2] / corners[:, 2:]  # (8, 2)
        lo, hi = corner_xy.min(axis=0) - 1e-6, corner_xy.max(axis=0) + 1e-6
        rays = np.flatnonzero(((ray_xy >= lo) & (ray_xy <= hi)).all(axis=1))
        t_part = _ray_box_distance(origin, dirs[rays], part)
        closer = rays[t_part < t[rays]]
        t[closer] = t_part[t_part < t[rays]]
        first[closer] = q + 1
    return t, first


def lidar_rays(
    calib: Calibration, image_size: tuple[int, int], *, num_azimuths: int = NUM_AZIMUTHS
) -> np.ndarray:
    """(64 * num_azimuths, 3) unit ray directions in the Velodyne frame (x forward, y left, z up),
    64 HDL-64E elevations × azimuths over the camera's horizontal field of view."""
    P = calib.P2
    right = np.arctan((image_size[0] - 1 - P[0, 2]) / P[0, 0])
    left = np.arctan(P[0, 2] / P[0, 0])
    margin = np.deg2rad(AZIMUTH_MARGIN_DEG)
    azimuth = np.linspace(left + margin, -(right + margin), num_azimuths)  # velo y is rect -x
    elevation = np.deg2rad(HDL64_ELEVATIONS_DEG)[:, None]
    dirs = np.stack(
        [
            np.cos(elevation) * np.cos(azimuth),
            np.cos(elevation) * np.sin(azimuth),
            np.sin(elevation) + 0 * azimuth,
        ],
        axis=-1,
    )
    return dirs.reshape(-1, 3)


def simulate_scan(
    objects: list[SceneObject],
    *,
    road: Road,
    texture: np.ndarray,
    calib: Calibration,
    image_size: tuple[int, int],
    rng: np.random.Generator,
    num_azimuths: int = NUM_AZIMUTHS,
) -> np.ndarray:
    """Ray-cast a 64-beam scan against the ground plane and the objects' boxes (nearest hit).

    Rays start at the Velodyne origin (rect position R0·t of Tr_velo_to_cam); hits beyond
    LIDAR_MAX_RANGE or in the sky are dropped; the range gets N(0, RANGE_NOISE) noise. Points go
    back to the Velodyne frame with :func:`lib.geometry.rect_to_velo`.

    Returns:
        (N, 4) float32 x, y, z (velo, metres), reflectance in [0, 1].
    """
    dirs_velo = lidar_rays(calib, image_size, num_azimuths=num_azimuths)  # (R, 3)
    rot = calib.R0 @ calib.V2C[:, :3]
    origin = calib.R0 @ calib.V2C[:, 3]  # (3,) the Velodyne's rect position
    dirs = dirs_velo @ rot.T  # (R, 3) rect
    with np.errstate(divide="ignore"):
        t_ground = np.where(dirs[:, 1] > 1e-9, (road.ground_y - origin[1]) / dirs[:, 1], np.inf)  # (R,)
    parts = [part for obj in objects for part in object_parts(obj)]
    t, first = _nearest_hits(origin, dirs, parts, t_ground)  # (R,), (R,)
    hit = t < LIDAR_MAX_RANGE
    first, t, dirs = first[hit], t[hit], dirs[hit]
    exact = origin + t[:, None] * dirs  # (M, 3) rect
    part_reflectance = np.array([0.0] + [p.reflectance for p in parts])
    reflectance = part_reflectance[first]
    on_ground = first == 0
    _, ground_r = ground_material(exact[on_ground, 0], exact[on_ground, 2], road=road, texture=texture)
    reflectance[on_ground] = ground_r
    noisy = origin + (t + rng.normal(0.0, RANGE_NOISE, t.shape))[:, None] * dirs
    reflectance = (reflectance + rng.uniform(-0.05, 0.05, t.shape)).clip(0.0, 1.0)
    return np.concatenate([rect_to_velo(noisy, calib), reflectance[:, None]], axis=1).astype(np.float32)
