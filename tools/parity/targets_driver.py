"""Run a reference repository's KITTI dataset on fixed augmentation draws and dump every sample.

Run by tools/parity/data_targets.py in a child process whose working directory and first
``sys.path`` entry are a reference checkout (GUPNet's ``code/`` or MonoSKD's root), so that
``import lib`` is the reference's package (ours has the same name). Nothing of ours is imported.

    python targets_driver.py KIND REF_DIR SPEC.json OUT_DIR

KIND is ``gupnet`` (GUPNet's ``lib/datasets/kitti.py``, 3 classes, no depth), ``monoskd``
(MonoSKD's DID-M3D dataset: Car, 7x7 RoI depth targets, the teacher's depth input) or ``did``
(DID-M3D's own dataset: the same targets, no colour aug, no teacher input). SPEC holds
``root`` (a tree with ``KITTI/ImageSets/train.txt`` and ``KITTI/training/...``) and ``cases``:
``{"name", "index", "flip", "crop"}`` with ``crop`` null or the three standard-normal draws
(scale, shift x, shift y). The reference draws its augmentation from the global
``np.random.random`` / ``np.random.randn``; both are replaced by scripted draws that take the
flip branch when ``flip``, the crop branch when ``crop`` is set, and return its draws.
MonoSKD's colour augmentation (``random.shuffle`` of its three operations, then its own
``RandomState``) is a no-op unless the case has ``color`` = {"order": the operations'
indices in brightness, contrast, saturation numbering, "uniform": 3 factor draws, "normal": 3
lighting draws}; then the shuffle and the RandomState return those. A case with
``class_merging`` true runs a dataset with GUPNet's class_merging on. Each case is written to
``OUT_DIR/<name>.npz`` (the input image, P2, coord_range, info and every target, uncompressed;
data_targets.py reduces them).

Run-time shims, never edits of the reference files: ``matplotlib`` (imported, never used) gets
an empty stand-in module; ``np.bool`` (removed in NumPy 1.24, used by MonoSKD) is ``bool``.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np

KINDS = ("gupnet", "monoskd", "did")


def _enter_reference(ref_dir: Path) -> types.ModuleType:
    """Import the reference's ``lib.datasets.kitti`` with the shims installed."""
    sys.path.insert(0, str(ref_dir))
    for name in ("matplotlib", "matplotlib.pyplot"):
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules["matplotlib"].pyplot = sys.modules["matplotlib.pyplot"]
    if "bool" not in np.__dict__:
        np.bool = bool
    import lib.datasets.kitti as kitti

    origin = Path(kitti.__file__).resolve()
    if ref_dir.resolve() not in origin.parents:
        raise RuntimeError(f"'lib' resolves to {origin}, not to the reference checkout {ref_dir}")
    return kitti


class ScriptedDraws:
    """Stand-in for ``np.random.random`` / ``np.random.randn``: returns the scripted values."""

    def __init__(self) -> None:
        self.values: list[float] = []

    def __call__(self, *shape: int) -> float:
        if shape:
            raise RuntimeError(f"the reference asked for an array draw {shape}; only scalars are scripted")
        if not self.values:
            raise RuntimeError("the reference drew more random numbers than scripted")
        return self.values.pop(0)


class ScriptedColourDraws:
    """Stand-in for MonoSKD's colour RandomState (``uniform``, ``normal``) and ``random.shuffle``."""

    def __init__(self, color: dict) -> None:
        self.order = list(color["order"])
        self.uniform_values = list(color["uniform"])
        self.normal_values = list(color["normal"])

    def shuffle(self, items: list) -> None:
        items[:] = [items[i] for i in self.order]

    def uniform(self, low: float, high: float) -> float:
        value = self.uniform_values.pop(0)
        if not low <= value <= high:
            raise RuntimeError(f"scripted uniform draw {value} outside [{low}, {high}]")
        return value

    def normal(self, scale: float, size: tuple[int, ...]) -> np.ndarray:
        return np.array(self.normal_values, dtype=np.float64).reshape(size)


def _script_colour(kitti: types.ModuleType, dataset: object, original, color: dict | None) -> None:
    """Make the colour augmentation a no-op, or make it take the scripted draws of ``color``."""
    if color is None:
        kitti.color_aug = lambda *args, **kwargs: None
        return
    draws = ScriptedColourDraws(color)
    kitti.color_aug = original
    sys.modules[original.__module__].random = types.SimpleNamespace(shuffle=draws.shuffle)
    dataset._data_rng = draws


def _config(kind: str, root: Path, class_merging: bool = False) -> dict:
    """The reference's dataset config (GUPNet experiments/config.yaml, MonoSKD configs/*.yaml)."""
    cfg = {
        "random_flip": 0.5,
        "random_crop": 0.5,
        "scale": 0.4,
        "shift": 0.1,
        "use_dontcare": False,
        "class_merging": class_merging,
        "use_3d_center": True,
        "writelist": ["Car", "Pedestrian", "Cyclist"],
    }
    if kind in ("monoskd", "did"):
        cfg.update(
            writelist=["Car"],
            data_dir="KITTI",
            dense_depth_dir=str(root / "KITTI" / "training" / "depth_dense"),
        )
    return cfg


def _flatten(sample: tuple) -> dict[str, np.ndarray]:
    """(inputs, P2, coord_range, targets, info) → one flat dict of arrays."""
    inputs, P2, coord_range, targets, info = sample
    out = {"calib": np.asarray(P2), "coord_range": np.asarray(coord_range)}
    if isinstance(inputs, dict):
        out["rgb"] = inputs["rgb"]
        out["depth"] = inputs["depth"]
    else:
        out["rgb"] = inputs
    out["img_size"] = np.asarray(info["img_size"])
    out["bbox_downsample_ratio"] = np.asarray(info["bbox_downsample_ratio"])
    for key, value in targets.items():
        out[f"t_{key}"] = np.asarray(value)
    return {k: np.ascontiguousarray(v) for k, v in out.items()}


def run(kind: str, ref_dir: Path, spec_path: Path, out_dir: Path) -> None:
    """Dump every case of the spec (module docstring)."""
    if kind not in KINDS:
        raise SystemExit(f"KIND must be one of {KINDS}, got {kind!r}")
    spec = json.loads(spec_path.read_text())
    root = Path(spec["root"])
    kitti = _enter_reference(ref_dir)
    original_colour = getattr(kitti, "color_aug", None)
    uniform, normal = ScriptedDraws(), ScriptedDraws()
    np.random.random, np.random.randn = uniform, normal
    datasets = {merge: kitti.KITTI(str(root), "train", _config(kind, root, merge)) for merge in (False, True)}
    out_dir.mkdir(parents=True, exist_ok=True)
    for case in spec["cases"]:
        dataset = datasets[bool(case.get("class_merging"))]
        uniform.values = [0.0 if case["flip"] else 1.0, 0.0 if case["crop"] else 1.0]
        normal.values = list(case["crop"] or [])
        if kind == "monoskd":
            _script_colour(kitti, dataset, original_colour, case.get("color"))
        sample = _flatten(dataset[case["index"]])
        if uniform.values or normal.values:
            raise RuntimeError(f"case {case['name']}: scripted draws left unused")
        np.savez(out_dir / f"{case['name']}.npz", **sample)


if __name__ == "__main__":
    if len(sys.argv) != 5:
        raise SystemExit(__doc__)
    run(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]))
