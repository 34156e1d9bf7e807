"""Random states in one place: Python's, NumPy's, torch's and CUDA's global generators.

    seed_all(seed)      every generator seeded (a run's start)
    s = state()         a snapshot a checkpoint can hold (tensors and plain data: `torch.load(weights_only=True)` reads it)
    restore(s)          the generators set back to the snapshot (a resumed run continues each stream exactly)
    with kept(): ...    code that must not disturb a caller's training (measuring, evaluating) runs inside
"""

from __future__ import annotations

import random
from contextlib import contextmanager

import numpy as np
import torch


def seed_all(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators (torch's seeds every CUDA device's as well)."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


def state() -> dict:
    """Every global generator's state. CUDA's only once CUDA is initialized: asking would initialize it."""
    py = random.getstate()
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
            "python_rng": list(py[1]), "python_rng_pos": py[2],
            "numpy_rng": torch.from_numpy(keys.astype(np.int64)), "numpy_rng_pos": int(pos),
            "numpy_rng_gauss": [int(has_gauss), float(gauss)]}


def restore(saved: dict) -> None:
    """Set the generators to `saved` (from `state`). A state without NumPy's (saved by an older version) leaves
    NumPy's as it is; CUDA states are set on as many devices as both the state and this machine have."""
    torch.set_rng_state(saved["torch_rng"])
    cuda = saved.get("cuda_rng") or []
    if cuda and torch.cuda.is_available():
        for i, s in enumerate(cuda[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(s, i)
    random.setstate((3, tuple(saved["python_rng"]), saved["python_rng_pos"]))
    if "numpy_rng" in saved:
        has_gauss, gauss = saved["numpy_rng_gauss"]
        np.random.set_state(("MT19937", saved["numpy_rng"].numpy().astype(np.uint32), saved["numpy_rng_pos"], has_gauss, gauss))


@contextmanager
def kept():
    """Python, NumPy, torch and (initialized) CUDA generator states restored on exit, whatever ran inside."""
    saved = state()
    try:
        yield
    finally:
        restore(saved)
