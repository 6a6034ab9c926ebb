"""Synthetic KITTI-format frames: a rendered road scene, its labels and a simulated LiDAR scan.

The demo and the end-to-end tests train on this instead of KITTI, so every file it writes
follows the KITTI object layout exactly (``training/{image_2,calib,label_2,velodyne}``,
``ImageSets/*.txt``) and the rest of the pipeline (depth-map tool, dataset, evaluator) runs on it
unchanged.

The scene lives in the rectified camera frame (rect: x right, y down, z forward) of a real KITTI
calibration: a flat ground plane at ``y = CAMERA_HEIGHT`` (the camera 1.65 m above the road, as
in KITTI and the RPD bins of docs/method.md §2), a straight road with lane markings and a textured
surface (its texture shrinks with distance, a monocular depth cue), far-away buildings, and
2-8 objects (~70 % cars) resting on the ground. Each object is a small vertical stack of boxes
(car body + cabin, legs + torso + head, bike + rider + head) inside its label box, drawn far to
near (painter's algorithm) with per-face Lambert shading, a cast shadow and distance haze.
The same boxes are ray-cast by a simulated HDL-64E (64 beams, +2° to -24.8°), so the LiDAR
points lie on the rendered surfaces.

Labels are exact: the 3D box parameters are rounded to the 2 decimals of a label file *before*
rendering, the 2D box is the projected 3D box clipped to the image, truncation is the fraction of
the unclipped 2D box outside the image, and the occlusion level comes from the fraction of the
object's own pixels hidden by nearer objects in the render (:data:`OCCLUSION_BOUNDS`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from lib.datasets.kitti_io import Object3d, write_calib, write_label, write_split
from lib.geometry import (
    Calibration,
    box3d_corners,
    box3d_to_box2d,
    project_to_image,
    rect_to_velo,
    ry_to_alpha,
    wrap_angle,
)

logger = logging.getLogger(__name__)

# --- camera -------------------------------------------------------------------------------------
IMAGE_SIZE = (1242, 375)  # (width, height) of the calibration below
# KITTI drive 2011_09_26 (training frame 000001 of tests/data/kitti_sample): the most common
# KITTI calibration, whose focal length 721.54 px is also the RPD reference focal (docs/method.md §2.2).
_KITTI_P = np.array(
    [
        [721.5377, 0.0, 609.5593, 0.0, 0.0, 721.5377, 172.854, 0.0, 0.0, 0.0, 1.0, 0.0],
        [721.5377, 0.0, 609.5593, -387.5744, 0.0, 721.5377, 172.854, 0.0, 0.0, 0.0, 1.0, 0.0],
        [721.5377, 0.0, 609.5593, 44.85728, 0.0, 721.5377, 172.854, 0.2163791, 0.0, 0.0, 1.0, 0.002745884],
        [721.5377, 0.0, 609.5593, -339.5242, 0.0, 721.5377, 172.854, 2.199936, 0.0, 0.0, 1.0, 0.002729905],
    ]
).reshape(4, 3, 4)
_KITTI_R0 = np.array(
    [
        0.9999239,
        0.00983776,
        -0.007445048,
        -0.009869795,
        0.9999421,
        -0.004278459,
        0.007402527,
        0.004351614,
        0.9999631,
    ]
).reshape(3, 3)
_KITTI_V2C = np.array(
    [
        [0.007533745, -0.9999714, -0.000616602, -0.004069766],
        [0.01480249, 0.0007280733, -0.9998902, -0.07631618],
        [0.9998621, 0.00752379, 0.01480755, -0.2717806],
    ]
)
_KITTI_I2V = np.array(
    [
        [0.9999976, 0.0007553071, -0.002035826, -0.8086759],
        [-0.0007854027, 0.9998898, -0.01482298, 0.3195559],
        [0.002024406, 0.01482454, 0.9998881, -0.7997231],
    ]
)
CAMERA_HEIGHT = 1.65  # m: rect y of the ground plane (KITTI's camera height; rpd.camera_height)

# --- scene sampling -----------------------------------------------------------------------------
NUM_OBJECTS = (2, 8)  # inclusive range of objects placed per frame
DEPTH_RANGE = (5.0, 60.0)  # m, rect z of the object centres
CLASS_PROBS = {"Car": 0.7, "Pedestrian": 0.15, "Cyclist": 0.15}
# Mean [h, w, l] (docs/reference.md §1.7, the values of lib.constants.MEAN_SIZES) and a per-class spread;
# sizes are drawn from a normal clipped at ±2 standard deviations.
SIZE_MEAN = {"Pedestrian": (1.76, 0.66, 0.84), "Car": (1.53, 1.63, 3.88), "Cyclist": (1.74, 0.60, 1.76)}
SIZE_STD = {"Pedestrian": (0.10, 0.08, 0.12), "Car": (0.10, 0.10, 0.35), "Cyclist": (0.08, 0.06, 0.15)}
ON_ROAD_PROB = {"Car": 0.6, "Pedestrian": 0.0, "Cyclist": 0.4}  # in a lane and along the road
FOOTPRINT_MARGIN = 0.3  # m: minimum gap between two objects' ground footprints
MAX_TRIES_PER_OBJECT = 20  # placement attempts before a frame settles for fewer objects
MAX_SCENE_OBJECTS = 254  # the instance map is uint8 with 0 for the background
OCCLUSION_BOUNDS = (0.1, 0.5, 0.8)  # hidden-pixel fractions where levels 1, 2, 3 start

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

# --- LiDAR (Velodyne HDL-64E) -------------------------------------------------------------------
# Upper block +2° to -8.33° in 1/3° steps, lower block -8.83° to -24.8° in ~1/2° steps.
HDL64_ELEVATIONS_DEG = np.concatenate([np.linspace(2.0, -8.33, 32), np.linspace(-8.83, -24.8, 32)])
NUM_AZIMUTHS = 1000  # columns over the camera's horizontal field of view (~0.09° apart)
AZIMUTH_MARGIN_DEG = 2.0  # scan a little beyond the image edges
LIDAR_MAX_RANGE = 120.0  # m
RANGE_NOISE = 0.02  # m, std of the range noise

# Faces of a box3d_corners box: corner indices (in order around the face).
_FACES = np.array([[0, 1, 2, 3], [4, 5, 6, 7], [0, 1, 5, 4], [2, 3, 7, 6], [3, 0, 4, 7], [1, 2, 6, 5]])
_TOP = 1  # the index of the top face in _FACES


@dataclass(frozen=True)
class SceneObject:
    """One object of a synthetic scene (rect frame), before it is rendered and labelled.

    Attributes:
        cls_type: ``Car``, ``Pedestrian`` or ``Cyclist``.
        dims: (3,) h, w, l, metres. loc: (3,) bottom centre, rect, metres. ry: yaw, radians.
        palette: (3, 3) RGB in [0, 1]: car paint / glass / -, pedestrian shirt / trousers / skin,
            cyclist shirt / bike / skin.
        reflectance: LiDAR reflectance of its surfaces, [0, 1].
    """

    cls_type: str
    dims: np.ndarray
    loc: np.ndarray
    ry: float
    palette: np.ndarray = field(
        default_factory=lambda: np.array([[0.8, 0.1, 0.1], [0.15, 0.2, 0.25], [0.8, 0.6, 0.5]])
    )
    reflectance: float = 0.5

    def corners(self) -> np.ndarray:
        """(8, 3) rect corners of the label box (:func:`lib.geometry.box3d_corners`)."""
        return box3d_corners(self.dims[None], self.loc[None], np.array([self.ry]))[0]


@dataclass(frozen=True)
class Road:
    """A straight road on the ground plane.

    Attributes:
        heading: angle of the road direction from rect +z towards +x, radians.
        offset: lateral position of the road's centre line from the camera, metres.
        lane_width: metres. num_lanes: lanes across the whole road.
        colours: (3, 3) RGB albedo of asphalt, pavement and verge.
    """

    heading: float
    offset: float
    lane_width: float
    num_lanes: int
    colours: np.ndarray

    @property
    def half_width(self) -> float:
        return self.lane_width * self.num_lanes / 2

    def to_road_frame(self, x: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rect ground coordinates → (lateral from the centre line, distance along the road)."""
        c, s = np.cos(self.heading), np.sin(self.heading)
        return x * c - z * s - self.offset, x * s + z * c

    def from_road_frame(self, lateral: float, along: float) -> tuple[float, float]:
        """(lateral, along) → rect ground (x, z); the inverse of :meth:`to_road_frame`."""
        c, s = np.cos(self.heading), np.sin(self.heading)
        lat = lateral + self.offset
        return lat * c + along * s, -lat * s + along * c


