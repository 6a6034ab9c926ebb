"""Ours beside the reference code, same run, same machine: training step, dataset sample, evaluator.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_vs_reference.py --gupnet PATH --monoskd PATH \\
        [--sections step sample eval] [--repeats 2] [--steps 2] [--warmup 1]

PATH is a work tree of SuperMHP/GUPNet or Senwang98/MonoSKD outside this repository. Every timing
runs in a fresh process, ours and the reference's alternating ``--repeats`` times, each with 2
torch threads and no loader workers, on the same data (``--frames`` synthetic KITTI frames with
depth maps, lib/datasets/synthetic.py):

* step: one training step, data + forward + backward + optimizer (Adam), at 1280x384 (batch
  ``--batch``) and at 384x128 (batch ``--small-batch``), DLA-34, random weights; against GUPNet
  (configs/gupnet.yaml) and MonoSKD's RGB baseline (DID-M3D, configs/did_m3d.yaml). Ours runs
  twice: with glibc's default malloc thresholds and as tools/train_val.py runs it
  (lib/utils/allocator.py); each reports its minor page faults and system time per step.
* sample: one training sample (``__getitem__`` with augmentation, 1280x384) against MonoSKD's
  dataset, which also loads the teacher's depth input (ours: ``load_depth=True``).
* eval: tools/evaluate.py against the official KITTI devkit (``evaluate_object_3d_offline_ap40``
  built with g++ -O2 from GUPNet's copy) on benchmarks/bench_eval.py's KITTI-val-size set, AP40:
  cold (ours: empty numba cache; the devkit: first run) and warm; the AP values must agree.
  Needs g++ and the Boost headers.

Prints one markdown table (median seconds, ours / reference ratio) and the load average.
``--profile`` instead prints torch.profiler's top operators of our 1280x384 GUPNet step.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PARITY = REPO / "tools" / "parity"
THREADS = 2
# (our config, reference key, reference model type) per compared trainer
TRAINERS = {
    "gupnet": ("configs/gupnet.yaml", "gupnet", "gupnet"),
    "did": ("configs/did_m3d.yaml", "monoskd", "DID"),
}
DEVKIT = Path("code") / "tools" / "kitti_eval" / "evaluate_object_3d_offline_ap40.cpp"
CONVOLUTIONS = ("conv", "mkldnn_convolution", "convolution")


def _rusage() -> tuple[int, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_minflt, usage.ru_stime


# ------------------------------------------------------------------------------ reference side
def _load_parity(name: str) -> types.ModuleType:
    """A tools/parity script by file path (its reference shims; our ``lib`` is never imported)."""
    spec = importlib.util.spec_from_file_location(name, PARITY / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _reference_dataset(spec: dict):
    """The reference's KITTI training dataset (tools/parity/targets_driver.py's config) at spec's size."""
    import numpy as np

    shims = _load_parity("net_ref_driver")
    shims._enter_reference(Path(spec["ref_dir"]))  # noqa: SLF001 (.cuda is a no-op, einops stub)
    drivers = _load_parity("targets_driver")
    kitti = drivers._enter_reference(Path(spec["ref_dir"]))  # noqa: SLF001
    kind = "gupnet" if spec["model_type"] == "gupnet" else "monoskd"
    dataset = kitti.KITTI(spec["root"], "train", drivers._config(kind, Path(spec["root"])))  # noqa: SLF001
    dataset.resolution = np.array(spec["resolution"])
    return dataset, shims


