"""Run a trained detector on any image with any camera: input preparation, backends, decoding.

The path of one frame (docs/reference.md, 'Decoding and testing', as ``tools/train_val.py -e`` runs it):

1. :func:`prepare_input`: an image whose aspect ratio (H/W) differs from the network input's by
   more than :data:`ASPECT_TOLERANCE` is first padded with black, centred, to that aspect ratio,
   and its camera adjusted (the principal point moves by the padding). The (padded) frame is
   then made into the network input exactly as in evaluation: the whole image warped to the
   resolution by the evaluation affine (lib/datasets/augment.py ``augment_sample`` without a
   generator), ImageNet normalisation, the file's P2 and the input's window in frame pixels
   (``coord_range``, lib/datasets/augment.py ``input_window`` with the config's
   ``dataset.inverse_affine``). The evaluation affine scales by the width only, so a frame much
   taller than the input's aspect ratio would lose its top and bottom rows (a 16:9 frame would
   keep only its middle band) and a much wider one would get black bands; the padding keeps the
   whole frame in view. Within the tolerance, frames are treated exactly as the model was
   trained and evaluated (KITTI frames are never padded, even at 384×128).
2. A backend runs :class:`InferenceGraph` (backbone, neck, heads, top-K peaks, RoI heads, depth
   and its confidence): :class:`TorchBackend` in PyTorch, :class:`OnnxBackend` the file that
   :func:`export_onnx` wrote. Both return the same named numpy arrays (:data:`OUTPUT_NAMES`).
3. :func:`decode_outputs`: the shared box decoding (:func:`lib.decode.decode_detections`) with
   the (padded) frame's camera, then the 2D boxes moved back by the padding.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lib.constants import CAMERA_PRESETS
from lib.datasets.augment import augment_sample, input_window
from lib.datasets.kitti import normalize_image
from lib.decode import decode_detections
from lib.errors import UserError
from lib.kitti_io import Object3d
from lib.models.detector import Detector
from lib.utils.files import atomic_path

ASPECT_TOLERANCE = 0.15  # relative difference of H/W from the input's beyond which a frame is padded
INPUT_NAMES = ("images", "calib", "coord_range")
# Every output has the batch first; K = top-K peaks, Hf, Wf = the stride-4 feature map.
OUTPUT_NAMES = (
    "scores",  # (B, K) heatmap score of each peak
    "cls",  # (B, K) int64 class id
    "xs",  # (B, K) int64 peak column, feature cells
    "ys",  # (B, K) int64 peak row
    "offset_2d",  # (B, 2, Hf, Wf) dense 2D centre offset, feature px
    "size_2d",  # (B, 2, Hf, Wf) dense 2D box size, feature px
    "offset_3d",  # (B, K, 2) projected 3D centre offset, feature px
    "size_3d",  # (B, K, 3) h, w, l residuals to the class mean, metres
    "heading",  # (B, K, 24) 12 bin logits + 12 residuals
    "depth",  # (B, K, 2) depth (m), its log-variance
    "depth_confidence",  # (B, K) the decoding's depth confidence
)
ROI_OUTPUTS = ("offset_3d", "size_3d", "heading", "depth", "depth_confidence")
ONNX_OPSET = 17
# The left colour camera: in a KITTI object calib file, and in KITTI raw's calib_cam_to_cam.txt.
PROJECTION_KEYS = ("P2", "P_rect_02")


class CameraError(UserError, ValueError):
    """A missing or malformed camera: the message names the file or the option."""


def intrinsics_projection(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    """(3, 4) projection [K | 0] of a pinhole camera (pixels), the rect frame = the camera frame."""
    if not (fx > 0 and fy > 0 and np.isfinite([fx, fy, cx, cy]).all()):
        focal = ", ".join(f"{n} = {v:g} px" for n, v in (("fx", fx), ("fy", fy)) if v <= 0)
        if focal:
            given = ",".join(f"{v:g}" for v in (fx, fy, cx, cy))
            raise CameraError(f"--intrinsics {given}: focal lengths must be positive, got {focal}")
        raise CameraError(
            f"--intrinsics: fx and fy must be positive and all values finite, got {fx, fy, cx, cy}"
        )
    return np.array([[fx, 0.0, cx, 0.0], [0.0, fy, cy, 0.0], [0.0, 0.0, 1.0, 0.0]])


def parse_intrinsics(text: str) -> np.ndarray:
    """``"fx,fy,cx,cy"`` (pixels) or a name of :data:`CAMERA_PRESETS` → (3, 4) projection
    (:func:`intrinsics_projection`)."""
    if text.strip().lower() in CAMERA_PRESETS:
        return intrinsics_projection(*CAMERA_PRESETS[text.strip().lower()])
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 4:
        names = ", ".join(CAMERA_PRESETS)
        raise CameraError(f"--intrinsics: expected four numbers fx,fy,cx,cy or one of {names}, got {text!r}")
    return intrinsics_projection(*values)


def read_projection(path: str | Path) -> np.ndarray:
    """The left colour camera's (3, 4) projection from a KITTI calib file (its ``P2`` line; the
    other matrices are not needed) or a KITTI raw ``calib_cam_to_cam.txt`` (``P_rect_02``).

    Raises:
        FileNotFoundError: no such file. CameraError: no such line, or not 12 finite values with
            positive focal lengths.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"calib file not found: {path}")
    for lineno, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        key, _, rest = line.partition(":")
        if key.strip() not in PROJECTION_KEYS:
            continue
        try:
            values = np.array([float(v) for v in rest.split()])
        except ValueError:
            values = np.zeros(0)
        if values.size != 12 or not np.isfinite(values).all() or values[0] <= 0 or values[5] <= 0:
            raise CameraError(f"{path}:{lineno}: {key.strip()} needs 12 finite values with fx, fy > 0")
        return values.reshape(3, 4)
    raise CameraError(
        f"{path}: no {' or '.join(PROJECTION_KEYS)} line (a KITTI calib file or calib_cam_to_cam.txt)"
    )


