"""File modes and checksums of the files this project writes.

Files that must appear whole or not at all (checkpoints, ONNX graphs, extracted archive members)
are written through :func:`atomic_path`: a temporary file in the same folder, renamed into place.
``tempfile.mkstemp`` creates that file with mode 0600 (owner only); renamed into place it gets the
mode an ordinary ``open`` would have given it, 0666 less the process umask (0644 under the usual
umask 022), so that the group can read a shared run folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

FILE_MODE = 0o666  # an ordinary new file's mode before the umask
HASH_CHUNK = 1 << 20  # bytes read at a time by sha256_file


def sha256_file(path: str | Path) -> str:
    """The sha256 of a file's bytes, hex (what ``sha256sum`` prints)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def current_umask() -> int:
    """The process umask (read by setting it and restoring it at once)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def set_default_mode(path: str | Path | int) -> None:
    """Give a file (a path or an open descriptor) the mode of an ordinary new file: 0666 less the umask."""
    mode = FILE_MODE & ~current_umask()
    if isinstance(path, int):
        os.fchmod(path, mode)
    else:
        os.chmod(path, mode)


def fsync_dir(folder: str | Path) -> None:
    """Persist the renames in ``folder`` (a no-op where folders cannot be opened or synced)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path, *, suffix: str = ".tmp", durable: bool = True) -> Iterator[Path]:
    """Write ``path`` whole or not at all: yields a temporary path for the body to write instead.

    The temporary file ``.<name>.<random><suffix>`` is created (empty, mode 0600) in ``path``'s
    folder, which is made if absent. When the body returns, the file gets the mode of an ordinary
    new file (:func:`set_default_mode`) and replaces ``path`` in one ``os.replace`` (atomic on
    POSIX); ``durable``: its data are flushed to disk (fsync) before, and the folder after. When the
    body or any of these steps raises, the temporary file is removed and ``path`` keeps its previous
    content (or stays absent). A process killed before the rename leaves the temporary file.

    Raises:
        OSError: the folder cannot be made or written (nothing is left behind), or the flush or the
            rename failed; the body's own errors propagate unchanged.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        if durable:
            fd = os.open(tmp, os.O_RDWR)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        set_default_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` whole or not at all (:func:`atomic_path`); returns ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)
