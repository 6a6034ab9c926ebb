"""tools/train_val.py end to end on a tiny synthetic set (CPU): kill + resume, evaluation,
export, and the clear-error paths. Runs in-process where it can (``main(argv)``) and in a
subprocess where the test needs a real process (SIGKILL, exit code, no traceback)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lib.config import load_config
from lib.datasets.synthetic import write_dataset
from lib.depth_bins import RpdSettings
from lib.errors import run_cli as run_main
from lib.eval.kitti_format import latest_result_dir
from lib.models.build import ModelSettings, build_detector
from lib.models.checkpoint_io import load_checkpoint, load_model_state
from lib.utils.files import current_umask, sha256_file
from lib.utils.logging import read_jsonl
from tools.export_student import main as _export_main
from tools.plot_run import ap_series
from tools.train_val import main as _train_val_main


def train_val_main(argv: list[str]) -> int:
    """tools/train_val.py in-process through the CLIs' error path (exit 2 for user errors)."""
    return run_main(_train_val_main, argv)


def export_main(argv: list[str]) -> int:
    return run_main(_export_main, argv)


REPO_ROOT = Path(__file__).resolve().parents[2]
TINY_BASE = REPO_ROOT / "tests" / "configs" / "tiny.yaml"  # tiny network and data of the CLI tests
TINY_CONFIG = """\
_base_: {base}
experiment:
  seed: 7
  deterministic: true
dataset:
  root_dir: {data}
loss:
  htl: true
  htl_window: 3
trainer:
  max_epoch: 3
  save_frequency: 0                # last.pth only: a checkpoint of this network is ~180 MB
  log_interval: 1
  htl_init_pass: false
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    """12 train + 2 val synthetic frames (320x96, no depth maps) and a tiny config for them."""
    root = tmp_path_factory.mktemp("tiny_kitti")
    write_dataset(root / "data", frames=14, seed=1, image_size=(320, 96), val_fraction=0.15)
    config = root / "tiny.yaml"
    config.write_text(TINY_CONFIG.format(base=TINY_BASE, data=root / "data"))
    return {"root": root, "config": config}


# One thread in this process and in the CLI subprocesses: bit-identical results between them,
# and no OpenMP spin-waiting on a busy machine (tiny convolutions gain nothing from threads).
SUBPROCESS_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}


@pytest.fixture(autouse=True)
def one_thread_and_restore_globals(cli_globals) -> None:
    """The CLI mains run in-process with one torch thread (tests/conftest.py ``cli_globals``)."""


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "tools/train_val.py", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env=SUBPROCESS_ENV,
    )


def step_records(run_dir: Path) -> list[dict]:
    path = run_dir / "train.jsonl"
    if not path.is_file():
        return []
    lines = path.read_text().splitlines()
    return [json.loads(line) for line in lines if line.endswith("}") and '"type": "step"' in line]


def kill_mid_epoch_2(cmd: list[str], run_dir: Path, log: Path) -> None:
    """Start training, SIGKILL it once epoch 1's last.pth exists and epoch 2 has stepped."""
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT, env=SUBPROCESS_ENV)
    deadline = time.monotonic() + 600
    try:
        while time.monotonic() < deadline:
            epoch_1 = (run_dir / "checkpoints" / "last.pth").is_file()  # written whole (atomic_save)
            if epoch_1 and any(r["epoch"] == 2 for r in step_records(run_dir)):
                os.kill(proc.pid, signal.SIGKILL)
                break
            assert proc.poll() is None, f"training ended before it could be killed:\n{log.read_text()}"
            time.sleep(0.02)
        else:
            pytest.fail("training never reached epoch 2")
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL


def test_sigkill_then_resume_equals_uninterrupted_run(tiny, tmp_path):
    config = str(tiny["config"])
    # Every training runs in a fresh process (as the killed one must): bit-identical results need the
    # same process state, which this test process, after other tests, need not have.
    done = run_cli("--config", config, "--output-dir", str(tmp_path / "full"))
    assert done.returncode == 0, done.stderr[-3000:]
    full = load_checkpoint(tmp_path / "full" / "tiny" / "checkpoints" / "last.pth")
    assert full["epoch"] == 3 and full["iteration"] == 18

    run_dir = tmp_path / "killed" / "tiny"
    cmd = [sys.executable, "tools/train_val.py", "--config", config, "--output-dir", str(tmp_path / "killed")]
    kill_mid_epoch_2(cmd, run_dir, tmp_path / "killed.log")
    assert load_checkpoint(run_dir / "checkpoints" / "last.pth")["epoch"] == 1  # killed inside epoch 2

    done = run_cli("--config", config, "--output-dir", str(tmp_path / "killed"), "--resume")
    assert done.returncode == 0, done.stderr[-3000:]
    resumed = load_checkpoint(run_dir / "checkpoints" / "last.pth")
    assert (resumed["epoch"], resumed["iteration"]) == (3, 18)
    assert resumed["htl"] == full["htl"]
    assert resumed["model_state"].keys() == full["model_state"].keys()
    for key, value in full["model_state"].items():
        assert torch.equal(resumed["model_state"][key], value), key

    # The tester reads the run's checkpoint, writes KITTI files and the AP tables.
    assert train_val_main(["--config", config, "--output-dir", str(tmp_path / "killed"), "-e"]) == 0
    results = latest_result_dir(run_dir, "val")  # -e: results/val/last-<sha256 prefix>
    assert results.name == f"last-{sha256_file(run_dir / 'checkpoints' / 'last.pth')[:8]}"
    assert sorted(p.name for p in (results / "data").iterdir()) == ["000012.txt", "000013.txt"]
    reports = json.loads((results / "ap.json").read_text())
    assert set(reports) == {"ap40", "ap11"} and "Car" in reports["ap40"]["ap"]
    assert "| Car | 3d |" in (results / "ap.md").read_text()
    assert (run_dir / "config.yaml").is_file() and (run_dir / "tensorboard").is_dir()

    # Export: a {"model_state"} file, with the run's config and task, that loads strictly into a
    # fresh detector.
    exported = tmp_path / "student.pth"
    assert (
        export_main(["--checkpoint", str(run_dir / "checkpoints" / "last.pth"), "--out", str(exported)]) == 0
    )
    written = load_checkpoint(exported)
    assert set(written) == {"model_state", "epoch", "config", "task"}
    assert (written["config"], written["task"]) == (resumed["config"], "detector")
    tiny_cfg = load_config(REPO_ROOT / "tests" / "configs" / "tiny.yaml")  # gupnet, resnet18, 16-wide heads
    detector = build_detector(ModelSettings.from_config(tiny_cfg), RpdSettings.from_config(tiny_cfg))
    assert load_model_state(detector, exported).ok


def test_torchrun_two_processes_train_and_evaluate(tiny, tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--nproc_per_node", "2", "tools/train_val.py", "--config", str(tiny["config"])]
    cmd += ["--output-dir", str(tmp_path), "trainer.max_epoch=2", "trainer.eval_frequency=2"]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, env=SUBPROCESS_ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = tmp_path / "tiny"
    ckpt = load_checkpoint(run_dir / "checkpoints" / "last.pth")
    assert (ckpt["epoch"], ckpt["iteration"]) == (2, 12)  # global batch 2 = 1 per process, 12 frames
    assert len(ckpt["rng"]) == 2  # both ranks' RNG states
    assert [json.loads(line)["epoch"] for line in open(run_dir / "eval.jsonl")] == [2]  # rank 0 only


def test_killed_checkpoint_writer_leaves_previous_file_loadable(tmp_path):
    path = tmp_path / "last.pth"
    script = f"""
import os, signal, torch
from lib.engine import checkpoint
checkpoint.atomic_save({{"epoch": 1, "w": torch.ones(3)}}, {str(path)!r})
os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)  # die after the data, before the rename
checkpoint.atomic_save({{"epoch": 2, "w": torch.zeros(3)}}, {str(path)!r})
"""
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, timeout=300, env=SUBPROCESS_ENV
    )
    assert proc.returncode == -signal.SIGKILL
    assert load_checkpoint(path)["epoch"] == 1
    assert len(list(tmp_path.glob(".last.pth.*.tmp"))) == 1  # the dead writer's temp file, never read


