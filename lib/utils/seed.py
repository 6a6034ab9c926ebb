"""Seeding and RNG-state capture, so that runs repeat and resumed runs continue exactly.

Each process seeds with ``base + rank``; each data-loader worker seeds from its own torch seed
(:func:`worker_init_fn`).
GUPNet and MonoSKD define a seed but never apply it (docs/reference.md, 'Training schedules and
hyper-parameters' and 'Known bugs and quirks: Seeds never applied'); here it is applied to Python's
``random``, NumPy's global generator and torch (CPU and every CUDA device).
"""

from __future__ import annotations

import os
import random
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int, *, deterministic: bool = False) -> None:
    """Seed ``random``, NumPy and torch; optionally make torch kernels deterministic.

    Args:
        seed: the process seed (the experiment seed plus the DDP rank).
        deterministic: ``torch.use_deterministic_algorithms(True)`` and no cuDNN autotuning, for
            bit-exact repeats (the CPU fault tests). Costs speed on GPU.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        # cuBLAS needs this workspace setting for deterministic matmuls (read when CUDA starts).
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False


def worker_init_fn(worker_id: int) -> None:
    """Seed NumPy and ``random`` in a data-loader worker from the worker's torch seed.

    torch gives worker ``i`` the seed ``base_seed + i``, with ``base_seed`` drawn from the
    loader's generator, so workers differ from each other and from epoch to epoch, and the whole
    stream repeats when the generator is re-seeded (:func:`make_generator`).
    """
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def make_generator(seed: int) -> torch.Generator:
    """A CPU generator for a DataLoader (its shuffling and its workers' seeds)."""
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


def capture_rng_state() -> dict[str, Any]:
    """Every global RNG state, in types that ``torch.load(weights_only=True)`` accepts.

    Returns:
        {"python": random.getstate(), "numpy": {...}, "torch": ByteTensor, "cuda": [ByteTensor]}
        ("cuda" only when CUDA is initialised).
    """
    kind, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        # NumPy's key is a uint32 array; stored as int64 so that no NumPy type is pickled.
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state` (CUDA states are restored when present and usable)."""
    random.setstate(_as_tuple(state["python"]))
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["kind"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"][: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda_states])


def _as_tuple(value: Any) -> Any:
    """Undo list-for-tuple changes a serialiser may make (random.setstate needs tuples)."""
    if isinstance(value, (list, tuple)):
        return tuple(_as_tuple(v) for v in value)
    return value
