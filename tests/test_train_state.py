"""A run's resumable state: every global generator (Python, NumPy, torch) saved with a checkpoint and restored on
resume, so that a resumed run's random streams continue exactly as an uninterrupted run's."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from kentropy.runtime import rng
from kentropy.training.config import TrainConfig
from kentropy.training.loop import train


def draws() -> tuple:
    return random.random(), float(np.random.random()), float(np.random.standard_normal()), float(torch.rand(()))


def test_state_and_restore_continue_every_stream_through_a_checkpoint_file(tmp_path):
    rng.seed_all(7)
    draws()
    np.random.standard_normal()  # NumPy caches the second normal of a pair: the cache is part of the state
    torch.save(rng.state(), tmp_path / "s.pt")
    want = [draws() for _ in range(3)]
    rng.seed_all(99)
    rng.restore(torch.load(tmp_path / "s.pt", weights_only=True))  # what a resume reads
    assert [draws() for _ in range(3)] == want


def test_a_state_saved_without_numpy_still_restores_the_rest():
    rng.seed_all(1)
    s = {k: v for k, v in rng.state().items() if not k.startswith("numpy")}  # an older version's trainer_state.pt
    py, t = random.random(), float(torch.rand(()))
    np.random.seed(5)
    npy = np.random.get_state()
    rng.restore(s)
    assert (random.random(), float(torch.rand(()))) == (py, t)
    assert np.array_equal(np.random.get_state()[1], npy[1])  # left as it was


def test_kept_restores_every_generator():
    rng.seed_all(3)
    before = rng.state()
    with rng.kept():
        rng.seed_all(4)
        draws()
    after = rng.state()
    assert torch.equal(after["torch_rng"], before["torch_rng"]) and torch.equal(after["numpy_rng"], before["numpy_rng"])
    assert (after["python_rng"], after["numpy_rng_pos"]) == (before["python_rng"], before["numpy_rng_pos"])


class Stop(Exception):
    pass


def recorder(seen: dict, stop_at: int | None = None):
    """A monitor that draws from NumPy's global generator after every step (as user code in a monitor may)."""

    def monitor(model, steps_done):
        seen[steps_done] = float(np.random.random())
        if steps_done == stop_at:
            raise Stop
        return None

    return monitor


def test_a_resumed_runs_numpy_stream_continues_identically(model_dir, sample_texts, tmp_path):
    (tmp_path / "corpus.txt").write_text("\n".join(sample_texts) + "\n")
    model = str(model_dir("llama", 2))

    def cfg(out, **kw):
        return TrainConfig(model=model, data=str(tmp_path / "corpus.txt"), out=str(tmp_path / out), steps=8, batch_size=4,
                           micro_batch=2, seq_len=32, epochs=20, eval_every=0, save_every=4, **kw)

    full: dict = {}
    train(cfg("full"), monitor=recorder(full), show_memory=False)
    cut: dict = {}
    with pytest.raises(Stop):
        train(cfg("cut"), monitor=recorder(cut, stop_at=6), show_memory=False)  # killed after step 6; checkpoint at 4
    np.random.seed(12345)  # whatever the process did in between
    resumed: dict = {}
    train(cfg("cut", resume=True), monitor=recorder(resumed), show_memory=False)
    assert sorted(resumed) == [5, 6, 7, 8]
    assert resumed == {s: full[s] for s in resumed}  # the stream after the checkpoint, draw for draw
    assert {s: cut[s] for s in (1, 2, 3, 4)} == {s: full[s] for s in (1, 2, 3, 4)}  # seeded at the start