def reference_step(spec: dict) -> dict:
    """Time the reference trainer's step (its train_one_epoch body) on its own data loader."""
    import torch

    dataset, shims = _reference_dataset(spec)
    from lib.helpers.model_helper import build_model
    from lib.helpers.optimizer_helper import build_optimizer

    if spec["model_type"] == "gupnet":
        from lib.losses.loss_function import GupnetLoss as Loss

        import lib.models.gupnet as module
    else:
        import lib.models.DID as module
        from lib.losses.loss_function import DIDLoss as Loss
    shims._no_pretrained(module)  # noqa: SLF001
    torch.manual_seed(0)
    cfg = {"type": spec["model_type"], "backbone": "dla34", "neck": "DLAUp"}
    args = (cfg, dataset.cls_mean_size) + (("training",) if spec["model_type"] == "DID" else ())
    model = build_model(*args)
    optimizer = build_optimizer({"type": "adam", "lr": 0.00125, "weight_decay": 1e-5}, model)
    loader = torch.utils.data.DataLoader(dataset, batch_size=spec["batch"], shuffle=True, num_workers=0)
    model.train()

    def step(batch) -> None:
        inputs, calibs, coord_ranges, targets, _ = batch
        optimizer.zero_grad()
        outputs = model(inputs, coord_ranges, calibs, targets)
        if spec["model_type"] == "DID":
            outputs = outputs[1]  # (backbone features, outputs, fusion features)
        _, terms = Loss(0)(outputs, targets)
        # the trainers' HTL-weighted sum of the terms (weights 1 here; MonoSKD's criterion returns a float)
        sum(v for v in terms.values() if torch.is_tensor(v) and v.requires_grad).backward()
        optimizer.step()

    return _time_steps(loader, step, spec)


def reference_sample(spec: dict) -> dict:
    """Time the reference dataset's ``__getitem__`` (with augmentation)."""
    dataset, _ = _reference_dataset(spec)
    return _time_samples(dataset.__getitem__, len(dataset), spec)


# ------------------------------------------------------------------------------ shared timing
def _time_steps(loader, step, spec: dict) -> dict:
    """Seconds, minor faults and system seconds of each of spec's timed steps (after warm-up ones);
    a step = next batch + ``step(batch)``."""
    import torch

    torch.set_num_threads(THREADS)
    batches = iter(loader)
    out = {"wall": [], "minflt": [], "stime": []}
    for i in range(spec["warmup"] + spec["steps"]):
        faults, stime = _rusage()
        start = time.perf_counter()
        try:
            batch = next(batches)
        except StopIteration:
            batches = iter(loader)
            batch = next(batches)
        step(batch)
        if i >= spec["warmup"]:
            out["wall"].append(time.perf_counter() - start)
            faults2, stime2 = _rusage()
            out["minflt"].append(faults2 - faults)
            out["stime"].append(stime2 - stime)
    return out


def _time_samples(getitem, count: int, spec: dict) -> dict:
    import torch

    torch.set_num_threads(1)  # one DataLoader worker
    for i in range(3):
        getitem(i % count)
    start = time.perf_counter()
    for i in range(spec["samples"]):
        getitem(i % count)
    return {"wall": [(time.perf_counter() - start) / spec["samples"]]}


# ------------------------------------------------------------------------------ our side
def _our_config(spec: dict):
    from lib.config import load_config

    overrides = [
        f"dataset.root_dir={spec['root']}",
        f"dataset.batch_size={spec['batch']}",
        "dataset.num_workers=0",
        "dataset.check_split_sizes=false",
        f"dataset.resolution={list(spec['resolution'])}",
        "model.pretrained=false",
    ]
    return load_config(REPO / spec["config"], overrides)


def our_step(spec: dict) -> dict:
    """Time our training step (tools/train_val.py's task, optimizer and loader) on the same data."""
    import torch

    from lib.datasets.kitti import build_dataset
    from lib.engine.optim import OptimizerSettings, build_optimizer
    from lib.engine.task import build_task
    from lib.utils.allocator import keep_freed_memory

    if spec["allocator"] == "keep":
        keep_freed_memory()  # as tools/train_val.py does
    cfg = _our_config(spec)
    torch.manual_seed(0)
    dataset = build_dataset(cfg, cfg.dataset.train_split, train=True)
    loader = torch.utils.data.DataLoader(dataset, batch_size=spec["batch"], shuffle=True, num_workers=0)
    task, _ = build_task(cfg)
    task.train()
    optimizer = build_optimizer(task.named_parameters(), OptimizerSettings.from_config(cfg.optimizer))

    def step(batch) -> None:
        optimizer.zero_grad(set_to_none=True)
        sum(task(batch).values()).backward()
        optimizer.step()

    if spec.get("profile"):
        return _profile(loader, step, spec)
    return _time_steps(loader, step, spec)


