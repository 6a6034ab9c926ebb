"""Speed of the detectors: forward + backward time per image (best of a few steps), parameter counts.

CPU (always): train-mode forward + backward at 1280x384 and 640x192, both model types and both
backbones, batch 1, a few repetitions after a warm-up. GPU (only when CUDA is available):
images/s at batch 16, fp32 and bf16 autocast, and peak memory.

The backward is of a stand-in loss (the mean of every output), so it runs through the same graph
as training without depending on the loss code. Example::

    python benchmarks/bench_models.py                       # the full CPU table (a few minutes)
    python benchmarks/bench_models.py --types did --backbones resnet18 --reps 3 --json out.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from lib.config import load_config
from lib.depth_bins import RpdSettings
from lib.models import Detector, ModelSettings, build_detector

BASE_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "base.yaml"
RESOLUTIONS = {"1280x384": (384, 1280), "640x192": (192, 640), "320x96": (96, 320)}
DEFAULT_RESOLUTIONS = ["1280x384", "640x192"]
OBJECTS_PER_IMAGE = 6
KITTI_P2 = [
    [721.5377, 0.0, 609.5593, 44.85728],
    [0.0, 721.5377, 172.854, 0.2163791],
    [0.0, 0.0, 1.0, 0.002745884],
]


def base_detector(model_type: str, backbone: str) -> Detector:
    """configs/base.yaml's network with this type and backbone, random weights (no ImageNet file)."""
    cfg = load_config(BASE_CONFIG)
    base = ModelSettings.from_config(cfg)
    model = dataclasses.replace(base, type=model_type, backbone=backbone, pretrained=False)
    return build_detector(model, RpdSettings.from_config(cfg))


def make_inputs(batch_size: int, height: int, width: int, device: torch.device) -> dict:
    """Random images and GT-style targets with OBJECTS_PER_IMAGE objects per image (dataset batch layout)."""
    cells = (height // 4) * (width // 4)
    mask = torch.zeros(batch_size, 50, dtype=torch.bool)
    mask[:, :OBJECTS_PER_IMAGE] = True
    return {
        "images": torch.randn(batch_size, 3, height, width, device=device),
        "calib": torch.tensor(KITTI_P2, device=device).repeat(batch_size, 1, 1),
        "coord_range": torch.tensor([[0.0, 0.0], [1242.0, 375.0]], device=device).repeat(batch_size, 1, 1),
        "targets": {
            "indices": torch.randint(0, cells, (batch_size, 50), device=device),
            "cls_ids": torch.randint(0, 3, (batch_size, 50), device=device),
            "mask_2d": mask.to(device),
        },
    }


def train_step(model: torch.nn.Module, inputs: dict, *, autocast: torch.autocast | nullcontext) -> None:
    """Forward on GT RoIs, then backward of the mean of every output."""
    with autocast:
        out = model(
            inputs["images"],
            calib=inputs["calib"],
            coord_range=inputs["coord_range"],
            targets=inputs["targets"],
        )
        tensors = [v for v in out.values() if torch.is_tensor(v) and v.is_floating_point()] + out["features"]
        loss = sum(t.float().mean() for t in tensors)
    loss.backward()
    model.zero_grad(set_to_none=True)


def time_steps(model: torch.nn.Module, inputs: dict, *, reps: int, warmup: int, autocast=None) -> float:
    """Seconds per step: the best of ``reps`` timed steps after ``warmup`` steps.

    The minimum, not the mean, because on a shared machine other processes only ever add time.
    """
    autocast = autocast or nullcontext()
    sync = torch.cuda.synchronize if inputs["images"].is_cuda else lambda: None
    for _ in range(warmup):
        train_step(model, inputs, autocast=autocast)
    times = []
    for _ in range(reps):
        sync()
        start = time.perf_counter()
        train_step(model, inputs, autocast=autocast)
        sync()
        times.append(time.perf_counter() - start)
    return min(times)


def bench_cpu(args: argparse.Namespace) -> list[dict]:
    rows = []
    for model_type in args.types:
        for backbone in args.backbones:
            model = base_detector(model_type, backbone).train()
            params = sum(p.numel() for p in model.parameters())
            for name in args.resolutions:
                h, w = RESOLUTIONS[name]
                inputs = make_inputs(args.batch_size, h, w, torch.device("cpu"))
                sec = time_steps(model, inputs, reps=args.reps, warmup=2)
                row = {
                    "type": model_type, "backbone": backbone, "resolution": name, "params": params,
                    "ms_per_image": 1000 * sec / args.batch_size,
                }  # fmt: skip
                rows.append(row)
                ms = row["ms_per_image"]
                print(f"cpu  {model_type:6s} {backbone:8s} {name:8s} {params:>11,d} params  {ms:9.0f} ms/img")
    return rows


def bench_gpu(args: argparse.Namespace) -> list[dict]:
    device = torch.device("cuda")
    rows = []
    for model_type in args.types:
        for backbone in args.backbones:
            model = base_detector(model_type, backbone).train().to(device)
            inputs = make_inputs(args.gpu_batch_size, 384, 1280, device)
            for precision in ("fp32", "bf16"):
                autocast = torch.autocast("cuda", dtype=torch.bfloat16) if precision == "bf16" else None
                torch.cuda.reset_peak_memory_stats(device)
                sec = time_steps(model, inputs, reps=args.gpu_reps, warmup=2, autocast=autocast)
                row = {
                    "type": model_type, "backbone": backbone, "precision": precision,
                    "images_per_s": args.gpu_batch_size / sec,
                    "peak_mem_gib": torch.cuda.max_memory_allocated(device) / 2**30,
                }  # fmt: skip
                rows.append(row)
                print(
                    f"gpu  {model_type:6s} {backbone:8s} {precision} batch {args.gpu_batch_size}: "
                    f"{row['images_per_s']:7.1f} img/s  peak {row['peak_mem_gib']:.1f} GiB"
                )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--types", nargs="+", default=["gupnet", "did"], choices=["gupnet", "did"])
    parser.add_argument(
        "--backbones", nargs="+", default=["dla34", "resnet18"], choices=["dla34", "resnet18"]
    )
    parser.add_argument("--resolutions", nargs="+", default=DEFAULT_RESOLUTIONS, choices=list(RESOLUTIONS))
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--gpu-batch-size", type=int, default=16)
    parser.add_argument("--gpu-reps", type=int, default=10)
    parser.add_argument("--skip-cpu", action="store_true", help="only the GPU section")
    parser.add_argument("--json", default=None, help="write the rows as JSON here")
    args = parser.parse_args()

    torch.manual_seed(0)
    cpu = platform.processor() or platform.machine()
    print(f"torch {torch.__version__}, {cpu}, {torch.get_num_threads()} threads")
    result = {"cpu": [] if args.skip_cpu else bench_cpu(args), "gpu": None}
    if torch.cuda.is_available():
        print(f"GPU: {torch.cuda.get_device_name()}")
        result["gpu"] = bench_gpu(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
