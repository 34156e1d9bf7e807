"""A pretraining run's knowledge-entropy trajectory: where it collapses and peaks after warmup, the change
from the peak to the end with its paired bootstrap interval, the verdict over seeds, and an arm's
trajectory combined over its seeds."""

from __future__ import annotations

import math

import torch

from kentropy.bootstrap import percentile_interval
from kentropy.lab.judge.stats import mean_ci
from kentropy.lab.judge.verdicts import DID_NOT_HOLD, DIRECTION_ONLY, HELD


def summarize_run(steps: list[int], draws: torch.Tensor, h: list[float], warmup_steps: int) -> dict:
    """One run's trajectory on one series: H per checkpoint with its 95% bootstrap interval, where it
    collapses and where it peaks, and the change from the peak to the end with its paired interval.

    Trained checkpoints only: after warmup. Early in training H first collapses (a fast dip while
    the lr warms up, in every run of the decay preset) and then recovers; a decay is a
    fall from the peak that comes *after* that collapse, so where H recovers from its lowest
    post-warmup checkpoint in the first half of the run, the peak is taken from there onwards
    (a run that only falls after warmup has no collapse: its peak is taken over all of it).
    draws: [checkpoints, n_boot], resampled with the same documents at every checkpoint (paired)."""
    ci = [percentile_interval(draws[i]) for i in range(len(steps))]
    after = [i for i, s in enumerate(steps) if s >= max(warmup_steps, 1)]
    early = [i for i in after if steps[i] <= steps[-1] / 2] or after[:1]
    low = min(early, key=lambda i: h[i])
    collapse = low if any(h[i] > h[low] for i in after if i > low) else after[0]
    peak = max((i for i in after if i >= collapse), key=lambda i: h[i])
    end = len(steps) - 1
    change = h[end] - h[peak]
    change_ci = percentile_interval(draws[end] - draws[peak]) if peak != end else (0.0, 0.0)
    rise = h[peak] - h[collapse]  # the recovery from the collapse (0 where the run only falls after warmup)
    share = -change / rise if rise > 0 else (math.inf if change < 0 else 0.0)
    return {"steps": steps, "knowledge_entropy": h, "knowledge_entropy_ci": [list(c) for c in ci],
            "collapse_step": steps[collapse], "peak_step": steps[peak], "peak": h[peak], "end": h[end], "change": change,
            "change_ci": list(change_ci), "share_lost": share}


MIN_SHARE_LOST = 0.1  # a decay must undo at least this share of the recovery from the collapse: a trend, not a wiggle


def trajectory_verdict(runs: list[dict]) -> str:
    """`held`: in every seed the entropy falls from its post-collapse peak to the end, with a 95% interval below 0,
    undoing at least MIN_SHARE_LOST of its climb from the collapse to the peak; `direction only`: it falls that
    much in every seed, but some interval reaches 0; `did not hold`: in some seed it ends at its peak, or falls
    by less than that share (a plateau with a wiggle at the end, however significant)."""
    if any(r["change"] >= 0 or r["share_lost"] < MIN_SHARE_LOST for r in runs):
        return DID_NOT_HOLD
    if all(r["change_ci"][1] < 0 for r in runs):
        return HELD
    return DIRECTION_ONLY


def combine_seeds(runs: list[dict], draws: list[torch.Tensor]) -> dict:
    """The arm's trajectory: mean over seeds per checkpoint, its bootstrap interval (each seed's documents
    resampled independently, the draws averaged), and the t-interval over seeds when there are >= 2."""
    k = len(runs[0]["steps"])
    mean = [sum(r["knowledge_entropy"][i] for r in runs) / len(runs) for i in range(k)]
    avg = torch.stack(draws).mean(0)  # [checkpoints, n_boot]
    over_seeds = [mean_ci([r["knowledge_entropy"][i] for r in runs]) for i in range(k)]
    return {"knowledge_entropy": mean, "knowledge_entropy_ci": [list(percentile_interval(avg[i])) for i in range(k)],
            "knowledge_entropy_seed_ci": [[c["lo"], c["hi"]] for c in over_seeds]}
