"""The optimizer of a run and its learning-rate schedule, as OLMo (the paper's official code) has them.

    opt = make_optimizer(model, cfg)    # AdamW, weight decay on weight matrices only
    lr = lr_at(step, cfg)               # the lr of 0-indexed optimizer step `step`
"""

from __future__ import annotations

import math

import torch

from kentropy.models.parameters import weight_matrices
from kentropy.training.config import TrainConfig

WARMUP_START = 0.1  # OLMo's `_linear_warmup` starts at 0.1 x lr


def lr_at(step: int, cfg: TrainConfig) -> float:
    """The lr of 0-indexed optimizer step `step`: OLMo's `CosWithWarmup.get_lr(lr, t, steps)` at
    t = step + 1 (OLMo counts its global step from 1 before the update; official `olmo/optim.py`).

    warmup (t < W, W = round(warmup x steps)): lr x (0.1 + 0.9 t / W)
    cosine: eta + (lr - eta)(1 + cos(pi (t - W) / (steps - W))) / 2, eta = min_lr_ratio x lr; t >= steps: eta
    constant: lr after warmup; wsd: lr until the last decay_fraction of steps, then linear to eta.
    """
    t, n = step + 1, cfg.steps
    warm = round(cfg.warmup * n)
    eta = cfg.lr * cfg.min_lr_ratio
    if t < warm:
        return cfg.lr * (WARMUP_START + (1 - WARMUP_START) * t / warm)
    if cfg.schedule == "constant":
        return cfg.lr
    if cfg.schedule == "wsd":
        decay = max(1, round(cfg.decay_fraction * n))
        if t <= n - decay:
            return cfg.lr
        return cfg.lr + (eta - cfg.lr) * (t - (n - decay)) / decay
    if t >= n:
        return eta
    return eta + (cfg.lr - eta) * (1 + math.cos(math.pi * (t - warm) / (n - warm))) / 2


def decay_groups(model) -> tuple[list, list]:
    """(decayed, not decayed) trainable parameters, each in parameter order, tied tensors once: weight decay on
    the weight matrices (`kentropy.models.parameters.weight_matrices`) only, never on embeddings, norms or biases."""
    matrices = {id(p) for _, p in weight_matrices(model)}
    params = [p for p in dict.fromkeys(model.parameters()) if p.requires_grad]
    return [p for p in params if id(p) in matrices], [p for p in params if id(p) not in matrices]


def make_optimizer(model, cfg: TrainConfig) -> torch.optim.AdamW:
    decay, no_decay = decay_groups(model)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # the fused kernel (CPU and CUDA) is several times faster than the per-tensor loop, same update
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=True)
