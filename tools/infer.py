"""Run a trained detector on your own images, folders or videos, with your camera.

    python tools/infer.py --checkpoint outputs/student/checkpoints/best.pth \\
        --input my_images/ --intrinsics 721.5,721.5,609.6,172.9 --out outputs/infer

``--config`` (with overrides) is needed only for a checkpoint that stores no config (bare weights,
a reference download) and for ``--backend onnx``; a training checkpoint of this project and the
student tools/export_student.py writes from it store their own.

``--input`` is an image, a folder of images or a video. The camera is ``--calib`` (a KITTI calib
file, a KITTI raw ``calib_cam_to_cam.txt``, or a folder of calib files named like the images) or
``--intrinsics fx,fy,cx,cy`` in pixels. Any image size: the network input is made as in
evaluation, after padding frames of another aspect ratio (lib/inference.py). Writes
``<out>/data/<name>.txt`` (KITTI result lines) and ``<out>/vis/<name>.png`` (3D boxes and the
bird's-eye view), or with ``--video-out FILE`` one MP4 of the rendered frames. A ``.onnx``
``--checkpoint`` (tools/export_onnx.py) runs with ONNX Runtime. ``--score-threshold`` applies to
the score written in the result files (heatmap peak × depth confidence) for every model type, so
the console count, the files and ``tools/visualize.py --score-threshold`` agree; the evaluation
(``tester.threshold``) keeps each reference's own rule (lib/decode.py).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Iterator
from contextlib import nullcontext
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING

from lib.constants import CAMERA_PRESETS
from lib.errors import UserError, run_cli
from lib.utils import cli_types
from lib.utils.outputs import check_outputs as check_not_on_inputs

if TYPE_CHECKING:  # the heavy modules (torch: seconds) load in the functions, after --help
    import numpy as np
    import torch

    from lib.config import Config
    from lib.inference import Frame, OnnxBackend, TorchBackend
    from lib.inference_io import VideoWriter
    from lib.kitti_io import Object3d
    from lib.models.detector import Detector

DEFAULT_FPS = 10.0  # of --video-out when the input is not a video (KITTI's camera rate)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--config", type=Path, help="the model's config (default: the one the checkpoint stores)"
    )
    parser.add_argument(
        "--checkpoint",
        type=Path,
        required=True,
        help=".pth checkpoint, or an .onnx file (tools/export_onnx.py)",
    )
    parser.add_argument("--input", type=Path, required=True, help="an image, a folder of images or a video")
    camera = parser.add_mutually_exclusive_group()
    camera.add_argument("--calib", type=Path, help="KITTI calib file, raw calib_cam_to_cam.txt, or a folder")
    camera.add_argument(
        "--intrinsics",
        help=f"fx,fy,cx,cy in pixels, or a named camera: {', '.join(CAMERA_PRESETS)} (lib/constants.py)",
    )
    parser.add_argument("--out", type=Path, default=Path("outputs/infer"), help="output folder")
    parser.add_argument(
        "--score-threshold",
        type=cli_types.score,
        help="in [0, 1]: keep objects whose score (heatmap peak x depth confidence, the value written in "
        "the result files) is >= S, for every model type; default: the config's tester.threshold",
    )
    parser.add_argument(
        "--video-out", type=Path, help="write the rendered frames into this MP4 instead of PNGs"
    )
    parser.add_argument("--no-render", action="store_true", help="write the result files only")
    parser.add_argument(
        "--backend", choices=("auto", "torch", "onnx"), default="auto", help="auto: onnx for a .onnx file"
    )
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1, ...")
    parser.add_argument("--batch-size", type=cli_types.positive_int, default=4)
    parser.add_argument(
        "--width", type=cli_types.render_width, default=960, help="width of the rendered image, pixels"
    )
    parser.add_argument(
        "--force", action="store_true", help="write into a non-empty --out / over --video-out"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("overrides", nargs="*", help="config overrides, key.sub=value")
    args = parser.parse_args(cli_types.attach_negative_values(argv, ("--intrinsics",)))
    if args.backend == "auto":
        args.backend = "onnx" if args.checkpoint.suffix.lower() == ".onnx" else "torch"
    if args.video_out is not None and args.no_render:
        parser.error("--video-out writes rendered frames: drop --no-render")
    return args


def batched(frames: Iterable[Frame], size: int) -> Iterator[list[Frame]]:
    """Consecutive lists of ``size`` frames (the last may be shorter)."""
    iterator = iter(frames)
    while chunk := list(islice(iterator, size)):
        yield chunk


def load_model(args: argparse.Namespace) -> tuple[Config, Detector | None]:
    """The config (``--config``, else the checkpoint's) and, for the torch backend, the network
    (lib/models/loading.py ``load_detector``; a teacher is refused)."""
    from lib.config import load_config
    from lib.models.loading import load_detector

    if args.backend == "torch":
        loaded = load_detector(args.config, args.checkpoint, overrides=args.overrides, role="infer")
        return loaded.config, loaded.detector
    if args.config is None:
        raise UserError(f"{args.checkpoint}: an ONNX file stores no config; pass the model's with --config")
    return load_config(args.config, args.overrides), None


def build_backend(
    args: argparse.Namespace, cfg: Config, detector: Detector | None, device: torch.device, *, topk: int
) -> TorchBackend | OnnxBackend:
    """The torch network of a checkpoint (``topk`` peaks per image), or an ONNX Runtime session of
    an exported file (its top-K fixed at export)."""
    from lib.inference import OnnxBackend, TorchBackend

    if detector is not None:
        return TorchBackend(detector, topk=topk, device=device)
    backend = OnnxBackend(args.checkpoint)
    if backend.resolution != tuple(cfg.dataset.resolution):
        raise UserError(
            f"{args.checkpoint}: exported for input {backend.resolution}, the config says "
            f"{tuple(cfg.dataset.resolution)} (dataset.resolution)"
        )
    return backend


def check_outputs(args: argparse.Namespace) -> None:
    """Refuse to write over an input (never allowed, lib/utils/outputs.py), into a user's non-empty
    folder or over a video (unless --force)."""
    inputs = {"--input": args.input, "--checkpoint": args.checkpoint, "--config": args.config}
    check_not_on_inputs({"--out": args.out, "--video-out": args.video_out}, inputs | {"--calib": args.calib})
    if args.out.is_dir() and any(args.out.iterdir()) and not args.force:
        raise UserError(f"{args.out}: the output folder is not empty (--force to write into it)")
    if args.video_out is not None and args.video_out.exists() and not args.force:
        raise UserError(f"{args.video_out}: exists (--force to overwrite)")


def select_device(name: str) -> torch.device:
    """``--device``: auto (CUDA when available), or a torch device that exists here."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device: unknown device {name!r} (auto, cpu, cuda, cuda:1, ...)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: no CUDA GPU is available here; use --device cpu (or auto)")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise UserError(f"--device {name}: only {torch.cuda.device_count()} CUDA GPU(s) here")
    return device


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)  # --help and usage errors come before the heavy imports
    from tqdm import tqdm

    from lib.engine.tester import TesterSettings
    from lib.eval.kitti_format import result_data_dir, write_results
    from lib.inference import decode_outputs, make_batch, parse_intrinsics
    from lib.inference_io import Camera, VideoWriter, count_frames, iter_frames, video_fps
    from lib.visualize import MAX_DRAW_DEPTH, count_undrawable, render_detections

    check_outputs(args)
    device = select_device(args.device)
    intrinsics = parse_intrinsics(args.intrinsics) if args.intrinsics else None
    camera = Camera.from_options(args.calib, intrinsics)
    cfg, detector = load_model(args)
    tester = TesterSettings.from_config(cfg)
    backend = build_backend(args, cfg, detector, device, topk=tester.topk)
    threshold = tester.threshold if args.score_threshold is None else args.score_threshold
    resolution, inverse_affine = tuple(cfg.dataset.resolution), cfg.dataset.inverse_affine
    render = not args.no_render
    video = VideoWriter(args.video_out, fps=video_fps(args.input, DEFAULT_FPS)) if args.video_out else None
    total, boxes, undrawn = 0, 0, 0
    bar = tqdm(total=count_frames(args.input), unit="frame", desc="inference", disable=args.no_progress)
    with bar, video or nullcontext():
        for frames in batched(iter_frames(args.input, camera), args.batch_size):
            batch = make_batch(frames, resolution=resolution, inverse_affine=inverse_affine)
            detections = above_score(
                decode_outputs(
                    backend(batch.arrays),
                    batch,
                    model_type=cfg.model.type,
                    threshold=threshold,
                    backprojection=tester.backprojection,
                ),
                threshold,
            )
            named = {frame.name: objects for frame, objects in zip(frames, detections, strict=True)}
            write_results(args.out, named, score_decimals=tester.score_decimals, keep_old=True)
            for frame, objects in zip(frames, detections, strict=True):
                if render:
                    panel = render_detections(
                        frame.image, objects, frame.P2, width=args.width, title=frame.name
                    )
                    _save_render(panel, frame.name, args.out, video)
                    undrawn += count_undrawable(objects, frame.P2, frame.image.shape[1::-1])
                total, boxes = total + 1, boxes + len(objects)
            bar.update(len(frames))
    where = f"{result_data_dir(args.out)}" + (
        f", {args.video_out}" if video else f", {args.out / 'vis'}" if render else ""
    )
    print(f"{total} frames, {boxes} objects with score >= {threshold:g}: {where}")
    if undrawn:
        where = f"behind the camera, beyond {MAX_DRAW_DEPTH:g} m or off the image"
        print(f"{undrawn} of them not drawn ({where})")
    return 0


def above_score(detections: list[list[Object3d]], threshold: float) -> list[list[Object3d]]:
    """The objects of each frame whose written score (peak × depth confidence) is >= ``threshold``.

    Decoding keeps a peak by the model type's rule (lib/decode.py ``THRESHOLD_ON``: a DID-M3D
    network by its heatmap peak alone); the depth confidence is at most 1, so the score never
    exceeds the peak and this filter leaves exactly the objects whose score reaches ``threshold``.
    """
    return [[o for o in objects if o.score is not None and o.score >= threshold] for objects in detections]


def _save_render(panel: np.ndarray, name: str, out: Path, video: VideoWriter | None) -> None:
    import cv2
    import numpy as np

    if video is not None:
        video.write(panel)
        return
    path = out / "vis" / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), np.ascontiguousarray(panel[..., ::-1])):
        raise UserError(f"{path}: could not write the image")


if __name__ == "__main__":
    sys.exit(run_cli(main))