@dataclass
class SyntheticFrame:
    """A generated frame: what a KITTI frame holds, plus the render's instance map.

    Attributes:
        image: (H, W, 3) uint8 RGB.
        objects: the labelled objects (visible in the image), label-file order.
        calib: the camera calibration (P2 renders the image).
        scan: (N, 4) float32 Velodyne points x, y, z (metres, velo frame), reflectance.
        instance_ids: (H, W) uint8, 0 = background, k + 1 = a pixel drawn for ``objects[k]``.
    """

    image: np.ndarray
    objects: list[Object3d]
    calib: Calibration
    scan: np.ndarray
    instance_ids: np.ndarray


@dataclass(frozen=True)
class _Part:
    """A box of an object's mesh: geometry, per-face albedo (6, 3) and LiDAR reflectance."""

    dims: np.ndarray
    loc: np.ndarray
    ry: float
    face_rgb: np.ndarray
    reflectance: float

    @property
    def centre(self) -> np.ndarray:
        return self.loc - np.array([0.0, self.dims[0] / 2, 0.0])


def synthetic_calibration(image_size: tuple[int, int] = IMAGE_SIZE) -> Calibration:
    """The embedded KITTI calibration, P0..P3 scaled to an image of ``(width, height)`` pixels."""
    width, height = image_size
    if width < 16 or height < 16:
        raise ValueError(f"image_size must be at least 16x16 pixels, got {width}x{height}")
    P = _KITTI_P.copy()
    P[:, 0, :] *= width / IMAGE_SIZE[0]
    P[:, 1, :] *= height / IMAGE_SIZE[1]
    return Calibration(P=P, R0=_KITTI_R0.copy(), V2C=_KITTI_V2C.copy(), I2V=_KITTI_I2V.copy())


