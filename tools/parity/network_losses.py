"""Golden fixtures of the network forward, the detection losses and the distillation terms.

``generate`` runs the reference code (GUPNet, MonoSKD's DID-M3D, MonoSKD's and MonoDistill's
distillation losses) on seeded weights and inputs, each computation in a child process inside
its checkout (tools/parity/net_ref_driver.py), and writes the inputs and the reference outputs
to ``tests/fixtures/parity/{net,loss,distill}_*.npz``. Weights and images are not stored: both
sides re-create them from the seeds (tools/parity/net_common.py) and the fixture holds their
checksums. Called by tools/parity/make_fixtures.py; the tests need only the fixtures.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import net_common  # noqa: E402  (this folder, not a package)

DRIVER = HERE / "net_ref_driver.py"
FEAT_HW = (INPUT_H, INPUT_W) = net_common.INPUT_SHAPE[2:]
GRID_H, GRID_W = INPUT_H // 4, INPUT_W // 4

# Two KITTI P2 matrices (frames 000000 and 000008 style) and crop windows in original px.
CALIBS = np.array(
    [
        [
            [721.5377, 0.0, 609.5593, 44.85728],
            [0.0, 721.5377, 172.854, 0.2163791],
            [0.0, 0.0, 1.0, 0.002745884],
        ],
        [
            [707.0493, 0.0, 604.0814, 45.75831],
            [0.0, 707.0493, 180.5066, -0.3454157],
            [0.0, 0.0, 1.0, 0.004981016],
        ],
    ],
    dtype=np.float32,
)
COORD_RANGES = np.array([[[0.0, 1.2], [1242.0, 373.8]], [[100.0, 20.0], [1100.0, 320.0]]], dtype=np.float32)


def run_reference(task: str, ref_dir: Path, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run ``task`` of net_ref_driver.py inside ``ref_dir`` and return its output arrays."""
    with tempfile.TemporaryDirectory(prefix="parity_") as tmp:
        in_path, out_path = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
        net_common.save_npz(in_path, inputs)
        env = {**os.environ, "PYTHONPATH": str(ref_dir), "OMP_NUM_THREADS": "1"}
        cmd = [sys.executable, str(DRIVER), task, str(ref_dir), str(in_path), str(out_path)]
        proc = subprocess.run(cmd, cwd=ref_dir, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"reference task {task} failed in {ref_dir}:\n{proc.stderr[-4000:]}")
        return net_common.load_npz(out_path)


def roi_targets(rng: np.random.Generator, slots: int = 8) -> dict[str, np.ndarray]:
    """GT RoI slots of the two images: cell indices, classes and mask_2d (some slots empty)."""
    xs = rng.integers(4, GRID_W - 4, size=(2, slots))
    ys = rng.integers(4, GRID_H - 4, size=(2, slots))
    mask = np.zeros((2, slots), dtype=bool)
    mask[0, [0, 1, 2, 4, 5]] = True
    mask[1, [0, 1, 3]] = True
    return {
        "indices": (ys * GRID_W + xs).astype(np.int64),
        "cls_ids": rng.integers(0, 3, size=(2, slots)).astype(np.int64),
        "mask_2d": mask,
    }


