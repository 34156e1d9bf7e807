"""The lab's one verdict vocabulary: every finding, trajectory and circuit verdict is one of these.

- `held`: the direction matches the paper and the evidence is significant (or, where a rule has no
  test, every condition of the rule holds);
- `direction only`: the direction matches, but not significantly (or with a single seed);
- `did not hold`: the direction does not match, or a condition of the rule fails;
- `not measurable`: too few points for the statistic (e.g. a correlation over fewer than 3 checkpoints);
- `not measured`: the quantity was not measured in this run (e.g. forgetting without downstream tasks).

A decay study's seed-level verdicts (`lab/judge/seeds.py`), tried in this order, are their own block
at the end: `decayed`, `no decay`, `rose`, `inconclusive`.
"""

from __future__ import annotations

HELD = "held"
DIRECTION_ONLY = "direction only"
DID_NOT_HOLD = "did not hold"
NOT_MEASURABLE = "not measurable"
NOT_MEASURED = "not measured"
NOT_TESTED = "not tested"  # a manipulation whose effect on H was not the intended one: its outcome is not judged
VERDICTS = (HELD, DIRECTION_ONLY, DID_NOT_HOLD, NOT_MEASURABLE, NOT_MEASURED, NOT_TESTED)

RANK = {HELD: 3, DIRECTION_ONLY: 2, NOT_MEASURABLE: 1, NOT_MEASURED: 1, NOT_TESTED: 1, DID_NOT_HOLD: 0}  # for "the weaker of two"


def verdict(direction_ok: bool, significant: bool) -> str:
    """`did not hold` against the paper's direction, else `held` if significant and `direction only` if not."""
    if not direction_ok:
        return DID_NOT_HOLD
    return HELD if significant else DIRECTION_ONLY


def weaker(*verdicts: str) -> str:
    return min(verdicts, key=RANK.__getitem__)


# a decay study's seed-level verdict of one contrast (lab/judge/seeds.py), the first that holds
DECAYED = "decayed"  # the Holm-adjusted one-sided decay p < α
NO_DECAY = "no decay"  # else: the Holm-adjusted TOST p < α (equivalent to 0 within ±SESOI)
ROSE = "rose"  # else: the 95% t-interval over seeds lies wholly below 0
INCONCLUSIVE = "inconclusive"  # else
SEED_VERDICTS = (DECAYED, NO_DECAY, ROSE, INCONCLUSIVE)
RANK[INCONCLUSIVE] = 1  # a slope finding judged over seeds (one seed: inconclusive) ranks as `not measurable`
