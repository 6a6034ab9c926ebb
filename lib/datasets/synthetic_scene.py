"""Scene sampling of the synthetic KITTI generator (lib/datasets/synthetic.py): the camera
calibration, the road and the objects standing on it, all in the rect frame (x right, y down,
z forward) of a real KITTI calibration."""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from lib.geometry import Calibration, box3d_corners, project_to_image, wrap_angle

# --- camera -------------------------------------------------------------------------------------
IMAGE_SIZE = (1242, 375)  # (width, height) of the calibration below
# KITTI drive 2011_09_26 (training frame 000001 of tests/data/kitti_sample): the most common
# KITTI calibration, whose focal length 721.54 px is also the RPD reference focal (docs/method.md, 'Bins').
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
# Mean [h, w, l] (docs/reference.md, 'Class mean sizes [h, w, l] in metres', the values of
# lib.constants.MEAN_SIZES) and a per-class spread; sizes are drawn from a normal clipped at ±2 standard
# deviations.
SIZE_MEAN = {"Pedestrian": (1.76, 0.66, 0.84), "Car": (1.53, 1.63, 3.88), "Cyclist": (1.74, 0.60, 1.76)}
SIZE_STD = {"Pedestrian": (0.10, 0.08, 0.12), "Car": (0.10, 0.10, 0.35), "Cyclist": (0.08, 0.06, 0.15)}
ON_ROAD_PROB = {"Car": 0.6, "Pedestrian": 0.0, "Cyclist": 0.4}  # in a lane and along the road
FOOTPRINT_MARGIN = 0.3  # m: minimum gap between two objects' ground footprints
MAX_TRIES_PER_OBJECT = 20  # placement attempts before a frame settles for fewer objects


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
        ground_y: rect y of the road surface = the camera's height above it, metres. The
            calibration stays KITTI's whatever it is, so a frame whose ground is not at
            CAMERA_HEIGHT looks, to a monocular network, like a frame whose objects are at
            another depth (``camera_height`` of :func:`sample_road`).
    """

    heading: float
    offset: float
    lane_width: float
    num_lanes: int
    colours: np.ndarray
    ground_y: float = CAMERA_HEIGHT

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


# --- sampling -----------------------------------------------------------------------------------
def check_range(name: str, bounds: tuple[float, float] | None) -> None:
    """Raise ValueError unless ``bounds`` is None or (min, max) with 0 < min <= max."""
    if bounds is not None and not 0 < bounds[0] <= bounds[1]:
        raise ValueError(f"{name} must be (min, max) with 0 < min <= max, got {bounds}")


def sample_road(rng: np.random.Generator, *, camera_height: tuple[float, float] | None = None) -> Road:
    """A random road the camera drives on (the camera lies inside the road).

    Args:
        camera_height: (min, max) metres: the road surface's ``ground_y`` is drawn uniformly from
            it (2 decimals, like the labels), after everything else; None: CAMERA_HEIGHT, and the
            same draws as without the option.
    """
    check_range("camera_height", camera_height)
    num_lanes = int(rng.integers(2, 5))
    lane_width = float(rng.uniform(3.2, 3.8))
    half = lane_width * num_lanes / 2
    asphalt = np.full(3, rng.uniform(0.28, 0.42)) * rng.uniform(0.95, 1.05, 3)
    pavement = np.full(3, rng.uniform(0.5, 0.62)) * rng.uniform(0.95, 1.05, 3)
    verge = np.array([rng.uniform(0.25, 0.45), rng.uniform(0.35, 0.5), rng.uniform(0.15, 0.25)])
    heading = float(rng.normal(0.0, 0.05))
    offset = float(rng.uniform(-half + 0.6 * lane_width, half - 0.6 * lane_width))
    ground_y = CAMERA_HEIGHT if camera_height is None else round(float(rng.uniform(*camera_height)), 2)
    return Road(
        heading=heading,
        offset=offset,
        lane_width=lane_width,
        num_lanes=num_lanes,
        colours=np.stack([asphalt, pavement, verge]).clip(0, 1),
        ground_y=ground_y,
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
    object_scale: tuple[float, float] | None = None,
) -> SceneObject:
    """One random object (dimensions, pose, colours), rounded to label precision (2 decimals),
    standing on ``road.ground_y``; ``object_scale`` (see :func:`sample_objects`) is drawn last."""
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
    palette = _sample_palette(rng, cls_type)
    reflectance = float(rng.uniform(0.2, 0.9))
    if object_scale is not None:
        dims = dims * rng.uniform(*object_scale)
    return SceneObject(
        cls_type=cls_type,
        dims=np.round(dims, 2),
        loc=np.round(np.array([x, road.ground_y, z]), 2),
        ry=float(np.round(wrap_angle(ry), 2)),
        palette=palette,
        reflectance=reflectance,
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
    object_scale: tuple[float, float] | None = None,
) -> list[SceneObject]:
    """Random objects on the ground, in front of the camera, with non-overlapping footprints.

    Objects whose bottom centre projects far outside the image are redrawn; a frame keeps fewer
    objects than drawn when the placement keeps failing (a crowded frame).

    Args:
        object_scale: (min, max): each object's h, w, l are multiplied by one factor drawn
            uniformly from it, so that its image size no longer tells its distance (the class's
            sizes vary only ~7 % otherwise); None: no factor, and the draws of the default.
    """
    check_range("object_scale", object_scale)
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
        obj = _sample_object(
            rng, road=road, P=P, image_size=image_size, depth_range=depth_range, object_scale=object_scale
        )
        uv, _ = project_to_image(obj.loc[None], P)
        if not -0.15 * width <= uv[0, 0] <= 1.15 * width:
            continue
        if not any(_footprints_overlap(obj, other) for other in objects):
            objects.append(obj)
    return objects
