"""A run folder as a model-zoo entry: how it was made, what its checkpoints are, what they scored.

Beside ``config.yaml``, ``checkpoints/`` and the logs, a run folder holds

* ``run.json``: every command that trained or evaluated in it (argv, working folder, git commit
  and whether the tree had local changes, UTC time) and the environment of the latest one
  (Python, torch, CUDA / cuDNN, GPUs, CPU cores, processes);
* ``checkpoints/SHA256SUMS``: a sha256 per checkpoint, in ``sha256sum`` format
  (``cd checkpoints && sha256sum -c SHA256SUMS`` checks a copy);
* ``metrics.json``: every evaluation, during training and by ``-e``, as ``eval.jsonl`` records them;
* ``MODEL.md``: a short card with the commands, the checkpoints with their sums, and the last
  scores.

``-e`` writes its result files and reports under ``results/<split>/<checkpoint stem>-<first 8 hex
of its sha256>/`` (lib/eval/kitti_format.py ``checkpoint_result_dir``), so evaluating another
checkpoint, or the same file after it changed, never replaces earlier results.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from lib.engine.checkpoint import git_sha
from lib.utils.files import atomic_write_text, sha256_file
from lib.utils.logging import read_jsonl

RUN_JSON = "run.json"
METRICS_JSON = "metrics.json"
MODEL_CARD = "MODEL.md"
SUMS_FILE = "SHA256SUMS"  # in checkpoints/
EVAL_JSONL = "eval.jsonl"


def environment() -> dict[str, Any]:
    """The software and hardware a command ran on."""
    cuda = torch.cuda.is_available()
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
        "cpu_cores": os.cpu_count(),
        "platform": platform.platform(),
        "processes": int(os.environ.get("WORLD_SIZE", "1")),
    }


def _tree_changed(repo_dir: Path) -> bool | None:
    """Whether the git tree has uncommitted changes (None outside git)."""
    try:
        out = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo_dir, capture_output=True, text=True, timeout=10, check=True,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return bool(out.stdout.strip())


def record_command(run_dir: str | Path, argv: Sequence[str] | None = None) -> Path:
    """Append the running command to ``<run>/run.json`` with the git commit and the environment."""
    run_dir = Path(run_dir)
    repo = Path(__file__).resolve().parents[2]
    path = run_dir / RUN_JSON
    record = json.loads(path.read_text()) if path.is_file() else {"commands": []}
    record["commands"].append(
        {
            "command": shlex.join([Path(sys.executable).name, *(sys.argv if argv is None else argv)]),
            "cwd": os.getcwd(),
            "git_sha": git_sha(repo),
            "git_changes": _tree_changed(repo),
            "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
    )
    record["environment"] = environment()
    atomic_write_text(path, json.dumps(record, indent=1) + "\n")
    return path


def evaluation_record(
    *, epoch: int | None, checkpoint: Path, split: str, result_dir: Path, score: float, aps: Mapping[str, Any]
) -> dict[str, Any]:
    """The ``eval.jsonl`` line of a ``-e`` evaluation, in the trainer's form (``epoch``,
    ``car_3d_moderate_ap40``, ``ap40``/``ap11`` class -> metric -> difficulty) plus what was evaluated."""
    return {
        "type": "test",
        "epoch": epoch,
        "checkpoint": str(checkpoint),
        "sha256": sha256_file(checkpoint),
        "split": split,
        "result_dir": str(result_dir),
        "car_3d_moderate_ap40": score,
        **aps,
    }


def append_evaluation(run_dir: str | Path, record: Mapping[str, Any]) -> None:
    """Append a ``-e`` record to ``<run>/eval.jsonl`` (tools/plot_run.py draws its AP at its epoch)."""
    with open(Path(run_dir) / EVAL_JSONL, "a") as f:
        f.write(json.dumps(record) + "\n")


def write_model_card(run_dir: str | Path) -> Path:
    """(Re)write ``checkpoints/SHA256SUMS``, ``metrics.json`` and ``MODEL.md`` of a run folder
    from what it holds now; returns the card's path."""
    run_dir = Path(run_dir)
    ckpt_dir = run_dir / "checkpoints"
    sums = {p.name: sha256_file(p) for p in sorted(ckpt_dir.glob("*.pth"))}
    if sums:
        atomic_write_text(ckpt_dir / SUMS_FILE, "".join(f"{s}  {name}\n" for name, s in sums.items()))
    evals = read_jsonl(run_dir / EVAL_JSONL) if (run_dir / EVAL_JSONL).is_file() else []
    atomic_write_text(run_dir / METRICS_JSON, json.dumps({"evaluations": evals}, indent=1) + "\n")
    run = json.loads((run_dir / RUN_JSON).read_text()) if (run_dir / RUN_JSON).is_file() else {}
    atomic_write_text(run_dir / MODEL_CARD, format_model_card(run_dir.name, run, sums, evals))
    return run_dir / MODEL_CARD


def format_model_card(
    name: str, run: Mapping[str, Any], sums: Mapping[str, str], evals: Sequence[Mapping[str, Any]]
) -> str:
    """The Markdown of ``MODEL.md``: commands, environment, checkpoints and the evaluations."""
    lines = [f"# {name}", "", "Config: `config.yaml` (resolved). Commands run in this folder:", ""]
    lines += [
        f"    {c['command']}    # git {c.get('git_sha') or '-'}, {c['time_utc']}"
        for c in run.get("commands", [])
    ]
    env = run.get("environment") or {}
    if env:
        gpus = ", ".join(env.get("gpus") or []) or "none"
        lines += ["", f"Environment: Python {env.get('python')}, torch {env.get('torch')}, "
                  f"CUDA {env.get('cuda')}, GPUs: {gpus}, {env.get('cpu_cores')} CPU cores."]  # fmt: skip
    lines += ["", "| checkpoint | sha256 |", "|---|---|"]
    lines += [f"| checkpoints/{n} | `{s}` |" for n, s in sums.items()]
    lines += ["", "| evaluation | epoch | Car 3D AP40 Mod | results |", "|---|---|---|---|"]
    for e in evals:
        kind = Path(e["checkpoint"]).name if e.get("type") == "test" else "during training"
        where = e.get("result_dir") or "results/"
        where = where.split(f"/{name}/", 1)[-1] if f"/{name}/" in where else where
        lines.append(f"| {kind} | {e.get('epoch')} | {e.get('car_3d_moderate_ap40', 0.0):.2f} | {where} |")
    lines += ["", "Check a copy of the checkpoints: `cd checkpoints && sha256sum -c SHA256SUMS`.", ""]
    return "\n".join(lines)
