"""Frames in and out for inference: images, folders and videos with their cameras; MP4 writing.

A source is one image, a folder of images (sorted by name) or a video file (frames named
``<stem>_<index:06d>``). The camera is one projection for every frame (a calib file or
``--intrinsics``) or a folder of KITTI calib files named like the images (``<stem>.txt``). One
projection fits one image size: a frame of another size than the first is an error then (a
KITTI folder mixes sizes, each with its own calib file).
Video goes through OpenCV (``opencv-python-headless`` ships FFmpeg), so nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from lib.errors import UserError
from lib.inference import CameraError, Frame, read_projection

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
VIDEO_CODEC = "mp4v"  # MPEG-4 Part 2: written by every OpenCV FFmpeg build
# Plausible focal lengths, as multiples of the image width: horizontal fields of view from about
# 157 down to 6 degrees (KITTI: 721.5 px on 1242 px, 0.58).
FOCAL_PER_WIDTH = (0.1, 10.0)
JPEG_SUFFIXES = (".jpg", ".jpeg")


def check_camera(P2: np.ndarray, image_size: tuple[int, int], source: str) -> None:
    """Refuse a camera that cannot be the one of a ``image_size`` (W, H) image: its principal
    point outside the image (e.g. ``--intrinsics`` given as fx,fy,cy,cx), or a focal length
    outside :data:`FOCAL_PER_WIDTH` times the width (every box would land at an absurd depth).

    Raises:
        CameraError: names ``source`` (``--intrinsics`` or the calib file), the values and the image.
    """
    width, height = image_size
    fx, fy, cx, cy = (float(P2[0, 0]), float(P2[1, 1]), float(P2[0, 2]), float(P2[1, 2]))
    if not (0 <= cx <= width and 0 <= cy <= height):
        raise CameraError(
            f"{source}: principal point (cx, cy) = ({cx:g}, {cy:g}) px lies outside the {width}x{height} "
            "image (intrinsics are fx,fy,cx,cy in pixels of this image)"
        )
    low, high = (k * width for k in FOCAL_PER_WIDTH)
    for name, focal in (("fx", fx), ("fy", fy)):
        if not low <= focal <= high:
            raise CameraError(
                f"{source}: focal length {name} = {focal:g} px is implausible for a {width} px wide image "
                f"(expected {low:g} to {high:g} px, fields of view of about 157 to 6 degrees)"
            )


class Camera:
    """The projection of each frame: one (3, 4) matrix, or a folder of calib files by stem.

    Args:
        P2: the projection of every frame. calib_dir: folder of ``<stem>.txt`` calib files.
            Exactly one of the two.
    """

    def __init__(
        self, *, P2: np.ndarray | None = None, calib_dir: Path | None = None, source: str = "--intrinsics"
    ) -> None:
        if (P2 is None) == (calib_dir is None):
            raise ValueError("Camera needs exactly one of P2, calib_dir")
        self.P2, self.calib_dir, self.source = P2, calib_dir, source
        self.first: tuple[str, tuple[int, int]] | None = None  # name and (W, H) of the first frame

    @classmethod
    def from_options(cls, calib: Path | None, intrinsics: np.ndarray | None) -> Camera:
        """From ``--calib`` (a file, or a folder of per-image files) or ``--intrinsics`` (a projection)."""
        if (calib is None) == (intrinsics is None):
            raise CameraError(
                "give the camera with exactly one of --calib FILE|FOLDER, --intrinsics fx,fy,cx,cy"
            )
        if intrinsics is not None:
            return cls(P2=intrinsics)
        if calib.is_dir():
            return cls(calib_dir=calib)
        return cls(P2=read_projection(calib), source=str(calib))

    def projection(self, name: str, image_size: tuple[int, int]) -> np.ndarray:
        """(3, 4) projection of the frame named ``name`` (an image stem) of (W, H) ``image_size``.

        Raises:
            CameraError: no calib file for the frame; with one camera, a frame of another size
                than the first; a camera that does not fit the image (:func:`check_camera`).
        """
        if self.P2 is not None:
            self.first = self.first or (name, image_size)
            if image_size != self.first[1]:
                (w0, h0), (w, h) = self.first[1], image_size
                raise CameraError(
                    f"{name}: mixed image sizes ({w}x{h} after {w0}x{h0} of {self.first[0]}) "
                    "with one camera; "
                    "give a --calib folder with a file per image"
                )
            check_camera(self.P2, image_size, self.source)
            return self.P2
        path = self.calib_dir / f"{name}.txt"
        if not path.is_file():
            raise CameraError(f"{path}: no calib file for image {name} in the --calib folder")
        P2 = read_projection(path)
        check_camera(P2, image_size, str(path))
        return P2


def is_video(path: Path) -> bool:
    """Whether a path names a video file (by its suffix)."""
    return path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES


def list_images(path: Path) -> list[Path]:
    """The image files of an input: the file itself, or a folder's images sorted by name."""
    if not path.exists():
        raise FileNotFoundError(f"input not found: {path}")
    if path.is_file():
        return [path]
    images = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise UserError(f"{path}: no images ({', '.join(IMAGE_SUFFIXES)}) in the folder")
    return images


