"""Two writers, one run folder: the second gets one line naming the folder and the holder; a lock
is released on any exit; a lock of a process that is gone is taken over (lib/utils/run_lock.py)."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys

import pytest
from faults_common import cli, error_line, snapshot

from lib.utils import run_lock
from lib.utils.run_lock import RunLockError, lock_path, run_folder_lock
from tools.reproduce import main as reproduce_main
from tools.sanity_check import main as sanity_main
from tools.train_val import main as train_main


@pytest.fixture
def other_process():
    """A live process of this host that is not this one (it holds locks in these tests)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait()


def hold(folder, pid: int, host: str | None = None, proc_start: str | None = None) -> None:
    """Write the lock of ``folder`` as process ``pid`` of ``host`` would."""
    holder = {"pid": pid, "host": host or socket.gethostname(), "since": "2026-01-02 03:04:05"}
    holder |= {"command": "tools/train_val.py --config x.yaml", "proc_start": proc_start}
    lock_path(folder).parent.mkdir(parents=True, exist_ok=True)
    lock_path(folder).write_text(json.dumps(holder))


def test_lock_is_beside_the_folder_names_its_holder_and_is_released(tmp_path):
    run = tmp_path / "out" / "run"
    with run_folder_lock(run) as path:
        assert path == tmp_path / "out" / ".run.lock"
        holder = json.loads(path.read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
    assert not path.exists()


def test_lock_is_released_when_the_writer_fails(tmp_path):
    with pytest.raises(ValueError), run_folder_lock(tmp_path / "run"):
        raise ValueError("a bug in the middle of the run")
    assert not lock_path(tmp_path / "run").exists()
    with run_folder_lock(tmp_path / "run"):  # free again
        pass


def test_a_live_holder_is_named(tmp_path, other_process):
    hold(tmp_path / "run", other_process.pid)
    with pytest.raises(RunLockError) as err:
        run_lock.acquire(tmp_path / "run")
    assert str(err.value) == (
        f"{tmp_path / 'run'}: another process is writing this folder: process {other_process.pid} on "
        f"{socket.gethostname()} since 2026-01-02 03:04:05 (tools/train_val.py --config x.yaml); "
        "wait for it to finish or stop it, or write another folder"
    )
    assert json.loads(lock_path(tmp_path / "run").read_text())["pid"] == other_process.pid  # kept


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path, caplog):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # its pid no longer runs
    hold(tmp_path / "run", proc.pid)
    with (
        caplog.at_level(logging.WARNING, logger="lib.utils.run_lock"),
        run_folder_lock(tmp_path / "run") as path,
    ):
        assert json.loads(path.read_text())["pid"] == os.getpid()
    assert "removing the stale lock" in caplog.text


def test_a_reused_pid_is_stale_too(tmp_path, other_process):
    hold(tmp_path / "run", other_process.pid, proc_start="1")  # same pid, started at another time
    with run_folder_lock(tmp_path / "run") as path:
        assert json.loads(path.read_text())["pid"] == os.getpid()


def test_a_lock_of_another_host_is_never_taken_over(tmp_path):
    hold(tmp_path / "run", 12345, host="node-07")
    with pytest.raises(RunLockError, match="process 12345 on node-07 .*if that process is gone, delete "):
        run_lock.acquire(tmp_path / "run")
    assert lock_path(tmp_path / "run").exists()


def test_a_second_training_into_a_busy_run_folder(config, tmp_path, other_process, capsys):
    run_dir = tmp_path / "out" / "tiny"
    run_dir.mkdir(parents=True)
    (run_dir / "train.log").write_text("the first run's lines\n")
    hold(run_dir, other_process.pid)
    before = snapshot(tmp_path / "out")
    for extra in ([], ["--overwrite"], ["-e"]):
        code, err = cli(train_main, ["--config", config, "--output-dir", tmp_path / "out", *extra], capsys)
        assert code == 2
        assert error_line(err).startswith(
            f"error: {run_dir}: another process is writing this folder: process {other_process.pid} on "
        )
    assert snapshot(tmp_path / "out") == before  # not a log line, not moved aside


def test_reproduce_never_sends_two_stages_into_one_folder(tmp_path, capsys):
    argv = ["--demo", "--jobs", "2", "--output-dir", tmp_path / "demo", "experiment.name=mine"]
    code, err = cli(reproduce_main, argv, capsys)
    assert code == 2
    assert error_line(err) == (
        f"error: {tmp_path / 'demo' / 'mine'}: the stages teacher and student would both write this run "
        "folder (an experiment.name override names every stage alike); drop that override: each stage is "
        "named by its config"
    )
    assert not (tmp_path / "demo").exists()


@pytest.mark.parametrize("tool", ["reproduce", "sanity_check"])
def test_reproduce_and_sanity_check_refuse_a_busy_output_folder(tmp_path, other_process, capsys, tool):
    out = tmp_path / "busy"
    hold(out, other_process.pid)
    if tool == "reproduce":
        code, err = cli(reproduce_main, ["--demo", "--output-dir", out], capsys)
    else:
        code, err = cli(
            sanity_main, ["--config", "configs/sanity/gupnet_student.yaml", "--output-dir", out], capsys
        )
    assert code == 2
    assert error_line(err).startswith(f"error: {out}: another process is writing this folder: process ")
    assert not out.exists()
