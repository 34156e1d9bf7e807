"""The one number formatter of the lab report: `-` for a missing or NaN value."""

from __future__ import annotations

import math


def fmt(x, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.{digits}f}"


def fmt_ci(c: dict, digits: int = 2) -> str:
    """A mean with its t-interval (`judge.stats.mean_ci`), or with n alone when the interval is undefined."""
    if c["lo"] is None:
        return f"{c['mean']:.{digits}f} (n={c['n']})"
    return f"{c['mean']:.{digits}f} [{c['lo']:.{digits}f}, {c['hi']:.{digits}f}] (n={c['n']})"
