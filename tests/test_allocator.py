"""lib/utils/allocator.py: freed buffers stay in the process instead of being faulted back in.

A fresh process (glibc's default thresholds) allocates three 20 MiB arrays and frees them, ten
times: the freed heap top exceeds glibc's default trim threshold, goes back to the system, and the
next cycle faults its pages in again. After :func:`keep_freed_memory` the cycles reuse the heap.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lib.utils.allocator import _glibc

REPO = Path(__file__).resolve().parents[1]
CYCLES = """
import resource, sys
import numpy as np
from lib.utils.allocator import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
def cycle():
    arrays = [np.ones(20 * 2**20 // 8) for _ in range(3)]
    del arrays
cycle()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    cycle()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)
"""
PAGES_PER_CYCLE = 3 * 20 * 2**20 // 4096  # 15360 with 4 KiB pages


def _faults_per_cycle(mode: str) -> float:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}  # no MALLOC_* variables of the caller
    out = subprocess.run(
        [sys.executable, "-c", CYCLES, mode], env=env, capture_output=True, text=True, check=True
    )
    return float(out.stdout.split()[-1])


@pytest.mark.skipif(_glibc() is None, reason="glibc's malloc only")
def test_freed_buffers_are_reused_without_page_faults() -> None:
    default, kept = _faults_per_cycle("default"), _faults_per_cycle("keep")
    assert default > 0.05 * PAGES_PER_CYCLE  # the case returns memory to the system by default
    assert kept < 0.005 * PAGES_PER_CYCLE, (default, kept)
