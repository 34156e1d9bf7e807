"""The power of the lab's across-seed test, for the power gate (`judge/gates.py`).

Every finding the lab tests across seeds is a one-sample two-sided t-test of the mean of n per-seed values
(a slope, a paired difference) at level α. With per-seed values drawn from N(δ, σ²), t = mean / (s / √n)
follows a noncentral t with n − 1 degrees of freedom and noncentrality λ = δ √n / σ, so the power is

    power(δ, σ, n) = P(T' > t*) + P(T' < −t*),   T' ~ t(n − 1, λ),   t* = t_{1 − α/2, n − 1}

(both tails: the two-sided test). The minimum detectable effect at a target power is the δ > 0 at which
power(δ, σ, n) = target, and the seeds a design needs are the smallest n at which the paper-implied effect
reaches the target. σ is a pilot's between-seed standard deviation: the power is that of a design whose
per-seed values vary as the pilot's did.
"""

from __future__ import annotations

import math

from scipy import optimize, stats

from kentropy.errors import KentropyError

MAX_SEEDS = 1000  # `seeds_needed` searches no further


def _check(sd: float, n: int, alpha: float) -> None:
    if not (sd > 0 and math.isfinite(sd)):
        raise KentropyError(f"sd must be a positive number, got {sd}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise KentropyError(f"n must be an integer of at least 2 seeds, got {n!r}")
    if not 0 < alpha < 1:
        raise KentropyError(f"alpha must be in (0, 1), got {alpha}")


def power(effect: float, sd: float, n: int, alpha: float) -> float:
    """The probability that the two-sided one-sample t-test over n seeds rejects a mean of 0 at level alpha when the
    per-seed values are N(effect, sd²)."""
    _check(sd, n, alpha)
    df = n - 1
    crit = float(stats.t.ppf(1 - alpha / 2, df))
    ncp = abs(effect) * math.sqrt(n) / sd
    # the lower tail as the upper tail at −λ (P(T' < −t*; λ) = P(T' > t*; −λ)): scipy's cdf there can be NaN
    return float(stats.nct.sf(crit, df, ncp) + stats.nct.sf(crit, df, -ncp))


def minimum_detectable_effect(sd: float, n: int, alpha: float, target: float) -> float:
    """The effect size (> 0) that the test over n seeds detects with probability `target` (`power` = target)."""
    _check(sd, n, alpha)
    if not alpha < target < 1:
        raise KentropyError(f"target power must be in (alpha, 1), got {target}")
    hi = sd
    while power(hi, sd, n, alpha) < target:
        hi *= 2
    return float(optimize.brentq(lambda d: power(d, sd, n, alpha) - target, 0.0, hi, xtol=1e-12 * hi, rtol=1e-10))


def seeds_needed(effect: float, sd: float, alpha: float, target: float) -> int | None:
    """The fewest seeds (>= 2) at which `effect` is detected with probability `target`; None beyond MAX_SEEDS."""
    if effect == 0:
        return None
    n = 2
    while power(effect, sd, n, alpha) < target:
        n += 1
        if n > MAX_SEEDS:
            return None
    return n
