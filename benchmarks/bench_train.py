"""Training throughput (images/s) of the student and of distillation, data loader vs model step.

A handful of synthetic KITTI-format frames (lib/datasets/synthetic.py) with depth maps are
written to a temporary folder; for each setting the real pipeline is built from the configs
(``configs/student.yaml``, ``configs/monommkd.yaml`` with a random teacher checkpoint) and a
few training steps are timed after ``--warmup`` untimed ones:

* data: seconds per batch to load it (``DataLoader`` with the config's worker count);
* step: seconds per batch for forward + backward + optimizer step (the trainer's AMP mode);
* step CPU-s: process CPU time of the step (all threads), a load-independent figure on a
  shared machine;
* images/s = batch / (data + step) (serial, as with ``num_workers 0``).

Settings: "default" = 1280x384, DLA-34 (the paper's); "small" = 384x128, ResNet-18 (the demo's
family). CPU always; on a CUDA machine also GPU fp32 and bf16 AMP.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_train.py [--steps 3] [--batch 2] [--frames 8]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from lib.config import load_config
from lib.datasets.kitti import build_dataset
from lib.datasets.synthetic import write_dataset
from lib.engine.dist import move_to_device
from lib.engine.optim import OptimizerSettings, build_optimizer
from lib.engine.task import build_task
from lib.engine.trainer import resolve_amp_dtype
from lib.models.loading import load_detector

REPO = Path(__file__).resolve().parents[1]
SETTINGS = {
    "default": ["dataset.resolution=[1280,384]", "model.backbone=dla34"],
    "small": ["dataset.resolution=[384,128]", "model.backbone=resnet18"],
}
TASKS = {"student": "configs/student.yaml", "distill": "configs/monommkd.yaml"}
EXPECTED_TASK = {"student": "detector", "distill": "distiller"}


def make_data(root: Path, frames: int) -> None:
    write_dataset(root, frames=frames, seed=0, val_fraction=0.25)
    subprocess.run(
        [sys.executable, "tools/make_depth_maps.py", "--data-dir", str(root)],
        cwd=REPO,
        check=True,
        capture_output=True,
    )


def common_overrides(root: Path, *, batch: int, workers: int, setting: str) -> list[str]:
    """Config overrides shared by every timed task: the synthetic data, batch, workers, size."""
    return [
        f"dataset.root_dir={root}",
        f"dataset.batch_size={batch}",
        f"dataset.num_workers={workers}",
        "dataset.check_split_sizes=false",
        "model.pretrained=false",
        *SETTINGS[setting],
    ]


def teacher_checkpoint(folder: Path, overrides: list[str]) -> Path:
    """A randomly initialised teacher of the right architecture (timing does not need a trained one)."""
    cfg = load_config(REPO / TASKS["student"], overrides)
    path = folder / f"teacher_{abs(hash(tuple(overrides)))}.pth"
    network = load_detector(cfg, role="train", pretrained=False).detector
    torch.save({"model_state": network.state_dict()}, path)
    return path


def _endless(loader: torch.utils.data.DataLoader) -> Iterator[dict]:
    """The loader's batches, epoch after epoch (a new pass, so a new shuffle, whenever one ends)."""
    while True:
        yield from loader


