"""Run a reference trainer (GUPNet / MonoSKD) for a few epochs on given batches; write its trajectory.

Run by tools/parity/trajectory.py in a child process whose working directory and first
``sys.path`` entry are a reference checkout, so that ``import lib`` is the reference's package.
Nothing of ours is imported except net_common.py and net_ref_driver.py (its shims), by file path.

    python trajectory_driver.py KIND REF_DIR BATCHES.npz OUTPUTS.npz

KIND: ``gupnet`` (GUPNet ``code/lib/helpers/trainer_helper.py`` ``Trainer.train``), ``did``
(MonoSKD's RGB baseline: the same trainer with ``model.type: DID``) or ``skd`` (MonoSKD's
distillation: ``model.type: distill``, ``train_one_epoch_distill``). The reference's own
``Trainer.train`` runs every epoch (its HTL pass and weights, its optimizer from
``build_optimizer``, its warm-up and LambdaLR stepping); the batches replace its data loader
(the same batches, in the same order, every epoch). Recorded through wrappers that only observe:
the loss terms of every training step (the criterion's ``stat``; the KD terms from the model's
return), the total loss (``Tensor.backward``), the gradient norm and lr (``optimizer.step``), the
HTL weights of every epoch, and at the end the trained parameters.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import sys
import types
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent


def _load(name: str) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


common = _load("net_common")
shims = _load("net_ref_driver")  # _enter_reference, _no_pretrained

TERMS = ("seg", "offset2d", "size2d", "offset3d", "size3d", "heading", "depth")
KD_TERMS = ("spearman", "affinity", "response")  # DID_Distill.forward returns them in this order
ADAPTERS = ("adapt_layer4", "adapt_layer8", "adapt_layer16", "adapt_layer32")


class BatchLoader:
    """Stands in for the reference's train loader: the given batches, fresh copies each pass."""

    def __init__(self, batches: list[tuple], class_name: tuple[str, ...]) -> None:
        self.batches = batches
        self.dataset = types.SimpleNamespace(class_name=list(class_name))

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        for inputs, calib, coord, targets, info in self.batches:
            inputs = {k: v.clone() for k, v in inputs.items()} if isinstance(inputs, dict) else inputs.clone()
            yield inputs, calib.clone(), coord.clone(), {k: v.clone() for k, v in targets.items()}, info


def reference_batches(arrays: dict[str, np.ndarray], kind: str) -> list[tuple]:
    """Our batches (``b{i}/...`` arrays) in the reference's layout (inputs, P2, coord_range,
    targets, info); slots are already compacted (kept objects first, tools/parity/trajectory.py)."""
    out = []
    count = len({k.split("/")[0] for k in arrays})
    for i in range(count):
        a = {k.split("/", 1)[1]: torch.from_numpy(v) for k, v in arrays.items() if k.startswith(f"b{i}/")}
        targets = {k[2:]: v for k, v in a.items() if k.startswith("t/")}
        targets["mask_2d"] = targets["mask_2d"].bool()
        if kind != "gupnet":
            targets["depth_mask"] = targets["depth_mask"].bool()
            targets["mask_3d"] = targets["mask_2d"].to(torch.uint8)
            targets["obj_num"] = targets["mask_2d"].sum(1)
            box = targets.pop("box2d") * 4.0 * targets["mask_2d"][..., None]  # feature px -> input px
            targets["box2d_gt"], targets["box2d_gt_head"] = box, box.clone()
        if kind == "gupnet":
            inputs = a["rgb"]
        elif kind == "did":
            inputs = {"rgb": a["rgb"]}
        else:
            inputs = {"rgb": a["rgb"], "depth": a["depth"].repeat(1, 3, 1, 1)}
        out.append((inputs, a["calib"], a["coord_range"], targets, {"img_id": a["img_id"]}))
    return out


