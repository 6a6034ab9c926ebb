"""Pure drawing functions for one KITTI frame: 3D boxes on the image, a bird's-eye view, depth and
RPD bin maps, and the panel that stacks them (``tools/visualize.py``).

Every function takes arrays and returns a new uint8 RGB image (H, W, 3); nothing is drawn in place
and nothing is read from or written to disk here.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from lib.constants import MIN_PROJECTION_DEPTH
from lib.depth_bins import DepthBins, rpd_valid
from lib.geometry import Calibration, box3d_corners, project_to_image, velo_to_rect
from lib.kitti_io import Object3d

GT_COLOUR = (0, 220, 0)  # RGB: ground truth boxes
PRED_COLOUR = (255, 40, 40)  # RGB: predicted boxes
# The 12 edges of a box3d_corners box: bottom face, top face, verticals.
_EDGES = [(0, 1), (1, 2), (2, 3), (3, 0), (4, 5), (5, 6), (6, 7), (7, 4), (0, 4), (1, 5), (2, 6), (3, 7)]
_FRONT_FACE = (0, 1, 5, 4)  # the +l/2 face: the direction the object faces (ry)
# px: a box with a projected corner further from the origin than this is not drawn. OpenCV takes
# int32 coordinates only; a finite box at an absurd depth or size maps far beyond them.
MAX_PIXEL = 1 << 20
MAX_DRAW_DEPTH = 1000.0  # m: a box with a corner further ahead is not drawn (it would be a dot)


def _corners(objects: Sequence[Object3d]) -> np.ndarray:
    """(N, 8, 3) rect corners of the objects' boxes."""
    if not objects:
        return np.zeros((0, 8, 3))
    dims = np.array([[o.h, o.w, o.l] for o in objects])
    loc = np.array([o.pos for o in objects], dtype=np.float64)
    ry = np.array([o.ry for o in objects])
    return box3d_corners(dims, loc, ry)


def _has_box(obj: Object3d) -> bool:
    """Whether an object carries a 3D box (DontCare lines have h = w = l = -1)."""
    return obj.cls_type != "DontCare" and min(obj.h, obj.w, obj.l) > 0


def _on_canvas(points: np.ndarray, width: int, height: int) -> bool:
    """Whether (N, 2) pixel points are finite, within ±:data:`MAX_PIXEL` and their bounding box
    overlaps a ``width`` × ``height`` canvas (OpenCV clips the lines of such a box itself)."""
    if not np.isfinite(points).all() or np.abs(points).max() > MAX_PIXEL:
        return False
    (u0, v0), (u1, v1) = points.min(axis=0), points.max(axis=0)
    return u1 >= 0 and v1 >= 0 and u0 < width and v0 < height


def image_drawable(objects: Sequence[Object3d], P: np.ndarray, image_size: tuple[int, int]) -> list[bool]:
    """Which objects' 3D boxes :func:`draw_boxes_3d` draws on an image.

    A box is drawn when the object has a box (not DontCare), every corner lies between
    ``MIN_PROJECTION_DEPTH`` and :data:`MAX_DRAW_DEPTH` m in front of the camera, and its
    projection is finite, within ±:data:`MAX_PIXEL` px and overlaps the image. Any other box,
    finite or not (behind the camera, at an absurd depth or size, off the image), is skipped,
    never an error.

    Args:
        objects: KITTI objects. P: (3, 4) projection of the image. image_size: (W, H) pixels.

    Returns:
        one bool per object.
    """
    width, height = image_size
    out = []
    for obj in objects:
        if not _has_box(obj) or not np.isfinite([obj.h, obj.w, obj.l, obj.ry, *obj.pos]).all():
            out.append(False)
            continue
        with np.errstate(all="ignore"):
            uv, depth = project_to_image(_corners([obj])[0], P)  # (8, 2), (8,)
        depth = np.nan_to_num(depth, nan=-1.0)
        in_front = bool(depth.min() >= MIN_PROJECTION_DEPTH and depth.max() <= MAX_DRAW_DEPTH)
        out.append(in_front and _on_canvas(uv, width, height))
    return out


