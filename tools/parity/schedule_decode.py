"""Golden fixtures of HTL, the lr schedules, decoding and the reference checkpoint layouts.

``generate`` runs the reference code in a child process inside each checkout
(tools/parity/schedule_decode_driver.py) and writes to ``tests/fixtures/parity/``:

* ``schedule_decode_htl.npz``: GUPNet's and MonoSKD's HTL weights over the 30-epoch loss history
  of :func:`htl_history` (GUPNet pushes the e0 pass, MonoSKD does not; both T = 140);
* ``schedule_decode_lr.json``: the lr at every epoch of GUPNet's config and of MonoSKD's three
  configs, as their trainers step the schedulers; ``schedule_decode_configs.json`` those configs;
* ``schedule_decode_{gupnet,did}.npz``: GUPNet's / MonoSKD's decoding of the raw outputs of
  :func:`decode_inputs` (rebuilt by the test from the seed; the fixture holds their checksum):
  raw values and the KITTI result lines;
* ``schedule_decode_state_keys.json``: state_dict names and shapes of GUPNet, MonoSKD's DID and
  MonoSKD's two distillation wrappers (no weights).

Called by tools/parity/make_fixtures.py; tests/parity/test_htl_lr_decode.py and
test_reference_checkpoints.py need only the fixtures.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml

DRIVER = Path(__file__).resolve().parent / "schedule_decode_driver.py"
HTL_TERMS = ("seg", "size2d", "offset2d", "offset3d", "size3d", "heading", "depth")  # driver's order
HTL_EPOCHS = 30
# Reference config files whose schedules the fixture holds, by checkout key.
LR_CONFIGS = {
    "gupnet": ("experiments/config.yaml",),  # relative to GUPNet's code/ folder
    "monoskd": ("configs/rgb_baseline.yaml", "configs/monoskd.yaml", "configs/monodistill.yaml"),
}
# MonoSKD's distillation wrappers: the kd_type of its monoskd and monodistill configs.
SKD_WRAPPERS = {
    "skd_monoskd": "dlaup_kd,spearman_kd,affinity_kd,head_kd",
    "skd_monodistill": "fg_kd,affinity_kd,head_kd",
}
MEAN_SIZE = np.array(  # docs/reference.md, 'Class mean sizes [h, w, l] in metres', h w l
    [
        [1.76255119, 0.66068622, 0.84422524],
        [1.52563191462, 1.62856739989, 3.88311640418],
        [1.73698127, 0.59706367, 1.76282397],
    ]
)
K, GRID_H, GRID_W, STRIDE = 50, 96, 320, 4
IMAGE_SIZE = np.array([1242.0, 375.0])
DECODE_SEED = 20261130
THRESHOLD = 0.2


def run_reference(task: str, ref_dir: Path, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run ``task`` of the driver with cwd = ``ref_dir``; return its output arrays."""
    with tempfile.TemporaryDirectory(prefix="parity_sd_") as tmp:
        in_path, out_path = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
        np.savez(in_path, **inputs)
        env = {**os.environ, "PYTHONPATH": str(ref_dir), "OMP_NUM_THREADS": "1"}
        cmd = [sys.executable, str(DRIVER), task, str(ref_dir), str(in_path), str(out_path)]
        proc = subprocess.run(cmd, cwd=ref_dir, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"reference task {task} failed in {ref_dir}:\n{proc.stderr[-4000:]}")
        with np.load(out_path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}


def htl_history() -> np.ndarray:
    """(31, 7) epoch-mean losses (row 0 the e0 pass): noisy decays with a 2D plateau and a bump.

    The 2D terms flatten after ~10 epochs (so the 3D weights rise), size3d keeps falling (depth's
    gate opens later), and a loss bump at epochs 14-15 makes a trend steeper than the first.
    """
    rng = np.random.default_rng(7)
    t = np.arange(-1, HTL_EPOCHS, dtype=np.float64)[:, None]
    start = np.array([8.0, 3.0, 1.0, 2.0, 1.5, 3.5, 6.0])
    floor = np.array([1.0, 0.6, 0.2, 0.5, 0.3, 1.2, 1.5])
    tau = np.array([4.0, 3.0, 3.5, 8.0, 12.0, 8.0, 10.0])
    losses = floor + (start - floor) * np.exp(-(t + 1) / tau)
    losses[16:18, [1, 2]] *= 1.25  # epochs 14-15: the 2D terms bump up (ls < 0 afterwards)
    return losses * (1 + 0.02 * rng.standard_normal(losses.shape))


