"""The lab's pure arithmetic: where a run sits next to OLMo-1B (tokens per non-embedding parameter,
cumulative weight decay sum_t lr_t x wd, AdamW's equilibrium time), and which steps are saved.

Nothing here trains or reads files; an `arm` is any object with the fields of `config.Arm`.
"""

from __future__ import annotations


from kentropy.training.config import TrainConfig
from kentropy.training.optimizer import lr_at

# OLMo-1B's pretraining, for the regime table (allenai/OLMo-1B config: 739,328 steps of 4M tokens,
# lr 4e-4 cosine to 4e-5 after 2,000 warmup steps, wd 0.1; ~3.0T tokens over ~1.18B parameters)
OLMO_1B = {"tokens_per_parameter": 3.0e12 / 1.18e9, "steps": 739_328, "lr": 4e-4, "weight_decay": 0.1, "warmup_steps": 2000,
           "min_lr_ratio": 0.1}


def train_config(arm, **kw) -> TrainConfig:
    """The `kentropy train` config of an arm's pretraining (model, data and out default to placeholders)."""
    return TrainConfig(model=kw.pop("model", "-"), data=kw.pop("data", "-"), out=kw.pop("out", "-"), steps=arm.steps(),
                       batch_size=arm.batch_size, micro_batch=arm.batch_size, seq_len=arm.seq_len, lr=arm.lr,
                       min_lr_ratio=arm.min_lr_ratio, warmup=arm.warmup, schedule=arm.schedule, decay_fraction=arm.decay_fraction,
                       weight_decay=arm.weight_decay, **kw)


def cumulative_weight_decay(lrs, weight_decay: float) -> float:
    """sum over optimizer steps of lr_t x wd: the total shrink AdamW's decoupled decay applies (log scale)."""
    return float(sum(lrs)) * weight_decay


def regime(arm) -> dict:
    """Where an arm sits next to OLMo-1B: tokens per non-embedding parameter, cumulative weight decay,
    AdamW's equilibrium time 1 / (lr x wd) in steps and as a share of the run, passes over the data."""
    cfg = train_config(arm)
    steps = arm.steps()
    tokens = steps * arm.batch_size * arm.seq_len
    n = arm.non_embedding_parameters()
    lrs = [lr_at(s, cfg) for s in range(steps)]
    eq = 1 / (arm.lr * arm.weight_decay) if arm.weight_decay > 0 else None
    return {"non_embedding_parameters": n, "steps": steps, "tokens": tokens, "tokens_per_parameter": tokens / n,
            "cumulative_weight_decay": cumulative_weight_decay(lrs, arm.weight_decay), "equilibrium_steps": eq,
            "equilibrium_share": eq / steps if eq else None, "epochs": 1 / arm.unique_fraction,
            "warmup_steps": round(arm.warmup * steps)}


def olmo_1b_regime() -> dict:
    """The same numbers for OLMo-1B's pretraining (OLMO_1B), from its schedule (`lr_at`, as for the arms)."""
    o = OLMO_1B
    cfg = TrainConfig(model="-", data="-", out="-", steps=o["steps"], lr=o["lr"], warmup=o["warmup_steps"] / o["steps"],
                      min_lr_ratio=o["min_lr_ratio"], weight_decay=o["weight_decay"])
    eq = 1 / (o["lr"] * o["weight_decay"])
    return {"tokens_per_parameter": o["tokens_per_parameter"], "steps": o["steps"],
            "cumulative_weight_decay": cumulative_weight_decay((lr_at(s, cfg) for s in range(o["steps"])), o["weight_decay"]),
            "equilibrium_steps": eq, "equilibrium_share": eq / o["steps"], "epochs": 1.0}




def save_every(steps: int, checkpoints: int) -> int:
    """The save interval that spreads `checkpoints` saves evenly over `steps` (the last on or before the end)."""
    return -(-steps // checkpoints)


def nearest_step(steps: list[int], total: int, fraction: float) -> int:
    """The trained step (> 0) nearest to `fraction` of `total` steps."""
    return min((s for s in steps if s > 0), key=lambda s: abs(s - fraction * total))
