"""Image rendering of the synthetic KITTI generator (lib/datasets/synthetic.py): the objects'
box meshes, the sky, the textured road, far-away buildings, cast shadows and the objects drawn
far to near (painter's algorithm) with per-face Lambert shading and distance haze."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from lib.datasets.synthetic_scene import Road, SceneObject, camera_centre
from lib.geometry import Calibration, box3d_corners, project_to_image

# --- appearance ---------------------------------------------------------------------------------
AMBIENT, DIFFUSE = 0.4, 0.6  # face brightness = AMBIENT + DIFFUSE * max(0, normal · sun)
HAZE_DISTANCE = 250.0  # m: colours fade towards the horizon haze as exp(-distance / this)
SHADOW_DARKNESS = 0.55  # ground brightness factor inside a cast shadow
TEXTURE_SIZE, TEXEL = 64, 0.25  # ground texture: 64 x 64 texels of 0.25 m, tiled
PIXEL_NOISE = 3.0  # std of the Gaussian pixel noise, 8-bit grey levels
PAVEMENT_WIDTH = 2.0  # m, either side of the road
LINE_HALF_WIDTH = 0.075  # m: road markings are 15 cm wide
DASH_PERIOD, DASH_LENGTH = 12.0, 4.0  # m: dashed lane lines
GROUND_REFLECTANCE = np.array([0.15, 0.25, 0.35, 0.7], np.float32)  # asphalt, pavement, verge, paint
MAX_GROUND_DEPTH = 2000.0  # m: rows closer to the horizon are drawn as haze
_SHIFT = 4  # fixed-point bits of the polygon coordinates given to OpenCV (1/16 px)

# Faces of a box3d_corners box: corner indices (in order around the face).
_FACES = np.array([[0, 1, 2, 3], [4, 5, 6, 7], [0, 1, 5, 4], [2, 3, 7, 6], [3, 0, 4, 7], [1, 2, 6, 5]])
_TOP = 1  # the index of the top face in _FACES


@dataclass(frozen=True)
class Part:
    """A box of an object's mesh: geometry, per-face albedo (6, 3) and LiDAR reflectance."""

    dims: np.ndarray
    loc: np.ndarray
    ry: float
    face_rgb: np.ndarray
    reflectance: float

    @property
    def centre(self) -> np.ndarray:
        return self.loc - np.array([0.0, self.dims[0] / 2, 0.0])


