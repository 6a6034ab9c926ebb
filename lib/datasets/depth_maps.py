"""LiDAR depth maps for the teacher: project a Velodyne scan into the image, then densify.

The teacher of docs/method.md, 'Framework' sees the frame's ``depth_dense`` image: one depth per pixel of the
left colour camera (image_2), in metres, 0 where there is none. It is made in two steps:

1. :func:`project_scan`: every LiDAR point in front of the camera is projected with the
   frame's calibration (velo → rect → image); where several land on one pixel the nearest
   wins. This is the sparse map (~5 % of the pixels).
2. :func:`densify`: a classic, non-learned depth completion with image morphology, after
   Ku et al. 2018, "In Defense of Classical Image Processing: Fast Depth Completion on the
   CPU" (``fill_in_fast``): work on inverted depth so that a max filter keeps the nearest
   surface, dilate with a diamond kernel, close, fill holes, extend each column up to the top
   of the LiDAR coverage, fill large holes, then median + bilateral smoothing.

Depth is the z coordinate in the rectified camera frame (the frame of the labels' ``z``;
P2's third row would add its ~5 mm baseline offset). Maps are stored with
:func:`lib.kitti_io.write_depth_map` (uint16 PNG, metres × 256).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from lib.constants import MIN_PROJECTION_DEPTH
from lib.geometry import Calibration, project_to_image, velo_to_rect
from lib.kitti_io import KittiFormatError, read_calib, read_velodyne

# Fewer image pixels hit than this and a scan is refused: a KITTI scan hits ~20,000 pixels of
# its image, so a handful means a wrong file or calibration, not a sparse scene.
MIN_PROJECTED_POINTS = 100

# Densification kernels (Ku et al. 2018, their best "fast" setting).
DIAMOND_KERNEL_SIZE = 5  # spreads each return over a diamond: LiDAR rows are ~2-6 px apart
CLOSE_KERNEL_SIZE = 5  # closes the gaps left between scan lines
SMALL_FILL_KERNEL_SIZE = 7  # fills the remaining small holes
LARGE_FILL_KERNEL_SIZE = 31  # fills large holes (e.g. dark car windows with no returns)
MEDIAN_KERNEL_SIZE = 5  # removes outliers from the fill
BILATERAL_DIAMETER = 5  # edge-preserving smoothing of the fill ...
BILATERAL_SIGMA_DEPTH = 1.5  # ... over depth differences of ~1.5 m ...
BILATERAL_SIGMA_SPACE = 2.0  # ... and ~2 px
GAUSSIAN_KERNEL_SIZE = 5  # the alternative, plain smoothing
# Inverted depth is (farthest depth + margin − depth): the margin keeps every filled pixel
# far (in metres) from the empty value 0, so the bilateral filter never mixes empties in.
INVERSION_MARGIN = 20.0  # m, >> BILATERAL_SIGMA_DEPTH
BLURS = ("bilateral", "gaussian")

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def project_scan(
    points: np.ndarray,
    calib: Calibration,
    image_size: tuple[int, int],
    *,
    min_depth: float = MIN_PROJECTION_DEPTH,
) -> np.ndarray:
    """Sparse depth map of a Velodyne scan in the left colour camera (image_2).

    A point lands on the pixel nearest to its projection (pixel centres at integer
    coordinates). Points with rect z ≤ ``min_depth``, non-finite points and points outside
    the image are dropped; where several points hit one pixel the nearest (smallest z) wins,
    so the map shows the surface the camera sees rather than what lies behind it.

    Args:
        points: (N, 3+) Velodyne points x, y, z (metres, velo frame), extra columns ignored.
        calib: the frame's calibration (Tr_velo_to_cam, R0_rect, P2).
        image_size: (width, height) of the image, pixels.
        min_depth: smallest rect z kept, metres.

    Returns:
        (H, W) float32 depth (rect z, metres), 0 where no point projects.
    """
    width, height = image_size
    depth_map = np.zeros((height, width), dtype=np.float32)
    pts = np.asarray(points)[:, :3]
    pts = pts[np.isfinite(pts).all(axis=1)]
    pts_rect = velo_to_rect(pts, calib)  # (N, 3)
    pts_rect = pts_rect[pts_rect[:, 2] > min_depth]
    uv, _ = project_to_image(pts_rect, calib.P2)  # (N, 2)
    cols = np.floor(uv[:, 0] + 0.5).astype(np.int64)
    rows = np.floor(uv[:, 1] + 0.5).astype(np.int64)
    inside = (cols >= 0) & (cols < width) & (rows >= 0) & (rows < height)
    pixel = rows[inside] * width + cols[inside]  # (M,) flat pixel index
    z = pts_rect[inside, 2]
    order = np.lexsort((z, pixel))  # by pixel, nearest first within a pixel
    pixel, z = pixel[order], z[order]
    first = np.ones(pixel.shape, dtype=bool)
    first[1:] = pixel[1:] != pixel[:-1]
    depth_map.reshape(-1)[pixel[first]] = z[first]
    return depth_map


def _full_kernel(size: int) -> np.ndarray:
    return np.ones((size, size), dtype=np.uint8)


def _diamond_kernel(size: int) -> np.ndarray:
    r = np.abs(np.arange(size) - size // 2)
    return (r[:, None] + r[None, :] <= size // 2).astype(np.uint8)


def _fill_empty(inv: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Empty pixels (0) take the largest inverted depth (the nearest surface) in the kernel."""
    return np.where(inv > 0, inv, cv2.dilate(inv, kernel))


def _smooth_filled(inv: np.ndarray, smoothed: np.ndarray) -> np.ndarray:
    """Take the smoothed value where the pixel was already filled and the filter kept it so."""
    return np.where((inv > 0) & (smoothed > 0), smoothed, inv)