def read_image(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB of an image file (grey and 16-bit images are converted).

    Raises:
        UserError: not a decodable image, or a JPEG cut short (libjpeg would fill the missing
            rows with grey and only warn).
    """
    data = np.fromfile(path, dtype=np.uint8)
    if path.suffix.lower() in JPEG_SUFFIXES and data.size and jpeg_truncated(data.tobytes()):
        raise UserError(f"{path}: truncated JPEG (the file ends before its end-of-image marker); re-copy it")
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if bgr is None:
        raise UserError(f"{path}: not a readable image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def jpeg_truncated(data: bytes) -> bool:
    """Whether JPEG bytes stop before the end-of-image marker (FF D9) of their main image.

    The scan of the main image is followed by FF D9; a file cut short lacks it. Bytes after the
    marker (camera trailers, an appended video) are allowed, so the marker is searched from the
    start of the last scan (its SOS marker FF DA) on.
    """
    start = data.rfind(b"\xff\xda")
    return start < 0 or data.find(b"\xff\xd9", start) < 0


def count_frames(path: Path) -> int | None:
    """Frames of an input (images, or the video's frame count when the container says), or None."""
    if not is_video(path):
        return len(list_images(path))
    capture = cv2.VideoCapture(str(path))
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    capture.release()
    return count if count > 0 else None


def iter_frames(path: Path, camera: Camera) -> Iterator[Frame]:
    """The frames of an image, a folder of images or a video, each with its projection."""
    if is_video(path):
        yield from _video_frames(path, camera)
        return
    for image_path in list_images(path):
        image = read_image(image_path)
        P2 = camera.projection(image_path.stem, (image.shape[1], image.shape[0]))
        yield Frame(name=image_path.stem, image=image, P2=P2)


def _video_frames(path: Path, camera: Camera) -> Iterator[Frame]:
    if camera.P2 is None:
        raise CameraError(
            f"{path}: a video needs one camera (--calib FILE or --intrinsics), not a folder of calibs"
        )
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise UserError(f"{path}: not a readable video")
    try:
        index = 0
        while True:
            ok, bgr = capture.read()
            if not ok:
                break
            yield Frame(
                name=f"{path.stem}_{index:06d}", image=cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), P2=camera.P2
            )
            index += 1
    finally:
        capture.release()
    if index == 0:
        raise UserError(f"{path}: not a readable video (no frame decoded)")


def video_fps(path: Path, default: float) -> float:
    """Frame rate of a video input (``default`` for images or when the container does not say)."""
    if not is_video(path):
        return default
    capture = cv2.VideoCapture(str(path))
    fps = capture.get(cv2.CAP_PROP_FPS)
    capture.release()
    return fps if fps and np.isfinite(fps) and fps > 0 else default


class VideoWriter:
    """An MP4 file of RGB frames; every frame is resized to the first one's size (OpenCV needs one
    size per file). Use as a context manager."""

    def __init__(self, path: Path, *, fps: float) -> None:
        self.path, self.fps = path, fps
        self.writer: cv2.VideoWriter | None = None
        self.size: tuple[int, int] | None = None

    def write(self, rgb: np.ndarray) -> None:
        if self.writer is None:
            self.size = (rgb.shape[1] // 2 * 2, rgb.shape[0] // 2 * 2)  # even sizes for the codec
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.writer = cv2.VideoWriter(
                str(self.path), cv2.VideoWriter_fourcc(*VIDEO_CODEC), self.fps, self.size
            )
            if not self.writer.isOpened():
                raise UserError(f"{self.path}: cannot write an MP4 video here")
        if (rgb.shape[1], rgb.shape[0]) != self.size:
            rgb = cv2.resize(rgb, self.size, interpolation=cv2.INTER_AREA)
        self.writer.write(np.ascontiguousarray(rgb[..., ::-1]))

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.writer is not None:
            self.writer.release()
