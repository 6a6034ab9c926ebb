"""Inference on a split, KITTI result files, and the AP40/AP11 evaluation (docs/reference.md §4).

:func:`predict_split` runs the detector (eval mode, top-K peaks, fp32 as GUPNet) over a loader
and decodes KITTI objects with the files' calibration; :func:`write_results` writes one
``NNNNNN.txt`` per frame (an empty file when nothing is kept, so every frame is scored);
:func:`evaluate_results` scores a result folder against ``label_2`` with our KITTI evaluator
(``lib/eval``) on EVERY frame of the split (GUPNet and MonoSKD score only frames with a result
file, docs/reference.md §4, §9.6) and analyses its errors (:mod:`lib.eval.error_analysis`: recall and
box errors per distance bin). :func:`format_markdown` and :func:`save_reports` give the table
that the CLI prints and stores.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from lib.constants import EVAL_CLASSES
from lib.datasets.kitti_io import SCORE_DECIMALS, Object3d
from lib.decode import decode_detections, write_kitti_results
from lib.engine.dist import move_to_device
from lib.eval import evaluate
from lib.eval.error_analysis import analyse_errors, format_error_table
from lib.eval.kitti_eval import DIFFICULTIES, METRICS
from lib.eval.kitti_format import load_labels, load_results
from lib.eval.report import format_table
from lib.models.build import DETECTORS

logger = logging.getLogger(__name__)

RESULT_SUBDIR = "data"  # <run>/results/<split>/data/NNNNNN.txt, the devkit's layout
KEY_CLASS, KEY_METRIC, KEY_DIFFICULTY = "Car", "3d", "moderate"  # best.pth criterion


@torch.no_grad()
def predict_split(
    detector: nn.Module,
    loader: torch.utils.data.DataLoader,
    *,
    device: torch.device,
    topk: int = 50,
    threshold: float = 0.2,
    backprojection: str = "exact",
    progress: bool = True,
) -> dict[int, list[Object3d]]:
    """Detections of every frame of ``loader.dataset`` (a ``KittiDataset``), keyed by frame id.

    The detector reads ``batch[detector.input_key]`` and keeps its top-``topk`` peaks; decoding
    back-projects with the frame's calib file (``backprojection``, lib/decode.py) and applies
    ``threshold`` with the rule of the detector's model type (lib/decode.py ``THRESHOLD_ON``).
    The detector's train/eval mode is restored afterwards.
    """
    dataset = loader.dataset
    model_type = model_type_of(detector)
    was_training = detector.training
    detector.eval()
    results: dict[int, list[Object3d]] = {}
    for batch in tqdm(loader, desc=f"inference {dataset.split}", disable=not progress):
        ids = [int(i) for i in torch.as_tensor(batch["info"]["img_id"]).tolist()]
        batch = move_to_device(batch, device)
        preds = detector(
            batch[detector.input_key], calib=batch["calib"], coord_range=batch["coord_range"], topk=topk
        )
        calib = np.stack([dataset.get_calib(i).P2 for i in ids])  # (B, 3, 4) the files' P2
        detections = decode_detections(
            preds,
            calib=calib,
            coord_range=batch["coord_range"],
            model_type=model_type,
            threshold=threshold,
            backprojection=backprojection,
        )
        results.update(zip(ids, detections, strict=True))
    detector.train(was_training)
    return results


def model_type_of(detector: nn.Module) -> str:
    """The ``model.type`` name of a detector instance (lib/models/build.py ``DETECTORS``)."""
    for name, cls in DETECTORS.items():
        if isinstance(detector, cls):
            return name
    raise TypeError(f"{type(detector).__name__} is none of the detectors {', '.join(DETECTORS)}")


def write_results(
    result_dir: str | Path, results: Mapping[int, list[Object3d]], *, score_decimals: int = SCORE_DECIMALS
) -> Path:
    """Write KITTI result files into ``result_dir/data`` (old ``.txt`` files there are removed)."""
    data_dir = Path(result_dir) / RESULT_SUBDIR
    data_dir.mkdir(parents=True, exist_ok=True)
    for old in data_dir.glob("*.txt"):
        old.unlink()
    ids = sorted(results)
    write_kitti_results(data_dir, ids, [results[i] for i in ids], score_decimals=score_decimals)
    return data_dir


def evaluate_results(
    label_dir: str | Path, result_dir: str | Path, frame_ids: Sequence[int], *, classes: Sequence[str]
) -> tuple[dict[str, dict], dict[str, Any]]:
    """KITTI AP40 and AP11 of a result folder over ``frame_ids`` (every frame of the split), and
    the error analysis of the same detections.

    Args:
        label_dir: the split's ``label_2`` folder; result_dir: ``.../data`` or its parent.
        classes: classes to score (those trained: the config's writelist).

    Returns:
        ``{"ap40": report, "ap11": report}`` of :func:`lib.eval.evaluate`, and the report of
        :func:`lib.eval.error_analysis.analyse_errors` (Moderate ground truth).
    """
    classes = [c for c in EVAL_CLASSES if c in classes]
    if not classes:
        raise ValueError(f"no evaluable class in {list(classes)} (the evaluator knows {EVAL_CLASSES})")
    gt = load_labels(label_dir, frame_ids)
    det = load_results(result_dir, frame_ids)
    return evaluate(gt, det, classes), analyse_errors(gt, det, classes=classes)


def key_metric(reports: Mapping[str, Any]) -> float:
    """Car 3D Moderate AP40 (the best-checkpoint criterion); 0 when Car was not evaluated or
    had no 3D detections."""
    table = reports["ap40"]["ap"].get(KEY_CLASS) or {}
    values = table.get(KEY_METRIC)
    return float(values[KEY_DIFFICULTY]) if values else 0.0


def ap_summary(reports: Mapping[str, Any]) -> dict[str, Any]:
    """The AP numbers only (no precision curves): {mode: class -> metric -> difficulty -> AP}."""
    return {mode: report["ap"] for mode, report in reports.items()}


def format_markdown(reports: Mapping[str, Any]) -> str:
    """A markdown table per AP mode: one row per class and metric, Easy / Mod / Hard columns."""
    lines = []
    for mode, report in reports.items():
        lines += [
            f"### {mode.upper()}",
            "",
            "| class | metric | Easy | Mod | Hard |",
            "|---|---|---|---|---|",
        ]
        for name, metrics in report["ap"].items():
            for metric in METRICS:
                values = metrics.get(metric)
                cells = [f"{values[d]:.2f}" if values else "-" for d in DIFFICULTIES]
                lines.append(f"| {name} | {metric} | {' | '.join(cells)} |")
        lines.append("")
    return "\n".join(lines)


def save_reports(out_dir: str | Path, reports: Mapping[str, Any]) -> tuple[Path, Path]:
    """Write ``ap.json`` (full reports) and ``ap.md`` (:func:`format_markdown`) into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / "ap.json", out_dir / "ap.md"
    json_path.write_text(json.dumps(reports, indent=1) + "\n")
    md_path.write_text(format_markdown(reports))
    return json_path, md_path


def run_test(
    detector: nn.Module,
    loader: torch.utils.data.DataLoader,
    *,
    out_dir: str | Path,
    device: torch.device,
    classes: Sequence[str],
    topk: int = 50,
    threshold: float = 0.2,
    backprojection: str = "exact",
    score_decimals: int = SCORE_DECIMALS,
    progress: bool = True,
) -> dict[str, dict] | None:
    """Predict a split, write its result files under ``out_dir/data`` and, for labelled splits,
    evaluate them and save ``ap.json`` / ``ap.md`` and ``error_analysis.json`` in ``out_dir``.

    Returns:
        The evaluator's reports, or None for a split without labels (KITTI test).
    """
    dataset = loader.dataset
    results = predict_split(
        detector,
        loader,
        device=device,
        topk=topk,
        threshold=threshold,
        backprojection=backprojection,
        progress=progress,
    )
    data_dir = write_results(out_dir, results, score_decimals=score_decimals)
    logger.info("wrote %d result files to %s", len(results), data_dir)
    if not dataset.has_labels:
        return None
    label_dir = dataset.data_dir / "label_2"
    reports, errors = evaluate_results(label_dir, data_dir, dataset.frame_ids, classes=classes)
    save_reports(out_dir, reports)
    (Path(out_dir) / "error_analysis.json").write_text(json.dumps(errors, indent=1) + "\n")
    logger.info("KITTI evaluation of %s (%d frames):\n%s", dataset.split, len(dataset), format_table(reports))
    logger.info("%s", format_error_table(errors).rstrip())
    return reports
