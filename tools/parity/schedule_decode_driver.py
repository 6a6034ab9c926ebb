"""Child process of tools/parity/schedule_decode.py: run one reference computation.

    python schedule_decode_driver.py TASK REF_DIR IN.npz OUT.npz

Runs with ``cwd`` = REF_DIR and REF_DIR first on ``sys.path``, so ``import lib`` is the reference's
package (ours has the same name); nothing of ours is imported. Tasks:

* ``htl``: the reference's ``Hierarchical_Task_Learning`` fed as its trainer feeds it (the e0 means
  at epoch 0, then the previous epoch's means), one weight row per epoch;
* ``lr``: the reference's ``build_lr_scheduler`` for each config file named in the input, stepped as
  its trainer steps it (warm-up scheduler for epochs 0..4, the LambdaLR after), the lr of every epoch;
* ``decode_gupnet`` / ``decode_did``: the reference's ``extract_dets_from_outputs`` +
  ``decode_detections`` + ``Trainer.save_results`` on given raw outputs and calib files;
* ``state_keys``: state_dict names and shapes of the reference models (GUPNet; MonoSKD's DID and its
  distillation wrappers), built without the ImageNet download.
"""

from __future__ import annotations

import importlib
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import torch
import yaml

LOSS_TERMS = (
    "seg_loss",
    "size2d_loss",
    "offset2d_loss",
    "offset3d_loss",
    "size3d_loss",
    "heading_loss",
    "depth_loss",
)
CLASS_NAMES = ["Pedestrian", "Car", "Cyclist"]


def _enter_reference(ref_dir: Path) -> None:
    """Make ``lib`` the reference's package; stub modules that only unused code paths need."""
    sys.path.insert(0, str(ref_dir))
    for name, attrs in (("einops", ("rearrange", "repeat")), ("torchsort", ("soft_rank",))):
        if importlib.util.find_spec(name) is None:  # imported by MonoSKD's losses, unused here
            sys.modules[name] = types.ModuleType(name)
            for attr in attrs:
                setattr(sys.modules[name], attr, None)
    # The references move tensors to CUDA unconditionally; here everything stays on the CPU.
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    import lib

    origin = Path(list(lib.__path__)[0]).resolve()
    if ref_dir.resolve() not in origin.parents:
        raise RuntimeError(f"'lib' resolves to {origin}, not to the reference checkout {ref_dir}")