def _train_step(
    task, batch: dict, optimizer, scaler, *, device: torch.device, dtype: torch.dtype | None
) -> None:
    """One optimisation step: forward under autocast (fp32 when ``dtype`` is None), backward, update.

    On CUDA it waits for the GPU, so the caller's clock covers the whole step.
    """
    with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        losses = task(batch)
    loss = sum(v.float() for v in losses.values())
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_setting(
    config: str,
    overrides: list[str],
    *,
    device: torch.device,
    amp: str,
    steps: int,
    warmup: int,
    channels_last: bool = False,
    compile_model: bool = False,
) -> dict:
    """Time ``steps`` training steps of one config after ``warmup`` untimed ones.

    ``channels_last`` stores the weights (and so the activations) NHWC; ``compile_model`` wraps
    the task in ``torch.compile`` (its compilation happens in the warm-up steps). On CUDA the
    peak allocated memory of the timed steps is reported in MiB.
    """
    cfg = load_config(REPO / config, overrides)
    dataset = build_dataset(cfg, cfg.dataset.train_split, train=True)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=cfg.dataset.batch_size, shuffle=True, num_workers=cfg.dataset.num_workers
    )
    module, built = build_task(cfg)
    module.to(device).train()
    if channels_last:
        module.to(memory_format=torch.channels_last)
    named = module.named_trainable_parameters() if hasattr(module, "named_trainable_parameters") else None
    adam = OptimizerSettings(type="adam", lr=1e-4, weight_decay=0.0, momentum=0.9)
    optimizer = build_optimizer(named or module.named_parameters(), adam)
    task = torch.compile(module) if compile_model else module
    dtype = resolve_amp_dtype(amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    data_s, step_s, cpu_s = [], [], []
    batches = _endless(loader)
    for i in range(warmup + steps):
        start = time.perf_counter()
        batch = move_to_device(next(batches), device)
        loaded, loaded_cpu = time.perf_counter(), time.process_time()
        _train_step(task, batch, optimizer, scaler, device=device, dtype=dtype)
        if i == warmup - 1 and device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        if i >= warmup:  # allocations, kernel selection, the allocator's growth
            data_s.append(loaded - start)
            step_s.append(time.perf_counter() - loaded)
            cpu_s.append(time.process_time() - loaded_cpu)
    batch_size = cfg.dataset.batch_size
    data, step = sum(data_s) / steps, sum(step_s) / steps
    return {
        "built": built,  # "detector" | "distiller": what was really timed
        "batch": batch_size,
        "data": data,
        "step": step,
        "step_cpu": sum(cpu_s) / steps,
        "images_per_s": batch_size / (data + step),
        "images_per_s_step": batch_size / step,  # the model alone (loader overlapped by workers)
        "peak_mem_mib": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=3, help="timed steps per setting")
    parser.add_argument(
        "--warmup", type=int, default=3, help="untimed steps first (with 1, the first setting ran ~15%% slow)"
    )
    parser.add_argument("--batch", type=int, default=2, help="batch size")
    parser.add_argument("--frames", type=int, default=8, help="synthetic frames written")
    parser.add_argument("--workers", type=int, default=0, help="data-loader workers")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    args = parser.parse_args(argv)

    devices = [("cpu", "none")]
    if torch.cuda.is_available():
        devices += [("cuda", "none"), ("cuda", "bf16")]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, batch {args.batch}")
    print("| device | amp | setting | task | batch | data s/batch | step s/batch | step CPU-s | images/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "kitti"
        make_data(root, args.frames)
        for setting in args.settings:
            common = common_overrides(root, batch=args.batch, workers=args.workers, setting=setting)
            teacher = teacher_checkpoint(Path(tmp), common)
            for task_name, config in TASKS.items():
                overrides = list(common)
                if task_name == "distill":  # a named teacher alone turns distillation on
                    overrides += [f"distill.teacher_checkpoint={teacher}", "distill.student_checkpoint=null"]
                for device_name, amp in devices:
                    r = time_setting(
                        config,
                        overrides,
                        device=torch.device(device_name),
                        amp=amp,
                        steps=args.steps,
                        warmup=args.warmup,
                    )
                    if r["built"] != EXPECTED_TASK[task_name]:
                        raise RuntimeError(f"{task_name}: {config} built a {r['built']}")
                    print(
                        f"| {device_name} | {amp} | {setting} | {task_name} | {r['batch']} | {r['data']:.3f} "
                        f"| {r['step']:.3f} | {r['step_cpu']:.2f} | {r['images_per_s']:.2f} |",
                        flush=True,
                    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
