"""The one rule for what a command writes versus what it reads.

A flag that allows replacing an earlier *output* (``--overwrite``, ``--force``) never allows
writing over an *input of the same command*. :func:`check_outputs` compares resolved paths (so
``a/../b``, symbolic links and hard links are seen through) and refuses, naming the flag and the
input, an output that

* is an input (the same file or folder by any name);
* lies inside an input folder (e.g. a submission zip written into the results it zips);
* is a folder that holds an input (a run folder moved aside or written over a checkpoint or a
  dataset it reads).

Inputs that a command reads from its own output on purpose (``--resume`` reading the run
folder's ``last.pth``) are simply not passed. Every tool that writes calls this before it
writes anything; ``--overwrite`` / ``--force`` only decide about earlier outputs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from lib.errors import UserError

NO_FLAG = "no flag writes over an input"


class OutputOnInputError(UserError):
    """An output path that is, lies inside, or holds an input of the same command."""


def _same(a: Path, b: Path) -> bool:
    if a == b:
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)  # hard links
    except OSError:
        return False


def _within(inner: Path, outer: Path) -> bool:
    return inner != outer and inner.is_relative_to(outer)


def output_conflict(out: Path, inputs: Mapping[str, Path | str | None]) -> tuple[str, str, Path] | None:
    """The first conflict of ``out`` with ``inputs`` as (how, input label, resolved input), else None.

    ``how`` is ``"is"``, ``"inside"`` or ``"holds"`` (see the module docstring).
    """
    target = Path(out).expanduser().resolve()
    for label, given in inputs.items():
        if given is None:
            continue
        source = Path(given).expanduser().resolve()
        if _same(target, source):
            return "is", label, source
        if source.is_dir() and _within(target, source):
            return "inside", label, source
        if _within(source, target):
            return "holds", label, source
    return None


def check_outputs(outputs: Mapping[str, Path | str | None], inputs: Mapping[str, Path | str | None]) -> None:
    """Refuse any output (flag name → path) that is, lies inside or holds an input (label → path).

    Raises:
        OutputOnInputError: ``<output>: <flag> would write over the input <label> (<path>) ...``.
    """
    for flag, out in outputs.items():
        if out is None:
            continue
        conflict = output_conflict(Path(out), inputs)
        if conflict is None:
            continue
        how, label, source = conflict
        reason = {
            "is": f"is the input {label} ({source})",
            "inside": f"lies inside the input {label} ({source})",
            "holds": f"holds the input {label} ({source})",
        }[how]
        raise OutputOnInputError(
            f"{out}: {flag} {reason}; writing there could replace what the command reads "
            f"({NO_FLAG}): choose another path"
        )