# Designed peaks per image, highest score first (their RoI rows follow that order). A row: the case
# it tests, class, cell x / y, heatmap score, depth (m), confidence knob (log-variance), 2D size
# (cells), then extras: heading bin and residual, 3D offset, width change (m).
PEAK_FIELDS = ("case", "cls", "x", "y", "s", "z", "unc", "size")
PLANTED_PEAKS = (
    (  # image 0
        ("near", 1, 160, 70, 0.92, 3.2, -2.0, (60.0, 40.0), {}),
        ("far", 1, 150, 47, 0.85, 72.0, -1.0, (4.0, 3.0), {}),
        ("pedestrian", 0, 40, 50, 0.8, 14.0, -1.5, (6.0, 14.0), {}),
        ("low confidence, peak >= threshold", 1, 220, 52, 0.6, 35.0, 3.0, (10.0, 8.0), {}),
        ("heading near pi", 1, 100, 55, 0.55, 20.0, -1.0, (12.0, 9.0), {"bin": 6, "res": 0.2}),
        ("truncated left", 1, 1, 60, 0.5, 9.0, -1.2, (8.0, 20.0), {"off3d": (-3.5, 0.4)}),
        ("truncated right", 2, 318, 58, 0.45, 11.0, -1.2, (7.0, 16.0), {"off3d": (3.2, 0.6)}),
        ("negative width", 1, 260, 45, 0.4, 25.0, -1.0, (9.0, 7.0), {"dw": -3.0}),
        ("low confidence, product near threshold", 1, 200, 40, 0.3, 40.0, 0.0, (6.0, 5.0), {}),
        ("peak < threshold", 1, 120, 35, 0.15, 30.0, -3.0, (6.0, 5.0), {}),
    ),
    (  # image 1 has a mirrored (flipped) calibration
        ("flipped calib, left", 1, 30, 60, 0.9, 12.0, -1.5, (20.0, 12.0), {}),
        ("flipped calib, right", 1, 290, 62, 0.7, 8.0, -1.5, (30.0, 18.0), {}),
        ("low confidence, peak >= threshold", 2, 180, 50, 0.35, 22.0, 2.5, (5.0, 12.0), {}),
        ("heading wrap -pi", 1, 240, 48, 0.25, 45.0, -0.5, (5.0, 4.0), {"bin": 5, "res": 0.3}),
        ("peak just < threshold", 1, 80, 44, 0.19, 28.0, -3.0, (6.0, 5.0), {}),
    ),
)


def _planted_peaks() -> list[list[dict]]:
    """The rows of :data:`PLANTED_PEAKS` as one dict per peak (fields by name, extras merged)."""
    return [
        [dict(zip(PEAK_FIELDS, row[:-1], strict=True), **row[-1]) for row in image] for image in PLANTED_PEAKS
    ]


def _calibs() -> np.ndarray:
    """(2, 3, 4) P2: KITTI 000000's, and the same mirrored about the image width (cu' = W-1-cu, tx' = -tx)."""
    p2 = np.array(
        [
            [721.5377, 0.0, 609.5593, 44.85728],
            [0.0, 721.5377, 172.854, 0.2163791],
            [0.0, 0.0, 1.0, 0.002745884],
        ]
    )
    flipped = p2.copy()
    flipped[0, 2] = IMAGE_SIZE[0] - 1 - p2[0, 2]
    flipped[0, 3] = -p2[0, 3]
    return np.stack([p2, flipped])


def decode_inputs(model_type: str) -> dict[str, np.ndarray]:
    """Raw eval outputs of a 2-image batch (heatmap logits, dense 2D heads, K RoI rows in peak order)
    for ``gupnet`` (depth [z, log-var]) or ``did`` (7x7 vis / att depth and log-variance maps), with
    the peaks of :func:`_planted_peaks` on a low random background; float32 as the networks give."""
    rng = np.random.default_rng([DECODE_SEED, 0 if model_type == "gupnet" else 1])
    b = 2
    heatmap = rng.normal(-7.0, 0.4, (b, 3, GRID_H, GRID_W))
    offset_2d = rng.uniform(0.0, 1.0, (b, 2, GRID_H, GRID_W))
    size_2d = rng.uniform(3.0, 30.0, (b, 2, GRID_H, GRID_W))
    heading = rng.normal(0.0, 1.0, (b * K, 24))
    size_3d = rng.normal(0.0, 0.1, (b * K, 3))
    offset_3d = rng.uniform(0.0, 1.0, (b * K, 2))
    depth = np.stack([rng.uniform(5.0, 50.0, b * K), rng.uniform(-1.0, 1.0, b * K)], 1)
    for i, peaks in enumerate(_planted_peaks()):
        for j, p in enumerate(peaks):
            row = i * K + j
            heatmap[i, p["cls"], p["y"], p["x"]] = np.log(p["s"] / (1 - p["s"]))
            size_2d[i, :, p["y"], p["x"]] = p["size"]
            offset_3d[row] = p.get("off3d", offset_3d[row])
            size_3d[row, 1] += p.get("dw", 0.0)
            depth[row] = (p["z"], p["unc"])
            if "bin" in p:
                heading[row, :12] = -5.0
                heading[row, p["bin"]], heading[row, 12 + p["bin"]] = 5.0, p["res"]
    out = {"heatmap": heatmap, "offset_2d": offset_2d, "size_2d": size_2d, "heading": heading}
    out |= {"size_3d": size_3d, "offset_3d": offset_3d}
    if model_type == "gupnet":
        out["depth"] = depth
    else:  # per-cell maps around the row's depth / log-variance
        cells = rng.normal(0.0, 1.0, (3, b * K, 7, 7))
        out["vis_depth"] = depth[:, 0, None, None] * (0.7 + 0.02 * cells[0])
        out["att_depth"] = depth[:, 0, None, None] * (0.3 + 0.02 * cells[1])
        out["ins_depth_uncer"] = depth[:, 1, None, None] + 0.3 * cells[2]
    return {k: v.astype(np.float32) for k, v in out.items()}