def forward_inputs(weight_seed: int, image_seed: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Seeds, calibs, crop windows and GT RoI slots of a forward fixture."""
    return {
        "weight_seed": np.array(weight_seed),
        "image_seed": np.array(image_seed),
        "calib": CALIBS,
        "coord_range": COORD_RANGES,
        **roi_targets(rng),
    }


def _gupnet_forward(ref: Path) -> dict[str, np.ndarray]:
    inputs = forward_inputs(1001, 2001, np.random.default_rng(11))
    return {**inputs, **run_reference("gupnet_forward", ref, inputs)}


def _did_forward(ref: Path, didm3d: Path | None = None) -> dict[str, np.ndarray]:
    """MonoSKD's DID; with a DID-M3D checkout also DID-M3D's own DID.py, which must agree."""
    inputs = forward_inputs(1004, 2002, np.random.default_rng(12))
    outputs = run_reference("did_forward", ref, {**inputs, "api": np.array("monoskd")})
    if didm3d is not None:
        own = run_reference("did_forward", didm3d, {**inputs, "api": np.array("didm3d")})
        for key, value in own.items():
            if not np.array_equal(value, outputs[key]):
                raise RuntimeError(f"DID-M3D ({didm3d}) and MonoSKD ({ref}) DID differ in {key}")
    return {**inputs, **outputs}


def topk_inputs(seed: int) -> dict[str, np.ndarray]:
    """Heatmap logits with saturated peaks (exact ties at the clamp 1 - 1e-4): 30 isolated
    ones in image 0 (fewer than K = 50), 70 in image 1 (the tie straddles the cut)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(-3.0, 1.0, size=(2, 3, GRID_H, GRID_W))
    for b, count in enumerate((30, 70)):
        for k in range(count):
            logits[b, k % 3, (k * 7) % GRID_H, (k * 13) % GRID_W] = 20.0
    return {"logits": logits, "k": np.array(50)}


def _gupnet_topk(ref: Path) -> dict[str, np.ndarray]:
    inputs = topk_inputs(13)
    return {**inputs, **run_reference("gupnet_topk", ref, inputs)}


def loss_case(rng: np.random.Generator, model_type: str, mask: np.ndarray, *, positives: bool = True) -> dict:
    """Random network outputs and targets of a (2, 3, 12, 20) grid with ``mask`` (B, M) objects.

    The heatmap target is a random field in [0, 0.9] with an exact 1 at each object cell when
    ``positives``; DID targets have ~70 % LiDAR cells, one object none.
    """
    b, m = mask.shape
    h, w, n = 12, 20, int(mask.sum())
    cells = rng.choice(h * w, size=(b, m), replace=False)
    heat = rng.uniform(0.0, 0.9, size=(b, 3, h, w)) ** 3
    cls = rng.integers(0, 3, size=(b, m))
    if positives:
        for i, j in zip(*np.nonzero(mask), strict=True):
            heat[i, cls[i, j], cells[i, j] // w, cells[i, j] % w] = 1.0
    depth = rng.uniform(5.0, 60.0, size=(b, m, 1))
    case = {
        "pred/heatmap": rng.normal(-1.0, 2.0, size=(b, 3, h, w)),
        "pred/offset_2d": rng.normal(0.5, 0.3, size=(b, 2, h, w)),
        "pred/size_2d": rng.normal(8.0, 3.0, size=(b, 2, h, w)),
        "pred/offset_3d": rng.normal(0.5, 0.4, size=(n, 2)),
        "pred/size_3d": rng.normal(0.0, 0.2, size=(n, 3)),
        "pred/heading": rng.normal(0.0, 1.0, size=(n, 24)),
        "target/heatmap": heat,
        "target/indices": cells.astype(np.int64),
        "target/mask_2d": mask,
        "target/offset_2d": rng.uniform(0.0, 1.0, size=(b, m, 2)),
        "target/size_2d": rng.uniform(2.0, 20.0, size=(b, m, 2)),
        "target/offset_3d": rng.uniform(-0.5, 1.5, size=(b, m, 2)),
        "target/size_3d": rng.normal(0.0, 0.2, size=(b, m, 3)),
        "target/depth": depth,
        "target/heading_bin": rng.integers(0, 12, size=(b, m, 1)).astype(np.int64),
        "target/heading_res": rng.uniform(-0.26, 0.26, size=(b, m, 1)),
    }
    if model_type == "gupnet":
        case["pred/depth"] = np.stack([rng.uniform(5.0, 60.0, n), rng.normal(0.0, 1.0, n)], axis=1)
        case["pred/h3d_log_variance"] = rng.normal(-1.0, 0.5, size=(n, 1))
        return case
    lidar = depth[..., None] + rng.normal(0.0, 1.0, size=(b, m, 7, 7))
    depth_mask = rng.uniform(size=(b, m, 7, 7)) < 0.7
    depth_mask[0, 0] = False  # an object without LiDAR cells
    case.update(
        {
            "pred/vis_depth": rng.uniform(5.0, 60.0, size=(n, 7, 7)),
            "pred/att_depth": rng.normal(0.0, 1.0, size=(n, 7, 7)),
            "pred/vis_depth_uncer": rng.normal(0.0, 1.0, size=(n, 7, 7)),
            "pred/att_depth_uncer": rng.normal(-1.0, 1.0, size=(n, 7, 7)),
            "target/vis_depth": np.where(depth_mask, lidar, 0.0),
            "target/att_depth": np.where(depth_mask, depth[..., None] - lidar, 0.0),
            "target/depth_mask": depth_mask,
        }
    )
    return case


def _loss_inputs(model_type: str, seed: int) -> dict[str, np.ndarray]:
    """Cases ``main`` (objects, positives), ``nopos`` (no heatmap peak of 1), ``empty`` (no
    object); DID also ``nolidar`` (no LiDAR cell in the whole batch)."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((2, 6), dtype=bool)
    mask[0, [0, 1, 3]] = True
    mask[1, [0, 2, 4, 5]] = True
    cases = {
        "main": loss_case(rng, model_type, mask),
        "nopos": loss_case(rng, model_type, mask, positives=False),
        "empty": loss_case(rng, model_type, np.zeros_like(mask)),
    }
    if model_type == "did":
        cases["nolidar"] = loss_case(rng, model_type, mask)
        cases["nolidar"]["target/depth_mask"][:] = False
    return {f"{case}/{k}": v for case, arrays in cases.items() for k, v in arrays.items()}


def _gupnet_loss(ref: Path) -> dict[str, np.ndarray]:
    inputs = _loss_inputs("gupnet", 21)
    return {**inputs, **run_reference("gupnet_loss", ref, inputs)}


def _did_loss(ref: Path) -> dict[str, np.ndarray]:
    inputs = _loss_inputs("did", 22)
    return {**inputs, **run_reference("did_loss", ref, inputs)}


DISTILL_SHAPES = {"s4": (8, 16, 40), "s8": (16, 8, 20), "s16": (32, 4, 10), "s32": (64, 2, 5)}  # C, H, W


def distill_inputs(seed: int) -> dict[str, np.ndarray]:
    """Features, head outputs and GT boxes of a 2-image batch on a 64x160 input (s4 grid 16x40).

    Teacher features are ReLU outputs (>= 0, some cells zero in every channel), student
    features signed. Boxes in input px; image 0 has a skipped label line (an all-zero box
    inside ``obj_num`` with mask_2d False), image 1 a box partly outside the image.
    """
    rng = np.random.default_rng(seed)
    arrays: dict[str, np.ndarray] = {}
    for level, (c, h, w) in DISTILL_SHAPES.items():
        arrays[f"student/{level}"] = rng.normal(0.2, 1.0, size=(2, c, h, w))
        teacher = np.maximum(rng.normal(0.0, 1.0, size=(2, c, h, w)), 0.0)
        teacher[:, :, rng.uniform(size=(h, w)) < 0.15] = 0.0  # cells with no teacher signal
        arrays[f"teacher/{level}"] = teacher
    boxes = np.zeros((2, 6, 4))
    boxes[0, :4] = [
        [10.0, 12.0, 58.0, 44.0],
        [70.5, 3.2, 101.7, 30.9],
        [0.0, 0.0, 0.0, 0.0],  # a skipped label line
        [120.3, 30.1, 131.9, 41.6],
    ]
    boxes[1, :3] = [[-6.4, 20.0, 33.3, 63.0], [40.2, 8.8, 96.1, 50.5], [140.0, 2.0, 159.0, 22.7]]
    mask = np.zeros((2, 6), dtype=bool)
    mask[0, [0, 1, 3]] = True
    mask[1, [0, 1, 2]] = True
    n = int(mask.sum())
    arrays.update({"box2d_input_px": boxes, "obj_num": np.array([4, 3]), "mask_2d": mask})
    arrays["heading_bin"] = rng.integers(0, 12, size=(2, 6, 1)).astype(np.int64)
    h4, w4 = DISTILL_SHAPES["s4"][1:]
    for side in ("student", "teacher"):
        arrays[f"{side}/head/offset_2d"] = rng.normal(0.5, 0.3, size=(2, 2, h4, w4))
        arrays[f"{side}/head/size_2d"] = rng.normal(6.0, 2.0, size=(2, 2, h4, w4))
        arrays[f"{side}/head/offset_3d"] = rng.normal(0.5, 0.3, size=(n, 2))
        arrays[f"{side}/head/size_3d"] = rng.normal(0.0, 0.2, size=(n, 3))
        arrays[f"{side}/head/heading"] = rng.normal(0.0, 1.0, size=(n, 24))
        arrays[f"{side}/head/vis_depth"] = rng.uniform(5.0, 40.0, size=(n, 7, 7))
        arrays[f"{side}/head/att_depth"] = rng.normal(0.0, 1.0, size=(n, 7, 7))
    return arrays


def _skd_distill(ref: Path) -> dict[str, np.ndarray]:
    inputs = distill_inputs(31)
    return {**inputs, **run_reference("skd_distill", ref, inputs)}


def _md_distill(ref: Path) -> dict[str, np.ndarray]:
    inputs = {k: v for k, v in distill_inputs(32).items() if "head" not in k and k != "student/s4"}
    inputs = {k: v for k, v in inputs.items() if k not in ("teacher/s4", "heading_bin")}
    return {**inputs, **run_reference("md_distill", ref, inputs)}


# fixture file -> (reference key, builder)
FIXTURES: dict[str, tuple[str, Callable[[Path], dict[str, np.ndarray]]]] = {
    "net_gupnet.npz": ("gupnet", _gupnet_forward),
    "net_did.npz": ("monoskd", _did_forward),
    "net_topk.npz": ("gupnet", _gupnet_topk),
    "loss_gupnet.npz": ("gupnet", _gupnet_loss),
    "loss_did.npz": ("monoskd", _did_loss),
    "distill_monoskd.npz": ("monoskd", _skd_distill),
    "distill_monodistill.npz": ("monodistill", _md_distill),
}


def generate(refs: dict[str, Path | None], out_dir: Path) -> list[Path]:
    """Write every fixture whose reference checkout is given; return the written paths.

    Args:
        refs: checkout roots by key: ``gupnet`` (SuperMHP/GUPNet, its ``code`` folder or the
            repository root), ``did`` (SPengLiang/DID-M3D: optional cross-check that its DID.py
            gives MonoSKD's outputs bit for bit; the fixture is MonoSKD's),
            ``monoskd`` (Senwang98/MonoSKD), ``monodistill`` (monster-ghost/MonoDistill).
        out_dir: tests/fixtures/parity.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (key, build) in FIXTURES.items():
        ref = refs.get(key)
        if ref is None:
            continue
        ref = Path(ref)
        if key == "gupnet" and (ref / "code" / "lib").is_dir():
            ref = ref / "code"
        path = out_dir / name
        if build is _did_forward and refs.get("did") is not None:
            net_common.save_npz(path, build(ref, Path(refs["did"])))
        else:
            net_common.save_npz(path, build(ref))
        written.append(path)
    return written