def count_undrawable(objects: Sequence[Object3d], P: np.ndarray, image_size: tuple[int, int]) -> int:
    """How many objects with a 3D box :func:`draw_boxes_3d` skips (:func:`image_drawable`); the
    tools print it beside the number drawn."""
    drawable = image_drawable(objects, P, image_size)
    return sum(_has_box(o) and not ok for o, ok in zip(objects, drawable, strict=True))


def draw_boxes_3d(
    image: np.ndarray,
    objects: Sequence[Object3d],
    P: np.ndarray,
    *,
    colour: tuple[int, int, int] = GT_COLOUR,
    thickness: int = 2,
    show_score: bool = False,
) -> np.ndarray:
    """Projected 3D boxes on a copy of an image: 12 edges and a cross on the front face.

    Args:
        image: (H, W, 3) uint8 RGB. objects: KITTI objects; those :func:`image_drawable` refuses
            (DontCare, behind the camera, absurd depth or size, off the image) are skipped.
            P: (3, 4) projection of the image (P2).
        colour: RGB line colour. show_score: write each object's score above its box.

    Returns:
        (H, W, 3) uint8 RGB.
    """
    out = np.ascontiguousarray(image, dtype=np.uint8).copy()
    ok = image_drawable(objects, P, (out.shape[1], out.shape[0]))
    drawn = [o for o, good in zip(objects, ok, strict=True) if good]
    corners = _corners(drawn)  # (N, 8, 3)
    for obj, box in zip(drawn, corners, strict=True):
        uv, _ = project_to_image(box, P)  # (8, 2)
        pts = [tuple(int(c) for c in p) for p in np.round(uv)]
        for i, j in _EDGES:
            cv2.line(out, pts[i], pts[j], colour, thickness, cv2.LINE_AA)
        a, b, c, d = (pts[k] for k in _FRONT_FACE)
        cv2.line(out, a, c, colour, max(1, thickness - 1), cv2.LINE_AA)
        cv2.line(out, b, d, colour, max(1, thickness - 1), cv2.LINE_AA)
        if show_score and obj.score is not None:
            x, y = min(p[0] for p in pts), min(p[1] for p in pts) - 4
            cv2.putText(
                out,
                f"{obj.score:.2f}",
                (int(x), int(y)),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.5,
                colour,
                1,
                cv2.LINE_AA,
            )
    return out


def draw_bev(
    points: np.ndarray,
    calib: Calibration,
    *,
    gt: Sequence[Object3d] = (),
    pred: Sequence[Object3d] = (),
    x_range: tuple[float, float] = (-30.0, 30.0),
    z_range: tuple[float, float] = (0.0, 70.0),
    resolution: float = 0.1,
    camera_height: float = 1.65,
) -> np.ndarray:
    """Bird's-eye view (rect x right, z up the image) of a LiDAR scan and 3D boxes.

    Points are coloured by height above the ground plane (rect y = ``camera_height``), range rings
    are drawn every 10 m, box footprints in green (gt) and red (pred) with a line to the front.

    Args:
        points: (N, 3+) Velodyne points (metres, velo frame); extra columns ignored.
        calib: the frame's calibration (Tr_velo_to_cam, R0_rect).
        x_range, z_range: the rect area shown, metres. resolution: metres per pixel.

    Returns:
        (round(dz / resolution), round(dx / resolution), 3) uint8 RGB.
    """
    (x0, x1), (z0, z1) = x_range, z_range
    width, height = round((x1 - x0) / resolution), round((z1 - z0) / resolution)
    out = np.full((height, width, 3), 20, np.uint8)

    def to_pixels(x: np.ndarray, z: np.ndarray) -> np.ndarray:
        return np.stack([(x - x0) / resolution, (z1 - z) / resolution], axis=-1)  # (..., 2) col, row

    camera = to_pixels(np.array(0.0), np.array(0.0)).round().astype(int)
    for r in range(10, int(np.hypot(max(abs(x0), abs(x1)), z1)) + 1, 10):
        cv2.circle(out, tuple(camera), round(r / resolution), (60, 60, 60), 1, cv2.LINE_AA)
    if len(points):
        rect = velo_to_rect(np.asarray(points)[:, :3], calib)  # (N, 3)
        col_row = np.floor(to_pixels(rect[:, 0], rect[:, 2])).astype(np.int64)  # (N, 2)
        inside = (
            (col_row[:, 0] >= 0) & (col_row[:, 0] < width) & (col_row[:, 1] >= 0) & (col_row[:, 1] < height)
        )
        height_above = camera_height - rect[inside, 1]  # metres above the ground
        shade = np.clip(height_above / 2.5, 0.0, 1.0) * 0.75 + 0.25  # ground dim, objects bright
        lut = cv2.applyColorMap(np.arange(256, dtype=np.uint8)[:, None], cv2.COLORMAP_VIRIDIS)[:, 0, ::-1]
        out[col_row[inside, 1], col_row[inside, 0]] = lut[np.round(shade * 255).astype(np.int64)]
    for objects, colour in ((gt, GT_COLOUR), (pred, PRED_COLOUR)):
        drawn = [o for o in objects if _has_box(o) and np.isfinite([o.h, o.w, o.l, o.ry, *o.pos]).all()]
        for box in _corners(drawn):
            footprint = to_pixels(box[:4, 0], box[:4, 2])  # (4, 2)
            if not _on_canvas(footprint, width, height):  # outside the area shown: skipped
                continue
            cv2.polylines(out, [np.round(footprint).astype(np.int32)], True, colour, 2, cv2.LINE_AA)
            centre, front = footprint.mean(axis=0), footprint[:2].mean(axis=0)
            cv2.line(out, _pixel(centre), _pixel(front), colour, 2)
    return out


