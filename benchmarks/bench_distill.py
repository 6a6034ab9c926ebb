"""Cost of distillation: one training step of the Distiller vs one of the student alone.

A step is forward + backward + Adam step on the same synthetic batch in the dataset's layout. The
student-only step is the student's criterion (what configs/student.yaml trains); the
distillation step adds the teacher's forward (no_grad, eval mode) and the configured KD terms.
Target: ratio <= 1.6x (the teacher only runs forward).

CPU (always): ResNet-18 at 320x96 and DLA-34 at 640x192, batch 2. GPU (only when CUDA is
available): DLA-34 at 640x192 batch 2 and 1280x384 batch 16, fp32 and bf16 autocast.
Student and distillation steps alternate, so load changes on a shared machine hit both; the
median of ``--reps`` steps is reported after ``--warmup`` steps (CPU: process CPU seconds,
summed over threads; GPU: wall seconds). Example::

    python benchmarks/bench_distill.py                          # CPU table (a few minutes)
    python benchmarks/bench_distill.py --threads 1              # steadier on a busy machine
    python benchmarks/bench_distill.py --configs monommkd --backbones resnet18 --reps 3 --json out.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from lib.config import Config, load_config
from lib.datasets.masks import foreground_mask
from lib.depth_bins import RpdSettings, rpd_valid
from lib.distiller import Distiller, DistillSettings
from lib.losses.criterion import Criterion, LossSettings
from lib.models import ModelSettings
from lib.models.loading import load_detector

REPO = Path(__file__).resolve().parents[1]
CONFIGS = {"monommkd": "configs/monommkd.yaml", "monoskd": "configs/monoskd.yaml"}
MAX_OBJS, OBJECTS_PER_IMAGE = 50, 6
KITTI_P2 = [
    [721.5377, 0.0, 609.5593, 44.85728],
    [0.0, 721.5377, 172.854, 0.2163791],
    [0.0, 0.0, 1.0, 0.002745884],
]
# (backbone, width, height, batch, dtypes) per device
CPU_CASES = [("resnet18", 320, 96, 2, ("fp32",)), ("dla34", 640, 192, 2, ("fp32",))]
GPU_CASES = [("dla34", 640, 192, 2, ("fp32", "bf16")), ("dla34", 1280, 384, 16, ("fp32", "bf16"))]


def make_batch(batch_size: int, width: int, height: int, *, num_bins: int, seed: int = 0) -> dict:
    """Random images and GT targets in the dataset's batch layout, OBJECTS_PER_IMAGE objects per image."""
    rng = np.random.default_rng(seed)
    hf, wf = height // 4, width // 4
    n, m = OBJECTS_PER_IMAGE, MAX_OBJS
    mask = np.zeros((batch_size, m), bool)
    mask[:, :n] = True
    size = np.stack([rng.uniform(2, wf / 6, (batch_size, m)), rng.uniform(2, hf / 3, (batch_size, m))], -1)
    corner = np.stack(
        [rng.uniform(0, wf * 0.8, (batch_size, m)), rng.uniform(0, hf * 0.7, (batch_size, m))], -1
    )
    box2d = np.concatenate([corner, corner + size], -1) * mask[..., None]
    centre = (box2d[..., :2] + box2d[..., 2:]) / 2
    cell = np.floor(centre).astype(np.int64)
    depth = rng.uniform(5, 60, (batch_size, m, 1))
    vis = depth[..., None] + rng.normal(0, 0.5, (batch_size, m, 7, 7))
    base = RpdSettings.from_config(load_config(REPO / "configs/base.yaml"))
    bins = dataclasses.replace(base.bins, num_bins=num_bins)
    lidar = np.where(rng.random((batch_size, hf, wf)) < 0.5, rng.uniform(3, 70, (batch_size, hf, wf)), 0.0)
    heatmap = np.zeros((batch_size, 3, hf, wf), np.float32)
    heatmap[:, 1][np.arange(batch_size)[:, None], cell[:, :n, 1], cell[:, :n, 0]] = 1.0

    def f32(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.asarray(x, dtype=np.float32))

    targets = {
        "heatmap": torch.from_numpy(heatmap),
        "indices": torch.from_numpy((cell[..., 1] * wf + cell[..., 0]) * mask),
        "cls_ids": torch.from_numpy(np.ones((batch_size, m), np.int64) * mask),
        "mask_2d": torch.from_numpy(mask),
        "size_2d": f32(size * mask[..., None]),
        "offset_2d": f32((centre - cell) * mask[..., None]),
        "offset_3d": f32(rng.uniform(-0.5, 0.5, (batch_size, m, 2)) * mask[..., None]),
        "depth": f32(depth * mask[..., None]),
        "size_3d": f32(rng.normal(0, 0.1, (batch_size, m, 3))),
        "src_size_3d": f32(np.full((batch_size, m, 3), [1.5, 1.6, 3.9])),
        "heading_bin": torch.from_numpy(rng.integers(0, 12, (batch_size, m, 1))),
        "heading_res": f32(rng.uniform(-0.2, 0.2, (batch_size, m, 1))),
        "vis_depth": f32(vis),
        "att_depth": f32(depth[..., None] - vis),
        "depth_mask": torch.from_numpy(rng.random((batch_size, m, 7, 7)) < 0.7),
        "box2d": f32(box2d),
        "rpd_depth": f32(lidar),
        "rpd_mask": torch.from_numpy(rpd_valid(lidar, bins)),
    }
    targets["fg_mask"] = foreground_mask(targets["box2d"], height=hf, width=wf, valid=targets["mask_2d"])
    return {
        "rgb": torch.randn(batch_size, 3, height, width),
        "depth": torch.rand(batch_size, 3, height, width),
        "calib": torch.tensor(KITTI_P2).repeat(batch_size, 1, 1),
        "coord_range": torch.tensor([[0.0, 0.0], [1242.0, 375.0]]).repeat(batch_size, 1, 1),
        "targets": targets,
    }


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: to_device(v, device) if isinstance(v, dict) else v.to(device) for k, v in batch.items()}