@dataclass(frozen=True)
class Frame:
    """One image to run on: a name (result file stem), (H, W, 3) uint8 RGB, (3, 4) projection."""

    name: str
    image: np.ndarray
    P2: np.ndarray


@dataclass(frozen=True)
class NetworkInput:
    """A frame made into the network's input (see the module docstring).

    Attributes:
        rgb: (3, H_in, W_in) float32, ImageNet-normalised.
        calib: (3, 4) float64 projection of the padded frame (= the file's without padding).
        coord_range: (2, 2) window of the input [[x0, y0], [x1, y1]] in padded-frame px.
        pad: (2,) px of black added left and on top.
    """

    rgb: np.ndarray
    calib: np.ndarray
    coord_range: np.ndarray
    pad: np.ndarray


def pad_to_aspect(
    image: np.ndarray, P2: np.ndarray, resolution: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pad an image with black, centred, to the aspect ratio of ``resolution`` (W, H) when its own
    differs by more than :data:`ASPECT_TOLERANCE`; the projection follows the pixels.

    Returns:
        The (padded) image, its (3, 4) projection (u' = u + pad_x: P' = [[1, 0, px], [0, 1, py],
        [0, 0, 1]] · P) and the (2,) int padding (left, top).
    """
    height, width = image.shape[:2]
    target = resolution[1] / resolution[0]  # H / W of the network input
    pad = np.zeros(2, np.int64)
    if abs(height / width - target) > ASPECT_TOLERANCE * target:
        if height / width > target:  # too tall: pad the sides
            pad[0] = (round(height / target) - width) // 2
        else:
            pad[1] = (round(width * target) - height) // 2
    if not pad.any():
        return image, np.asarray(P2, np.float64).copy(), pad
    padded = np.zeros((height + 2 * pad[1], width + 2 * pad[0], 3), np.uint8)
    padded[pad[1] : pad[1] + height, pad[0] : pad[0] + width] = image
    shift = np.array([[1.0, 0.0, pad[0]], [0.0, 1.0, pad[1]], [0.0, 0.0, 1.0]])
    return padded, shift @ np.asarray(P2, np.float64), pad


def prepare_input(
    image: np.ndarray, P2: np.ndarray, *, resolution: tuple[int, int], inverse_affine: str = "exact"
) -> NetworkInput:
    """One frame → the network input, as ``KittiDataset`` makes an evaluation sample.

    Args:
        image: (H, W, 3) uint8 RGB. P2: (3, 4) its projection.
        resolution: network input (W_in, H_in).
        inverse_affine: the model's ``dataset.inverse_affine`` (the window its RoIs were trained with).
    """
    image, P2, pad = pad_to_aspect(image, P2, resolution)
    aug = augment_sample(image, None, [], P2, None, resolution=resolution)
    return NetworkInput(
        rgb=normalize_image(aug.image),
        calib=aug.P2,
        coord_range=input_window(aug.center, aug.crop_size, resolution, inverse_affine=inverse_affine),
        pad=pad,
    )


@dataclass(frozen=True)
class Batch:
    """The network inputs of a batch of frames; ``arrays`` holds the :data:`INPUT_NAMES` float32
    arrays stacked, ``inputs`` what decoding needs of each frame."""

    inputs: list[NetworkInput]
    arrays: dict[str, np.ndarray]


def make_batch(
    frames: Sequence[Frame], *, resolution: tuple[int, int], inverse_affine: str = "exact"
) -> Batch:
    """Prepare and stack frames (:func:`prepare_input`); each is made into the same input size on
    its own, so a batch may mix image sizes (KITTI's do), each frame with its own camera."""
    if not frames:
        raise ValueError("make_batch needs at least one frame")
    inputs = [
        prepare_input(f.image, f.P2, resolution=resolution, inverse_affine=inverse_affine) for f in frames
    ]
    arrays = {
        "images": np.stack([i.rgb for i in inputs]),
        "calib": np.stack([i.calib for i in inputs]).astype(np.float32),
        "coord_range": np.stack([i.coord_range for i in inputs]).astype(np.float32),
    }
    return Batch(inputs=inputs, arrays=arrays)


class InferenceGraph(nn.Module):
    """The exported inference graph: detector in eval mode with its top-K peaks → the
    :data:`OUTPUT_NAMES` tensors in that order, RoI outputs reshaped to (B, K, ...)."""

    def __init__(self, detector: Detector, *, topk: int) -> None:
        super().__init__()
        self.detector = detector
        self.topk = topk

    def forward(
        self, images: torch.Tensor, calib: torch.Tensor, coord_range: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        preds = self.detector(images, calib=calib, coord_range=coord_range, topk=self.topk)
        b, k = images.shape[0], self.topk
        peaks = preds["topk"]
        roi = [preds[name].reshape(b, k, *preds[name].shape[1:]) for name in ROI_OUTPUTS]
        return (
            peaks["scores"],
            peaks["cls"],
            peaks["xs"],
            peaks["ys"],
            preds["offset_2d"],
            preds["size_2d"],
            *roi,
        )


class TorchBackend:
    """Runs :class:`InferenceGraph` in PyTorch (no_grad, eval mode) on a device.

    Args:
        detector: the network. topk: peaks per image. device: where it runs.
        channels_last: NHWC memory format for the model and the images.
        autocast_dtype: run under ``torch.autocast`` with this dtype (fp16 / bf16), None: fp32.
        compile: wrap the graph in ``torch.compile``.
    """

    def __init__(
        self,
        detector: Detector,
        *,
        topk: int,
        device: torch.device,
        channels_last: bool = False,
        autocast_dtype: torch.dtype | None = None,
        compile: bool = False,
    ) -> None:
        self.device = device
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.autocast_dtype = autocast_dtype
        graph = InferenceGraph(detector.eval(), topk=topk).to(device, memory_format=self.memory_format)
        self.graph = torch.compile(graph) if compile else graph

    @torch.no_grad()
    def __call__(self, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        inputs = [torch.from_numpy(np.ascontiguousarray(arrays[n])).to(self.device) for n in INPUT_NAMES]
        inputs[0] = inputs[0].contiguous(memory_format=self.memory_format)
        enabled = self.autocast_dtype is not None
        with torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=enabled):
            outputs = self.graph(*inputs)
        return {
            n: t.float().cpu().numpy() if t.is_floating_point() else t.cpu().numpy()
            for n, t in zip(OUTPUT_NAMES, outputs, strict=True)
        }


class OnnxBackend:
    """Runs an exported graph (:func:`export_onnx`) with ONNX Runtime.

    Args:
        path: the .onnx file. providers: ONNX Runtime execution providers (default: CPU).
        threads: intra-op threads (None: ONNX Runtime's default).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        providers: Sequence[str] = ("CPUExecutionProvider",),
        threads: int | None = None,
    ) -> None:
        import onnxruntime as ort  # only this backend needs it

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"ONNX model not found: {path}")
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), options, providers=list(providers))
        except Exception as err:  # ONNX Runtime raises its own exception types for unreadable files
            raise UserError(f"{path}: not a readable ONNX model ({type(err).__name__})") from None
        names = [o.name for o in self.session.get_outputs()]
        if tuple(names) != OUTPUT_NAMES:
            raise UserError(
                f"{path}: outputs {names} are not those of tools/export_onnx.py ({list(OUTPUT_NAMES)})"
            )
        self.resolution = tuple(self.session.get_inputs()[0].shape[:1:-1])  # (W, H) of (B, 3, H, W)

    def __call__(self, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = self.session.run(
            None, {n: np.ascontiguousarray(arrays[n], np.float32) for n in INPUT_NAMES}
        )
        return dict(zip(OUTPUT_NAMES, outputs, strict=True))


def decode_outputs(
    outputs: Mapping[str, np.ndarray],
    batch: Batch,
    *,
    model_type: str,
    threshold: float,
    backprojection: str,
) -> list[list[Object3d]]:
    """KITTI objects of every frame of a batch from a backend's outputs (shared by both backends).

    Decoding (:func:`lib.decode.decode_detections`, with the threshold rule of ``model_type`` and
    the ``backprojection`` formula) back-projects with the padded frame's camera; the 2D boxes
    are then moved back into the frame's own pixels.
    """
    b, k = outputs["scores"].shape
    preds = {
        "topk": {n: outputs[n] for n in ("scores", "cls", "xs", "ys")},
        "offset_2d": outputs["offset_2d"],
        "size_2d": outputs["size_2d"],
        **{n: outputs[n].reshape(b * k, *outputs[n].shape[2:]) for n in ROI_OUTPUTS},
    }
    detections = decode_detections(
        preds,
        calib=np.stack([i.calib for i in batch.inputs]),
        coord_range=np.stack([i.coord_range for i in batch.inputs]),
        model_type=model_type,
        threshold=threshold,
        backprojection=backprojection,
    )
    out = []
    for inp, objects in zip(batch.inputs, detections, strict=True):
        shift = np.tile(inp.pad, 2).astype(np.float64)  # (4,) left, top, left, top
        out.append([replace(o, box2d=o.box2d - shift) for o in objects] if inp.pad.any() else objects)
    return out


def export_onnx(detector: Detector, path: str | Path, *, resolution: tuple[int, int], topk: int) -> None:
    """Write the :class:`InferenceGraph` of a detector as ONNX (opset :data:`ONNX_OPSET`), with a
    dynamic batch axis and the input resolution (W, H) fixed; atomically (lib/utils/files.py
    ``atomic_path``: a temporary file, then a rename).

    The TorchScript-based exporter (``dynamo=False``) is used: it needs no package beyond onnx
    (the torch.export-based default needs onnxscript) and exports torchvision's RoIAlign
    (``sampling_ratio=-1``, adaptive, becomes ONNX's 0, also adaptive). torch 2.9+ calls it
    deprecated; the pinned torch 2.14.1 runs it. Its tracer warnings about Python-side shape
    checks are silenced: those checks hold for every input of the exported shape.
    """
    width, height = resolution
    graph = InferenceGraph(detector.eval(), topk=topk)
    example = (
        torch.zeros(1, 3, height, width),
        torch.tensor([[[700.0, 0.0, width / 2, 0.0], [0.0, 700.0, height / 2, 0.0], [0.0, 0.0, 1.0, 0.0]]]),
        torch.tensor([[[0.0, 0.0], [float(width), float(height)]]]),
    )
    axes = {name: {0: "batch"} for name in INPUT_NAMES + OUTPUT_NAMES}
    with atomic_path(path) as tmp, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*RoIAlign.*sampling_ratio.*")
        warnings.filterwarnings("ignore", message=".*aten::index.*")
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", message="The feature will be removed.*")
        torch.onnx.export(
            graph, example, str(tmp), dynamo=False, opset_version=ONNX_OPSET,
            input_names=list(INPUT_NAMES), output_names=list(OUTPUT_NAMES), dynamic_axes=axes,
        )  # fmt: skip