def htl(inp: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Weights of epochs 0..E-1 from ``losses`` (E+1, 7): row 0 the e0 pass, row t+1 epoch t."""
    from lib.losses.loss_function import Hierarchical_Task_Learning

    losses = torch.from_numpy(inp["losses"])  # float64: the algorithm, not float32 rounding

    def means(row: int) -> dict[str, torch.Tensor]:
        return {term: losses[row, j].clone() for j, term in enumerate(LOSS_TERMS)}

    ei_loss = means(0)
    weightor = Hierarchical_Task_Learning(ei_loss)
    rows = []
    for epoch in range(losses.shape[0] - 1):
        weights = weightor.compute_weight(ei_loss, epoch)
        rows.append([float(weights[term]) for term in LOSS_TERMS])
        ei_loss = means(epoch + 1)
    return {"weights": np.array(rows)}


def lr(inp: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The lr at the start of every epoch of each reference config (``configs``: relative paths)."""
    from lib.helpers.scheduler_helper import build_lr_scheduler

    out = {}
    for rel in inp["configs"]:
        cfg = yaml.safe_load(Path(str(rel)).read_text())
        param = torch.nn.Parameter(torch.zeros(1))
        optimizer = torch.optim.Adam([param], lr=cfg["optimizer"]["lr"])
        lr_scheduler, warmup = build_lr_scheduler(cfg["lr_scheduler"], optimizer, last_epoch=-1)
        values = []
        for epoch in range(cfg["trainer"]["max_epoch"]):
            values.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            if warmup is not None and epoch < 5:
                warmup.step()
            else:
                lr_scheduler.step()
        out[f"lr/{rel}"] = np.array(values)
    return out


def _calibs(inp: dict[str, np.ndarray], folder: Path) -> list:
    """The reference's Calibration objects, read from KITTI calib files written here."""
    from lib.datasets.kitti_utils import Calibration

    calibs = []
    for i, p2 in enumerate(inp["P2"]):
        eye = " ".join(["1 0 0 0 1 0 0 0 1"])
        rows = [f"P{k}: " + " ".join(f"{v:.12e}" for v in p2.reshape(-1)) for k in range(4)]
        rows += [f"R0_rect: {eye}", "Tr_velo_to_cam: " + " ".join(["0"] * 12)]
        path = folder / f"{i:06d}.txt"
        path.write_text("\n".join(rows) + "\n")
        calibs.append(Calibration(str(path)))
    return calibs


def _decode(inp: dict[str, np.ndarray], model_type: str) -> dict[str, np.ndarray]:
    # MonoSKD's trainer_helper imports its evaluator (tools/eval.py), which compiles CUDA kernels
    # at import; save_results does not use it.
    tools = types.ModuleType("tools")
    tools.eval = types.ModuleType("tools.eval")
    sys.modules |= {"tools": tools, "tools.eval": tools.eval}
    from lib.helpers import decode_helper, trainer_helper

    outputs = {k: torch.from_numpy(inp[k].copy()) for k in inp if k.startswith("out/")}
    outputs = {k[len("out/") :]: v for k, v in outputs.items()}
    if model_type == "gupnet":
        dets = decode_helper.extract_dets_from_outputs(outputs, K=int(inp["K"]))
    else:
        dets = decode_helper.extract_dets_from_outputs(outputs, conf_mode="ada", K=int(inp["K"]))
    dets = dets.detach().cpu().numpy()
    info = {"img_id": inp["img_id"], "bbox_downsample_ratio": inp["bbox_downsample_ratio"]}
    with tempfile.TemporaryDirectory() as tmp:
        calibs = _calibs(inp, Path(tmp))
        results = decode_helper.decode_detections(
            dets=dets,
            info=info,
            calibs=calibs,
            cls_mean_size=inp["mean_size"].copy(),
            threshold=float(inp["threshold"]),
        )
        holder = types.SimpleNamespace(class_name=CLASS_NAMES)
        trainer_helper.Trainer.save_results(holder, results, output_dir=tmp)
        lines = []
        for img_id in inp["img_id"]:
            text = (Path(tmp) / "data" / f"{int(img_id):06d}.txt").read_text()
            lines += [f"{int(img_id):06d} {line}" for line in text.splitlines()]
    raw = [[img_id, *row] for img_id in results for row in results[img_id]]
    return {"raw": np.array(raw, dtype=np.float64).reshape(-1, 15), "lines": np.array(lines)}


def state_keys(inp: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Names and shapes of each reference model's state_dict (``models``: which ones)."""
    out = {}
    mean_size = inp["mean_size"].copy()
    for name in inp["models"]:
        if name == "gupnet":
            module = importlib.import_module("lib.models.gupnet")
            _no_pretrained(module)
            model = module.GUPNet(backbone="dla34", neck="DLAUp", mean_size=mean_size)
        elif name == "did":
            module = importlib.import_module("lib.models.DID")
            _no_pretrained(module)
            model = module.DID(backbone="dla34", neck="DLAUp", mean_size=mean_size)
        else:  # MonoSKD's distillation wrapper with the kd_type list of one of its configs
            importlib.import_module("lib.models.DID")
            _no_pretrained(sys.modules["lib.models.DID"])
            module = importlib.import_module("lib.models.DID_distill")
            kd_type = str(inp[f"kd_type/{name}"]).split(",")
            model = module.DID_Distill(
                backbone="dla34", neck="DLAUp", mean_size=mean_size, cfg={"kd_type": kd_type}
            )
        state = model.state_dict()
        out[f"keys/{name}"] = np.array(list(state))
        out[f"shapes/{name}"] = np.array([",".join(map(str, v.shape)) for v in state.values()])
    return out


def _no_pretrained(module: types.ModuleType) -> None:
    """The models call dla34(pretrained=True): build it without the ImageNet download."""
    original = module.dla34

    def dla34(pretrained: bool = False, **kwargs):  # noqa: ARG001
        return original(pretrained=False, **kwargs)

    module.dla34 = dla34


TASKS = {
    "htl": htl,
    "lr": lr,
    "decode_gupnet": lambda inp: _decode(inp, "gupnet"),
    "decode_did": lambda inp: _decode(inp, "did"),
    "state_keys": state_keys,
}


def main(argv: list[str]) -> None:
    task, ref_dir, in_path, out_path = argv
    _enter_reference(Path(ref_dir))
    with np.load(in_path, allow_pickle=False) as data:
        inp = {k: data[k] for k in data.files}
    np.savez(out_path, **TASKS[task](inp))


if __name__ == "__main__":
    main(sys.argv[1:])
