"""GPU measurements of benchmarks/gpu_check.sh: evaluator CUDA vs CPU, and training throughput.

Two sections, each one JSON object in the output file:

* ``eval``: the 3769-frame synthetic evaluation set of benchmarks/bench_eval.py evaluated with
  the BEV intersections on the CPU and on CUDA (lib/eval/iou_cuda.py). Both reports must be
  identical (every AP and every precision value); both wall times are given (second call, after
  compilation).
* ``train``: timed training steps (after warm-up) of the student and of MonoMMKD
  (configs/student.yaml, configs/monommkd.yaml with a random teacher) for every combination of
  AMP mode (none / bf16 / fp16) and variant (eager / channels_last / torch.compile): images/s of
  the step and of loader + step, and the peak GPU memory. A variant that fails is recorded with
  its error, not fatal.

Without CUDA each CUDA part is skipped with a message, and ``--quick`` shrinks the sizes, so the
script can be dry-run on a CPU machine:

    python benchmarks/bench_gpu.py --json out.json [--quick] [--sections eval train]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from bench_eval import generate_dataset
from bench_train import EXPECTED_TASK, TASKS, common_overrides, make_data, teacher_checkpoint, time_setting

AMP_MODES = ("none", "bf16", "fp16")
VARIANTS = {"eager": {}, "channels_last": {"channels_last": True}, "compile": {"compile_model": True}}


def _timed_evaluate(gt, det, device: str) -> tuple[dict, float]:
    """The report of ``evaluate`` on ``device`` and the wall time of its second (compiled) call."""
    from lib.eval.kitti_eval import evaluate

    evaluate(gt, det, device=device)
    start = time.perf_counter()
    report = evaluate(gt, det, device=device)
    return report, time.perf_counter() - start


def bench_eval(frames: int) -> dict:
    """Evaluator: CPU vs CUDA BEV intersections on ``frames`` synthetic frames."""
    from lib.eval.iou import cuda_is_available
    from lib.eval.kitti_format import load_labels, load_results

    with tempfile.TemporaryDirectory(prefix="bench_gpu_eval_") as tmp:
        label_dir, result_dir, split = generate_dataset(Path(tmp) / "data", frames, seed=0)
        ids = [int(s) for s in split.read_text().split()]
        gt, det = load_labels(label_dir, ids), load_results(result_dir, ids)
    cpu_report, cpu_s = _timed_evaluate(gt, det, "cpu")
    out = {"frames": frames, "gt_objects": len(gt.table), "detections": len(det.table), "cpu_s": cpu_s}
    if not cuda_is_available():
        print("eval: no CUDA GPU (numba.cuda); the CUDA evaluator path is skipped", flush=True)
        return {**out, "cuda": "skipped: no CUDA GPU"}
    cuda_report, cuda_s = _timed_evaluate(gt, det, "cuda")
    identical = json.dumps(cpu_report, sort_keys=True) == json.dumps(cuda_report, sort_keys=True)
    print(f"eval: CPU {cpu_s:.2f} s, CUDA {cuda_s:.2f} s, identical reports: {identical}", flush=True)
    return {**out, "cuda_s": cuda_s, "identical": identical}


def _train_rows(root: Path, args: argparse.Namespace, device: torch.device) -> list[dict]:
    common = common_overrides(root, batch=args.batch, workers=args.workers, setting=args.setting)
    teacher = teacher_checkpoint(root.parent, common)
    amp_modes = AMP_MODES if device.type == "cuda" else ("none",)
    rows = []
    for task_name, config in TASKS.items():
        overrides = list(common)
        if task_name == "distill":  # a named teacher alone turns distillation on
            overrides += [f"distill.teacher_checkpoint={teacher}", "distill.student_checkpoint=null"]
        for amp in amp_modes:
            for variant in args.variants:
                row = {"task": task_name, "amp": amp, "variant": variant, "device": device.type}
                try:
                    r = time_setting(
                        config, overrides, device=device, amp=amp, steps=args.steps, warmup=args.warmup,
                        **VARIANTS[variant],
                    )  # fmt: skip
                    if r["built"] != EXPECTED_TASK[task_name]:
                        raise RuntimeError(f"{config} built a {r['built']}")
                    row.update(r)
                except Exception as err:  # a variant that fails is a result, not the end of the run
                    row["error"] = f"{type(err).__name__}: {err}"[:500]
                print(json.dumps(row), flush=True)
                rows.append(row)
    return rows


def bench_train(args: argparse.Namespace) -> dict:
    """Training steps of the student and MonoMMKD on the GPU (or, without one, a CPU dry run)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu":
        print("train: no CUDA GPU; timing the CPU (fp32 only) as a dry run", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench_gpu_train_") as tmp:
        root = Path(tmp) / "kitti"
        make_data(root, args.frames)
        rows = _train_rows(root, args, device)
    info = {"setting": args.setting, "batch": args.batch, "steps": args.steps, "warmup": args.warmup}
    return {**info, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", required=True, help="write the results here")
    parser.add_argument("--sections", nargs="+", default=["eval", "train"], choices=["eval", "train"])
    parser.add_argument("--quick", action="store_true", help="CPU dry run: tiny sizes")
    parser.add_argument(
        "--variants", nargs="+", default=None, choices=list(VARIANTS),
        help="default: all; with --quick eager and channels_last (compiling on a CPU takes minutes)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    big = not args.quick
    args.variants = args.variants or (list(VARIANTS) if big else ["eager", "channels_last"])
    args.setting = "default" if big else "small"  # 1280x384 DLA-34 | 384x128 ResNet-18
    args.batch, args.steps, args.warmup = (16, 30, 5) if big else (2, 2, 1)
    args.frames, args.workers = (48, 8) if big else (4, 0)
    results = {"torch": torch.__version__, "cuda": torch.version.cuda}
    if torch.cuda.is_available():
        results["device"] = torch.cuda.get_device_name(0)
    if "eval" in args.sections:
        results["eval"] = bench_eval(3769 if big else 200)
    if "train" in args.sections:
        results["train"] = bench_train(args)
    Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