def camera_centre(P: np.ndarray) -> np.ndarray:
    """(3,) rect position of the camera of a 3x4 projection P (its null vector)."""
    return -np.linalg.solve(P[:, :3], P[:, 3])


def occlusion_level(hidden_fraction: float) -> int:
    """KITTI occlusion level 0 (visible) .. 3 (mostly hidden) of an object's hidden pixel fraction."""
    return int(np.searchsorted(OCCLUSION_BOUNDS, hidden_fraction, side="right"))


# --- sampling -----------------------------------------------------------------------------------
def sample_road(rng: np.random.Generator) -> Road:
    """A random road the camera drives on (the camera lies inside the road)."""
    num_lanes = int(rng.integers(2, 5))
    lane_width = float(rng.uniform(3.2, 3.8))
    half = lane_width * num_lanes / 2
    asphalt = np.full(3, rng.uniform(0.28, 0.42)) * rng.uniform(0.95, 1.05, 3)
    pavement = np.full(3, rng.uniform(0.5, 0.62)) * rng.uniform(0.95, 1.05, 3)
    verge = np.array([rng.uniform(0.25, 0.45), rng.uniform(0.35, 0.5), rng.uniform(0.15, 0.25)])
    return Road(
        heading=float(rng.normal(0.0, 0.05)),
        offset=float(rng.uniform(-half + 0.6 * lane_width, half - 0.6 * lane_width)),
        lane_width=lane_width,
        num_lanes=num_lanes,
        colours=np.stack([asphalt, pavement, verge]).clip(0, 1),
    )


