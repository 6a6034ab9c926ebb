"""The one user-error base and the one CLI error path.

Errors caused by the user's files, paths or settings (a config key, a malformed KITTI file, a
checkpoint of the wrong layout or role, an unwritable output folder) derive from
:class:`UserError`. Every CLI in ``tools/`` runs its ``main`` through :func:`run_cli`, which
prints such an error as one line ``error: <path>: <reason>`` and exits with status 2; any other
exception is a bug of ours and keeps its traceback. ``MONOMMKD_DEBUG=1`` shows the traceback of
user errors too.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

USAGE_EXIT = 2  # argparse's status for a bad command line; ours for any user error
INTERRUPT_EXIT = 130  # 128 + SIGINT, what a shell reports for Ctrl-C
DEBUG_ENV = "MONOMMKD_DEBUG"


class UserError(Exception):
    """An error the user can fix: the message names the file (or key) and what is wrong."""


def user_os_error(err: OSError) -> UserError:
    """An ``OSError`` on a user path (missing, unreadable, unwritable, disk full) as one line."""
    where = f"{err.filename}: " if err.filename else ""
    reason = err.strerror or str(err)
    return UserError(f"{where}{reason}")


@contextlib.contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """Name ``path`` in an ``OSError`` raised while writing it: a full disk (ENOSPC) is reported
    by ``write`` / ``close`` without a file name, which :func:`run_cli` would then print bare."""
    try:
        yield
    except OSError as err:
        if err.filename is None:
            err.filename = str(path)
        raise


def run_cli(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Run a CLI ``main(argv)`` and turn user errors into one line on stderr and exit status 2.

    ``OSError`` counts as a user error: the tools only open paths the user named or folders
    under them. ``KeyboardInterrupt`` exits with 130 and no traceback.
    """
    try:
        return int(main(argv) or 0)
    except (UserError, OSError) as err:
        if os.environ.get(DEBUG_ENV):
            raise
        if isinstance(err, OSError):
            err = user_os_error(err)
        print(f"error: {err}", file=sys.stderr)
        return USAGE_EXIT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return INTERRUPT_EXIT