def test_unknown_config_key_exits_with_message_and_no_traceback(tiny):
    proc = run_cli("--config", str(tiny["config"]), "trainer.max_epochs=3")
    assert proc.returncode == 2
    assert "unknown config key 'trainer.max_epochs'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_checkpoint_that_does_not_fit_lists_the_keys(tiny, tmp_path, capsys):
    bad = tmp_path / "other_model.pth"
    torch.save({"model_state": {"foo.weight": torch.zeros(1)}}, bad)
    argv = ["--config", str(tiny["config"]), "--output-dir", str(tmp_path), "-e", f"tester.checkpoint={bad}"]
    assert train_val_main(argv) == 2
    err = capsys.readouterr().err  # another network's weights: summed up (lib/models/checkpoint_io.py)
    assert f"{bad} is not a checkpoint of this detector: all " in err and "weights are missing (e.g. " in err
    assert "the file holds 1 weight it has not (e.g. foo.weight)" in err


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["dataset.root_dir=/nonexistent/kitti"], "no dataset at /nonexistent/kitti (dataset.root_dir)"),
        (["dataset.root_dir=/usr"], "KITTI dataset incomplete at /usr: missing"),
        (["model.input=depth"], "depth maps not found"),
        (["-e", "tester.checkpoint=/nonexistent/model.pth"], "checkpoint not found: /nonexistent/model.pth"),
        (["--resume", "/nonexistent/last.pth"], "checkpoint not found: /nonexistent/last.pth"),
        (["trainer.amp=fp8"], "trainer.amp: unknown mode 'fp8'"),
    ],
)
def test_user_errors_give_a_clear_message(tiny, tmp_path, capsys, overrides, message):
    argv = ["--config", str(tiny["config"]), "--output-dir", str(tmp_path), *overrides]
    assert train_val_main(argv) == 2
    assert message in capsys.readouterr().err


def test_reproduce_table_lists_car_3d_and_bev_ap40_per_model():
    from lib.eval.report import format_results_table

    def reports(value: float) -> dict:
        ap = {d: value for d in ("easy", "moderate", "hard")}
        return {"ap40": {"ap": {"Car": {"3d": ap, "bev": {**ap, "moderate": value + 1}, "bbox": None}}}}

    table = format_results_table({"teacher": reports(40.0), "student": reports(12.5)}, title="T")
    lines = table.splitlines()
    assert lines[2] == "| model | 3D Easy | 3D Mod | 3D Hard | BEV Easy | BEV Mod | BEV Hard |"
    assert lines[4] == "| teacher | 40.00 | 40.00 | 40.00 | 40.00 | 41.00 | 40.00 |"
    assert lines[5] == "| student | 12.50 | 12.50 | 12.50 | 12.50 | 13.50 | 12.50 |"
    with_2d = format_results_table({"m": reports(1.0)}, title="T", metrics=("bbox",))
    assert with_2d.splitlines()[-1] == "| m | - | - | - |"  # the evaluator's None: nothing to score


