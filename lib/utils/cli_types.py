"""Range-checked argparse types: every numeric flag of the tools says its range.

Each function below is an ``argparse`` ``type=``: it parses the text and raises
``argparse.ArgumentTypeError`` with the range and the value, which argparse prints as
``error: argument --flag: must be ..., got ...`` (exit status 2, as every user error). NaN and
infinities are refused everywhere. :func:`attach_negative_values` lets a flag take a value that
starts with a minus (``--intrinsics -700,...``), so that its range check, not argparse, answers.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections.abc import Callable, Sequence

NEGATIVE_VALUE = re.compile(r"-[\d.]")  # a value, not an option: a minus and a digit or a point


def _number(text: str, kind: type) -> float | int:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected {'an integer' if kind is int else 'a number'}, got {text!r}"
        ) from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def int_at_least(low: int) -> Callable[[str], int]:
    """An integer >= ``low``."""

    def parse(text: str) -> int:
        value = int(_number(text, int))
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {value}")
        return value

    parse.__name__ = f"int_at_least_{low}"
    return parse


def float_in(low: float, high: float = math.inf) -> Callable[[str], float]:
    """A finite number in [``low``, ``high``]."""

    def parse(text: str) -> float:
        value = float(_number(text, float))
        if not low <= value <= high:
            bounds = f">= {low:g}" if high == math.inf else f"in [{low:g}, {high:g}]"
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {value:g}")
        return value

    parse.__name__ = f"float_in_{low:g}_{high:g}"
    return parse


def positive_float(text: str) -> float:
    """A finite number > 0."""
    value = float(_number(text, float))
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value:g}")
    return value


def attach_negative_values(argv: Sequence[str] | None, flags: Sequence[str]) -> list[str]:
    """``argv`` (default: the command line) with ``--flag -7,...`` written ``--flag=-7,...`` for each
    of ``flags``: argparse takes a value that starts with ``-`` and is not a plain negative number
    for an option and stops with "expected one argument", before the flag's own range check could
    name the value."""
    args = list(sys.argv[1:] if argv is None else argv)
    out: list[str] = []
    for arg in args:
        if out and out[-1] in flags and NEGATIVE_VALUE.match(arg):
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)
score = float_in(0.0, 1.0)  # a detection score or a fraction
MAX_RENDER_WIDTH = 16384  # pixels of a rendered panel


def tcp_port(text: str) -> int:
    """A TCP port number: 1 .. 65535."""
    value = positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"must be a TCP port in [1, 65535], got {value}")
    return value


def render_width(text: str) -> int:
    """Width of a rendered image in pixels: 1 .. :data:`MAX_RENDER_WIDTH`."""
    value = positive_int(text)
    if value > MAX_RENDER_WIDTH:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_RENDER_WIDTH} pixels, got {value}")
    return value
