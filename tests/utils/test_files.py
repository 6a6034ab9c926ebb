"""lib/utils/files.py: writing a file whole or not at all (``atomic_path``), and its mode."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from stat import S_ISDIR

import pytest

from lib.utils import files
from lib.utils.files import atomic_path


@pytest.fixture
def umask_022():
    old = os.umask(0o022)  # the usual umask: the file is rw-r--r--, not mkstemp's rw-------
    yield
    os.umask(old)


def test_the_body_writes_the_file_and_it_gets_an_ordinary_mode(tmp_path: Path, umask_022) -> None:
    target = tmp_path / "new" / "model.onnx"  # the folder is made
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith(".model.onnx.") and tmp.suffix == ".tmp"
        assert not target.exists()  # nothing at the final name while the body writes
        tmp.write_bytes(b"graph")
    assert target.read_bytes() == b"graph"
    assert target.stat().st_mode & 0o777 == 0o644
    assert os.listdir(target.parent) == ["model.onnx"]  # no temporary file left


def test_an_existing_file_is_replaced(tmp_path: Path) -> None:
    target = tmp_path / "last.pth"
    target.write_bytes(b"old")
    with atomic_path(target, suffix=".part") as tmp:
        assert tmp.suffix == ".part"
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new" and os.listdir(tmp_path) == ["last.pth"]


@pytest.mark.parametrize("previous", [None, b"old"])
def test_an_error_in_the_body_leaves_the_previous_file_and_no_temporary(tmp_path: Path, previous) -> None:
    target = tmp_path / "last.pth"
    if previous is not None:
        target.write_bytes(previous)
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise KeyboardInterrupt
    assert os.listdir(tmp_path) == ([] if previous is None else ["last.pth"])
    if previous is not None:
        assert target.read_bytes() == previous


def test_a_failed_flush_leaves_the_previous_file_and_no_temporary(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "last.pth"
    target.write_bytes(b"old")

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OSError, match="No space left"), atomic_path(target) as tmp:
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["last.pth"]


@pytest.mark.parametrize(("durable", "synced"), [(True, ["file", "folder"]), (False, [])])
def test_durable_flushes_the_file_then_the_folder(tmp_path: Path, monkeypatch, durable, synced) -> None:
    calls = []
    monkeypatch.setattr(
        os, "fsync", lambda fd: calls.append("folder" if S_ISDIR(os.fstat(fd).st_mode) else "file")
    )
    target = tmp_path / "000001.png"
    with atomic_path(target, durable=durable) as tmp:
        tmp.write_bytes(b"png")
    assert calls == synced and target.read_bytes() == b"png"


def test_a_folder_that_is_a_file_cannot_be_written(tmp_path: Path) -> None:
    (tmp_path / "checkpoints").write_text("a file")
    with pytest.raises(OSError), atomic_path(tmp_path / "checkpoints" / "last.pth"):
        pytest.fail("the body must not run")
    assert os.listdir(tmp_path) == ["checkpoints"] and (tmp_path / "checkpoints").read_text() == "a file"


def test_set_default_mode_is_0666_less_the_umask(tmp_path: Path, umask_022) -> None:
    path = tmp_path / "f"
    path.write_text("")
    path.chmod(0o600)
    files.set_default_mode(path)
    assert path.stat().st_mode & 0o777 == 0o644