def our_sample(spec: dict) -> dict:
    from lib.datasets.kitti import build_dataset

    cfg = _our_config(spec)
    dataset = build_dataset(cfg, cfg.dataset.train_split, train=True, load_depth=True)
    return _time_samples(dataset.__getitem__, len(dataset), spec)


def _profile(loader, step, spec: dict) -> dict:
    """torch.profiler over spec's timed steps: the convolutions' share of the CPU time and the top ops."""
    import torch

    _time_steps(loader, step, {**spec, "steps": 0})
    batches = iter(loader)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(spec["steps"]):
            step(next(batches))
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    conv = sum(e.self_cpu_time_total for e in events if any(c in e.key for c in CONVOLUTIONS))
    top = sorted(events, key=lambda e: -e.self_cpu_time_total)[:15]
    return {
        "conv_share": conv / total,
        "top": [(e.key, e.self_cpu_time_total / total) for e in top],
    }


WORKERS = {"reference_step": reference_step, "reference_sample": reference_sample}
WORKERS |= {"our_step": our_step, "our_sample": our_sample}


def run_worker(name: str, spec: dict) -> dict:
    """Run ``WORKERS[name](spec)`` in a fresh process (the reference's: inside its checkout)."""
    ref = name.startswith("reference")
    env = dict(
        os.environ, OMP_NUM_THREADS=str(THREADS), OMP_WAIT_POLICY="PASSIVE", MKL_NUM_THREADS=str(THREADS)
    )
    env["PYTHONPATH"] = spec["ref_dir"] if ref else str(REPO)
    cwd = spec["ref_dir"] if ref else REPO
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", name, json.dumps(spec)]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{name} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------ data and evaluator
def make_data(root: Path, frames: int) -> Path:
    """Synthetic frames with depth maps at ``root`` (bench_train.make_data), and ``root/ref/KITTI``
    pointing at them (the references' layout); returns the references' root."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import bench_train

    bench_train.make_data(root / "kitti", frames)
    split = root / "kitti" / "ImageSets"
    if not (split / "train.txt").exists():
        raise RuntimeError(f"no train split written in {split}")
    (root / "ref").mkdir()
    (root / "ref" / "KITTI").symlink_to(root / "kitti")
    return root / "ref"


def build_devkit(gupnet: Path, work: Path) -> Path:
    """The devkit of GUPNet's copy, compiled with g++ -O2 (the same build as the evaluator's fixtures)."""
    source = gupnet / DEVKIT
    binary = work / "evaluate_object_3d_offline_ap40"
    cmd = ["g++", "-O2", "-w", "-o", str(binary), str(source)]
    subprocess.run(cmd, check=True, capture_output=True)
    return binary


def time_evaluators(gupnet: Path, work: Path, frames: int, warm_runs: int) -> dict:
    """Cold and warm seconds of tools/evaluate.py and of the devkit on one set; AP values checked."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import bench_eval

    binary = build_devkit(gupnet, work)
    label_dir, result_dir, split = bench_eval.generate_dataset(work / "data", frames, 0)
    env = dict(os.environ, NUMBA_CACHE_DIR=str(work / "numba_cache"), PYTHONPATH=str(REPO))
    ours = [bench_eval._time_cli(label_dir, result_dir, split, work / "ours.json", env)[0]]  # noqa: SLF001
    devkit = []
    for i in range(warm_runs + 1):
        out_dir = work / f"devkit_{i}"
        shutil.copytree(result_dir, out_dir)  # it writes plot/ and stats files next to data/
        start = time.perf_counter()
        proc = subprocess.run([str(binary), str(label_dir), str(out_dir)], capture_output=True, text=True)
        devkit.append(time.perf_counter() - start)
        if i < warm_runs:
            ours.append(bench_eval._time_cli(label_dir, result_dir, split, work / "ours.json", env)[0])  # noqa: SLF001
    mismatch = _compare_ap(json.loads((work / "ours.json").read_text()), proc.stdout)
    return {"ours": ours, "devkit": devkit, "max_ap_diff": mismatch}


