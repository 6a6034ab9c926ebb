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


def _grad_norms(model: torch.nn.Module, ret: dict, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Backward of sum_k mean(out_k^2) over the outputs ``keys``; per-parameter gradient norms
    (parameters with a gradient, sorted by name) and their names."""
    loss = sum((ret[k].float() ** 2).mean() for k in sorted(keys))
    loss.backward()
    named = sorted((n, p.grad) for n, p in model.named_parameters() if p.grad is not None)
    return {
        "train/grad_names": np.array([n for n, _ in named]),
        "train/grad_norms": torch.stack([g.norm() for _, g in named]).numpy(),
    }


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
    out.update(_grad_norms(model, ret, keys))
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


DID_KEYS = ("heatmap", "offset_2d", "size_2d", "offset_3d", "size_3d", "heading", "vis_depth", "att_depth")
DID_KEYS += ("ins_depth", "vis_depth_uncer", "att_depth_uncer", "ins_depth_uncer")


def _feature_stats(features: list[torch.Tensor]) -> dict[str, np.ndarray]:
    """Per (image, channel) mean and std of each neck map, keyed by stride (compact checks)."""
    out = {}
    for f in features:
        stride = common.INPUT_SHAPE[-1] // f.shape[-1]
        flat = f.detach().flatten(2)
        out[f"s{stride}_mean"], out[f"s{stride}_std"] = _np(flat.mean(-1)), _np(flat.std(-1))
    return out


def did_forward(inp: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """DID in train and eval mode; eval adds the decode-time merged depth and confidence.

    MonoSKD's DID takes ``{"rgb": images}`` and also returns the neck maps; DID-M3D's own copy
    (``inp["api"] == "didm3d"``) takes the tensor and returns the outputs only.
    """
    import lib.models.DID as did
    from lib.helpers.decode_helper import _nms, _topk, extract_dets_from_outputs

    skd = str(inp["api"]) == "monoskd"
    model, out = _build(did.DID, did, inp)
    images = common.seeded_images(int(inp["image_seed"]))
    images = {"rgb": images} if skd else images
    args = _forward_inputs(inp)

    def run(**kwargs) -> tuple[dict, list | None]:
        result = model(images, args["coord_range"], args["calib"], **kwargs)
        return (result[1], result[2]) if skd else (result, None)

    model.train()
    ret, feats = run(targets=args["targets"], mode="train")
    out.update({f"train/{k}": _np(ret[k]) for k in DID_KEYS})
    out.update(_grad_norms(model, ret, DID_KEYS))
    if feats is not None:
        out.update({f"train/{k}": v for k, v in _feature_stats(feats).items()})
    out["train/bn_running"] = _bn_running(model)
    model.load_state_dict(common.seeded_state_dict(model.state_dict(), int(inp["weight_seed"])))
    model.eval()
    with torch.no_grad():
        ret, feats = run(targets=None, K=50, mode="val")
        peaks = _topk(_nms(torch.clamp(ret["heatmap"].sigmoid(), min=1e-4, max=1 - 1e-4)), K=50)
        dets = extract_dets_from_outputs({**ret, "heatmap": ret["heatmap"].clone()}, K=50)
    out.update({f"eval/{k}": _np(ret[k]) for k in DID_KEYS})
    if feats is not None:
        out.update({f"eval/{k}": v for k, v in _feature_stats(feats).items()})
    out["eval/topk_indices"] = _np(peaks[1]).astype(np.int64)
    out["eval/topk_cls"] = _np(peaks[2]).astype(np.int64)
    out["eval/topk_scores"] = _np(peaks[0])
    out["eval/merged_depth"] = _np(dets[:, :, -2]).reshape(-1)
    out["eval/merged_conf"] = _np(dets[:, :, -1]).reshape(-1)
    return out


def gupnet_topk(inp: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """GUPNet's peak selection (sigmoid, clamp, 3x3 NMS, per-class then overall top-50) on
    given heatmap logits, as its model (eval mode) and decoding run it."""
    from lib.helpers.decode_helper import _nms, _topk

    heatmap = torch.clamp(_t(inp["logits"]).sigmoid(), min=1e-4, max=1 - 1e-4)
    scores, inds, cls_ids, xs, ys = _topk(_nms(heatmap), K=int(inp["k"]))
    return {
        "scores": _np(scores),
        "indices": _np(inds).astype(np.int64),
        "cls": _np(cls_ids).astype(np.int64),
        "xs": _np(xs).astype(np.int64),
        "ys": _np(ys).astype(np.int64),
    }


LOSS_TERMS = ("seg", "offset2d", "size2d", "offset3d", "size3d", "heading", "depth")
PRED_KEYS = {
    "gupnet": ("depth", "offset_3d", "size_3d", "h3d_log_variance", "heading"),
    "did": ("offset_3d", "size_3d", "heading", "vis_depth", "att_depth")
    + ("vis_depth_uncer", "att_depth_uncer"),
}
TARGET_KEYS = {
    "gupnet": ("heatmap", "indices", "mask_2d", "offset_2d", "size_2d", "offset_3d", "size_3d", "depth")
    + ("heading_bin", "heading_res"),
}
TARGET_KEYS["did"] = TARGET_KEYS["gupnet"] + ("vis_depth", "att_depth", "depth_mask")


def _loss_case(loss_cls, model_type: str, inp: dict[str, np.ndarray], case: str) -> np.ndarray:
    """The 7 loss terms of one case (prefix ``case/`` in ``inp``), NaN for a missing term."""
    preds = {k: _t(inp[f"{case}/pred/{k}"]).clone() for k in ("heatmap", "offset_2d", "size_2d")}
    preds.update({k: _t(inp[f"{case}/pred/{k}"]) for k in PRED_KEYS[model_type]})
    targets = {k: _t(inp[f"{case}/target/{k}"]) for k in TARGET_KEYS[model_type]}
    targets["mask_2d"] = targets["mask_2d"].bool()
    if "depth_mask" in targets:
        targets["depth_mask"] = targets["depth_mask"].bool()
    preds["train_tag"] = torch.ones(int(targets["mask_2d"].sum()), dtype=torch.bool)
    if model_type == "did":  # the model's own sums, as DID.py returns them
        preds["ins_depth"] = preds["vis_depth"] + preds["att_depth"]
        stacked = torch.stack([preds["vis_depth_uncer"], preds["att_depth_uncer"]], -1)
        preds["ins_depth_uncer"] = torch.logsumexp(stacked, -1)
    loss = loss_cls(epoch=0)
    loss(preds, targets)
    return np.array([float(loss.stat[f"{name}_loss"]) for name in LOSS_TERMS], dtype=np.float64)


def _losses(module_name: str, class_name: str, model_type: str, inp: dict[str, np.ndarray]) -> dict:
    module = importlib.import_module(module_name)
    loss_cls = getattr(module, class_name)
    cases = sorted({k.split("/")[0] for k in inp})
    return {f"{case}/ref_terms": _loss_case(loss_cls, model_type, inp, case) for case in cases}


def gupnet_loss(inp: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """GupnetLoss (lib/losses/loss_function.py): the 7 terms per case, in LOSS_TERMS order."""
    return _losses("lib.losses.loss_function", "GupnetLoss", "gupnet", inp)


def did_loss(inp: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """MonoSKD DIDLoss (lib/losses/loss_function.py): the 7 terms per case."""
    return _losses("lib.losses.loss_function", "DIDLoss", "did", inp)


LEVELS = ("s4", "s8", "s16", "s32")
HEAD_TERMS = ("offset2d", "size2d", "offset3d", "size3d", "heading", "depth")


def _features(inp: dict[str, np.ndarray], side: str, levels: tuple[str, ...]) -> list[torch.Tensor]:
    return [_t(inp[f"{side}/{level}"]) for level in levels]


def skd_distill(inp: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """MonoSKD's affinity, Spearman and head (response) distillation on given features / outputs.

    Student features stand for the adapted student neck maps, teacher features for the
    teacher's (MonoSKD ``DID_Distill.forward``, ``dlaup_kd`` path): [s4, s8, s16, s32].
    """
    from lib.losses.feature_distill_loss import compute_backbone_resize_affinity_loss
    from lib.losses.head_distill_loss import calculate_box_mask_gaussian, compute_head_distill_loss
    from lib.losses.myloss import spearman_loss

    student, teacher = _features(inp, "student", LEVELS), _features(inp, "teacher", LEVELS)
    out = {
        "affinity": np.array(float(compute_backbone_resize_affinity_loss(student, teacher))),
        # MonoSKD's call order: spearman_loss(distill_feature, depth_fs_feat) -> (target, pred)
        "spearman": np.array(float(spearman_loss(student, teacher))),
    }
    outputs = {}
    for side in ("student", "teacher"):
        keys = [k for k in inp if k.startswith(f"{side}/head/")]
        outputs[side] = {k.split("/")[-1]: _t(inp[k]) for k in keys}
        outputs[side]["ins_depth"] = outputs[side]["vis_depth"] + outputs[side]["att_depth"]
        outputs[side]["train_tag"] = torch.ones(outputs[side]["offset_3d"].shape[0], dtype=torch.bool)
    target = {
        "obj_num": _t(inp["obj_num"]),
        "box2d_gt_head": _t(inp["box2d_input_px"]),
        "mask_2d": _t(inp["mask_2d"]).bool(),
        "heading_bin": _t(inp["heading_bin"]),
    }
    _, stats = compute_head_distill_loss(outputs["student"], outputs["teacher"], target)
    out["head_terms"] = np.array([stats[name] for name in HEAD_TERMS], dtype=np.float64)
    out["head_mask"] = _np(calculate_box_mask_gaussian(outputs["student"]["offset_2d"].shape, target, 4)) > 0
    return out


def md_distill(inp: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """MonoDistill's foreground feature loss and affinity (relation) loss on given features
    (student = adapted ReviewKD outputs, teacher = backbone levels 3..5: [s8, s16, s32])."""
    from lib.losses.feature_distill_loss import (
        calculate_box_mask,
        compute_backbone_l1_loss,
        compute_backbone_resize_affinity_loss,
    )

    levels = LEVELS[1:]
    student, teacher = _features(inp, "student", levels), _features(inp, "teacher", levels)
    target = {"obj_num": _t(inp["obj_num"]), "box2d_gt": _t(inp["box2d_input_px"])}
    out = {
        "feature": np.array(float(compute_backbone_l1_loss(student, teacher, target))),
        "affinity": np.array(float(compute_backbone_resize_affinity_loss(student, teacher))),
    }
    for i, (level, feat) in enumerate(zip(levels, student, strict=True)):
        out[f"box_mask/{level}"] = _np(calculate_box_mask(feat, target, 2 ** (i + 3))) > 0
    return out


TASKS = {
    "skd_distill": skd_distill,
    "md_distill": md_distill,
    "gupnet_forward": gupnet_forward,
    "did_forward": did_forward,
    "gupnet_topk": gupnet_topk,
    "gupnet_loss": gupnet_loss,
    "did_loss": did_loss,
}


def main(argv: list[str]) -> None:
    task, ref_dir, inputs, outputs = argv
    _enter_reference(Path(ref_dir))
    torch.set_num_threads(1)
    result = TASKS[task](common.load_npz(Path(inputs)))
    common.save_npz(Path(outputs), result)


if __name__ == "__main__":
    main(sys.argv[1:])