def densify(sparse: np.ndarray, *, blur: str = "bilateral") -> np.ndarray:
    """Dense depth map from a sparse projected-LiDAR map (Ku et al. 2018, ``fill_in_fast``).

    The morphology runs on inverted depth (offset − depth), so that a dilation (a max filter)
    lets the nearest surface win, as it does in the sparse map. Measured pixels keep their
    LiDAR depth exactly: the completion only fills the pixels without a return. Rows above
    the highest LiDAR return (sky, no measurement) stay 0; rows below the lowest return get
    whatever the large-hole fill reaches.

    Args:
        sparse: (H, W) depth, metres, 0 = no return (:func:`project_scan`).
        blur: final smoothing of the fill, ``bilateral`` (edge-preserving) or ``gaussian``.

    Returns:
        (H, W) float32 depth, metres, 0 = no depth.
    """
    if blur not in BLURS:
        raise ValueError(f"blur must be one of {BLURS}, got {blur!r}")
    sparse = np.asarray(sparse, dtype=np.float32)
    measured = sparse > 0  # (H, W)
    lidar_rows = np.flatnonzero(measured.any(axis=1))
    if lidar_rows.size == 0:
        return np.zeros_like(sparse)
    top_row = int(lidar_rows[0])
    offset = float(sparse.max()) + INVERSION_MARGIN
    inv = np.where(measured, offset - sparse, 0.0).astype(np.float32)  # (H, W), 0 = empty

    inv = cv2.dilate(inv, _diamond_kernel(DIAMOND_KERNEL_SIZE))
    inv = cv2.morphologyEx(inv, cv2.MORPH_CLOSE, _full_kernel(CLOSE_KERNEL_SIZE))
    inv = _fill_empty(inv, _full_kernel(SMALL_FILL_KERNEL_SIZE))

    # Extend each column's highest value up to the top of the LiDAR coverage (tall objects:
    # trees, poles, buildings, whose tops the 64 beams of the scanner miss).
    filled = inv > 0
    col_top = filled.argmax(axis=0)  # (W,) first filled row of each column
    col_value = inv[col_top, np.arange(inv.shape[1])]  # (W,)
    rows = np.arange(inv.shape[0])[:, None]  # (H, 1)
    extend = (rows >= top_row) & (rows < col_top[None, :]) & filled.any(axis=0)[None, :]
    inv = np.where(extend, col_value[None, :], inv)

    inv = _fill_empty(inv, _full_kernel(LARGE_FILL_KERNEL_SIZE))
    inv[:top_row] = 0.0  # the large fill must not reach above the LiDAR coverage

    inv = _smooth_filled(inv, cv2.medianBlur(inv, MEDIAN_KERNEL_SIZE))
    if blur == "bilateral":
        smoothed = cv2.bilateralFilter(inv, BILATERAL_DIAMETER, BILATERAL_SIGMA_DEPTH, BILATERAL_SIGMA_SPACE)
    else:  # normalised convolution: average over filled pixels only
        ksize = (GAUSSIAN_KERNEL_SIZE, GAUSSIAN_KERNEL_SIZE)
        weight = cv2.GaussianBlur((inv > 0).astype(np.float32), ksize, 0)
        smoothed = cv2.GaussianBlur(inv, ksize, 0) / np.maximum(weight, 1e-6)
    inv = _smooth_filled(inv, smoothed)

    dense = np.where(inv > 0, offset - inv, 0.0).astype(np.float32)
    dense[measured] = sparse[measured]
    return dense


def read_image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) of a PNG image, read from its header without decoding the pixels.

    Raises:
        FileNotFoundError: no such file. KittiFormatError: not a PNG file.
    """
    path = Path(path)
    try:
        with path.open("rb") as f:
            head = f.read(24)  # signature (8), IHDR length (4), "IHDR" (4), width (4), height (4)
    except FileNotFoundError:
        raise FileNotFoundError(f"image not found: {path}") from None
    if len(head) < 24 or head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR":
        raise KittiFormatError(f"{path}: not a PNG image")
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def build_depth_map(
    velodyne_path: str | Path, calib_path: str | Path, image_path: str | Path, *, dense: bool = True
) -> np.ndarray:
    """Depth map of one frame from its files (scan, calib, image for the size).

    Args:
        velodyne_path: ``velodyne/NNNNNN.bin``. calib_path: ``calib/NNNNNN.txt``.
        image_path: ``image_2/NNNNNN.png`` (only its size is read).
        dense: densify (:func:`densify`) or return the raw projection (:func:`project_scan`).

    Returns:
        (H, W) float32 depth, metres, 0 = no depth.

    Raises:
        FileNotFoundError, KittiFormatError: a missing or malformed file, an empty scan, or a
            scan of which fewer than :data:`MIN_PROJECTED_POINTS` pixels are hit, named in the
            message.
    """
    image_size = read_image_size(image_path)
    points = read_velodyne(velodyne_path)
    if len(points) == 0:
        raise KittiFormatError(f"{velodyne_path}: empty Velodyne scan (0 points)")
    sparse = project_scan(points, read_calib(calib_path), image_size)
    hits = int(np.count_nonzero(sparse))
    if hits < MIN_PROJECTED_POINTS:
        raise KittiFormatError(
            f"{velodyne_path}: implausible scan: {hits} of its {len(points)} points project into the "
            f"{image_size[0]}x{image_size[1]} image (at least {MIN_PROJECTED_POINTS} expected; "
            f"wrong scan or calibration {calib_path}?)"
        )
    return densify(sparse) if dense else sparse
