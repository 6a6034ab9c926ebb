"""Parity tests run torch on one thread, as the reference drivers did when they wrote the fixtures
(tools/parity/*: OMP_NUM_THREADS=1), so that float32 reductions sum in the same order: with two
threads a DLA-34 forward already moves single values by ~5e-5, more than the 1e-5 the fixtures
are compared at."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
