"""Inference speed: ms/image and images/s of the inference graph per backend, with the ratio to eager.

The graph is lib/inference.py ``InferenceGraph`` (backbone to depth confidence, top-K peaks and
their RoI heads), i.e. what ``tools/infer.py`` runs per batch; the numpy box decoding, shared by
every backend, is timed on its own line. Random weights of the config's network, random
ImageNet-normalised inputs, KITTI's P2. The speed does not depend on the weights except in
RoIAlign, whose adaptive sampling grows with the 2D boxes: random weights predict boxes of about
zero size, so the 50 RoIs cost a trained model somewhat more than measured here.

CPU rows: PyTorch eager fp32, channels_last, ``torch.compile`` (reported as failed when it does
not compile here) and ONNX Runtime (the file of lib/inference.py ``export_onnx``). GPU rows, when
CUDA is available: eager fp32, fp16 and bf16 autocast. Each row: ``--warmup`` untimed batches,
then the median of ``--reps`` timed ones, in wall time and in CPU time of the process (all
threads; the steadier figure on a shared machine), each with its ratio to the eager row of the
same device and batch size.
Example::

    python benchmarks/bench_infer.py                                    # 1280x384, batch 1 and 8
    python benchmarks/bench_infer.py --config configs/demo/student.yaml --resolution 384x128 --json out.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from lib.config import load_config
from lib.inference import Batch, NetworkInput, OnnxBackend, TorchBackend, decode_outputs, export_onnx
from lib.models.detector import Detector
from lib.models.loading import load_detector

KITTI_P2 = np.array(
    [[721.5377, 0.0, 609.5593, 44.85728], [0.0, 721.5377, 172.854, 0.2163791], [0.0, 0.0, 1.0, 0.002745884]]
)
KITTI_SIZE = (1242, 375)  # the frame the inputs stand for: crop window and decoding ratio


def random_rgb_detector(cfg) -> Detector:
    """The config's RGB network with random weights (timing does not need trained ones)."""
    return load_detector(cfg, role="student", pretrained=False).detector


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=Path("configs/student.yaml"), help="the network")
    parser.add_argument("--resolution", default="1280x384", help="network input WxH")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--reps", type=int, default=5, help="timed batches per row (median)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed batches per row")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (torch and ONNX Runtime)")
    parser.add_argument("--skip", nargs="*", default=[], help="rows to skip, e.g. compile onnx")
    parser.add_argument("--json", type=Path, help="write the rows as JSON here")
    return parser.parse_args(argv)


def make_batch(batch_size: int, resolution: tuple[int, int]) -> Batch:
    """Random normalised images standing for KITTI frames (P2, the input's window)."""
    width, height = resolution
    rng = np.random.default_rng(0)
    inputs = [
        NetworkInput(
            rgb=rng.standard_normal((3, height, width), dtype=np.float32),
            calib=KITTI_P2,
            coord_range=np.array([[0.0, 0.0], KITTI_SIZE]),
            pad=np.zeros(2, np.int64),
        )
        for _ in range(batch_size)
    ]
    arrays = {
        "images": np.stack([i.rgb for i in inputs]),
        "calib": np.stack([i.calib for i in inputs]).astype(np.float32),
        "coord_range": np.stack([i.coord_range for i in inputs]).astype(np.float32),
    }
    return Batch(inputs=inputs, arrays=arrays)


def time_backend(
    run: Callable[[], object], *, reps: int, warmup: int, sync: Callable[[], None]
) -> tuple[float, float]:
    """Median wall seconds and median CPU seconds (this process, every thread) of one call after
    ``warmup`` untimed calls. On a shared machine the CPU time is the steadier figure."""
    for _ in range(warmup):
        run()
    sync()
    wall, cpu = [], []
    for _ in range(reps):
        start, start_cpu = time.perf_counter(), time.process_time()
        run()
        sync()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


def backends(args: argparse.Namespace, cfg, onnx_path: Path) -> dict[str, Callable[[], object]]:
    """Name → factory of each row's backend on this machine."""
    topk, cpu = cfg.tester.topk, torch.device("cpu")

    def net():
        torch.manual_seed(0)
        return random_rgb_detector(cfg)

    rows = {
        "cpu eager fp32": lambda: TorchBackend(net(), topk=topk, device=cpu),
        "cpu channels_last": lambda: TorchBackend(net(), topk=topk, device=cpu, channels_last=True),
        "cpu torch.compile": lambda: TorchBackend(net(), topk=topk, device=cpu, compile=True),
        "cpu onnxruntime": lambda: OnnxBackend(onnx_path, threads=args.threads),
    }
    if torch.cuda.is_available():
        gpu = torch.device("cuda")
        rows["gpu eager fp32"] = lambda: TorchBackend(net(), topk=topk, device=gpu)
        rows["gpu fp16 autocast"] = lambda: TorchBackend(
            net(), topk=topk, device=gpu, autocast_dtype=torch.float16
        )
        rows["gpu bf16 autocast"] = lambda: TorchBackend(
            net(), topk=topk, device=gpu, autocast_dtype=torch.bfloat16
        )
    skip = {s.lower() for s in args.skip}
    return {name: make for name, make in rows.items() if not any(s in name for s in skip)}


