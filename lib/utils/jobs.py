"""Run this repository's CLIs as subprocesses, one at a time or several side by side.

The pipelines of ``tools/`` (``reproduce.py`` trains stage after stage, ``sanity_check.py`` checks
config after config) run each training as its own ``tools/train_val.py`` process. Independent ones
can run at once, each with a share of the CPU cores: on a 2-core CPU two one-thread trainings side
by side make more steps per second than one two-thread training (BENCHMARKS.md, '2026-12-01 (b):
side-by-side training').
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from lib.errors import UserError

REPO_ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


class CommandError(UserError):
    """A CLI run by a pipeline failed; the message names the command, its exit code and its log."""


def say(line: str) -> None:
    """Print one line with a single write, so that jobs running side by side (threads) do not
    interleave their lines."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def job_output(log: Path, width: int) -> dict[str, Any]:
    """The ``log`` / ``threads`` arguments of :func:`run_command` for one of ``width`` jobs: none
    when it runs alone (the console, every core), else the ``log`` file and OpenMP threads = the
    CPU cores / ``width``, at least 1."""
    if width <= 1:
        return {}
    return {"log": log, "threads": max(1, (os.cpu_count() or 1) // width)}


def run_command(cmd: list[str], *, log: Path | None = None, threads: int | None = None) -> float:
    """Run a CLI of this repository (in its root folder); its CPU seconds (user + system).

    OpenMP threads sleep instead of spinning while they wait (``OMP_WAIT_POLICY=PASSIVE``, unless
    set): on a CPU shared with other jobs spinning threads made training steps ~10x slower in our
    measurements, and on an idle machine it costs nothing measurable.

    Args:
        cmd: the command line, e.g. ``[sys.executable, "tools/train_val.py", ...]``.
        log: append the command's output to this file instead of the console (jobs side by side).
        threads: its ``OMP_NUM_THREADS``, unless the caller's environment sets one.

    Raises:
        CommandError: it exited with a non-zero status (its own message is in its output).
    """
    say("$ " + " ".join(cmd) + (f"  > {log}" if log else ""))
    env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    if threads is not None:
        env["OMP_NUM_THREADS"] = os.environ.get("OMP_NUM_THREADS", str(threads))
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(log.open("a")) if log is not None else None
        code, cpu_s = wait_for(subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=out, stderr=out))
    if code != 0:
        where = f" (its output: {log})" if log else ""
        raise CommandError(f"command failed with exit code {code}: {' '.join(cmd)}{where}")
    return cpu_s


def wait_for(proc: subprocess.Popen) -> tuple[int, float]:
    """Wait for a child process: its exit code and CPU seconds (``os.wait4``'s resource usage).
    An interrupt (Ctrl-C) stops the child too."""
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_utime + usage.ru_stime


def run_side_by_side(jobs: Sequence[Callable[..., T]], *, width: int) -> list[T]:
    """Call every ``job(width=w)``, up to ``width`` at once; their results in order.

    ``w`` = min(width, number of jobs) tells each job how many run side by side (1: it runs alone
    and may use the console and every core; else see :func:`job_output`). After a job raised, no
    further job starts; the first exception is raised once the jobs running beside it have finished.
    """
    w = min(width, len(jobs))
    if w <= 1:
        return [job(width=1) for job in jobs]
    failed = threading.Event()

    def guarded(job: Callable[..., T]) -> T | None:
        if failed.is_set():
            return None  # a job failed before this one's turn came
        try:
            return job(width=w)
        except BaseException:
            failed.set()
            raise

    with ThreadPoolExecutor(max_workers=w) as pool:
        futures = [pool.submit(guarded, job) for job in jobs]
    errors = [future.exception() for future in futures if future.exception() is not None]
    if errors:
        raise errors[0]
    return [future.result() for future in futures]
