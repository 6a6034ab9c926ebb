"""Logger set-up for training runs and JSON-lines metric files.

Every module logs through ``logging.getLogger(__name__)``; :func:`setup_logging` sends the
``lib`` (and ``tools``) records to the console and to the run's log file, on the main process
only. Metrics go additionally, one JSON object per
line, to ``train.jsonl`` / ``eval.jsonl`` (:class:`JsonlWriter`), which a few lines of pandas
can read back.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from pathlib import Path
from typing import Any

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOGGER_NAMES = ("lib", "tools", "__main__")


def setup_logging(log_file: str | Path | None = None, *, main_process: bool = True) -> None:
    """Configure the project's loggers (console + optional file); idempotent.

    Args:
        log_file: append records to this file as well (its folder is created).
        main_process: False on DDP ranks > 0, which then only report warnings and errors.
    """
    level = logging.INFO if main_process else logging.WARNING
    formatter = logging.Formatter(LOG_FORMAT, datefmt="%H:%M:%S")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file is not None and main_process:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file))
    for handler in handlers:
        handler.setFormatter(formatter)
    for name in LOGGER_NAMES:
        logger = logging.getLogger(name)
        _detach_handlers(logger)
        for handler in handlers:
            logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = False


def reset_logging() -> None:
    """Undo :func:`setup_logging`: the project's loggers lose their handlers (closed) and pass
    records to the root logger again (for a process that runs several CLI mains, e.g. tests)."""
    for name in LOGGER_NAMES:
        logger = logging.getLogger(name)
        _detach_handlers(logger)
        logger.propagate = True


def _detach_handlers(logger: logging.Logger) -> None:
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()


class JsonlWriter:
    """Append one JSON object per call to a file (metrics stream of a run).

    Non-finite floats are written as null so that every line stays valid JSON.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict[str, Any]) -> None:
        """Append ``record`` (values: numbers, strings, nested dicts/lists) as one line."""
        with open(self.path, "a") as f:
            f.write(json.dumps(_finite(record)) + "\n")


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """All records of a JSON-lines file, in order."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
