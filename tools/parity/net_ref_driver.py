"""Run one reference computation (GUPNet / MonoSKD / MonoDistill code) and write its outputs.

Run by tools/parity/network_losses.py in a child process whose working directory and first
``sys.path`` entry are a reference checkout, so that ``import lib`` is the reference's package
(ours has the same name). Nothing of ours is imported except net_common.py, by file path.

    python net_ref_driver.py TASK REF_DIR INPUTS.npz OUTPUTS.npz

Tasks: gupnet_forward, did_forward, gupnet_loss, did_loss, skd_distill, md_distill. Inputs and
outputs are .npz files (no pickles). Run-time shims, never edits of the reference files: the
backbone is built with pretrained=False (no download), ``Tensor.cuda`` is the identity (the
losses hard-code it; everything runs on the CPU), and ``einops`` (imported but unused by the
terms we call) gets an empty stand-in module when it is not installed.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent


def _load_common() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("net_common", HERE / "net_common.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


common = _load_common()


def _enter_reference(ref_dir: Path) -> None:
    """Make ``lib`` the reference's package and install the shims."""
    sys.path.insert(0, str(ref_dir))
    if importlib.util.find_spec("einops") is None:
        stub = types.ModuleType("einops")
        stub.rearrange = stub.repeat = None
        sys.modules["einops"] = stub
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    import lib

    origin = Path(list(lib.__path__)[0]).resolve()
    if ref_dir.resolve() not in origin.parents:
        raise RuntimeError(f"'lib' resolves to {origin}, not to the reference checkout {ref_dir}")


def _no_pretrained(module: types.ModuleType) -> None:
    """The models call dla34(pretrained=True): build it without the ImageNet download."""
    original = module.dla34

    def dla34(pretrained: bool = False, **kwargs):  # noqa: ARG001
        return original(pretrained=False, **kwargs)

    module.dla34 = dla34


def _t(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x))


def _np(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy()


def _bn_running(model: torch.nn.Module) -> np.ndarray:
    """All BatchNorm running means and variances, sorted by key, concatenated."""
    state = model.state_dict()
    keys = sorted(k for k in state if k.endswith(("running_mean", "running_var")))
    return torch.cat([state[k].flatten() for k in keys]).numpy()


def _forward_inputs(inp: dict[str, np.ndarray]) -> dict:
    targets = {
        "indices": _t(inp["indices"]),
        "cls_ids": _t(inp["cls_ids"]),
        "mask_2d": _t(inp["mask_2d"]).bool(),
    }
    return {"calib": _t(inp["calib"]), "coord_range": _t(inp["coord_range"]), "targets": targets}


def _build(model_cls, module, inp: dict[str, np.ndarray]) -> tuple[torch.nn.Module, dict]:
    _no_pretrained(module)
    model = model_cls(backbone="dla34", neck="DLAUp", mean_size=common.REFERENCE_MEAN_SIZE.copy())
    weights = common.seeded_state_dict(model.state_dict(), int(inp["weight_seed"]))
    model.load_state_dict(weights, strict=True)
    out = {"weight_checksum": common.state_checksum(weights)}
    out["image_checksum"] = common.state_checksum({"x": common.seeded_images(int(inp["image_seed"]))})
    return model, out


def gupnet_forward(inp: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """GUPNet in train mode (GT RoIs, batch-statistics BN) and eval mode (top-50 peaks)."""
    from lib.helpers.decode_helper import _nms, _topk

    import lib.models.gupnet as gup

    model, out = _build(gup.GUPNet, gup, inp)
    images = common.seeded_images(int(inp["image_seed"]))
    args = _forward_inputs(inp)
    keys = ("heatmap", "offset_2d", "size_2d", "depth", "offset_3d", "size_3d", "h3d_log_variance", "heading")
    model.train()
    ret = model(images, args["coord_range"], args["calib"], targets=args["targets"], mode="train")
    out.update({f"train/{k}": _np(ret[k]) for k in keys})
    out["train/bn_running"] = _bn_running(model)
    model.load_state_dict(common.seeded_state_dict(model.state_dict(), int(inp["weight_seed"])))
    model.eval()
    with torch.no_grad():
        ret = model(images, args["coord_range"], args["calib"], targets=None, K=50, mode="val")
        peaks = _topk(_nms(torch.clamp(ret["heatmap"].sigmoid(), min=1e-4, max=1 - 1e-4)), K=50)
    out.update({f"eval/{k}": _np(ret[k]) for k in keys})
    out["eval/topk_indices"] = _np(peaks[1]).astype(np.int64)
    out["eval/topk_cls"] = _np(peaks[2]).astype(np.int64)
    out["eval/topk_scores"] = _np(peaks[0])
    return out


TASKS = {"gupnet_forward": gupnet_forward}


def main(argv: list[str]) -> None:
    task, ref_dir, inputs, outputs = argv
    _enter_reference(Path(ref_dir))
    torch.set_num_threads(1)
    result = TASKS[task](common.load_npz(Path(inputs)))
    common.save_npz(Path(outputs), result)


if __name__ == "__main__":
    main(sys.argv[1:])
