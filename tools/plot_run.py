"""Plot a training run's curves: every loss term, the learning rate and the AP over epochs.

    python tools/plot_run.py outputs/demo/teacher              # writes outputs/demo/teacher/curves.png
    python tools/plot_run.py RUN_DIR --out figure.png

Reads ``train.jsonl`` (step records, drawn thin, and epoch means, drawn with markers; written by
lib/engine/trainer.py) and, if present, ``eval.jsonl`` (AP40 at Moderate of every evaluated class
and metric). One panel per loss term, one for the lr (log scale) and one for the AP; x is the
epoch (a step's x is its fraction of the epoch). Needs matplotlib (requirements.txt).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from lib.errors import UserError, run_cli
from lib.utils.files import atomic_path

EPOCH_KEYS = {"type", "epoch", "step", "iteration", "lr", "seconds"}  # train.jsonl fields that are no loss
AP_MODE, AP_DIFFICULTY = "ap40", "moderate"
Series = dict[str, tuple[list[float], list[float]]]  # label -> (x epochs, y)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of a JSON-lines file; a malformed line is an error naming file and line."""
    records = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"{path}: line {number} is not JSON ({err.msg})") from None
        if not isinstance(record, dict):
            raise UserError(f"{path}: line {number} is not a JSON object")
        records.append(record)
    return records


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def loss_series(records: list[dict[str, Any]]) -> tuple[Series, Series]:
    """Per loss term: (step values, epoch means), x in epochs.

    A step of epoch e (1-based) at 0-based index s of S logged steps lies at x = e - 1 + (s + 1) / S',
    S' = the largest logged step index + 1 of that epoch; an epoch mean lies at x = e.
    """
    steps = [r for r in records if r.get("type") == "step"]
    epochs = [r for r in records if r.get("type") == "epoch"]
    per_epoch = defaultdict(int)
    for r in steps:
        per_epoch[r["epoch"]] = max(per_epoch[r["epoch"]], int(r["step"]) + 1)
    step_series: Series = defaultdict(lambda: ([], []))
    for r in steps:
        x = r["epoch"] - 1 + (int(r["step"]) + 1) / per_epoch[r["epoch"]]
        for key, value in r.items():
            if key not in EPOCH_KEYS and (y := _number(value)) is not None:
                step_series[key][0].append(x)
                step_series[key][1].append(y)
    epoch_series: Series = defaultdict(lambda: ([], []))
    for r in epochs:
        for key, value in r.items():
            if key not in EPOCH_KEYS and (y := _number(value)) is not None:
                epoch_series[key][0].append(float(r["epoch"]))
                epoch_series[key][1].append(y)
    return dict(step_series), dict(epoch_series)


def lr_series(records: list[dict[str, Any]]) -> tuple[list[float], list[float]]:
    """The lr of each epoch (x = epoch index e - 1, where it applies) from the epoch records."""
    epochs = [r for r in records if r.get("type") == "epoch" and _number(r.get("lr")) is not None]
    return [float(r["epoch"] - 1) for r in epochs], [float(r["lr"]) for r in epochs]


def ap_series(records: list[dict[str, Any]]) -> Series:
    """AP40 Moderate per "class metric" over the epochs done at each evaluation (eval.jsonl: those
    during training and ``-e`` of a checkpoint that knows its epoch; an epoch-less one is left out)."""
    series: Series = defaultdict(lambda: ([], []))
    for r in records:
        if r.get("epoch") is None:
            continue
        for name, metrics in (r.get(AP_MODE) or {}).items():
            for metric, values in (metrics or {}).items():
                y = _number((values or {}).get(AP_DIFFICULTY))
                if y is not None:
                    series[f"{name} {metric}"][0].append(float(r["epoch"]))
                    series[f"{name} {metric}"][1].append(y)
    return dict(series)


def plot_run(run_dir: Path, out: Path) -> Path:
    """Draw the figure of ``run_dir`` into ``out`` (PNG, written atomically); returns ``out``."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    train_file = run_dir / "train.jsonl"
    if not train_file.is_file():
        raise UserError(f"{train_file}: not found (is {run_dir} a run folder of tools/train_val.py?)")
    records = read_jsonl(train_file)
    steps, epochs = loss_series(records)
    eval_file = run_dir / "eval.jsonl"
    aps = ap_series(read_jsonl(eval_file)) if eval_file.is_file() else {}
    terms = sorted(set(steps) | set(epochs), key=lambda k: (k != "loss", k))
    if not terms:
        raise UserError(f"{train_file}: no loss records (did the run train one logged step?)")
    panels = len(terms) + 1 + bool(aps)
    cols = min(3, panels)
    rows = math.ceil(panels / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    flat = list(axes.flat)
    for ax, term in zip(flat, terms, strict=False):
        if term in steps:
            ax.plot(*steps[term], lw=0.7, alpha=0.5, label="steps")
        if term in epochs:
            ax.plot(*epochs[term], "o-", ms=3, label="epoch mean")
        ax.set_title(term)
    ax = flat[len(terms)]
    x, y = lr_series(records)
    if x:  # each epoch's lr from its start to its end
        ax.step([*x, x[-1] + 1], [*y, y[-1]], where="post")
    ax.set_yscale("log")
    ax.set_title("learning rate")
    if aps:
        ax = flat[len(terms) + 1]
        for label, (x, y) in sorted(aps.items()):
            ax.plot(x, y, "o-", ms=3, label=label)
        ax.set_title(f"AP|R40 {AP_DIFFICULTY} (%)")
        ax.legend(fontsize=7)
    for ax in flat[:panels]:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    for ax in flat[panels:]:
        ax.set_visible(False)
    fig.suptitle(str(run_dir))
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a run folder (train.jsonl, eval.jsonl)")
    parser.add_argument("--out", type=Path, default=None, help="PNG to write (default RUN_DIR/curves.png)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = plot_run(args.run_dir, args.out or args.run_dir / "curves.png")
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