def _pixel(point: np.ndarray) -> tuple[int, int]:
    """A (2,) float pixel point as the tuple of Python ints OpenCV takes."""
    return int(round(float(point[0]))), int(round(float(point[1])))


def grow_sparse_depth(depth: np.ndarray, *, size: int = 3) -> np.ndarray:
    """Spread each valid pixel of a sparse depth map over a size×size square, nearest depth winning
    (a dilation of inverse depth), so that single LiDAR returns show at display scale.

    Args:
        depth: (H, W) metres, 0 = none.

    Returns:
        (H, W) float32 metres, 0 = none.
    """
    depth = np.asarray(depth, np.float32)
    with np.errstate(divide="ignore"):
        inverse = np.where(depth > 0, 1.0 / depth, 0.0).astype(np.float32)
    grown = cv2.dilate(inverse, np.ones((size, size), np.uint8))
    with np.errstate(divide="ignore"):
        return np.where(grown > 0, 1.0 / grown, 0.0).astype(np.float32)


def colorize_depth(depth: np.ndarray, *, max_depth: float = 80.0) -> np.ndarray:
    """Colour-map a depth map: near red → far blue (turbo), no depth black.

    Args:
        depth: (H, W) metres, 0 = none.

    Returns:
        (H, W, 3) uint8 RGB.
    """
    depth = np.asarray(depth, np.float32)
    level = np.round((1.0 - np.clip(depth / max_depth, 0.0, 1.0)) * 255).astype(np.uint8)
    rgb = cv2.applyColorMap(level, cv2.COLORMAP_TURBO)[..., ::-1]
    return np.where((depth > 0)[..., None], rgb, 0).astype(np.uint8)


def depth_bin_map(depth: np.ndarray, bins: DepthBins) -> np.ndarray:
    """Per-pixel bin index of a depth map under a bin layout (docs/method.md, 'Bins').

    Args:
        depth: (H, W) metres, 0 = none. bins: the run's :class:`DepthBins`.

    Returns:
        (H, W) int64: k in 0..K-1 for depths in [edge_k, edge_k+1), K (the beyond bin) for depths
        outside [depth_min, depth_max], -1 where there is no depth.
    """
    z = np.asarray(depth, np.float64)
    k = bins.num_bins
    in_range = rpd_valid(z, bins)
    index = np.minimum(np.floor(bins.to_coord(np.where(in_range, z, bins.depth_min))), k - 1).astype(np.int64)
    return np.where(in_range, index, np.where(z > 0, k, -1))


