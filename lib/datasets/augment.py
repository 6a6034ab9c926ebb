"""Training augmentation of a KITTI frame: h-flip, random crop/scale/shift, colour (docs/reference.md, 'GUPNet
data pipeline').

Every function is pure: it returns new arrays and objects and never changes its inputs.
The image, its depth map and every label move together, so the teacher's depth input, the
depth targets and the 3D labels stay aligned with the RGB pixels (docs/method.md, 'Framework' and 'Targets
from projected LiDAR').

Pixel convention: integer coordinates are pixel centres (OpenCV's and the KITTI labels'), so
``np.fliplr`` maps u to W − 1 − u and boxes and P2 are mirrored about W − 1. GUPNet mirrors
about W because its PIL images put pixel centres at i + 0.5; the difference is one pixel.

Reference switches (docs/parity.md; config keys of ``dataset``): ``flip_about_width`` mirrors
about W as GUPNet does; ``projection: reference`` fits the flipped P2 with GUPNet's projection
u = P2[0]·X / z (no P2[2, 3] in the division: p03' = −p03 instead of W·p23 − p03);
``image_warp: pil`` warps with PIL (pixel centres at i + 0.5, PIL's bilinear) as both
references do; ``depth_warp: bilinear`` interpolates the depth map as MonoSKD;
``inverse_affine: reference`` gives GUPNet's crop window (:func:`input_window`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np

from lib.datasets.targets import PROJECTIONS
from lib.geometry import get_affine_transform, unproject_to_rect, wrap_angle
from lib.kitti_io import Object3d

# Flip re-fit of P2 (GUPNet supp. "calibration flip augmentation", docs/reference.md, 'GUPNet data pipeline'):
# a grid of FLIP_FIT_COLUMNS × FLIP_FIT_ROWS image points at depths spread over FLIP_FIT_DEPTHS.
FLIP_FIT_COLUMNS = 4
FLIP_FIT_ROWS = 2
FLIP_FIT_DEPTHS = (2.0, 78.0)  # metres

# CenterNet colour augmentation (used by MonoSKD / MonoDistill, docs/reference.md, 'GUPNet data pipeline').
COLOR_JITTER = 0.4  # brightness / contrast / saturation factors 1 ± U(0.4)
LIGHTING_STD = 0.1  # std of the PCA lighting coefficients
# ImageNet PCA of pixel colours as CenterNet lists it. Its rows are in BGR order (CenterNet
# reads images with cv2; row 2 matches the R row of fb.resnet.torch's RGB table), so the
# rows are reversed here for our RGB images. MonoSKD applies them to RGB unreversed.
PCA_EIGVAL = np.array([0.2141788, 0.01817699, 0.00341571], dtype=np.float32)
PCA_EIGVEC = np.array(
    [
        [-0.58752847, -0.69563484, 0.41340352],
        [-0.5832747, 0.00994535, -0.81221408],
        [-0.56089297, 0.71832671, 0.41158938],
    ],
    dtype=np.float32,
)[::-1]


IMAGE_WARPS = ("cv2", "pil")
DEPTH_WARPS = ("nearest", "bilinear")
INVERSE_AFFINES = ("exact", "reference")


def flip_projection(
    P: np.ndarray, image_size: tuple[int, int], *, about_width: bool = False, projection: str = "exact"
) -> np.ndarray:
    """Projection matrix of the mirrored image, re-fitted by least squares (docs/reference.md, 'GUPNet data
    pipeline').

    Sample pixels on a 4 × 2 grid over the image at depths 2..78 m, back-project them with P,
    mirror the 3D points (x → −x) and their pixels (u → W − 1 − u), and solve for the
    ``[[fu, 0, cu, p03], [0, fv, cv, p13], [0, 0, 1, p23]]`` that maps one onto the other
    (p23 is kept: mirroring x does not change depth). For KITTI's P this is exact:
    cu' = W − 1 − cu, p03' = (W − 1)·p23 − p03.

    Args:
        P: (3, 4) rect → image projection (P2). image_size: (width, height) pixels.
        about_width: mirror about W (u → W − u, GUPNet) instead of W − 1.
        projection: ``exact`` or ``reference`` (GUPNet divides by rect z, not z + p23: the
            fit then gives p03' = −p03; module docstring).

    Returns:
        (3, 4) float64 projection for the flipped image.
    """
    if projection not in PROJECTIONS:
        raise ValueError(f"dataset.projection: {projection!r} is not one of {PROJECTIONS}")
    width, height = image_size
    axis = width if about_width else width - 1  # u → axis − u
    p23 = P[2, 3] if projection == "exact" else 0.0  # the reference model has no P2[2, 3]
    P = np.asarray(P, dtype=np.float64)
    model = np.concatenate([P[:2], [[0.0, 0.0, 1.0, p23]]])
    n = FLIP_FIT_COLUMNS * FLIP_FIT_ROWS
    u, v = np.meshgrid(np.linspace(0, width - 1, FLIP_FIT_COLUMNS), np.linspace(0, height - 1, FLIP_FIT_ROWS))
    uv = np.stack([u.ravel(), v.ravel()], axis=1)  # (n, 2)
    depth = np.linspace(*FLIP_FIT_DEPTHS, n)  # (n,) one depth per sample point
    pts = unproject_to_rect(uv, depth, model) * np.array([-1.0, 1.0, 1.0])  # (n, 3) mirrored rect points
    uv_mirrored = np.stack([axis - uv[:, 0], uv[:, 1]], axis=1)  # (n, 2)
    x, y, z = pts.T
    d = z + p23  # depth along the model's third row, unchanged by the mirror
    # Unknowns [fu, fv, cu, cv, p03, p13]: u·d = fu·x + cu·z + p03, v·d = fv·y + cv·z + p13.
    zeros, ones = np.zeros(n), np.ones(n)
    a = np.concatenate(
        [
            np.stack([x, zeros, z, zeros, ones, zeros], axis=1),
            np.stack([zeros, y, zeros, z, zeros, ones], axis=1),
        ]
    )  # (2n, 6)
    b = np.concatenate([uv_mirrored[:, 0] * d, uv_mirrored[:, 1] * d])  # (2n,)
    fu, fv, cu, cv, p03, p13 = np.linalg.lstsq(a, b, rcond=None)[0]
    return np.array([[fu, 0.0, cu, p03], [0.0, fv, cv, p13], [0.0, 0.0, 1.0, P[2, 3]]])


def flip_objects(objects: list[Object3d], image_width: int, *, about_width: bool = False) -> list[Object3d]:
    """Mirror labels: box x about W − 1 (W with ``about_width``), x → −x, ry → π − ry and
    alpha → π − alpha (wrapped)."""
    axis = image_width if about_width else image_width - 1
    flipped = []
    for obj in objects:
        x1, y1, x2, y2 = obj.box2d
        flipped.append(
            replace(
                obj,
                box2d=np.array([axis - x2, y1, axis - x1, y2]),
                pos=obj.pos * np.array([-1.0, 1.0, 1.0]),
                ry=float(wrap_angle(np.pi - obj.ry)),
                alpha=float(wrap_angle(np.pi - obj.alpha)),
            )
        )
    return flipped


def sample_crop(
    image_size: tuple[int, int],
    rng: np.random.Generator | None,
    *,
    random_crop: float,
    scale: float,
    shift: float,
) -> tuple[np.ndarray, np.ndarray]:
    """GUPNet's random crop (docs/reference.md, 'GUPNet data pipeline'): with probability ``random_crop``,
    crop size = image size × clip(N(0,1)·scale + 1, 1 − scale, 1 + scale) and centre += image size ×
    clip(N(0,1)·shift, −2·shift, 2·shift) per axis; otherwise, and always without a generator
    (evaluation), the whole image.

    Returns:
        center: (2,) crop centre, crop_size: (2,) crop width, height; original pixels.
    """
    size = np.asarray(image_size, dtype=np.float64)
    center, crop_size = size / 2, size.copy()
    if rng is not None and rng.random() < random_crop:
        crop_size = size * np.clip(rng.standard_normal() * scale + 1, 1 - scale, 1 + scale)
        center = center + size * np.clip(rng.standard_normal(2) * shift, -2 * shift, 2 * shift)
    return center, crop_size


def _warp_pil(array: np.ndarray, trans: np.ndarray, out_size: tuple[int, int], bilinear: bool) -> np.ndarray:
    """The references' warp: PIL's affine transform (pixel centres at i + 0.5), zeros outside.

    PIL takes the output → source map. It is solved, as GUPNet's get_affine_transform does, from
    three float32 point pairs (output centre, the point half a width above it, and the one half a
    width left of that): the sampling positions are then bit-identical to the references' (a
    float64 inverse moves ~2e-5 of the pixels by one grey level).
    """
    from PIL import Image

    w, h = (float(v) for v in out_size)
    dst = np.array([[w / 2, h / 2], [w / 2, h / 2 - w / 2], [0.0, h / 2 - w / 2]])  # (3, 2)
    src = cv2.transform(dst[None], cv2.invertAffineTransform(np.asarray(trans, dtype=np.float64)))[0]
    inverse = cv2.getAffineTransform(np.float32(dst), np.float32(src))  # (2, 3) output → source
    resample = Image.Resampling.BILINEAR if bilinear else Image.Resampling.NEAREST
    size = tuple(int(v) for v in out_size)
    warped = Image.fromarray(array).transform(
        size, Image.Transform.AFFINE, data=tuple(inverse.ravel()), resample=resample
    )
    return np.asarray(warped, dtype=array.dtype)


def warp_image(
    image: np.ndarray, trans: np.ndarray, out_size: tuple[int, int], *, engine: str = "cv2"
) -> np.ndarray:
    """Bilinear affine warp of an (H, W, C) image to out_size = (W', H'); zeros outside.

    ``engine``: ``cv2`` (pixel centres at integers, as the labels) or ``pil`` (GUPNet /
    MonoSKD: PIL puts them at i + 0.5, a sub-pixel shift of (1/s − 1)/2 source px at scale s).
    """
    if engine not in IMAGE_WARPS:
        raise ValueError(f"dataset.image_warp: {engine!r} is not one of {IMAGE_WARPS}")
    if engine == "pil":
        return _warp_pil(image, trans, out_size, bilinear=True)
    return cv2.warpAffine(image, trans, tuple(out_size), flags=cv2.INTER_LINEAR, borderValue=0)


def warp_depth(
    depth: np.ndarray,
    trans: np.ndarray,
    out_size: tuple[int, int],
    *,
    interpolation: str = "nearest",
    engine: str = "cv2",
) -> np.ndarray:
    """Affine warp of an (H, W) depth map (metres, 0 = none); zeros outside.

    Nearest by default, not bilinear as MonoSKD: an interpolated depth between a surface and
    an empty pixel, or between a car and the wall behind it, is a depth that exists nowhere in
    the scene, and docs/method.md, 'Targets from projected LiDAR' keeps empty pixels out of the depth targets.
    ``interpolation``: ``nearest`` or ``bilinear``; ``engine`` as :func:`warp_image`.
    """
    if interpolation not in DEPTH_WARPS:
        raise ValueError(f"dataset.depth_warp: {interpolation!r} is not one of {DEPTH_WARPS}")
    if engine not in IMAGE_WARPS:
        raise ValueError(f"dataset.image_warp: {engine!r} is not one of {IMAGE_WARPS}")
    if engine == "pil":
        return _warp_pil(depth.astype(np.float32), trans, out_size, bilinear=interpolation == "bilinear")
    flags = cv2.INTER_NEAREST if interpolation == "nearest" else cv2.INTER_LINEAR
    return cv2.warpAffine(depth, trans, tuple(out_size), flags=flags, borderValue=0)


def input_window(
    center: np.ndarray, crop_size: np.ndarray, resolution: tuple[int, int], *, inverse_affine: str = "exact"
) -> np.ndarray:
    """The original-px window that the network input covers: the sample's ``coord_range``.

    Training RoIs (lib/models/detector.py ``boxes_to_original``) and decoding (lib/decode.py) map
    feature px back through it: x = x_feat / W_feat · (x1 − x0) + x0, likewise y.
    :func:`lib.geometry.get_affine_transform` scales both axes by s = W_in / crop_w, so the
    input's H_in rows cover crop_w · H_in / W_in original px about the crop centre (``exact``:
    the window is then the exact inverse of the affine). ``reference`` is GUPNet's window,
    centre ± crop_size / 2, whose height crop_h = crop_w · H / W assumes the input has the
    frame's aspect ratio: y is scaled by (H / W) / (H_in / W_in), 1.006 for a 1242×375 frame at
    1280×384 (1.2 px at the top and bottom rows), 0.906 at 384×128 (docs/parity.md, docs/reference.md, 'Known
    bugs and quirks: Per-axis input window').

    Args:
        center, crop_size: (2,) the crop in original px (:func:`sample_crop`).
        resolution: network input (W_in, H_in). inverse_affine: ``exact`` or ``reference``.

    Returns:
        (2, 2) float64 [[x0, y0], [x1, y1]].
    """
    if inverse_affine == "reference":
        return np.stack([center - crop_size / 2, center + crop_size / 2])
    if inverse_affine != "exact":
        raise ValueError(f"dataset.inverse_affine: {inverse_affine!r} is not one of {INVERSE_AFFINES}")
    width, height = resolution
    half = np.array([crop_size[0], crop_size[0] * height / width]) / 2
    return np.stack([center - half, center + half])


def color_jitter(image: np.ndarray, rng: np.random.Generator, *, bgr: bool = False) -> np.ndarray:
    """CenterNet's colour augmentation of an (H, W, 3) RGB image in [0, 1] (docs/reference.md, 'GUPNet data
    pipeline').

    Brightness, contrast and saturation with factors f = 1 ± U(0.4), in random order, then
    PCA lighting with coefficients N(0, 0.1). Each of the three maps x → f·x + (1 − f)·t with
    t = 0, the grey mean or the grey image (BT.601 luma of the input), so together they are
    one blend a·image + b·grey + c, applied in a single pass. Like CenterNet, the result is
    not clipped to [0, 1].

    ``bgr`` restores MonoSKD / MonoDistill, which run CenterNet's BGR code on RGB images: the
    grey image weighs R by 0.114 and B by 0.299, and the PCA rows are taken in BGR order.

    Returns:
        (H, W, 3) float32, a new array.
    """
    image = np.ascontiguousarray(image, dtype=np.float32)
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY if bgr else cv2.COLOR_RGB2GRAY)  # (H, W)
    gray_mean = float(gray.mean())
    a, b, c = 1.0, 0.0, 0.0  # result = a·image + b·gray + c
    for op in rng.permutation(3):  # 0 brightness, 1 contrast, 2 saturation
        f = 1.0 + rng.uniform(-COLOR_JITTER, COLOR_JITTER)
        a, b, c = f * a, f * b, f * c
        if op == 1:
            c += (1 - f) * gray_mean
        elif op == 2:
            b += 1 - f
    alpha = rng.normal(scale=LIGHTING_STD, size=3)
    eigvec = PCA_EIGVEC[::-1] if bgr else PCA_EIGVEC  # [::-1]: CenterNet's (BGR) row order
    shift = c + eigvec @ (PCA_EIGVAL * alpha)  # (3,) one RGB shift for the whole image
    channels = [
        cv2.addWeighted(channel, a, gray, b, float(shift[k])) for k, channel in enumerate(cv2.split(image))
    ]
    return cv2.merge(channels)


def flip_frame(
    image: np.ndarray,
    depth: np.ndarray | None,
    objects: list[Object3d],
    P2: np.ndarray,
    *,
    about_width: bool,
    projection: str,
) -> tuple[np.ndarray, np.ndarray | None, list[Object3d], np.ndarray]:
    """Mirror a frame: image and depth map (u → W − 1 − u, as ``np.fliplr``), labels
    (:func:`flip_objects`) and the re-fitted P2 (:func:`flip_projection`); new arrays."""
    height, width = image.shape[:2]
    return (
        cv2.flip(image, 1),
        None if depth is None else cv2.flip(depth, 1),
        flip_objects(objects, width, about_width=about_width),
        flip_projection(P2, (width, height), about_width=about_width, projection=projection),
    )


@dataclass
class AugmentedSample:
    """A frame after flip, crop/affine warp and colour augmentation.

    Attributes:
        image: (H', W', 3) float32 RGB, [0, 1] before colour jitter.
        depth: (H', W') float32 metres (0 = none), or None without a depth map.
        objects: labels in the (flipped) original image frame: the affine is not applied to
            them (targets apply ``trans``).
        P2: (3, 4) float64 projection of the (flipped) original image.
        trans: (2, 3) affine, (flipped) original pixels → network input pixels.
        center, crop_size: (2,) the crop in (flipped) original pixels.
        crop_scale: crop width / image width (> 1: zoomed out, objects look farther).
        flipped: whether the frame was mirrored.
    """

    image: np.ndarray
    depth: np.ndarray | None
    objects: list[Object3d]
    P2: np.ndarray
    trans: np.ndarray
    center: np.ndarray
    crop_size: np.ndarray
    crop_scale: float
    flipped: bool


def augment_sample(
    image: np.ndarray,
    depth: np.ndarray | None,
    objects: list[Object3d],
    P2: np.ndarray,
    rng: np.random.Generator | None,
    *,
    resolution: tuple[int, int],
    random_flip: float = 0.0,
    random_crop: float = 0.0,
    scale: float = 0.4,
    shift: float = 0.1,
    color_aug: bool = False,
    color_aug_bgr: bool = False,
    flip_about_width: bool = False,
    projection: str = "exact",
    image_warp: str = "cv2",
    depth_warp: str = "nearest",
) -> AugmentedSample:
    """Flip, crop and warp a frame to the network resolution: an :class:`AugmentedSample`
    (docs/reference.md, 'GUPNet data pipeline').

    Order as GUPNet: flip with probability ``random_flip``, then the random crop (in the
    flipped frame), the affine warp to ``resolution`` and, with ``color_aug``, colour jitter
    on the warped [0, 1] image. With ``rng=None`` nothing is random: the whole image is
    warped to the resolution (evaluation).

    Args:
        image: (H, W, 3) uint8 RGB. depth: (H, W) float32 metres or None.
        objects: the frame's labels. P2: (3, 4). rng: the sample's generator, or None.
        resolution: network input (W', H'). color_aug_bgr: :func:`color_jitter`'s ``bgr`` (MonoSKD).
        flip_about_width, projection, image_warp, depth_warp: the reference switches of the
            module docstring (:func:`flip_projection`, :func:`warp_image`, :func:`warp_depth`).
    """
    height, width = image.shape[:2]
    flipped = rng is not None and rng.random() < random_flip
    if flipped:
        image, depth, objects, P2 = flip_frame(
            image, depth, objects, P2, about_width=flip_about_width, projection=projection
        )
    else:
        objects, P2 = list(objects), np.asarray(P2, dtype=np.float64).copy()
    center, crop_size = sample_crop((width, height), rng, random_crop=random_crop, scale=scale, shift=shift)
    trans = get_affine_transform(center, crop_size, np.asarray(resolution))
    warped = warp_image(image, trans, resolution, engine=image_warp).astype(np.float32) / 255.0  # (H', W', 3)
    if color_aug and rng is not None:
        warped = color_jitter(warped, rng, bgr=color_aug_bgr)
    if depth is not None:
        depth = warp_depth(depth, trans, resolution, interpolation=depth_warp, engine=image_warp)
    return AugmentedSample(
        image=warped,
        depth=depth,
        objects=objects,
        P2=P2,
        trans=trans,
        center=center,
        crop_size=crop_size,
        crop_scale=float(crop_size[0] / width),
        flipped=flipped,
    )
