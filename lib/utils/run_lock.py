"""One writer per run folder: a lock file beside the folder, held while a process writes it.

``tools/train_val.py`` (its main process under torchrun), ``tools/reproduce.py`` and
``tools/sanity_check.py`` hold :func:`run_folder_lock` on the folder they write. The lock is the
file ``.<name>.lock`` next to the folder ``<name>`` (so ``--overwrite``, which moves the folder
aside, cannot move it), created with ``O_EXCL`` and holding the holder's process id, host, start
time and command. It is removed when the ``with`` block ends, also by an exception or Ctrl-C. A
lock left by a process that was killed is stale: on the same host, when that process id no longer
runs (or now belongs to a process started later), the lock is taken over with a warning; a lock of
another host is never taken over (its process cannot be checked from here), and the message says
which file to delete once that process is known to be gone.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lib.errors import UserError

logger = logging.getLogger(__name__)

LOCK_SUFFIX = ".lock"
COMMAND_CHARS = 160  # of the holder's command line kept in the lock


class RunLockError(UserError):
    """Another live process writes the folder; the message names the folder and the holder."""


def lock_path(folder: str | Path) -> Path:
    """``<parent>/.<name>.lock``, the lock file of ``folder``."""
    folder = Path(folder).resolve()
    return folder.with_name(f".{folder.name}{LOCK_SUFFIX}")


def _process_start(pid: int) -> str | None:
    """The start time of process ``pid`` in clock ticks since boot (Linux), else None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]  # field 22 of proc(5), counted after "(comm)"


def _alive(holder: dict[str, Any]) -> bool:
    """Whether the holder (same host) still runs: its pid exists and started when it said."""
    pid = int(holder.get("pid", -1))
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    started = holder.get("proc_start")
    return started is None or _process_start(pid) in (None, started)


def _me() -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "proc_start": _process_start(os.getpid()),
        "since": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": " ".join(sys.argv)[:COMMAND_CHARS],
    }


def _read_holder(path: Path) -> dict[str, Any] | None:
    try:
        holder = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def _try_create(path: Path, me: dict[str, Any]) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        json.dump(me, f)
    return True


def acquire(folder: str | Path) -> Path:
    """Take the lock of ``folder`` (see the module docstring); returns the lock file.

    Raises:
        RunLockError: a live process holds it (names the folder, pid, host, start and command).
    """
    folder = Path(folder)
    path = lock_path(folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    me = _me()
    for _ in range(3):  # a stale lock is removed, then the creation is tried again
        if _try_create(path, me):
            return path
        holder = _read_holder(path)
        if holder == {}:
            continue  # released meanwhile
        if holder is not None and holder.get("host") != me["host"]:
            raise RunLockError(_held_message(folder, path, holder, other_host=True))
        if holder is not None and _alive(holder):
            raise RunLockError(_held_message(folder, path, holder, other_host=False))
        if holder is None and time.time() - path.stat().st_mtime < 5:
            time.sleep(0.2)  # being written by a process that just took it
            continue
        logger.warning("%s: removing the stale lock of process %s (no longer running)", folder, holder)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    raise RunLockError(f"{folder}: could not take its lock {path}; another process keeps taking it")


def _held_message(folder: Path, path: Path, holder: dict[str, Any], *, other_host: bool) -> str:
    who = (
        f"process {holder.get('pid')} on {holder.get('host')} since {holder.get('since')} "
        f"({holder.get('command', '?')})"
    )
    advice = (
        f"if that process is gone, delete {path}"
        if other_host
        else "wait for it to finish or stop it, or write another folder"
    )
    return f"{folder}: another process is writing this folder: {who}; {advice}"


def release(path: Path) -> None:
    """Remove the lock file ``path`` if this process holds it."""
    holder = _read_holder(path)
    if holder and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def run_folder_lock(folder: str | Path, *, enabled: bool = True) -> Iterator[Path | None]:
    """Hold the lock of ``folder`` for the ``with`` block (``enabled`` False: a no-op, e.g. on the
    processes of a torchrun other than the main one). Yields the lock file (None when disabled).

    Raises:
        RunLockError: the folder is being written by another live process.
    """
    if not enabled:
        yield None
        return
    path = acquire(folder)
    try:
        yield path
    finally:
        release(path)
