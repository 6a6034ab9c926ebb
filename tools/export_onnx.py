"""Export a trained detector's inference graph to ONNX (for ONNX Runtime, TensorRT, ...).

    python tools/export_onnx.py --checkpoint outputs/student/checkpoints/best.pth --out student.onnx

The graph (lib/inference.py ``InferenceGraph``): backbone, neck, 2D heads, top-K peaks, RoI heads,
depth and its confidence; inputs ``images`` (B, 3, H, W) ImageNet-normalised, ``calib`` (B, 3, 4),
``coord_range`` (B, 2, 2); the batch axis is dynamic, H and W are the config's
``dataset.resolution`` (``--config`` is needed only for a checkpoint that stores no config). The
box decoding stays in Python, shared with the PyTorch path:
``python tools/infer.py --backend onnx --checkpoint student.onnx ...`` runs the file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lib.errors import UserError, run_cli
from lib.utils import cli_types
from lib.utils.outputs import check_outputs


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, help="the model's config (default: the checkpoint's)")
    parser.add_argument("--checkpoint", type=Path, required=True, help="the trained weights (.pth)")
    parser.add_argument("--out", type=Path, required=True, help="the .onnx file to write")
    parser.add_argument(
        "--topk",
        type=cli_types.positive_int,
        help="peaks per image, >= 1 (default: tester.topk)",
    )
    parser.add_argument("--force", action="store_true", help="overwrite --out")
    parser.add_argument("overrides", nargs="*", help="config overrides, key.sub=value")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.out.is_dir():
        raise UserError(f"{args.out}: is a folder; --out names the .onnx file to write")
    check_outputs({"--out": args.out}, {"--checkpoint": args.checkpoint, "--config": args.config})
    if args.out.exists() and not args.force:
        raise UserError(f"{args.out}: exists (--force to overwrite)")
    from lib.inference import export_onnx  # torch (seconds): after --help and the argument checks
    from lib.models.loading import load_detector

    loaded = load_detector(args.config, args.checkpoint, overrides=args.overrides, role="onnx")
    cfg, detector = loaded.config, loaded.detector
    resolution = tuple(cfg.dataset.resolution)
    topk = args.topk or cfg.tester.topk
    export_onnx(detector, args.out, resolution=resolution, topk=topk)
    size = args.out.stat().st_size / 2**20
    print(
        f"wrote {args.out} ({size:.1f} MiB; input {resolution[0]}x{resolution[1]}, top-{topk}, dynamic batch)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
