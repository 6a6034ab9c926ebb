"""File modes and checksums of the files this project writes.

``tempfile.mkstemp`` creates its file with mode 0600 (owner only). A file that is then renamed
into place (checkpoints, ONNX graphs, extracted archives) gets the mode an ordinary ``open``
would have given it, 0666 less the process umask (0644 under the usual umask 022), so that the
group can read a shared run folder.
"""

from __future__ import annotations

import hashlib
import os
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
