"""tools/plot_run.py on a toy run folder: the series it reads, the PNG it writes, its errors."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.image
import pytest

from lib.errors import run_cli
from tools.plot_run import ap_series, loss_series, lr_series, main, read_jsonl


def _write_jsonl(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """Two epochs of two logged steps each, and evaluations after epochs 1 and 2."""
    train = []
    for epoch, lr in ((1, 1e-3), (2, 1e-4)):
        for step in (0, 1):
            seg = 1.0 / (epoch + step)
            train.append({"type": "step", "epoch": epoch, "step": step, "iteration": 2 * epoch + step,
                          "lr": lr, "loss": seg + 0.5, "seg": seg, "depth": 0.5})  # fmt: skip
        train.append(
            {"type": "epoch", "epoch": epoch, "lr": lr, "seconds": 3.0, "seg": 0.9 / epoch, "depth": 0.5}
        )
    _write_jsonl(tmp_path / "train.jsonl", train)
    ap = {"Car": {"3d": {"easy": 1.0, "moderate": 2.0, "hard": 3.0}, "aos": None}}
    evals = [
        {"epoch": e, "iteration": 2 * e, "car_3d_moderate_ap40": 2.0 * e, "ap40": ap, "ap11": ap}
        for e in (1, 2)
    ]
    evals[1]["ap40"] = {"Car": {"3d": {"easy": 5.0, "moderate": 7.5, "hard": 9.0}, "aos": None}}
    _write_jsonl(tmp_path / "eval.jsonl", evals)
    return tmp_path


def test_series_from_the_logs(run_dir):
    train = read_jsonl(run_dir / "train.jsonl")
    steps, epochs = loss_series(train)
    assert sorted(steps) == ["depth", "loss", "seg"] and sorted(epochs) == ["depth", "seg"]
    assert steps["seg"] == ([0.5, 1.0, 1.5, 2.0], [1.0, 0.5, 0.5, 1.0 / 3])
    assert epochs["seg"] == ([1.0, 2.0], [0.9, 0.45])
    assert lr_series(train) == ([0.0, 1.0], [1e-3, 1e-4])
    assert ap_series(read_jsonl(run_dir / "eval.jsonl")) == {"Car 3d": ([1.0, 2.0], [2.0, 7.5])}
    # -e of a checkpoint without an epoch (a reference download) is in the metrics, not on the x axis
    external = {
        "type": "test",
        "epoch": None,
        "checkpoint": "gupnet.pth",
        "ap40": {"Car": {"3d": {"moderate": 9.0}}},
    }
    assert ap_series([*read_jsonl(run_dir / "eval.jsonl"), external]) == {"Car 3d": ([1.0, 2.0], [2.0, 7.5])}


def test_png_has_a_panel_per_term_plus_lr_and_ap(run_dir, capsys):
    assert main([str(run_dir)]) == 0
    out = run_dir / "curves.png"
    assert capsys.readouterr().out.strip() == str(out)
    image = matplotlib.image.imread(out)
    # 3 loss panels + lr + AP = 5 panels: 3 columns x 2 rows of 4.2 x 3.0 inches at 110 dpi.
    assert image.shape[:2] == (660, 1386)
    (run_dir / "eval.jsonl").unlink()  # no evaluation yet: 4 panels, still 2 rows
    assert main([str(run_dir), "--out", str(run_dir / "sub" / "no_eval.png")]) == 0
    assert matplotlib.image.imread(run_dir / "sub" / "no_eval.png").shape[:2] == (660, 1386)


def test_errors_name_the_file(tmp_path, capsys):
    assert run_cli(main, [str(tmp_path)]) == 2
    assert f"{tmp_path / 'train.jsonl'}: not found" in capsys.readouterr().err
    (tmp_path / "train.jsonl").write_text('{"type": "epoch", "epoch": 1}\n{broken\n')
    assert run_cli(main, [str(tmp_path)]) == 2
    assert "train.jsonl: line 2 is not JSON" in capsys.readouterr().err
    (tmp_path / "train.jsonl").write_text('{"type": "epoch", "epoch": 1, "lr": 0.1}\n')
    assert run_cli(main, [str(tmp_path)]) == 2
    assert "no loss records" in capsys.readouterr().err
