"""Keep freed memory in the process: glibc's malloc thresholds for training loops.

A training step allocates and frees the same large activation and gradient buffers every
iteration. With glibc's defaults, blocks above the (dynamic) mmap threshold are mapped and
unmapped on each allocation, and free memory at the top of the heap is given back to the
operating system once it exceeds the trim threshold; every step then faults the same pages back
in, which shows as system (kernel) time and minor page faults. Raising both thresholds keeps
those buffers in the heap for the next step. The cost is that the process keeps its peak heap
size until it exits. No entry point calls it: on the 2-core CPU it cut page faults and system
time but made our training step slower (BENCHMARKS.md, "Side by side with the reference trainers,
2026-12-07"); benchmarks/bench_vs_reference.py measures both.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

# mallopt parameter numbers (glibc malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# glibc caps the mmap threshold at HEAP_MAX_SIZE / 2 = 32 MiB on 64-bit systems; larger values
# are refused. Blocks above it are still mapped per allocation.
MMAP_THRESHOLD = 32 * 1024 * 1024
TRIM_THRESHOLD = 1024 * 1024 * 1024  # give free heap top back only above 1 GiB
# (mallopt parameter, the environment variable glibc reads for it, our value)
SETTINGS = (
    (M_MMAP_THRESHOLD, "MALLOC_MMAP_THRESHOLD_", MMAP_THRESHOLD),
    (M_TRIM_THRESHOLD, "MALLOC_TRIM_THRESHOLD_", TRIM_THRESHOLD),
)


def _glibc() -> ctypes.CDLL | None:
    """The process's C library if it is glibc (it has ``gnu_get_libc_version``), else None."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    return libc if hasattr(libc, "gnu_get_libc_version") and hasattr(libc, "mallopt") else None


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds of this process (module docstring); fork()ed
    children (DataLoader workers) inherit them.

    A threshold the user set through its environment variable (``MALLOC_MMAP_THRESHOLD_``,
    ``MALLOC_TRIM_THRESHOLD_``) is left as set. A no-op off glibc (macOS, Windows, musl).

    Returns:
        True when glibc accepted the settings (or the user's variables already set both), False
        off glibc.
    """
    libc = _glibc()
    if libc is None:
        return False
    ok = True
    for param, var, value in SETTINGS:
        if var not in os.environ:
            ok = bool(libc.mallopt(ctypes.c_int(param), ctypes.c_int(value))) and ok
    return ok