def _compare_ap(ours: dict, devkit_stdout: str) -> float:
    """Largest |AP40 difference| between tools/evaluate.py's JSON and the devkit's printed lines."""
    metrics = {"detection": "bbox", "orientation": "aos", "detection_ground": "bev", "detection_3d": "3d"}
    worst = 0.0
    report = ours.get("ap40", ours)
    for line in devkit_stdout.splitlines():
        name, _, values = line.partition(" AP: ")
        if not values:
            continue
        cls, _, stem = name.partition("_")
        theirs = [float(v) for v in values.split()]
        got = report["ap"][cls.capitalize()][metrics[stem]]
        mine = [got[d] for d in ("easy", "moderate", "hard")]
        worst = max(worst, max(abs(a - b) for a, b in zip(mine, theirs, strict=True)))
    return worst


# ------------------------------------------------------------------------------ main
def _median(result: dict, key: str = "wall") -> float:
    return statistics.median(result[key])


def compare_steps(args: argparse.Namespace, data_root: Path, ref_root: Path, refs: dict) -> list[str]:
    rows = []
    for trainer, (config, ref_key, model_type) in TRAINERS.items():
        for resolution, batch in (((1280, 384), args.batch), ((384, 128), args.small_batch)):
            spec = {"resolution": resolution, "batch": batch, "steps": args.steps, "warmup": args.warmup}
            ours = {"default": {"wall": [], "minflt": [], "stime": []}}
            ours["keep"] = {k: [] for k in ours["default"]}
            theirs = {k: [] for k in ours["default"]}
            for _ in range(args.repeats):
                for alloc in ("default", "keep"):
                    r = run_worker(
                        "our_step", {**spec, "config": config, "root": str(data_root), "allocator": alloc}
                    )
                    for k, v in r.items():
                        ours[alloc][k] += v
                ref_spec = {
                    **spec,
                    "ref_dir": str(refs[ref_key] / "code" if ref_key == "gupnet" else refs[ref_key]),
                    "root": str(ref_root),
                    "model_type": model_type,
                }
                for k, v in run_worker("reference_step", ref_spec).items():
                    theirs[k] += v
            size = f"{resolution[0]}x{resolution[1]}"
            ref_s = _median(theirs)
            for alloc, label in (("default", "ours, glibc defaults"), ("keep", "ours (train_val)")):
                r = ours[alloc]
                rows.append(
                    f"| step vs {trainer} | {size}, batch {batch} | {label} | {_median(r):.3f} | {ref_s:.3f} "
                    f"| **{ref_s / _median(r):.2f}x** | faults/step {_median(r, 'minflt'):.0f} vs "
                    f"{_median(theirs, 'minflt'):.0f}; sys s {_median(r, 'stime'):.2f} vs "
                    f"{_median(theirs, 'stime'):.2f} |"
                )
                print(rows[-1], flush=True)
    return rows