def config(kind: str, inp: dict[str, np.ndarray]) -> dict:
    """The reference config of ``kind`` with the run's epochs; no evaluation, no checkpoints."""
    model = {"type": "gupnet", "backbone": "dla34", "neck": "DLAUp"}
    if kind == "did":
        model = {"type": "DID", "backbone": "dla34", "neck": "DLAUp", "kd_type": []}
    elif kind == "skd":
        kd = ["dlaup_kd", "spearman_kd", "affinity_kd", "head_kd"]
        model = {"type": "distill", "backbone": "dla34", "neck": "DLAUp", "kd_type": kd}
    never = 10**6
    trainer = {"max_epoch": int(inp["epochs"]), "eval_frequency": never, "save_frequency": never}
    trainer.update({"eval_start": never, "disp_frequency": never, "log_dir": ".", "out_dir": "."})
    return {
        "model": model,
        "optimizer": {"type": "adam", "lr": float(inp["lr"]), "weight_decay": float(inp["weight_decay"])},
        "lr_scheduler": {"warmup": True, "decay_rate": 0.1, "decay_list": [90, 120]},
        "trainer": trainer,
        "tester": {"threshold": 0.2},
        "dataset": {"label_dir": ".", "eval_cls": ["Car"]},
    }


def build_model(kind: str, cfg: dict, inp: dict[str, np.ndarray]) -> torch.nn.Module:
    """The reference network from its ``build_model``, filled with the seeded weights."""
    from lib.helpers.model_helper import build_model as reference_build

    if kind == "gupnet":
        import lib.models.gupnet as module

        shims._no_pretrained(module)  # noqa: SLF001
        model = reference_build(cfg["model"], common.REFERENCE_MEAN_SIZE.copy())
    else:
        import lib.models.DID as module

        shims._no_pretrained(module)  # noqa: SLF001
        model = reference_build(cfg["model"], common.REFERENCE_MEAN_SIZE.copy(), "training")
    student = model if kind != "skd" else model.centernet_rgb
    student.load_state_dict(common.seeded_state_dict(student.state_dict(), int(inp["student_seed"])))
    if kind == "skd":
        teacher = model.centernet_depth
        teacher.load_state_dict(common.seeded_state_dict(teacher.state_dict(), int(inp["teacher_seed"])))
        for i, name in enumerate(ADAPTERS):
            layer = getattr(model, name)
            layer.load_state_dict(common.seeded_state_dict(layer.state_dict(), int(inp["adapter_seed"]) + i))
    return model


class Recorder:
    """Observes the reference trainer: wraps its criterion, model, backward, optimizer and HTL."""

    def __init__(self) -> None:
        self.terms: list[list[float]] = []
        self.kd: list[list[float]] = []
        self.total: list[float] = []
        self.grad_norm: list[float] = []
        self.lr: list[float] = []
        self.weights: list[list[float]] = []
        self.htl_inputs: list[list[float]] = []
        self.htl_input_keys: list[str] = []
        self.htl_index2term: list[str] = []

    def criterion(self, cls: type) -> type:
        recorder = self

        class Recorded(cls):
            def forward(self, *args, **kwargs):
                out = super().forward(*args, **kwargs)
                if torch.is_grad_enabled():  # a training step, not the HTL pass
                    recorder.terms.append([float(self.stat[f"{t}_loss"]) for t in TERMS])
                return out

        return Recorded

    def model_forward(self, forward):
        def recorded(model, *args, **kwargs):
            out = forward(model, *args, **kwargs)
            if torch.is_grad_enabled():
                _, relation, affinity, head = out
                self.kd.append([float(relation), float(affinity), float(head)])
            return out

        return recorded

    def backward(self, backward):
        def recorded(tensor, *args, **kwargs):
            self.total.append(float(tensor.detach().sum()))
            return backward(tensor, *args, **kwargs)

        return recorded

    def optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        step = optimizer.step

        def recorded(*args, **kwargs):
            grads = [
                p.grad.double() for g in optimizer.param_groups for p in g["params"] if p.grad is not None
            ]
            self.grad_norm.append(math.sqrt(sum(float((g * g).sum()) for g in grads)))
            self.lr.append(float(optimizer.param_groups[0]["lr"]))
            return step(*args, **kwargs)

        optimizer.step = recorded

    def htl(self, cls: type) -> None:
        compute = cls.compute_weight

        def recorded(htl, current_loss, epoch):
            weights = compute(htl, current_loss, epoch)
            self.weights.append([float(weights[f"{t}_loss"]) for t in TERMS])
            self.htl_inputs.append([float(v) for v in current_loss.values()])
            self.htl_input_keys = list(current_loss)  # the columns of the history HTL reads
            self.htl_index2term = list(htl.index2term)  # the columns HTL believes it reads
            return weights

        cls.compute_weight = recorded