@pytest.mark.slow
def test_a_run_folder_is_a_model_zoo_entry(tiny, tmp_path, capsys):
    """Config, checkpoints with their sha256, run.json (commands, git, environment), metrics.json
    and MODEL.md; -e on a checkpoint alone (no --config) writes under a folder named for it, leaves
    earlier results in place, prints each AP table once and appends to eval.jsonl for plot_run."""
    config, out = str(tiny["config"]), tmp_path / "zoo"
    periodic = "trainer.save_frequency=1"  # checkpoint_epoch_N.pth too (hard links of last.pth)
    first_run = ["--config", config, "--output-dir", str(out), "trainer.max_epoch=1", periodic]
    assert train_val_main(first_run) == 0
    run_dir, last = out / "tiny", out / "tiny" / "checkpoints" / "last.pth"
    capsys.readouterr()
    assert train_val_main(["-e", "--resume", str(last)]) == 0
    printed = "".join(capsys.readouterr())
    assert printed.count("Car AP_R40@") == 1 and printed.count("Car AP_R11@") == 1
    first = latest_result_dir(run_dir, "val")
    assert first.name == f"last-{sha256_file(last)[:8]}" and (first / "ap.json").is_file()
    resume = ["trainer.max_epoch=2", periodic, "--config", config, "--output-dir", str(out), "--resume"]
    assert train_val_main(resume) == 0
    assert train_val_main(["-e", "--resume", str(last)]) == 0
    second = latest_result_dir(run_dir, "val")
    assert second != first and (first / "ap.json").is_file() and (second / "ap.json").is_file()

    sums = [f"{sha256_file(p)}  {p.name}\n" for p in sorted((run_dir / "checkpoints").glob("*.pth"))]
    assert (run_dir / "checkpoints" / "SHA256SUMS").read_text() == "".join(sums) and len(sums) == 3
    run = json.loads((run_dir / "run.json").read_text())
    assert len(run["commands"]) == 4 and run["commands"][-1]["command"].endswith(f"-e --resume {last}")
    assert run["environment"]["torch"] == torch.__version__
    tests = [r for r in read_jsonl(run_dir / "eval.jsonl") if r.get("type") == "test"]
    assert [r["epoch"] for r in tests] == [1, 2] and tests[1]["result_dir"] == str(second)
    assert json.loads((run_dir / "metrics.json").read_text())["evaluations"] == read_jsonl(
        run_dir / "eval.jsonl"
    )
    assert ap_series(read_jsonl(run_dir / "eval.jsonl"))["Car 3d"][0] == [1.0, 2.0]  # plot_run's AP panel
    card = (run_dir / "MODEL.md").read_text()
    assert sha256_file(last) in card and "-e --resume" in card and second.name in card
    for path in (last, run_dir / "MODEL.md", run_dir / "checkpoints" / "SHA256SUMS"):
        assert path.stat().st_mode & 0o777 == 0o666 & ~current_umask(), path


def test_a_kitti_size_training_on_the_cpu_is_announced_with_its_time(monkeypatch, caplog):
    """configs/teacher.yaml on a 2-core CPU: 232 batches x 160 epochs of 16 images at 1.42 s an
    image (1280x384) = 37,120 steps, 234 h; the CPU demo's 720 steps at 384x128 pass silently."""
    from types import SimpleNamespace

    from tools.train_val import warn_cpu_time

    monkeypatch.setattr("os.cpu_count", lambda: 2)
    settings = SimpleNamespace(max_iters_per_epoch=0, max_epoch=160)
    trainer = SimpleNamespace(settings=settings, train_loader=range(232), epoch=0)
    with caplog.at_level("WARNING"):
        warn_cpu_time(load_config(REPO_ROOT / "configs" / "teacher.yaml"), trainer, torch.device("cpu"))
    assert "37120 steps of 16 images at 1280x384, roughly 234 h (10 days)" in caplog.text
    caplog.clear()
    demo = SimpleNamespace(
        settings=SimpleNamespace(max_iters_per_epoch=0, max_epoch=9), train_loader=range(80), epoch=0
    )
    with caplog.at_level("WARNING"):
        warn_cpu_time(load_config(REPO_ROOT / "configs" / "demo" / "teacher.yaml"), demo, torch.device("cpu"))
    assert caplog.text == ""
