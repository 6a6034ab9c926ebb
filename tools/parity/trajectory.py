"""Training trajectories beside the reference trainers (docs/parity.md, "Training trajectories").

From the same seeded weights (tools/parity/net_common.py) and the same batches (the three real
sample frames and synthetic frames of tools/parity/data_targets.py, no augmentation, made by our
dataset with the reference switches), :data:`EPOCHS` epochs of :data:`BATCHES` steps are trained

* by the reference trainers, in a child process inside their checkout
  (tools/parity/trajectory_driver.py): GUPNet's ``Trainer`` (``gupnet``), MonoSKD's RGB baseline
  (``did``) and MonoSKD's distillation (``skd``, frozen seeded teacher);
* by ours (:func:`run_ours`): ``lib/engine/trainer.py`` with the optimizer, schedule and HTL of
  the matching config (:func:`our_config`).

Each run records per step the 7 detection terms, the KD terms (``skd``), the total loss, the
gradient norm and the lr; per epoch the HTL weights; at the end every trained parameter, kept as
its change from the seeded start summarised per tensor (:func:`parameter_summary`). ``generate``
runs every reference twice, on 1 and on 2 torch threads (their difference is the run-to-run
noise the test derives its tolerances from), and writes ``tests/fixtures/parity/trajectory_*.npz``:

    python tools/parity/trajectory.py --gupnet PATH --monoskd PATH [--out tests/fixtures/parity]

(also run by tools/parity/make_fixtures.py). tests/parity/test_trajectory.py runs ours only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import default_collate

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(REPO))
import data_targets  # noqa: E402  (this folder, not a package)
import net_common  # noqa: E402

from lib.config import Config, load_config  # noqa: E402
from lib.engine.optim import (  # noqa: E402
    LrSchedulerSettings,
    OptimizerSettings,
    build_lr_scheduler,
    build_optimizer,
)
from lib.engine.task import build_task  # noqa: E402
from lib.engine.trainer import RunContext, Trainer, TrainerSettings  # noqa: E402
from lib.losses.criterion import LossSettings, build_htl  # noqa: E402
from lib.losses.detection import HTL_TASKS  # noqa: E402

DRIVER = HERE / "trajectory_driver.py"
KINDS = {"gupnet": "gupnet", "did": "monoskd", "skd": "monoskd"}  # run -> reference checkout key
CONFIGS = {"gupnet": "gupnet.yaml", "did": "did_m3d.yaml", "skd": "monoskd.yaml"}
RESOLUTION = (192, 64)  # input W, H: the smallest multiples of 32 with a 2-row s32 map
BATCHES = ((0, 3), (1, 6), (2, 4))  # frame ids of data_targets.build_inputs, every epoch in this order
EPOCHS = 11  # HTL's 3D weights start after 5 (GUPNet) / 6 (MonoSKD) epochs of loss history
SEEDS = {"student": 3001, "teacher": 3002, "adapter": 3010}  # adapter i: 3010 + i
KD_TERMS = ("spearman", "affinity", "response")
SAMPLES_PER_TENSOR = 8  # elements of each parameter's change kept in the fixture
SAMPLE_SEED = 4001
# Our data switches that make the batches the references' (docs/parity.md, "Data" rows); the
# same batches go to both trainers, so these only make the inputs realistic for the reference.
GUPNET_DATA = [
    "dataset.flip_about_width=true",
    "dataset.projection=reference",
    "dataset.image_warp=pil",
    "dataset.heatmap_cell=trunc",
    "dataset.inverse_affine=reference",
]
MONOSKD_DATA = GUPNET_DATA + ["dataset.depth_warp=bilinear", "dataset.depth_downsample=area"]


def our_config(
    kind: str, kitti: Path, run_dir: Path, checkpoints: Mapping[str, Path] | None = None
) -> Config:
    """The shipped config of ``kind`` (configs/gupnet.yaml, did_m3d.yaml, monoskd.yaml) for this
    run: the frames at :data:`RESOLUTION`, batch 2, no augmentation, no pretrained backbone,
    :data:`EPOCHS` epochs without evaluation, and the reference settings of docs/parity.md that
    change training: ``model.vis_depth_scale=box`` (DID-M3D's visual-depth scale), MonoSKD's
    teacher input scale and, for ``skd``, ``loss.htl_inputs=monoskd_columns``. ``checkpoints``: the
    ``teacher`` / ``student`` files of ``skd``."""
    w, h = RESOLUTION
    overrides = [
        f"dataset.root_dir={kitti}",
        f"dataset.resolution=[{w}, {h}]",
        "dataset.batch_size=2",
        "dataset.random_flip=0.0",
        "dataset.random_crop=0.0",
        "dataset.color_aug=false",
        "dataset.check_split_sizes=false",
        "dataset.check_on_start=false",
        "depth_input.scale=4.8828125e-05",
        "model.pretrained=false",
        "model.depth_branch=false",
        "model.vis_depth_scale=box",
        f"trainer.max_epoch={EPOCHS}",
        "trainer.eval_frequency=0",
        "trainer.save_frequency=0",
        f"trainer.last_frequency={EPOCHS}",
        "trainer.log_interval=1",
        f"experiment.output_dir={run_dir.parent}",
        f"experiment.name={run_dir.name}",
    ]
    overrides += GUPNET_DATA if kind == "gupnet" else MONOSKD_DATA
    if kind == "skd":  # its HTL reads the epoch means as MonoSKD's distillation trainer does
        overrides += ["loss.htl_inputs=monoskd_columns"]
        overrides += [f"distill.{role}_checkpoint={path}" for role, path in (checkpoints or {}).items()]
    return load_config(REPO / "configs" / CONFIGS[kind], overrides)


def compact_slots(sample: dict[str, Any], max_objs: int) -> dict[str, Any]:
    """The sample with its kept objects (``mask_2d``) moved to the first target slots, in order.

    Our targets keep an object in the slot of its label line; MonoSKD's head-distillation mask
    draws a disc for every line below ``obj_num``, a zero box (cell (0, 0)) for each skipped line
    (docs/parity.md, "MonoSKD head-distillation cell mask"). With the kept objects first and
    ``obj_num`` their count, both trainers see the same objects; no loss depends on slot order.
    """
    targets = sample["targets"]
    order = np.argsort(~targets["mask_2d"], kind="stable")
    slots = {k: v[order] for k, v in targets.items() if v.ndim >= 1 and v.shape[0] == max_objs}
    return {**sample, "targets": {**targets, **slots}}


def build_batches(cfg: Config) -> list[dict[str, Any]]:
    """The run's batches (:data:`BATCHES`), made by our dataset from ``cfg`` (frame id = index)."""
    from lib.datasets.kitti import build_dataset

    dataset = build_dataset(cfg, cfg.dataset.train_split, train=True)
    max_objs = cfg.dataset.max_objs
    return [default_collate([compact_slots(dataset[i], max_objs) for i in frames]) for frames in BATCHES]


REFERENCE_TARGETS = ("heatmap", "indices", "cls_ids", "mask_2d", "size_2d", "offset_2d", "offset_3d")
REFERENCE_TARGETS += ("depth", "size_3d", "heading_bin", "heading_res")
DID_TARGETS = ("vis_depth", "att_depth", "depth_mask", "box2d")


def batch_arrays(batches: list[dict[str, Any]], kind: str) -> dict[str, np.ndarray]:
    """What the reference driver needs of the batches, as ``batch/b{i}/...`` arrays."""
    keys = REFERENCE_TARGETS + (DID_TARGETS if kind != "gupnet" else ())
    out = {}
    for i, batch in enumerate(batches):
        prefix = f"batch/b{i}/"
        out[prefix + "rgb"] = batch["rgb"].numpy()
        out[prefix + "calib"] = batch["calib"].numpy()
        out[prefix + "coord_range"] = batch["coord_range"].numpy()
        out[prefix + "img_id"] = batch["info"]["img_id"].numpy()
        if kind == "skd":
            out[prefix + "depth"] = batch["depth"].numpy()
        out.update({f"{prefix}t/{k}": batch["targets"][k].numpy() for k in keys})
    return out


def batch_checksum(arrays: Mapping[str, np.ndarray]) -> np.ndarray:
    """:func:`net_common.state_checksum` of the floating ``batch/...`` arrays: proves identical batches."""
    batch = {k: torch.from_numpy(np.asarray(v)) for k, v in arrays.items() if k.startswith("batch/")}
    return net_common.state_checksum(batch)


class BatchList:
    """Our trainer's loader for the run: the same batches every epoch, fresh copies each time."""

    def __init__(self, batches: list[dict[str, Any]]) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        for batch in self.batches:
            yield _clone(batch)


def _clone(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, Mapping):
        return {k: _clone(v) for k, v in value.items()}
    return value


def _seed_task(task: torch.nn.Module, kind: str) -> None:
    """Fill our task with the seeded weights the reference driver gives its networks."""
    if kind != "skd":
        state = net_common.seeded_state_dict(task.detector.state_dict(), SEEDS["student"])
        task.detector.load_state_dict(state, strict=True)
        return
    for i, adapter in enumerate(task.adapters):
        state = net_common.seeded_state_dict(adapter.state_dict(), SEEDS["adapter"] + i)
        adapter.load_state_dict(state, strict=True)


def _distill_checkpoints(kind: str, kitti: Path, run_dir: Path) -> dict[str, Path]:
    """Seeded teacher and student files of a distillation run (MonoSKD loads both from files)."""
    if kind != "skd":
        return {}
    from lib.models.loading import load_detector

    network = load_detector(our_config("did", kitti, run_dir), role="train").detector
    run_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for role in ("teacher", "student"):
        paths[role] = run_dir / f"seeded_{role}.pth"
        torch.save(
            {"model_state": net_common.seeded_state_dict(network.state_dict(), SEEDS[role])}, paths[role]
        )
    return paths


def _trained(task: torch.nn.Module, kind: str) -> dict[str, torch.Tensor]:
    """The network's parameters under the driver's names (detector names; student.* and adapters.*),
    frozen ones included (``mean_size``), the teacher's left out."""
    named = task.named_parameters() if kind == "skd" else task.detector.named_parameters()
    return {name: p.detach().clone() for name, p in named if not name.startswith("teacher.")}


def run_ours(kind: str, kitti: Path, run_dir: Path) -> dict[str, np.ndarray]:
    """Train ``kind`` with our trainer on :func:`build_batches`; the trajectory (module docstring)."""
    cfg = our_config(kind, kitti, run_dir, _distill_checkpoints(kind, kitti, run_dir))
    batches = build_batches(cfg)
    checksum = batch_checksum(batch_arrays(batches, kind))
    task, task_name = build_task(cfg)
    _seed_task(task, kind)
    initial = _trained(task, kind)
    settings = TrainerSettings.from_config(cfg.trainer)
    named = task.named_trainable_parameters() if kind == "skd" else task.named_parameters()
    optimizer = build_optimizer(named, OptimizerSettings.from_config(cfg.optimizer))
    scheduler = build_lr_scheduler(optimizer, LrSchedulerSettings.from_config(cfg.lr_scheduler))
    htl = build_htl(LossSettings.from_config(cfg), max_epoch=settings.max_epoch)
    grad_norm, lrs, weights = [], [], []
    step = optimizer.step

    def recorded_step(*args, **kwargs):
        grads = [p.grad.double() for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        grad_norm.append(float(torch.stack([(g * g).sum() for g in grads]).sum().sqrt()))
        lrs.append(float(optimizer.param_groups[0]["lr"]))
        return step(*args, **kwargs)

    optimizer.step = recorded_step
    compute = htl.compute_weights

    def recorded_weights(epoch: int) -> dict[str, float]:
        weights.append(compute(epoch))
        return weights[-1]

    htl.compute_weights = recorded_weights
    run = RunContext(run_dir, torch.device("cpu"), config=cfg.to_dict(), task_name=task_name)
    trainer = Trainer(
        task,
        optimizer=optimizer,
        scheduler=scheduler,
        train_loader=BatchList(batches),
        settings=settings,
        run=run,
        htl=htl,
    )
    try:
        trainer.fit()
    finally:
        trainer.close()
    steps = [
        r for r in map(json.loads, (run_dir / "train.jsonl").read_text().splitlines()) if r["type"] == "step"
    ]
    out = {
        "terms": np.array([[r[t] for t in HTL_TASKS] for r in steps]),
        "total": np.array([r["loss"] for r in steps]),
        "grad_norm": np.array(grad_norm),
        "lr": np.array(lrs),
        "htl_weights": np.array([[float(w.get(t, 1.0)) for t in HTL_TASKS] for w in weights]),
    }
    if kind == "skd":
        out["kd_terms"] = np.array([[r[t] for t in KD_TERMS] for r in steps])
    out["weight_checksum"] = net_common.state_checksum(initial)
    out["batch_checksum"] = checksum
    final = _trained(task, kind)
    out.update(parameter_summary({n: final[n] - initial[n] for n in final}))
    return out


def parameter_summary(deltas: Mapping[str, torch.Tensor | np.ndarray]) -> dict[str, np.ndarray]:
    """Per trained tensor (sorted names): the norm of its change and :data:`SAMPLES_PER_TENSOR`
    elements of the change at seeded positions (the same positions on both sides)."""
    names = sorted(deltas)
    norms, samples = [], []
    for j, name in enumerate(names):
        flat = np.asarray(deltas[name], dtype=np.float64).reshape(-1)
        picks = np.random.default_rng([SAMPLE_SEED, j]).integers(0, flat.size, SAMPLES_PER_TENSOR)
        norms.append(np.linalg.norm(flat))
        samples.append(flat[picks])
    return {
        "param_names": np.array(names),
        "param_norms": np.array(norms),
        "param_samples": np.array(samples),
    }


def run_reference(
    kind: str, ref_dir: Path, batches: dict[str, np.ndarray], threads: int
) -> dict[str, np.ndarray]:
    """The reference trainer's trajectory (tools/parity/trajectory_driver.py) on ``threads`` threads."""
    inputs = {
        **batches,
        "epochs": np.array(EPOCHS),
        "threads": np.array(threads),
        **{f"{role}_seed": np.array(seed) for role, seed in SEEDS.items()},
    }
    with tempfile.TemporaryDirectory(prefix="trajectory_") as tmp:
        in_path, out_path = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
        np.savez(in_path, **inputs)
        env = {**os.environ, "PYTHONPATH": str(ref_dir), "OMP_NUM_THREADS": str(threads)}
        cmd = [sys.executable, str(DRIVER), kind, str(ref_dir), str(in_path), str(out_path)]
        proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"reference trainer {kind} failed in {ref_dir}:\n{proc.stderr[-4000:]}")
        with np.load(out_path, allow_pickle=False) as f:
            raw = {k: f[k] for k in f.files}
    deltas = {name: raw[f"param/{name}"] for name in raw["param_names"]}
    out = {k: v for k, v in raw.items() if not k.startswith("param")}
    out.update(parameter_summary(deltas))
    return out


def generate(refs: Mapping[str, Path | None], out_dir: Path) -> list[Path]:
    """Write ``trajectory_{gupnet,did,skd}.npz`` for every reference checkout given.

    Each holds the reference run on 1 thread (``ref/...``), the same run on 2 threads
    (``ref2/...``, the run-to-run noise) and the optimizer settings the driver used.
    """
    written = []
    with tempfile.TemporaryDirectory(prefix="trajectory_inputs_") as tmp:
        kitti = data_targets.build_inputs(REPO / "tests" / "data" / "kitti_sample", Path(tmp))
        for kind, key in KINDS.items():
            ref = refs.get(key)
            if ref is None:
                continue
            ref = Path(ref)
            if (ref / "code" / "lib").is_dir():
                ref = ref / "code"
            cfg = our_config(kind, kitti, Path(tmp) / f"run_{kind}", {})
            batches = batch_arrays(build_batches(cfg), kind)
            batches["lr"] = np.array(cfg.optimizer.lr)
            batches["weight_decay"] = np.array(cfg.optimizer.weight_decay)
            fixture = {"batch_checksum": batch_checksum(batches)}
            for threads, prefix in ((1, "ref/"), (2, "ref2/")):
                fixture.update({prefix + k: v for k, v in run_reference(kind, ref, batches, threads).items()})
            path = out_dir / f"trajectory_{kind}.npz"
            net_common.save_npz(path, fixture)
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gupnet", type=Path, default=None, help="SuperMHP/GUPNet checkout")
    parser.add_argument("--monoskd", type=Path, default=None, help="Senwang98/MonoSKD checkout")
    parser.add_argument("--out", type=Path, default=REPO / "tests" / "fixtures" / "parity")
    args = parser.parse_args(argv)
    for path in generate({"gupnet": args.gupnet, "monoskd": args.monoskd}, args.out):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