def _sample_palette(rng: np.random.Generator, cls_type: str) -> np.ndarray:
    """(3, 3) RGB colours of an object's parts (see :class:`SceneObject`)."""

    def vivid() -> np.ndarray:
        hsv = np.uint8([[[rng.integers(0, 180), rng.integers(120, 256), rng.integers(90, 256)]]])
        return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0] / 255.0

    skin = np.array([0.85, 0.65, 0.5]) * rng.uniform(0.5, 1.0)
    if cls_type == "Car":
        paint = vivid() if rng.random() < 0.8 else np.full(3, rng.choice([0.1, 0.75, 0.9]))
        glass = np.array([0.18, 0.24, 0.32]) * rng.uniform(0.8, 1.2)
        return np.stack([paint, glass, glass])
    if cls_type == "Pedestrian":
        return np.stack([vivid(), vivid() * 0.6, skin])
    return np.stack([vivid(), np.full(3, rng.uniform(0.05, 0.3)), skin])


def _sample_object(
    rng: np.random.Generator,
    *,
    road: Road,
    P: np.ndarray,
    image_size: tuple[int, int],
    depth_range: tuple[float, float],
) -> SceneObject:
    """One random object (dimensions, pose, colours), rounded to label precision (2 decimals)."""
    width = image_size[0]
    cls_type = str(rng.choice(list(CLASS_PROBS), p=list(CLASS_PROBS.values())))
    mean, std = np.array(SIZE_MEAN[cls_type]), np.array(SIZE_STD[cls_type])
    dims = mean + std * np.clip(rng.standard_normal(3), -2.0, 2.0)
    z = rng.uniform(*depth_range)
    if rng.random() < ON_ROAD_PROB[cls_type]:
        lane = rng.integers(0, road.num_lanes)
        lateral = -road.half_width + (lane + 0.5) * road.lane_width + rng.normal(0.0, 0.3)
        along = (z + (lateral + road.offset) * np.sin(road.heading)) / np.cos(road.heading)
        x, z = road.from_road_frame(lateral, along)
        # ry = heading - pi/2 points the box length along the road (ry = -pi/2 is rect +z).
        ry = road.heading - np.pi / 2 + np.pi * rng.integers(0, 2) + rng.normal(0.0, 0.05)
    else:
        u = rng.uniform(-0.1 * width, 1.1 * width)
        x = (u - P[0, 2]) * z / P[0, 0]
        ry = rng.uniform(-np.pi, np.pi)
    return SceneObject(
        cls_type=cls_type,
        dims=np.round(dims, 2),
        loc=np.round(np.array([x, CAMERA_HEIGHT, z]), 2),
        ry=float(np.round(wrap_angle(ry), 2)),
        palette=_sample_palette(rng, cls_type),
        reflectance=float(rng.uniform(0.2, 0.9)),
    )


def _footprints_overlap(a: SceneObject, b: SceneObject, margin: float = FOOTPRINT_MARGIN) -> bool:
    """Whether two objects' ground rectangles, each grown by ``margin`` / 2, intersect (separating axes)."""
    grown = [obj.dims + np.array([0.0, margin, margin]) for obj in (a, b)]
    corners = box3d_corners(np.stack(grown), np.stack([a.loc, b.loc]), np.array([a.ry, b.ry]))  # (2, 8, 3)
    polys = corners[:, :4][:, :, [0, 2]]  # (2, 4, 2) bottom faces in the ground plane (x, z)
    for poly in polys:
        edges = np.roll(poly, -1, axis=0) - poly
        axes = np.stack([-edges[:, 1], edges[:, 0]], axis=1)  # (4, 2) edge normals
        pa, pb = polys[0] @ axes.T, polys[1] @ axes.T  # (4, 4) projections on each axis
        if np.any(pa.max(0) < pb.min(0)) or np.any(pb.max(0) < pa.min(0)):
            return False
    return True


