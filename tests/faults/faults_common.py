"""Checks every fault test makes: exit status, the one-line message, nothing lost or changed."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from lib.errors import run_cli

REPO_ROOT = Path(__file__).resolve().parents[2]
TINY_BASE = REPO_ROOT / "tests" / "configs" / "tiny.yaml"  # tiny network and data of the CLI tests
# 8 train + 2 val frames of 128x48 pixels; the network sees 128x64 (resnet18, 16-channel heads).
TINY_CONFIG = """\
_base_: {base}
experiment:
  seed: 3
dataset:
  root_dir: {data}
trainer:
  max_epoch: 1
  max_iters_per_epoch: 1
  save_frequency: 1
  log_interval: 1
  htl_init_pass: false
"""


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` (relative path → sha1 of its bytes)."""
    return {
        str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def assert_kept(before: dict[str, str], root: Path) -> None:
    """No file of ``before`` was removed or changed (new files, e.g. logs, may appear)."""
    after = snapshot(root)
    lost = sorted(k for k in before if k not in after)
    changed = sorted(k for k in before if k in after and after[k] != before[k])
    assert not lost and not changed, f"lost {lost}, changed {changed}"


def cli(main: Callable, argv: Sequence[object], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    """Run a CLI ``main`` as its ``__main__`` does; (exit status, stderr). Never a traceback."""
    code, _, err = cli_out(main, argv, capsys)
    return code, err


def cli_out(main: Callable, argv: Sequence[object], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    """:func:`cli` that also returns stdout: (exit status, stdout, stderr)."""
    code = run_cli(main, [str(a) for a in argv])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.out, captured.err


def error_line(err: str) -> str:
    """The one ``error: ...`` line of a CLI's stderr (log lines may precede it)."""
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    return lines[0]


def detector_checkpoint(
    path: Path, config: Path, overrides: Sequence[str] = (), *, task: str = "detector"
) -> Path:
    """A training-like checkpoint of the (untrained) detector of ``config`` + ``overrides``, with
    that config stored in it."""
    import torch

    from lib.config import load_config
    from lib.depth_bins import RpdSettings
    from lib.models.build import ModelSettings, build_detector

    cfg = load_config(config, list(overrides))
    model = replace(ModelSettings.from_config(cfg), pretrained=False)
    state = build_detector(model, RpdSettings.from_config(cfg)).state_dict()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model_state": state, "task": task, "epoch": 1, "config": cfg.to_dict()}, path)
    return path
