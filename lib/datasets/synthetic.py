"""Synthetic KITTI-format frames: a rendered road scene, its labels and a simulated LiDAR scan.

The demo and the end-to-end tests train on this instead of KITTI, so every file it writes
follows the KITTI object layout exactly (``training/{image_2,calib,label_2,velodyne}``,
``ImageSets/*.txt``) and the rest of the pipeline (depth-map tool, dataset, evaluator) runs on it
unchanged. This module makes and writes the frames; the scene sampling
(lib/datasets/synthetic_scene.py), the image rendering (lib/datasets/synthetic_render.py) and
the LiDAR (lib/datasets/synthetic_lidar.py) live beside it.

The scene lives in the rectified camera frame (rect: x right, y down, z forward) of a real KITTI
calibration: a flat ground plane at ``y = CAMERA_HEIGHT`` (the camera 1.65 m above the road, as
in KITTI and the RPD bins of docs/method.md, 'Road Plane Discretization'), a straight road with lane markings
and a textured surface (its texture shrinks with distance, a monocular depth cue), far-away buildings, and
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
import multiprocessing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from lib.datasets.synthetic_lidar import simulate_scan
from lib.datasets.synthetic_render import render_image
from lib.datasets.synthetic_scene import (
    DEPTH_RANGE,
    IMAGE_SIZE,
    NUM_OBJECTS,
    Road,
    SceneObject,
    sample_objects,
    sample_road,
    synthetic_calibration,
)
from lib.geometry import Calibration, box3d_to_box2d, ry_to_alpha
from lib.kitti_io import Object3d, write_calib, write_label, write_split

logger = logging.getLogger(__name__)

MAX_SCENE_OBJECTS = 254  # the instance map is uint8 with 0 for the background
OCCLUSION_BOUNDS = (0.1, 0.5, 0.8)  # hidden-pixel fractions where levels 1, 2, 3 start


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


def occlusion_level(hidden_fraction: float) -> int:
    """KITTI occlusion level 0 (visible) .. 3 (mostly hidden) of an object's hidden pixel fraction."""
    return int(np.searchsorted(OCCLUSION_BOUNDS, hidden_fraction, side="right"))


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
    image, ids, own_pixels, texture = render_image(
        objects, rng=rng, calib=calib, image_size=image_size, road=road
    )
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
    camera_height: tuple[float, float] | None = None,
    object_scale: tuple[float, float] | None = None,
) -> SyntheticFrame:
    """A random synthetic frame (a pure function of the generator's state).

    Args:
        rng: the only source of randomness: the same seed gives the same frame.
        image_size: (width, height); the KITTI calibration is scaled to it.
        num_objects: inclusive (min, max) objects placed. depth_range: (near, far) rect z, metres.
        camera_height: (min, max) metres of the camera above this frame's road, with the nominal
            calibration (:func:`lib.datasets.synthetic_scene.sample_road`). object_scale: (min,
            max) factor of each object's size (:func:`lib.datasets.synthetic_scene.sample_objects`).
            Both make monocular depth ambiguous while the LiDAR stays exact; None (default): off,
            and the frame is the same as without them.
    """
    calib = synthetic_calibration(image_size)
    road = sample_road(rng, camera_height=camera_height)
    objects = sample_objects(
        rng,
        road=road,
        calib=calib,
        image_size=image_size,
        num_objects=num_objects,
        depth_range=depth_range,
        object_scale=object_scale,
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


def _write_frame_task(task: tuple[Path, int, int, dict]) -> int:
    """Draw frame ``i`` from ``default_rng([seed, i])`` and write it; returns ``i`` (pool worker)."""
    split_dir, i, seed, options = task
    write_frame(split_dir, i, generate_frame(np.random.default_rng([seed, i]), **options))
    return i


def _written_frames(tasks: list[tuple[Path, int, int, dict]], workers: int) -> Iterator[int]:
    """Run :func:`_write_frame_task` on every task, in ``workers`` processes when > 1."""
    if workers == 1:
        yield from map(_write_frame_task, tasks)
        return
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        yield from pool.imap_unordered(_write_frame_task, tasks, chunksize=4)


def write_dataset(
    out_dir: str | Path,
    *,
    frames: int,
    seed: int = 0,
    image_size: tuple[int, int] = IMAGE_SIZE,
    val_fraction: float = 0.25,
    num_objects: tuple[int, int] = NUM_OBJECTS,
    depth_range: tuple[float, float] = DEPTH_RANGE,
    camera_height: tuple[float, float] | None = None,
    object_scale: tuple[float, float] | None = None,
    workers: int = 1,
) -> dict[str, list[int]]:
    """Write a synthetic KITTI tree: ``out_dir/training/...`` and ``out_dir/ImageSets/*.txt``.

    Frame i is drawn from ``np.random.default_rng([seed, i])``, so the files are byte-identical
    for the same seed, whatever the number of ``workers`` (processes), and a frame does not depend
    on how many are written. ``num_objects``, ``depth_range``, ``camera_height`` and
    ``object_scale`` are those of :func:`generate_frame`.

    Returns:
        The splits written, ``{"train": ids, "val": ids, "trainval": ids}``.
    """
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    splits = split_frames(frames, val_fraction=val_fraction)
    root = Path(out_dir)
    options = {
        "image_size": image_size,
        "num_objects": num_objects,
        "depth_range": depth_range,
        "camera_height": camera_height,
        "object_scale": object_scale,
    }
    tasks = [(root / "training", i, seed, options) for i in range(frames)]
    for done, _ in enumerate(_written_frames(tasks, min(workers, frames)), start=1):
        if done % 100 == 0:
            logger.info("synthetic KITTI: %d / %d frames written to %s", done, frames, root)
    for name, ids in splits.items():
        write_split(root / "ImageSets" / f"{name}.txt", ids)
    return splits