def sample_objects(
    rng: np.random.Generator,
    *,
    road: Road,
    calib: Calibration,
    image_size: tuple[int, int],
    num_objects: tuple[int, int] = NUM_OBJECTS,
    depth_range: tuple[float, float] = DEPTH_RANGE,
) -> list[SceneObject]:
    """Random objects on the ground, in front of the camera, with non-overlapping footprints.

    Objects whose bottom centre projects far outside the image are redrawn; a frame keeps fewer
    objects than drawn when the placement keeps failing (a crowded frame).
    """
    lo, hi = num_objects
    if not 1 <= lo <= hi:
        raise ValueError(f"num_objects must be (min, max) with 1 <= min <= max, got {num_objects}")
    if not 0 < depth_range[0] < depth_range[1]:
        raise ValueError(f"depth_range must be (near, far) with 0 < near < far, got {depth_range}")
    width = image_size[0]
    P = calib.P2
    wanted = int(rng.integers(lo, hi + 1))
    objects: list[SceneObject] = []
    for _ in range(wanted * MAX_TRIES_PER_OBJECT):
        if len(objects) == wanted:
            break
        obj = _sample_object(rng, road=road, P=P, image_size=image_size, depth_range=depth_range)
        uv, _ = project_to_image(obj.loc[None], P)
        if not -0.15 * width <= uv[0, 0] <= 1.15 * width:
            continue
        if not any(_footprints_overlap(obj, other) for other in objects):
            objects.append(obj)
    return objects


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