def trained_parameters(kind: str, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The trained parameters under our names (a distillation run: student.* and adapters.*)."""
    if kind != "skd":
        return {k: p.detach().clone() for k, p in model.named_parameters()}
    out = {f"student.{k}": p.detach().clone() for k, p in model.centernet_rgb.named_parameters()}
    for i, name in enumerate(ADAPTERS):
        out.update(
            {f"adapters.{i}.{k}": p.detach().clone() for k, p in getattr(model, name).named_parameters()}
        )
    return out


def run(kind: str, inp: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Train with the reference's Trainer; return the recorded trajectory and the parameters."""
    import lib.helpers.trainer_helper as trainer_helper
    from lib.helpers.optimizer_helper import build_optimizer
    from lib.helpers.scheduler_helper import build_lr_scheduler

    cfg = config(kind, inp)
    model = build_model(kind, cfg, inp)
    initial = trained_parameters(kind, model)
    rec = Recorder()
    loss_name = "GupnetLoss" if kind == "gupnet" else "DIDLoss"
    setattr(trainer_helper, loss_name, rec.criterion(getattr(trainer_helper, loss_name)))
    rec.htl(trainer_helper.Hierarchical_Task_Learning)
    if kind == "skd":
        cls = type(model)
        cls.forward = rec.model_forward(cls.forward)
    torch.Tensor.backward = rec.backward(torch.Tensor.backward)
    optimizer = build_optimizer(cfg["optimizer"], model)
    lr_scheduler, warmup = build_lr_scheduler(cfg["lr_scheduler"], optimizer, last_epoch=-1)
    rec.optimizer(optimizer)  # after the schedulers, which wrap optimizer.step themselves
    batches = reference_batches({k[6:]: v for k, v in inp.items() if k.startswith("batch/")}, kind)
    loader = BatchLoader(batches, ("Pedestrian", "Car", "Cyclist"))
    logger = logging.getLogger("reference")
    trainer = trainer_helper.Trainer(cfg, model, optimizer, loader, loader, lr_scheduler, warmup, logger)
    trainer.train()
    final = trained_parameters(kind, model)
    out = {
        "terms": np.array(rec.terms),
        "total": np.array(rec.total),
        "grad_norm": np.array(rec.grad_norm),
        "lr": np.array(rec.lr),
        "htl_weights": np.array(rec.weights),
        "weight_checksum": common.state_checksum(initial),
    }
    if kind == "skd":
        out["kd_terms"] = np.array(rec.kd)
    width = len(rec.htl_input_keys)  # epoch-mean losses given to HTL after epoch 0 (its columns)
    out["htl_inputs"] = np.array([row for row in rec.htl_inputs if len(row) == width])
    out["htl_input_keys"] = np.array(rec.htl_input_keys)
    out["htl_index2term"] = np.array(rec.htl_index2term)
    names = sorted(final)
    out["param_names"] = np.array(names)
    out.update({f"param/{n}": (final[n] - initial[n]).numpy() for n in names})
    return out


def _stub_evaluation() -> None:
    """MonoSKD's trainer imports ``tools.eval`` (numba.cuda kernels, compiled at import) for its
    evaluation, which never runs here: an empty stand-in."""
    package = types.ModuleType("tools")
    package.eval = types.ModuleType("tools.eval")
    sys.modules["tools"], sys.modules["tools.eval"] = package, package.eval


def main(argv: list[str]) -> None:
    kind, ref_dir, inputs, outputs = argv
    shims._enter_reference(Path(ref_dir))  # noqa: SLF001
    _stub_evaluation()
    inp = common.load_npz(Path(inputs))
    torch.set_num_threads(int(inp["threads"]))
    result = run(kind, inp)
    np.savez(outputs, **result)  # uncompressed: the parameters are ~100 MB, read once by the parent


if __name__ == "__main__":
    main(sys.argv[1:])