def build_pair(cfg: Config, device: torch.device) -> tuple[Callable[[dict], dict], Distiller]:
    """(student-only loss function, Distiller) with random weights, sharing one student."""
    torch.manual_seed(0)
    model, rpd = ModelSettings.from_config(cfg), RpdSettings.from_config(cfg)
    student = load_detector(cfg, role="student").detector
    teacher = load_detector(cfg, role="teacher").detector
    criterion = Criterion(model_type=model.type, loss=LossSettings.from_config(cfg), rpd=rpd)
    distiller = Distiller(student, teacher, criterion=criterion, settings=DistillSettings.from_config(cfg))
    distiller.to(device).train()

    def student_losses(batch: dict) -> dict:
        kw = {"calib": batch["calib"], "coord_range": batch["coord_range"], "targets": batch["targets"]}
        return criterion(student(batch["rgb"], **kw), batch["targets"])

    return student_losses, distiller


def time_steps(
    steps: dict[str, tuple[Callable[[dict], dict], list[torch.nn.Parameter]]],
    batch: dict,
    *,
    device: torch.device,
    dtype: str,
    warmup: int,
    reps: int,
) -> dict[str, float]:
    """Median seconds per training step of each entry, steps interleaved.

    CPU: process CPU time (all threads), which other jobs on a shared machine disturb far less
    than wall time; CUDA: wall time between synchronisations.
    """
    clock = time.perf_counter if device.type == "cuda" else time.process_time
    optimizers = {name: torch.optim.Adam(params, lr=1e-4) for name, (_, params) in steps.items()}
    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16) if dtype == "bf16" else nullcontext()
    )  # the trainer's AMP: one autocast around forward + loss
    times: dict[str, list[float]] = {name: [] for name in steps}
    for i in range(warmup + reps):
        for name, (loss_fn, _) in steps.items():
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = clock()
            with autocast:
                total = sum(loss_fn(batch).values())
            optimizers[name].zero_grad(set_to_none=True)
            total.backward()
            optimizers[name].step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i >= warmup:
                times[name].append(clock() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def run_case(config: str, backbone: str, width: int, height: int, batch_size: int, **kw) -> dict:
    device = kw["device"]
    cfg = load_config(REPO / CONFIGS[config], [f"model.backbone={backbone}", "model.pretrained=false"])
    student_losses, distiller = build_pair(cfg, device)
    batch = to_device(make_batch(batch_size, width, height, num_bins=cfg.rpd.num_bins), device)
    steps = {
        "student": (student_losses, list(distiller.student.parameters())),
        "distill": (distiller, list(distiller.trainable_parameters())),
    }
    result = time_steps(steps, batch, **kw)
    return {
        "config": config,
        "backbone": backbone,
        "input": f"{width}x{height}",
        "batch": batch_size,
        "device": device.type,
        "dtype": kw["dtype"],
        "student_s": result["student"],
        "distill_s": result["distill"],
        "ratio": result["distill"] / result["student"],
    }


def format_row(row: dict) -> str:
    case = f"{row['config']:<9} {row['device']:<6} {row['dtype']:<5} {row['backbone']:<9} {row['input']:<9}"
    return (
        f"{case} {row['batch']:>5} {row['student_s']:>10.3f} {row['distill_s']:>10.3f} {row['ratio']:>5.2f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument(
        "--backbones", nargs="+", default=["resnet18", "dla34"], choices=["resnet18", "dla34"]
    )
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--cpu-only", action="store_true", help="skip the GPU section even with CUDA")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0 = torch's default)")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    plans = [(torch.device("cpu"), CPU_CASES)]
    if torch.cuda.is_available() and not args.cpu_only:
        plans.append((torch.device("cuda"), GPU_CASES))
    machine = platform.processor() or platform.machine()
    print(f"torch {torch.__version__}, {machine}, {torch.get_num_threads()} threads")
    header = f"{'config':<9} {'device':<6} {'dtype':<5} {'backbone':<9} {'input':<9} {'batch':>5} "
    print(header + f"{'student s':>10} {'distill s':>10} {'ratio':>6}")
    rows = []
    for device, cases in plans:
        if device.type == "cuda":
            print(f"GPU: {torch.cuda.get_device_name(device)}")
        for config in args.configs:
            for backbone, width, height, batch_size, dtypes in cases:
                if backbone not in args.backbones:
                    continue
                for dtype in dtypes:
                    kw = {"device": device, "dtype": dtype, "warmup": args.warmup, "reps": args.reps}
                    row = run_case(config, backbone, width, height, batch_size, **kw)
                    rows.append(row)
                    print(format_row(row))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
