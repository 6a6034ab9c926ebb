"""Test a detector on a split: predict -> decode -> write -> evaluate -> report (docs/reference.md, 'Decoding
and testing').

The tester only orchestrates; each step lives elsewhere:

* :func:`predict_split` runs the detector (eval mode, top-K peaks, fp32 as GUPNet) over a loader
  and decodes KITTI objects with the files' calibration (:func:`lib.decode.decode_detections`);
* :func:`lib.eval.kitti_format.write_results` writes one ``NNNNNN.txt`` per frame into
  ``<out_dir>/data/`` (an empty file when nothing is kept, so every frame is scored);
* :func:`evaluate_results` scores the folder against ``label_2`` with our KITTI evaluator
  (``lib/eval``) on EVERY frame of the split (GUPNet and MonoSKD score only frames with a result
  file, docs/reference.md, 'Decoding and testing' and 'Known bugs and quirks: Dropped val frames') and
  analyses its errors (:mod:`lib.eval.error_analysis`);
* :mod:`lib.eval.report` writes ``ap.json``, ``ap.md``, ``error_analysis.json`` and the logged tables.

:class:`TesterSettings` is the one parse of the config's ``tester:`` section (its defaults live in
configs/base.yaml).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from lib.config import ConfigError, section_settings
from lib.constants import EVAL_CLASSES
from lib.decode import check_result_options, decode_detections
from lib.engine.dist import move_to_device
from lib.eval.error_analysis import analyse_errors
from lib.eval.kitti_eval import evaluate
from lib.eval.kitti_format import load_labels, load_results, write_results
from lib.eval.report import format_error_table, format_table, write_reports
from lib.kitti_io import Object3d

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TesterSettings:
    """The ``tester:`` section (configs/base.yaml documents each key and holds its default).

    Attributes:
        split: the split ``-e`` evaluates (or predicts, for ``test``).
        checkpoint: the checkpoint ``-e`` loads (None: the run's best.pth, else last.pth).
        threshold: minimal score (gupnet) or heatmap peak (did) kept (lib/decode.py ``THRESHOLD_ON``).
        topk: heatmap peaks per image.
        score_decimals: decimals of the score in result files.
        backprojection: ``exact`` or ``reference`` (lib/decode.py ``BACKPROJECTIONS``).
    """

    split: str
    checkpoint: str | None
    threshold: float
    topk: int
    score_decimals: int
    backprojection: str

    def __post_init__(self) -> None:
        if not self.split:
            raise ConfigError("tester.split: empty split name")
        if isinstance(self.topk, bool) or not isinstance(self.topk, int) or self.topk < 1:
            raise ConfigError(f"tester.topk must be an integer >= 1, got {self.topk!r}")
        if not math.isfinite(self.threshold):
            raise ConfigError(f"tester.threshold must be a finite number, got {self.threshold!r}")
        check_result_options(self.backprojection, self.score_decimals)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> TesterSettings:
        """The settings of a resolved config (raises ConfigError naming ``tester.<key>``)."""
        return section_settings(cls, cfg["tester"], name="tester")


@torch.no_grad()
def predict_split(
    detector: nn.Module,
    loader: torch.utils.data.DataLoader,
    *,
    device: torch.device,
    topk: int,
    threshold: float,
    backprojection: str,
    progress: bool = True,
) -> dict[int, list[Object3d]]:
    """Detections of every frame of ``loader.dataset`` (a ``KittiDataset``), keyed by frame id.

    The detector reads ``batch[detector.input_key]`` and keeps its top-``topk`` peaks; decoding
    back-projects with the frame's calib file (``backprojection``, lib/decode.py) and applies
    ``threshold`` with the rule of the detector's ``model_type`` (lib/decode.py ``THRESHOLD_ON``).
    The detector's train/eval mode is restored afterwards.
    """
    dataset = loader.dataset
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
            model_type=detector.model_type,
            threshold=threshold,
            backprojection=backprojection,
        )
        results.update(zip(ids, detections, strict=True))
    detector.train(was_training)
    return results


def evaluate_results(
    label_dir: str | Path, result_dir: str | Path, frame_ids: Sequence[int], *, classes: Sequence[str]
) -> tuple[dict[str, dict], dict[str, Any]]:
    """KITTI AP40 and AP11 of a result folder over ``frame_ids`` (every frame of the split), and
    the error analysis of the same detections.

    Args:
        label_dir: the split's ``label_2`` folder; result_dir: ``.../data`` or its parent.
        classes: classes to score (those trained: the config's writelist).

    Returns:
        ``{"ap40": report, "ap11": report}`` of :func:`lib.eval.kitti_eval.evaluate`, and the report of
        :func:`lib.eval.error_analysis.analyse_errors` (Moderate ground truth).
    """
    classes = [c for c in EVAL_CLASSES if c in classes]
    if not classes:
        raise ValueError(f"no evaluable class in {list(classes)} (the evaluator knows {EVAL_CLASSES})")
    gt = load_labels(label_dir, frame_ids)
    det = load_results(result_dir, frame_ids)
    return evaluate(gt, det, classes), analyse_errors(gt, det, classes=classes)


def run_test(
    detector: nn.Module,
    loader: torch.utils.data.DataLoader,
    *,
    out_dir: str | Path,
    device: torch.device,
    classes: Sequence[str],
    settings: TesterSettings,
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
        topk=settings.topk,
        threshold=settings.threshold,
        backprojection=settings.backprojection,
        progress=progress,
    )
    data_dir = write_results(out_dir, results, score_decimals=settings.score_decimals)
    logger.info("wrote %d result files to %s", len(results), data_dir)
    if not dataset.has_labels:
        return None
    label_dir = dataset.data_dir / "label_2"
    reports, errors = evaluate_results(label_dir, data_dir, dataset.frame_ids, classes=classes)
    write_reports(out_dir, reports, errors)
    logger.info("KITTI evaluation of %s (%d frames):\n%s", dataset.split, len(dataset), format_table(reports))
    logger.info("%s", format_error_table(errors).rstrip())
    return reports
