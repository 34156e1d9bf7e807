"""Random states: code that must not disturb a caller's training (measuring, evaluating) runs inside `kept()`."""

from __future__ import annotations

import random
from contextlib import contextmanager

import numpy as np
import torch


@contextmanager
def kept():
    """Python, NumPy, torch and (initialized) CUDA generator states restored on exit, whatever ran inside."""
    py, npy = random.getstate(), np.random.get_state()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        random.setstate(py)
        np.random.set_state(npy)