def object_parts(obj: SceneObject) -> list[_Part]:
    """The boxes an object is drawn and scanned as, all inside its label box, bottom to top."""
    h, w, l = obj.dims
    paint, second, third = obj.palette
    r = obj.reflectance
    if obj.cls_type == "Car":
        body = _stacked_part(obj, bottom=0.0, top=0.55 * h, w=w, l=l)
        cabin = _stacked_part(obj, bottom=0.55 * h, top=h, w=0.88 * w, l=0.5 * l, forward=-0.1 * l)
        return [
            _Part(*body, obj.ry, _face_colours(paint), r),
            _Part(*cabin, obj.ry, _face_colours(second, paint), r / 2),
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
        parts.append(_Part(dims, loc, obj.ry, _face_colours(rgb), r))
    return parts


def _draw_order(parts: list[_Part], camera_y: float) -> list[_Part]:
    """Painter's order inside one vertical stack: a part can only hide parts on the far side of the
    horizontal plane that separates them from the camera, so draw the parts farthest above or below
    the camera's height first."""

    def vertical_gap(part: _Part) -> float:
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
    # Row v sees the ground (y = CAMERA_HEIGHT) at z solving v (z + p23) = fv h + cv z + p13.
    with np.errstate(divide="ignore"):
        z_row = (fv * CAMERA_HEIGHT + P[1, 3] - v * P[2, 3]) / (v - cv)  # (H,)
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


def _draw_buildings(image: np.ndarray, P: np.ndarray, rng: np.random.Generator, haze: np.ndarray) -> None:
    """Far-away buildings (150-250 m, beyond the LiDAR's range) standing on the horizon, in place."""
    width = image.shape[1]
    x = -150.0
    while x < 150.0:
        bw, bh, z = rng.uniform(8.0, 40.0), rng.uniform(4.0, 30.0), rng.uniform(150.0, 250.0)
        if rng.random() < 0.7:
            corners = np.array([[x, CAMERA_HEIGHT, z], [x + bw, CAMERA_HEIGHT - bh, z]])
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


def _draw_shadows(image: np.ndarray, objects: list[SceneObject], P: np.ndarray, sun: np.ndarray) -> None:
    """Darken, in place, the ground under each object's box where the sun's shadow falls."""
    mask = np.zeros(image.shape[:2], np.uint8)
    for obj in objects:
        corners = obj.corners()  # (8, 3)
        drop = (CAMERA_HEIGHT - corners[:, 1]) / -sun[1]  # along -sun to the ground plane
        on_ground = corners - drop[:, None] * sun  # (8, 3), y = CAMERA_HEIGHT
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


# --- LiDAR --------------------------------------------------------------------------------------
def _ray_box_distance(origin: np.ndarray, dirs: np.ndarray, part: _Part) -> np.ndarray:
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
    origin: np.ndarray, dirs: np.ndarray, parts: list[_Part], t_ground: np.ndarray
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
        t_ground = np.where(dirs[:, 1] > 1e-9, (CAMERA_HEIGHT - origin[1]) / dirs[:, 1], np.inf)  # (R,)
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


# --- frames -------------------------------------------------------------------------------------
def _label(obj: SceneObject, *, P: np.ndarray, image_size: tuple[int, int], hidden: float) -> Object3d:
    """The KITTI label of a rendered object (2D box, truncation, occlusion, alpha)."""
    corners = obj.corners()[None]
    full = box3d_to_box2d(corners, P)[0]
    clipped = box3d_to_box2d(corners, P, image_size)[0]
    area_full = (full[2] - full[0]) * (full[3] - full[1])
    area_clipped = (clipped[2] - clipped[0]) * (clipped[3] - clipped[1])
    return Object3d(
        cls_type=obj.cls_type,
        truncation=float(np.clip(1.0 - area_clipped / area_full, 0.0, 1.0)),
        occlusion=occlusion_level(hidden),
        alpha=float(ry_to_alpha(obj.ry, obj.loc[0], obj.loc[2])),
        box2d=clipped,
        h=float(obj.dims[0]),
        w=float(obj.dims[1]),
        l=float(obj.dims[2]),
        pos=obj.loc.astype(np.float64).copy(),
        ry=float(obj.ry),
    )


def render_scene(
    objects: list[SceneObject],
    *,
    rng: np.random.Generator,
    calib: Calibration | None = None,
    image_size: tuple[int, int] = IMAGE_SIZE,
    road: Road | None = None,
) -> SyntheticFrame:
    """Render given objects into a frame: image, labels, instance map and LiDAR scan.

    Objects that cover no pixel (outside the image, or hidden behind nearer ones) get no label
    and are left out of the scan.

    Args:
        objects: the scene, rect frame (:class:`SceneObject`, e.g. from :func:`sample_objects`).
        rng: draws the lighting, sky, textures, buildings, pixel and range noise.
        calib: the camera; default :func:`synthetic_calibration` of ``image_size``.
        image_size: (width, height) pixels. road: default :func:`sample_road`.
    """
    if len(objects) > MAX_SCENE_OBJECTS:
        raise ValueError(f"render_scene draws at most {MAX_SCENE_OBJECTS} objects, got {len(objects)}")
    calib = synthetic_calibration(image_size) if calib is None else calib
    road = sample_road(rng) if road is None else road
    P = calib.P2
    sun = np.array([rng.uniform(-0.7, 0.7), -1.0, rng.uniform(-0.7, 0.7)])
    sun /= np.linalg.norm(sun)  # unit vector towards the sun (rect y is down)
    sky = np.array([[0.3, 0.5, 0.8], [0.75, 0.82, 0.9]]) * rng.uniform(0.85, 1.1, (2, 1))  # top, horizon
    texture = rng.uniform(-1.0, 1.0, (TEXTURE_SIZE, TEXTURE_SIZE))
    background = _render_background(
        calib, image_size, road=road, texture=texture, sky=sky, sun_shade=AMBIENT + DIFFUSE * -sun[1]
    )
    _draw_buildings(background, P, rng, sky[1])
    _draw_shadows(background, objects, P, sun)
    image = (background.clip(0.0, 1.0) * 255).astype(np.uint8)
    ids, own_pixels = _render_objects(image, objects, P=P, sun=sun, haze=sky[1])
    noise = rng.standard_normal(image.shape, dtype=np.float32) * PIXEL_NOISE
    image = (image + noise).clip(0, 255).astype(np.uint8)

    seen = np.bincount(ids.ravel(), minlength=len(objects) + 1)[1:]  # (K,) front-most pixels
    keep = np.flatnonzero(seen > 0)
    remap = np.zeros(len(objects) + 1, np.uint8)
    remap[keep + 1] = np.arange(1, keep.size + 1)
    labels = [
        _label(objects[k], P=P, image_size=image_size, hidden=1.0 - seen[k] / own_pixels[k]) for k in keep
    ]
    kept = [objects[k] for k in keep]
    scan = simulate_scan(kept, road=road, texture=texture, calib=calib, image_size=image_size, rng=rng)
    return SyntheticFrame(image=image, objects=labels, calib=calib, scan=scan, instance_ids=remap[ids])


def generate_frame(
    rng: np.random.Generator,
    *,
    image_size: tuple[int, int] = IMAGE_SIZE,
    num_objects: tuple[int, int] = NUM_OBJECTS,
    depth_range: tuple[float, float] = DEPTH_RANGE,
) -> SyntheticFrame:
    """A random synthetic frame (a pure function of the generator's state).

    Args:
        rng: the only source of randomness: the same seed gives the same frame.
        image_size: (width, height); the KITTI calibration is scaled to it.
        num_objects: inclusive (min, max) objects placed. depth_range: (near, far) rect z, metres.
    """
    calib = synthetic_calibration(image_size)
    road = sample_road(rng)
    objects = sample_objects(
        rng, road=road, calib=calib, image_size=image_size, num_objects=num_objects, depth_range=depth_range
    )
    return render_scene(objects, rng=rng, calib=calib, image_size=image_size, road=road)


def write_frame(training_dir: str | Path, frame_id: int, frame: SyntheticFrame) -> None:
    """Write one frame as KITTI files under ``training_dir`` (image_2, calib, label_2, velodyne)."""
    root = Path(training_dir)
    name = f"{frame_id:06d}"
    image_path = root / "image_2" / f"{name}.png"
    image_path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(image_path), cv2.cvtColor(frame.image, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write image {image_path}")
    write_calib(root / "calib" / f"{name}.txt", frame.calib)
    write_label(root / "label_2" / f"{name}.txt", frame.objects)
    velodyne_path = root / "velodyne" / f"{name}.bin"
    velodyne_path.parent.mkdir(parents=True, exist_ok=True)
    frame.scan.astype("<f4").tofile(velodyne_path)


def split_frames(frames: int, *, val_fraction: float) -> dict[str, list[int]]:
    """train / val / trainval frame ids: the last ``round(frames * val_fraction)`` frames are val
    (at least one of each when there are two or more frames and val_fraction > 0)."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    num_val = round(frames * val_fraction)
    if val_fraction > 0 and frames >= 2:
        num_val = min(max(num_val, 1), frames - 1)
    ids = list(range(frames))
    return {"train": ids[: frames - num_val], "val": ids[frames - num_val :], "trainval": ids}


def write_dataset(
    out_dir: str | Path,
    *,
    frames: int,
    seed: int = 0,
    image_size: tuple[int, int] = IMAGE_SIZE,
    val_fraction: float = 0.25,
    num_objects: tuple[int, int] = NUM_OBJECTS,
    depth_range: tuple[float, float] = DEPTH_RANGE,
) -> dict[str, list[int]]:
    """Write a synthetic KITTI tree: ``out_dir/training/...`` and ``out_dir/ImageSets/*.txt``.

    Frame i is drawn from ``np.random.default_rng([seed, i])``, so the files are byte-identical
    for the same seed and a frame does not depend on how many are written. ``num_objects`` and
    ``depth_range`` are those of :func:`generate_frame`.

    Returns:
        The splits written, ``{"train": ids, "val": ids, "trainval": ids}``.
    """
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    splits = split_frames(frames, val_fraction=val_fraction)
    root = Path(out_dir)
    for i in range(frames):
        rng = np.random.default_rng([seed, i])
        frame = generate_frame(rng, image_size=image_size, num_objects=num_objects, depth_range=depth_range)
        write_frame(root / "training", i, frame)
        if (i + 1) % 100 == 0:
            logger.info("synthetic KITTI: %d / %d frames written to %s", i + 1, frames, root)
    for name, ids in splits.items():
        write_split(root / "ImageSets" / f"{name}.txt", ids)
    return splits
