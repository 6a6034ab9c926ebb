"""Benchmark of the KITTI evaluator on a synthetic set the size of KITTI val (3769 frames).

A seeded generator writes ``label_2/`` (Car ~70 %, Pedestrian ~14 %, Cyclist ~5 %, Van, Truck,
Person_sitting, Misc, plus DontCare regions) and ``pred/data/`` (about 5 detections per object:
jittered copies of the ground truth and false positives, 2-decimal scores as GUPNet writes them)
into a temporary folder. Then the whole ``tools/evaluate.py`` process (imports, file reading, the
3 classes x 4 metrics x AP40 + AP11, printing, JSON) is timed twice in fresh processes sharing a
fresh ``NUMBA_CACHE_DIR``: cold (numba compiles and fills the cache) and warm (cache hits). Last,
the in-process cost of a repeated :func:`evaluate` call (what the trainer pays per evaluation).

    python benchmarks/bench_eval.py [--frames 3769] [--seed 0] [--warm-runs 3]

Prints a markdown table row for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

# KITTI left colour camera (P2 of a typical calib file) and image size.
FOCAL, CU, CV = 721.54, 609.56, 172.85
IMAGE_W, IMAGE_H = 1242.0, 375.0

# Object classes: (name, share of non-DontCare objects, mean h, w, l in metres).
CLASS_MIX = (
    ("Car", 0.70, (1.53, 1.63, 3.88)),
    ("Pedestrian", 0.14, (1.76, 0.66, 0.84)),
    ("Cyclist", 0.05, (1.74, 0.60, 1.76)),
    ("Van", 0.06, (2.21, 1.90, 5.08)),
    ("Truck", 0.02, (3.25, 2.59, 10.1)),
    ("Person_sitting", 0.01, (1.27, 0.59, 0.80)),
    ("Misc", 0.02, (1.91, 1.51, 3.58)),
)
OBJECTS_PER_FRAME = 5.5  # Poisson mean, without DontCare
DONTCARE_PER_FRAME = 1.5
DETECTED_AS = {
    "Car": "Car",
    "Pedestrian": "Pedestrian",
    "Cyclist": "Cyclist",
    "Van": "Car",
    "Person_sitting": "Pedestrian",
}


def _project_boxes(dims: np.ndarray, loc: np.ndarray, ry: np.ndarray) -> np.ndarray:
    """(N, 4) image boxes x1, y1, x2, y2 of 3D boxes (h, w, l; bottom centre x, y, z; ry), clipped."""
    h, w, l = dims[:, 0:1], dims[:, 1:2], dims[:, 2:3]
    cx = np.array([1, 1, -1, -1, 1, 1, -1, -1]) * l / 2  # (N, 8) object frame
    cy = np.array([0, 0, 0, 0, -1, -1, -1, -1]) * h
    cz = np.array([1, -1, -1, 1, 1, -1, -1, 1]) * w / 2
    c, s = np.cos(ry)[:, None], np.sin(ry)[:, None]
    x = c * cx + s * cz + loc[:, 0:1]
    y = cy + loc[:, 1:2]
    z = np.maximum(-s * cx + c * cz + loc[:, 2:3], 0.5)
    u, v = FOCAL * x / z + CU, FOCAL * y / z + CV
    box = np.stack([u.min(1), v.min(1), u.max(1), v.max(1)], axis=1)
    return np.clip(box, 0.0, [IMAGE_W - 1, IMAGE_H - 1, IMAGE_W - 1, IMAGE_H - 1])


def _lines(names, trunc, occ, alpha, box, dims, loc, ry, score=None) -> str:
    """KITTI label lines (or result lines when ``score`` is given), 2 decimals as GUPNet writes them."""
    numbers = np.column_stack([alpha, box, dims, loc, ry] + ([] if score is None else [score]))
    return "".join(
        f"{name} {t:.2f} {o} " + " ".join(f"{v:.2f}" for v in row) + "\n"
        for name, t, o, row in zip(names, trunc, occ, numbers.tolist(), strict=True)
    )


def _random_objects(rng: np.random.Generator, n: int):
    """n ground-truth objects of one frame: names, dims, bottom-centre locations, ry."""
    shares = np.array([share for _, share, _ in CLASS_MIX])
    kinds = rng.choice(len(CLASS_MIX), size=n, p=shares / shares.sum())
    names = np.array([CLASS_MIX[k][0] for k in kinds], dtype=object)
    dims = np.array([CLASS_MIX[k][2] for k in kinds]).reshape(n, 3) * rng.normal(1.0, 0.08, (n, 3))
    z = rng.uniform(4.0, 60.0, n)
    loc = np.stack([rng.uniform(-0.55, 0.55, n) * z, rng.normal(1.65, 0.1, n), z], axis=1)
    ry = rng.uniform(-np.pi, np.pi, n)
    return names, dims, loc, ry


def generate_dataset(root: Path, num_frames: int, seed: int) -> tuple[Path, Path, Path]:
    """Write a KITTI-like label_2/, pred/data/ and ImageSets/val.txt under root; return their paths."""
    rng = np.random.default_rng(seed)
    label_dir, result_dir, split = root / "label_2", root / "pred" / "data", root / "ImageSets" / "val.txt"
    for d in (label_dir, result_dir, split.parent):
        d.mkdir(parents=True, exist_ok=True)
    frame_ids = np.sort(rng.choice(7481, size=num_frames, replace=False))
    split.write_text("".join(f"{i:06d}\n" for i in frame_ids))
    for frame_id in frame_ids:
        n = rng.poisson(OBJECTS_PER_FRAME)
        names, dims, loc, ry = _random_objects(rng, n)
        alpha = ry - np.arctan2(loc[:, 0], loc[:, 2])
        box = _project_boxes(dims, loc, ry)
        trunc = np.where(rng.random(n) < 0.8, 0.0, rng.uniform(0.0, 0.8, n))
        occ = rng.choice(4, size=n, p=[0.5, 0.3, 0.15, 0.05])
        n_dc = rng.poisson(DONTCARE_PER_FRAME)
        dc_xy = rng.uniform([0, 150], [1150, 200], (n_dc, 2))
        dc_box = np.concatenate([dc_xy, dc_xy + rng.uniform(10, 80, (n_dc, 2))], axis=1)
        gt_text = _lines(names, trunc, occ, alpha, box, dims, loc, ry) + "".join(
            f"DontCare -1 -1 -10 {b[0]:.2f} {b[1]:.2f} {b[2]:.2f} {b[3]:.2f} -1 -1 -1 -1000 -1000 -1000 -10\n"
            for b in dc_box
        )
        (label_dir / f"{frame_id:06d}.txt").write_text(gt_text)

        # Detections: 0-3 jittered copies of each detectable object, then false positives.
        src = np.array(
            [k for k in range(n) if names[k] in DETECTED_AS for _ in range(rng.poisson(1.8))], dtype=int
        )
        m = len(src)
        det_names = np.array([DETECTED_AS[names[k]] for k in src], dtype=object)
        noise = rng.normal(0.0, 1.0, m)
        det_dims = dims[src] * rng.normal(1.0, 0.05, (m, 3))
        det_loc = (
            loc[src]
            + rng.normal(0.0, 1.0, (m, 3)) * [0.3, 0.05, 0.0]
            + np.stack([np.zeros(m), np.zeros(m), noise * 0.04 * loc[src, 2]], axis=1)
        )
        det_ry = ry[src] + rng.normal(0.0, 0.2, m)
        det_box = box[src] + rng.normal(0.0, 4.0, (m, 4))
        det_score = np.clip(0.85 - 0.25 * np.abs(noise) + rng.normal(0.0, 0.08, m), 0.01, 0.99)
        n_fp = rng.poisson(3.2 * max(n, 1))
        fp_names, fp_dims, fp_loc, fp_ry = _random_objects(rng, n_fp)
        fp_names = np.array([DETECTED_AS.get(c, "Car") for c in fp_names], dtype=object)
        fp_box = _project_boxes(fp_dims, fp_loc, fp_ry)
        fp_score = rng.uniform(0.01, 0.6, n_fp)
        d_names = np.concatenate([det_names, fp_names])
        d_dims = np.concatenate([det_dims, fp_dims])
        d_loc = np.concatenate([det_loc, fp_loc])
        d_ry = np.concatenate([det_ry, fp_ry])
        d_box = np.concatenate([det_box, fp_box])
        d_score = np.concatenate([det_score, fp_score])
        d_alpha = d_ry - np.arctan2(d_loc[:, 0], d_loc[:, 2])
        order = rng.permutation(len(d_names))
        minus_one = np.full(len(d_names), -1)
        det_text = _lines(
            d_names[order], minus_one, minus_one, d_alpha[order], d_box[order], d_dims[order], d_loc[order],
            d_ry[order], d_score[order],
        )  # fmt: skip
        (result_dir / f"{frame_id:06d}.txt").write_text(det_text)
    return label_dir, result_dir.parent, split


def _time_cli(
    label_dir: Path, result_dir: Path, split: Path, json_out: Path, env: dict
) -> tuple[float, float]:
    """Wall-clock and CPU (user + sys, all threads) seconds of one tools/evaluate.py process."""
    cmd = [sys.executable, str(REPO / "tools" / "evaluate.py"), "--label-dir", str(label_dir)]
    cmd += ["--result-dir", str(result_dir), "--split", str(split), "--json", str(json_out)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=3769)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--warm-runs", type=int, default=5, help="warm CLI runs; median and best reported")
    args = parser.parse_args()

    from lib.eval.kitti_eval import evaluate
    from lib.eval.kitti_format import load_labels, load_results

    with tempfile.TemporaryDirectory(prefix="bench_eval_") as tmp:
        root = Path(tmp)
        label_dir, result_dir, split = generate_dataset(root / "data", args.frames, args.seed)
        env = dict(os.environ, NUMBA_CACHE_DIR=str(root / "numba_cache"))
        cold = _time_cli(label_dir, result_dir, split, root / "cold.json", env)
        warm = [
            _time_cli(label_dir, result_dir, split, root / "warm.json", env) for _ in range(args.warm_runs)
        ]

        frames = [int(s) for s in split.read_text().split()]
        start = time.perf_counter()
        gt, det = load_labels(label_dir, frames), load_results(result_dir, frames)
        load_s = time.perf_counter() - start
        evaluate(gt, det)  # compile / load from cache
        start = time.perf_counter()
        evaluate(gt, det)
        eval_s = time.perf_counter() - start

    cores = len(os.sched_getaffinity(0))
    warm_wall = statistics.median(w for w, _ in warm)
    warm_cpu = statistics.median(c for _, c in warm)
    header = ("frames", "GT objects", "detections", "cores", "cold CLI s (CPU s)", "warm CLI s (CPU s)")
    header += ("best warm CLI s", "load files s", "evaluate() s")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    print(
        f"| {args.frames} | {len(gt.table)} | {len(det.table)} | {cores} | {cold[0]:.2f} ({cold[1]:.2f}) | "
        f"{warm_wall:.2f} ({warm_cpu:.2f}) | {min(w for w, _ in warm):.2f} | {load_s:.2f} | {eval_s:.2f} |"
    )


if __name__ == "__main__":
    main()