def decode_batch_info() -> dict[str, np.ndarray]:
    """img_id, bbox_downsample_ratio (original size / feature size) and the files' P2 of the batch."""
    ratio = IMAGE_SIZE / (GRID_W, GRID_H)
    return {"img_id": np.array([7, 8]), "bbox_downsample_ratio": np.stack([ratio, ratio]), "P2": _calibs()}


def checksum(arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 over the sorted arrays' names, dtypes, shapes and bytes."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}{a.dtype}{a.shape}".encode())
        digest.update(a.tobytes())
    return digest.hexdigest()


def _decode_fixture(model_type: str, ref: Path) -> dict[str, np.ndarray]:
    outputs = decode_inputs(model_type)
    inputs = {f"out/{k}": v for k, v in outputs.items()} | decode_batch_info()
    inputs |= {"K": np.array(K), "threshold": np.array(THRESHOLD), "mean_size": MEAN_SIZE}
    result = run_reference(f"decode_{model_type}", ref, inputs)
    return result | {"inputs_checksum": np.array(checksum(outputs))}


def generate(refs: dict[str, Path | None], out_dir: Path) -> list[Path]:
    """Write every fixture whose reference checkout is given (module docstring); return the paths.

    Args:
        refs: checkout roots by key: ``gupnet`` (SuperMHP/GUPNet root), ``monoskd``
            (Senwang98/MonoSKD); ``did`` and ``monodistill`` are not used here (MonoSKD's decode
            and wrappers are the DID-M3D ones it trained with).
        out_dir: tests/fixtures/parity.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    gupnet = Path(refs["gupnet"]) / "code" if refs.get("gupnet") else None
    monoskd = Path(refs["monoskd"]) if refs.get("monoskd") else None
    written: list[Path] = []
    if gupnet is not None and monoskd is not None:
        losses = htl_history()
        weights = {
            k: run_reference("htl", ref, {"losses": losses})["weights"]
            for k, ref in (("gupnet", gupnet), ("monoskd", monoskd))
        }
        path = out_dir / "schedule_decode_htl.npz"
        np.savez(
            path, losses=losses, terms=np.array(HTL_TERMS), **{f"weights_{k}": v for k, v in weights.items()}
        )
        written.append(path)
    schedules: dict[str, list[float]] = {}
    for key, ref in (("gupnet", gupnet), ("monoskd", monoskd)):
        if ref is not None:
            out = run_reference("lr", ref, {"configs": np.array(LR_CONFIGS[key])})
            schedules |= {f"{key}:{name[len('lr/') :]}": out[name].tolist() for name in sorted(out)}
    if schedules:
        written.append(_write_json(out_dir / "schedule_decode_lr.json", schedules))
        configs = {}  # the reference config files themselves (plain values), for the config test
        for key, ref in (("gupnet", gupnet), ("monoskd", monoskd)):
            for name in LR_CONFIGS[key] if ref is not None else ():
                configs[f"{key}:{name}"] = yaml.safe_load((ref / name).read_text())
        written.append(_write_json(out_dir / "schedule_decode_configs.json", configs))
    for model_type, ref in (("gupnet", gupnet), ("did", monoskd)):
        if ref is not None:
            path = out_dir / f"schedule_decode_{model_type}.npz"
            np.savez(path, **_decode_fixture(model_type, ref))
            written.append(path)
    layouts = {}
    for models, ref in ((["gupnet"], gupnet), (["did", *SKD_WRAPPERS], monoskd)):
        if ref is not None:
            inputs = {"models": np.array(models), "mean_size": MEAN_SIZE}
            inputs |= {f"kd_type/{k}": np.array(v) for k, v in SKD_WRAPPERS.items()}
            out = run_reference("state_keys", ref, inputs)
            for name in models:
                layouts[name] = {
                    "keys": out[f"keys/{name}"].tolist(),
                    "shapes": out[f"shapes/{name}"].tolist(),
                }
    if layouts:
        written.append(_write_json(out_dir / "schedule_decode_state_keys.json", layouts))
    return written


def _write_json(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data, indent=0) + "\n")
    return path