def colorize_bins(
    bin_map: np.ndarray, num_bins: int, *, index_range: tuple[int, int] | None = None
) -> np.ndarray:
    """Colour-map a bin index map: bins along a colour scale (near red → far blue) with every other
    bin darker, so that each bin's extent shows; the beyond bin grey, no depth black.

    Args:
        bin_map: (H, W) int from :func:`depth_bin_map`. num_bins: K.
        index_range: (first, last) bin spanned by the colour scale; default the bins present
            (with rpd most bins lie nearer than the bottom image row, docs/method.md, 'Bins').

    Returns:
        (H, W, 3) uint8 RGB.
    """
    k = num_bins
    if index_range is None:
        present = bin_map[(bin_map >= 0) & (bin_map < k)]
        index_range = (int(present.min()), int(present.max())) if present.size else (0, k - 1)
    first, last = index_range
    scale = np.clip((np.arange(k) - first) / max(last - first, 1), 0.0, 1.0)
    levels = np.round(255 * (1.0 - scale)).astype(np.uint8)  # turbo: 255 red (near), 0 blue (far)
    palette = cv2.applyColorMap(levels[:, None], cv2.COLORMAP_TURBO)[:, 0, ::-1].astype(np.float32)
    palette[1::2] *= 0.6
    palette = np.concatenate([palette, [[128, 128, 128], [0, 0, 0]]]).astype(np.uint8)  # K: beyond, K+1: none
    index = np.where(bin_map < 0, k + 1, np.clip(bin_map, 0, k))
    return palette[index]


def add_title(image: np.ndarray, title: str) -> np.ndarray:
    """A copy of an image with a title in white on a dark strip at its top-left corner."""
    out = np.ascontiguousarray(image, dtype=np.uint8).copy()
    scale = max(0.4, out.shape[1] / 1600)
    (w, h), base = cv2.getTextSize(title, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    cv2.rectangle(out, (0, 0), (w + 8, h + base + 6), (0, 0, 0), -1)
    cv2.putText(out, title, (4, h + 3), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def resize_to(image: np.ndarray, *, width: int | None = None, height: int | None = None) -> np.ndarray:
    """Resize keeping the aspect ratio to a given width or height (area filter when shrinking)."""
    h, w = image.shape[:2]
    if (width is None) == (height is None):
        raise ValueError("resize_to needs exactly one of width, height")
    scale = width / w if width is not None else height / h
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)


def compose_panel(
    column: Sequence[np.ndarray], side: np.ndarray | None = None, *, width: int = 960
) -> np.ndarray:
    """One figure: images stacked in a column of a given width, an optional image on the right at
    the column's full height.

    Args:
        column: (H_i, W_i, 3) uint8 images, each resized to ``width``. side: (H, W, 3) or None.

    Returns:
        (sum of the column heights, width [+ side width], 3) uint8 RGB.
    """
    if not column:
        raise ValueError("compose_panel needs at least one image in the column")
    left = np.concatenate([resize_to(im, width=width) for im in column], axis=0)
    if side is None:
        return left
    return np.concatenate([left, resize_to(side, height=left.shape[0])], axis=1)


def render_detections(
    image: np.ndarray,
    objects: Sequence[Object3d],
    P2: np.ndarray,
    *,
    width: int = 960,
    title: str = "",
    z_range: tuple[float, float] = (0.0, 70.0),
) -> np.ndarray:
    """Detections of one frame without LiDAR: red 3D boxes with scores on the image (``width``
    wide) and, on its right, their footprints from above at the image's height.

    Args:
        image: (H, W, 3) uint8 RGB. objects: detections in the image's camera. P2: (3, 4) its projection.
        title: written on the image. z_range: metres ahead shown in the bird's-eye view.

    Returns:
        (h, width + bev width, 3) uint8 RGB, h = H · width / W.
    """
    boxes = resize_to(draw_boxes_3d(image, objects, P2, colour=PRED_COLOUR, show_score=True), width=width)
    if title:
        boxes = add_title(boxes, title)
    P = np.repeat(np.asarray(P2, np.float64)[None], 4, axis=0)
    camera = Calibration(P=P, R0=np.eye(3), V2C=np.eye(3, 4))  # no scan to place: only P is read
    bev = draw_bev(np.zeros((0, 3)), camera, pred=objects, z_range=z_range)
    return compose_panel([boxes], bev, width=width)