def run_rows(args: argparse.Namespace, cfg, resolution: tuple[int, int], onnx_path: Path) -> list[dict]:
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    rows, eager = [], {}
    for name, make in backends(args, cfg, onnx_path).items():
        try:
            backend = make()
        except Exception as err:  # a backend that cannot be built here is reported, not fatal
            rows.append({"backend": name, "error": f"{type(err).__name__}: {str(err).splitlines()[0][:120]}"})
            continue
        for batch_size in args.batch_sizes:
            batch = make_batch(batch_size, resolution)
            try:
                call = lambda backend=backend, arrays=batch.arrays: backend(arrays)  # noqa: E731
                seconds, cpu_seconds = time_backend(call, reps=args.reps, warmup=args.warmup, sync=sync)
            except Exception as err:  # torch.compile fails at the first call when no compiler works
                rows.append(
                    {
                        "backend": name,
                        "batch": batch_size,
                        "error": f"{type(err).__name__}: {str(err).splitlines()[0][:120]}",
                    }
                )
                break
            ms, cpu_ms = 1000 * seconds / batch_size, 1000 * cpu_seconds / batch_size
            key = ("gpu" if name.startswith("gpu") else "cpu", batch_size)
            if "eager" in name:
                eager[key] = (ms, cpu_ms)
            row = {"backend": name, "batch": batch_size, "ms_per_image": ms, "images_per_s": 1000 / ms}
            eager_ms, eager_cpu_ms = eager.get(key, (ms, cpu_ms))
            row.update(
                cpu_ms_per_image=cpu_ms,
                speedup_vs_eager=eager_ms / ms,
                cpu_speedup_vs_eager=eager_cpu_ms / cpu_ms,
            )
            rows.append(row)
            print(f"{name:22s} batch {batch_size:2d}: {ms:9.1f} ms/image {1000 / ms:8.2f} images/s "
                  f"(CPU {cpu_ms:.0f} ms/image)", flush=True)  # fmt: skip
    return rows


def time_decode(cfg, resolution: tuple[int, int]) -> float:
    """ms/image of the shared numpy decoding of a batch of 8 (eager outputs, threshold 0)."""
    batch = make_batch(8, resolution)
    backend = TorchBackend(
        random_rgb_detector(cfg),
        topk=cfg.tester.topk,
        device=torch.device("cpu"),
    )
    outputs = backend(batch.arrays)
    seconds, _ = time_backend(
        lambda: decode_outputs(
            outputs, batch, model_type=cfg.model.type, threshold=0.0, backprojection=cfg.tester.backprojection
        ),
        reps=5,
        warmup=1,
        sync=lambda: None,
    )
    return 1000 * seconds / 8


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    resolution = tuple(int(v) for v in args.resolution.lower().split("x"))
    machine = f"{platform.processor() or platform.machine()}, torch {torch.__version__}"
    network = f"{cfg.model.type} {cfg.model.backbone} at {resolution[0]}x{resolution[1]}"
    print(f"{machine}, {torch.get_num_threads()} threads, {network}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = Path(tmp) / "model.onnx"
        torch.manual_seed(0)
        export_onnx(
            random_rgb_detector(cfg),
            onnx_path,
            resolution=resolution,
            topk=cfg.tester.topk,
        )
        rows = run_rows(args, cfg, resolution, onnx_path)
    decode_ms = time_decode(cfg, resolution)
    print(f"decode (numpy, shared by every backend): {decode_ms:.1f} ms/image")
    print(
        "\n| backend | batch | ms/image | images/s | CPU ms/image | vs eager (wall) | vs eager (CPU) |\n"
        "|---|---|---|---|---|---|---|"
    )
    for row in rows:
        if "error" in row:
            print(f"| {row['backend']} | {row.get('batch', '-')} | failed: {row['error']} | | | | |")
        else:
            cells = [row["backend"], row["batch"], f"{row['ms_per_image']:.1f}", f"{row['images_per_s']:.2f}"]
            cells.append(f"{row['cpu_ms_per_image']:.0f}")
            cells += [f"{row['speedup_vs_eager']:.2f}x", f"{row['cpu_speedup_vs_eager']:.2f}x"]
            print("| " + " | ".join(map(str, cells)) + " |")
    if args.json:
        args.json.write_text(
            json.dumps({"rows": rows, "decode_ms_per_image": decode_ms, "resolution": resolution}, indent=1)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