def compare_samples(args: argparse.Namespace, data_root: Path, ref_root: Path, refs: dict) -> list[str]:
    spec = {"resolution": (1280, 384), "batch": 1, "samples": args.samples}
    ours, theirs = [], []
    for _ in range(args.repeats):
        ours += run_worker("our_sample", {**spec, "config": "configs/did_m3d.yaml", "root": str(data_root)})[
            "wall"
        ]
        ref_spec = {**spec, "ref_dir": str(refs["monoskd"]), "root": str(ref_root), "model_type": "DID"}
        theirs += run_worker("reference_sample", ref_spec)["wall"]
    o, t = statistics.median(ours), statistics.median(theirs)
    what = "| sample vs MonoSKD | 1280x384, train, depth input | ours"
    return [f"{what} | {o:.4f} | {t:.4f} | **{t / o:.2f}x** | |"]


def compare_evaluators(args: argparse.Namespace, work: Path, refs: dict) -> list[str]:
    r = time_evaluators(refs["gupnet"], work, args.eval_frames, args.repeats)
    cold = (r["ours"][0], r["devkit"][0])
    warm = (statistics.median(r["ours"][1:]), statistics.median(r["devkit"][1:]))
    note = f"{args.eval_frames} frames, AP40 max |diff| {r['max_ap_diff']:.6f}"
    return [
        f"| evaluator {name} | {note} | ours | {o:.2f} | {t:.2f} | **{t / o:.2f}x** | |"
        for name, (o, t) in (("cold", cold), ("warm", warm))
    ]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gupnet", type=Path, help="SuperMHP/GUPNet checkout")
    parser.add_argument("--monoskd", type=Path, help="Senwang98/MonoSKD checkout")
    parser.add_argument(
        "--sections", nargs="+", default=["step", "sample", "eval"], choices=["step", "sample", "eval"]
    )
    parser.add_argument("--repeats", type=int, default=2, help="alternations of ours and the reference")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per process")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first per process")
    parser.add_argument("--batch", type=int, default=2, help="batch at 1280x384")
    parser.add_argument("--small-batch", type=int, default=16, help="batch at 384x128")
    parser.add_argument("--frames", type=int, default=16, help="synthetic frames")
    parser.add_argument("--samples", type=int, default=30, help="dataset samples timed per process")
    parser.add_argument("--eval-frames", type=int, default=3769)
    parser.add_argument("--profile", action="store_true", help="profile our 1280x384 GUPNet step instead")
    parser.add_argument("--worker", nargs=2, metavar=("NAME", "SPEC"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(WORKERS[args.worker[0]](json.loads(args.worker[1]))))
        return 0
    refs = {"gupnet": args.gupnet, "monoskd": args.monoskd}
    for name, path in refs.items():
        if path is None or not path.is_dir():
            print(f"error: --{name} {path}: not a folder (a reference checkout)", file=sys.stderr)
            return 2
    with tempfile.TemporaryDirectory(prefix="bench_vs_reference_") as tmp:
        work = Path(tmp)
        ref_root = make_data(work, args.frames)
        data_root = work / "kitti"
        if args.profile:
            spec = {
                "resolution": (1280, 384),
                "batch": args.batch,
                "steps": args.steps,
                "warmup": args.warmup,
            }
            spec |= {
                "config": TRAINERS["gupnet"][0],
                "root": str(data_root),
                "allocator": "keep",
                "profile": True,
            }
            r = run_worker("our_step", spec)
            print(f"convolutions: {r['conv_share']:.1%} of the step's CPU time")
            for key, share in r["top"]:
                print(f"  {share:6.1%}  {key}")
            return 0
        print("| what | setting | ours | ours s | reference s | ratio (ref / ours) | notes |")
        print("|---|---|---|---|---|---|---|", flush=True)
        rows = []
        if "sample" in args.sections:
            rows += compare_samples(args, data_root, ref_root, refs)
            print(rows[-1], flush=True)
        if "eval" in args.sections:
            rows += compare_evaluators(args, work, refs)
            print("\n".join(rows[-2:]), flush=True)
        if "step" in args.sections:
            rows += compare_steps(args, data_root, ref_root, refs)
    print(f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}, {os.cpu_count()} cores")
    return 0


if __name__ == "__main__":
    sys.exit(main())
