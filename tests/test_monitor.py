"""EntropyMonitor inside a training loop: measures on schedule and leaves training state untouched."""

import random

import numpy as np
import torch
from conftest import tiny_model

from kentropy import EntropyMonitor, measure


def train_steps(model, steps, monitor=None, seed=0):
    """A few SGD steps with dropout on; the monitor (if any) is called after each step."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    draws = []
    for step in range(steps):
        ids = torch.randint(3, 300, (2, 12))
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        if monitor is not None:
            monitor(model, step)
        draws.append((torch.rand(1).item(), random.random(), np.random.rand()))
    return draws


def test_monitor_does_not_disturb_training(tokenizer, sample_texts):
    a, b = tiny_model("gpt2"), tiny_model("gpt2")  # GPT-2 has dropout 0.1: train/eval mode matters
    b.load_state_dict(a.state_dict())
    monitor = EntropyMonitor(tokenizer, sample_texts[:6], every=2, seq_len=32)
    plain = train_steps(a, 5)
    watched = train_steps(b, 5, monitor)
    assert plain == watched  # RNG streams untouched
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(p, q), n  # identical training trajectory
        assert q.grad is None
    assert b.training  # train mode restored
    assert [s for s, _ in monitor.history] == [0, 2, 4]
    # each measurement equals a direct measurement of the same weights
    last = monitor.history[-1][1]
    direct = measure(b.eval(), tokenizer, sample_texts[:6], seq_len=32, progress=False)
    assert last.knowledge_entropy == direct.knowledge_entropy


def test_trainer_callback_adapter(tokenizer, sample_texts):
    from types import SimpleNamespace

    model = tiny_model("llama")
    monitor = EntropyMonitor(tokenizer, sample_texts[:3], every=10, seq_len=16)
    cb = monitor.trainer_callback()
    for step in (10, 15, 20):
        cb.on_step_end(None, SimpleNamespace(global_step=step), None, model=model)
    assert [s for s, _ in monitor.history] == [10, 20]