# --- object meshes ------------------------------------------------------------------------------
def _stacked_part(
    obj: SceneObject, *, bottom: float, top: float, w: float, l: float, forward: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Dims and bottom centre of a box between heights ``bottom`` and ``top`` (m above the ground)
    of ``obj``, centred on its footprint shifted ``forward`` metres along its heading."""
    c, s = np.cos(obj.ry), np.sin(obj.ry)
    loc = obj.loc + np.array([c * forward, -bottom, -s * forward])  # local +x is rect (c, 0, -s)
    return np.array([top - bottom, w, l]), loc


def _face_colours(side: np.ndarray, top: np.ndarray | None = None) -> np.ndarray:
    """(6, 3) per-face albedo in _FACES order: one colour for the sides, optionally another on top."""
    rgb = np.repeat(np.asarray(side, np.float64)[None], 6, axis=0)
    if top is not None:
        rgb[_TOP] = top
    return rgb


def object_parts(obj: SceneObject) -> list[Part]:
    """The boxes an object is drawn and scanned as, all inside its label box, bottom to top."""
    h, w, l = obj.dims
    paint, second, third = obj.palette
    r = obj.reflectance
    if obj.cls_type == "Car":
        body = _stacked_part(obj, bottom=0.0, top=0.55 * h, w=w, l=l)
        cabin = _stacked_part(obj, bottom=0.55 * h, top=h, w=0.88 * w, l=0.5 * l, forward=-0.1 * l)
        return [
            Part(*body, obj.ry, _face_colours(paint), r),
            Part(*cabin, obj.ry, _face_colours(second, paint), r / 2),
        ]
    if obj.cls_type == "Pedestrian":
        specs = [(0.0, 0.48 * h, 0.8 * w, 0.6 * l, second), (0.48 * h, 0.85 * h, w, 0.7 * l, paint)]
        specs.append((0.85 * h, h, 0.35 * w, 0.35 * l, third))
    elif obj.cls_type == "Cyclist":
        specs = [(0.0, 0.5 * h, 0.3 * w, l, second), (0.5 * h, 0.86 * h, 0.9 * w, 0.35 * l, paint)]
        specs.append((0.86 * h, h, 0.4 * w, 0.2 * l, third))
    else:
        raise ValueError(f"synthetic objects are Car, Pedestrian or Cyclist, got {obj.cls_type!r}")
    parts = []
    for bottom, top, pw, pl, rgb in specs:
        dims, loc = _stacked_part(obj, bottom=bottom, top=top, w=pw, l=pl)
        parts.append(Part(dims, loc, obj.ry, _face_colours(rgb), r))
    return parts


def _draw_order(parts: list[Part], camera_y: float) -> list[Part]:
    """Painter's order inside one vertical stack: a part can only hide parts on the far side of the
    horizontal plane that separates them from the camera, so draw the parts farthest above or below
    the camera's height first."""

    def vertical_gap(part: Part) -> float:
        bottom, top = part.loc[1], part.loc[1] - part.dims[0]  # rect y grows downwards
        return max(0.0, camera_y - bottom, top - camera_y)

    return sorted(parts, key=vertical_gap, reverse=True)


# --- rendering ----------------------------------------------------------------------------------
def _haze(rgb: np.ndarray, distance: np.ndarray | float, haze_rgb: np.ndarray) -> np.ndarray:
    """Blend colours (..., 3) towards the horizon haze with distance (...) in metres."""
    keep = np.exp(np.asarray(distance, np.float32) * np.float32(-1.0 / HAZE_DISTANCE))[..., None]
    return rgb * keep + haze_rgb.astype(np.float32) * (1.0 - keep)


def ground_material(
    x: np.ndarray, z: np.ndarray, *, road: Road, texture: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Albedo and LiDAR reflectance of ground points (rect x, z; any equal shapes S).

    Road (asphalt with dashed lane lines and solid edge lines), pavement either side, verge
    beyond; a tiled noise texture (metre-scale, so it shrinks with distance) modulates the albedo.

    Returns:
        rgb: S + (3,) float32 albedo in [0, 1]. reflectance: S float32.
    """
    lateral, along = road.to_road_frame(np.asarray(x, np.float32), np.asarray(z, np.float32))
    dist = np.abs(lateral)
    # Material index: 0 asphalt, 1 pavement, 2 verge, 3 white paint.
    material = (dist >= road.half_width).astype(np.uint8) + (dist >= road.half_width + PAVEMENT_WIDTH)
    boundary = (lateral + road.half_width) * np.float32(1.0 / road.lane_width)  # lane boundaries at integers
    nearest = np.rint(boundary)
    lane_line = (np.abs(boundary - nearest) < LINE_HALF_WIDTH / road.lane_width) & (nearest > 0)
    lane_line &= (nearest < road.num_lanes) & (np.mod(along, DASH_PERIOD) < DASH_LENGTH)
    edge = np.abs(dist - (road.half_width - 0.3)) < LINE_HALF_WIDTH
    material[lane_line | edge] = 3
    albedo = np.concatenate([road.colours, np.full((1, 3), 0.9)]).astype(np.float32)  # (4, 3)
    # TEXTURE_SIZE is a power of two, so "& (size - 1)" is a modulo that also wraps negatives.
    ti = np.floor(along * np.float32(1.0 / TEXEL)).astype(np.int32) & (TEXTURE_SIZE - 1)
    tj = np.floor(lateral * np.float32(1.0 / TEXEL)).astype(np.int32) & (TEXTURE_SIZE - 1)
    grain = 1.0 + 0.2 * texture.astype(np.float32)[ti, tj]  # S
    rgb = (albedo[material] * grain[..., None]).clip(0.0, 1.0)
    return rgb, GROUND_REFLECTANCE[material]


def _render_background(
    calib: Calibration,
    image_size: tuple[int, int],
    *,
    road: Road,
    texture: np.ndarray,
    sky: np.ndarray,
    sun_shade: float,
) -> np.ndarray:
    """(H, W, 3) float32 RGB: sky gradient above the horizon, the shaded, hazy ground below it."""
    width, height = image_size
    P = calib.P2
    fu, fv, cu, cv = P[0, 0], P[1, 1], P[0, 2], P[1, 2]
    v = np.arange(height, dtype=np.float64)
    # Row v sees the ground (y = h = road.ground_y) at z solving v (z + p23) = fv h + cv z + p13.
    with np.errstate(divide="ignore"):
        z_row = (fv * road.ground_y + P[1, 3] - v * P[2, 3]) / (v - cv)  # (H,)
    ground_rows = np.flatnonzero((v > cv) & (z_row < MAX_GROUND_DEPTH))
    t = np.clip(v / max(cv, 1.0), 0.0, 1.0)[:, None]  # 0 at the top, 1 at the horizon
    image = np.empty((height, width, 3), np.float32)
    image[:] = (sky[0] * (1 - t) + sky[1] * t)[:, None, :]
    if ground_rows.size:
        z = z_row[ground_rows][:, None]  # (R, 1)
        u = np.arange(width, dtype=np.float64)[None, :]  # (1, W)
        x = (u * (z + P[2, 3]) - cu * z - P[0, 3]) / fu  # (R, W)
        z = np.broadcast_to(z, x.shape)
        rgb, _ = ground_material(x, z, road=road, texture=texture)
        image[ground_rows] = _haze(rgb * np.float32(sun_shade), np.hypot(x, z), sky[1])
    return image


def _draw_buildings(
    image: np.ndarray, P: np.ndarray, rng: np.random.Generator, haze: np.ndarray, *, ground_y: float
) -> None:
    """Far-away buildings (150-250 m, beyond the LiDAR's range) standing on the ground plane
    (rect y = ``ground_y``) near the horizon, in place."""
    width = image.shape[1]
    x = -150.0
    while x < 150.0:
        bw, bh, z = rng.uniform(8.0, 40.0), rng.uniform(4.0, 30.0), rng.uniform(150.0, 250.0)
        if rng.random() < 0.7:
            corners = np.array([[x, ground_y, z], [x + bw, ground_y - bh, z]])
            uv, _ = project_to_image(corners, P)
            rgb = _haze(rng.uniform(0.2, 0.7) * rng.uniform(0.85, 1.15, 3), z, haze).clip(0, 1)
            (u0, v0), (u1, v1) = np.round(uv).astype(int)
            if u1 >= 0 and u0 < width:
                image[max(v1, 0) : max(v0, 0), max(u0, 0) : min(u1, width)] = rgb
        x += bw + rng.uniform(0.0, 10.0)


def _project_fixed(pts: np.ndarray, P: np.ndarray) -> np.ndarray:
    """Rect points (N, 3) → int32 pixel coordinates with _SHIFT fractional bits, for cv2.fill*."""
    uv, _ = project_to_image(pts, P)
    return np.round(uv * (1 << _SHIFT)).astype(np.int32)


def _draw_shadows(
    image: np.ndarray, objects: list[SceneObject], P: np.ndarray, sun: np.ndarray, *, ground_y: float
) -> None:
    """Darken, in place, the ground (rect y = ``ground_y``) under each object's box where the sun's
    shadow falls."""
    mask = np.zeros(image.shape[:2], np.uint8)
    for obj in objects:
        corners = obj.corners()  # (8, 3)
        drop = (ground_y - corners[:, 1]) / -sun[1]  # along -sun to the ground plane
        on_ground = corners - drop[:, None] * sun  # (8, 3), y = ground_y
        hull = cv2.convexHull(_project_fixed(on_ground, P))
        cv2.fillConvexPoly(mask, hull, 1, cv2.LINE_8, _SHIFT)
    image[mask.astype(bool)] *= SHADOW_DARKNESS


def _render_objects(
    image: np.ndarray, objects: list[SceneObject], *, P: np.ndarray, sun: np.ndarray, haze: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Draw the objects far to near on a uint8 RGB image, in place (painter's algorithm).

    Returns:
        ids: (H, W) uint8, k + 1 where ``objects[k]`` is the front-most surface, else 0.
        own_pixels: (K,) int64 pixels each object covers when drawn alone.
    """
    cam = camera_centre(P)
    ids = np.zeros(image.shape[:2], np.uint8)
    own = np.zeros(image.shape[:2], np.uint8)
    own_pixels = np.zeros(len(objects), np.int64)
    distance = [np.linalg.norm(obj.loc - np.array([0.0, obj.dims[0] / 2, 0.0]) - cam) for obj in objects]
    for k in np.argsort(distance)[::-1]:
        own[:] = 0
        for part in _draw_order(object_parts(objects[k]), cam[1]):
            corners = box3d_corners(part.dims[None], part.loc[None], np.array([part.ry]))[0]  # (8, 3)
            pix = _project_fixed(corners, P)  # (8, 2)
            centres = corners[_FACES].mean(axis=1)  # (6, 3)
            normals = centres - part.centre
            normals /= np.linalg.norm(normals, axis=1, keepdims=True)
            visible = np.einsum("fd,fd->f", normals, cam - centres) > 1e-9
            shade = AMBIENT + DIFFUSE * np.clip(normals @ sun, 0.0, None)  # (6,)
            rgb = _haze(part.face_rgb * shade[:, None], distance[k], haze).clip(0, 1) * 255  # (6, 3)
            for f in np.flatnonzero(visible):
                poly = pix[_FACES[f]]
                cv2.fillConvexPoly(image, poly, tuple(float(c) for c in rgb[f]), cv2.LINE_AA, _SHIFT)
                cv2.fillConvexPoly(ids, poly, int(k) + 1, cv2.LINE_8, _SHIFT)
                cv2.fillConvexPoly(own, poly, 1, cv2.LINE_8, _SHIFT)
        own_pixels[k] = cv2.countNonZero(own)
    return ids, own_pixels


def render_image(
    objects: list[SceneObject],
    *,
    rng: np.random.Generator,
    calib: Calibration,
    image_size: tuple[int, int],
    road: Road,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Render a scene: random sun and sky, the textured road, buildings, shadows, the objects and
    pixel noise, drawn from ``rng`` in that order.

    Returns:
        image: (H, W, 3) uint8 RGB. ids, own_pixels: those of :func:`_render_objects`.
        texture: (TEXTURE_SIZE, TEXTURE_SIZE) the ground texture (the LiDAR's reflectance uses it).
    """
    P = calib.P2
    sun = np.array([rng.uniform(-0.7, 0.7), -1.0, rng.uniform(-0.7, 0.7)])
    sun /= np.linalg.norm(sun)  # unit vector towards the sun (rect y is down)
    sky = np.array([[0.3, 0.5, 0.8], [0.75, 0.82, 0.9]]) * rng.uniform(0.85, 1.1, (2, 1))  # top, horizon
    texture = rng.uniform(-1.0, 1.0, (TEXTURE_SIZE, TEXTURE_SIZE))
    background = _render_background(
        calib, image_size, road=road, texture=texture, sky=sky, sun_shade=AMBIENT + DIFFUSE * -sun[1]
    )
    _draw_buildings(background, P, rng, sky[1], ground_y=road.ground_y)
    _draw_shadows(background, objects, P, sun, ground_y=road.ground_y)
    image = (background.clip(0.0, 1.0) * 255).astype(np.uint8)
    ids, own_pixels = _render_objects(image, objects, P=P, sun=sun, haze=sky[1])
    noise = rng.standard_normal(image.shape, dtype=np.float32) * PIXEL_NOISE
    image = (image + noise).clip(0, 255).astype(np.uint8)
    return image, ids, own_pixels, texture
