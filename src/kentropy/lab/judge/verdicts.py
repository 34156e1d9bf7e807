"""The lab's one verdict vocabulary and its one ladder: every finding, contrast, slope, intervention and circuit
verdict is one of `VERDICTS`, and a reason, where there is one, goes in a separate field (`why`).

Before any verdict, a finding's gates (`judge/gates.py`) are computed; a failed gate gives `not measurable`
(knowledge, power, regime) or `not tested` (a manipulation that did not move what it targets), and the ladder
is not run. Otherwise:

- a change between two points of training (finding 1, a decay-study arm; `contrast_verdict`), from Holm-adjusted
  p-values across the family: direction by a two-sided t-test (`decayed` / `rose`), size by a minimum-effect
  test against the SESOI (`decayed, at least the SESOI`), equivalence by TOST (`no decay`), else `inconclusive`;
- a slope or an intervention effect (`effect_verdict`): `held` when significant in the paper's direction (but
  `direction only` when its interval also lies wholly short of the paper-implied effect); `did not hold` only
  when the effect is significant the other way or its interval excludes the paper-implied effect; else
  `inconclusive`. An underpowered null is never `did not hold`; one seed is at best `inconclusive`;
- `not measured`: the quantity was not measured in this run (e.g. forgetting without downstream tasks).
"""

from __future__ import annotations

from collections.abc import Sequence

HELD = "held"
DIRECTION_ONLY = "direction only"
INCONCLUSIVE = "inconclusive"
DID_NOT_HOLD = "did not hold"
DECAYED = "decayed"
DECAYED_SESOI = "decayed, at least the SESOI"
ROSE = "rose"
NO_DECAY = "no decay"
NOT_MEASURABLE = "not measurable"
NOT_TESTED = "not tested"
NOT_MEASURED = "not measured"
VERDICTS = (HELD, DIRECTION_ONLY, INCONCLUSIVE, DID_NOT_HOLD, DECAYED, DECAYED_SESOI, ROSE, NO_DECAY, NOT_MEASURABLE,
            NOT_TESTED, NOT_MEASURED)
CONTRAST_VERDICTS = (DECAYED_SESOI, DECAYED, ROSE, NO_DECAY, INCONCLUSIVE)  # what `contrast_verdict` gives
DECAY = (DECAYED, DECAYED_SESOI)  # the verdicts that say the entropy fell

# for "the weaker of two" (`weaker`): a claim the evidence supports ranks above one it does not
RANK = {HELD: 4, DIRECTION_ONLY: 3, INCONCLUSIVE: 2, NOT_MEASURABLE: 1, NOT_MEASURED: 1, NOT_TESTED: 1, DID_NOT_HOLD: 0}


def contrast_verdict(mean: float, p_direction: float | None, p_minimum_effect: float | None, p_equivalence: float | None,
                     alpha: float) -> str:
    """A change's verdict from its Holm-adjusted p-values (None with one seed: `inconclusive`), the first that holds:
    a significant direction (two-sided) is `rose` below 0 and, above it, `decayed, at least the SESOI` where the
    minimum-effect test (H1: Δ > SESOI) is significant too, else `decayed`; then `no decay` where TOST (|Δ| < SESOI)
    is significant; else `inconclusive`."""
    if p_direction is not None and p_direction < alpha:
        if mean < 0:
            return ROSE
        return DECAYED_SESOI if p_minimum_effect is not None and p_minimum_effect < alpha else DECAYED
    if p_equivalence is not None and p_equivalence < alpha:
        return NO_DECAY
    return INCONCLUSIVE


def excludes(ci: Sequence[float], paper_effect: float) -> bool:
    """Whether an interval excludes an effect the paper implies to be at least `paper_effect` in size (signed): the
    whole interval lies short of it (below a positive effect, above a negative one)."""
    return ci[1] < paper_effect if paper_effect > 0 else ci[0] > paper_effect


def effect_verdict(mean: float, ci: Sequence[float] | None, p: float | None, sign: int, paper_effect: float | None,
                   alpha: float) -> str:
    """A slope's or an intervention effect's verdict: `sign` (+1 or −1) is the paper's direction, `paper_effect` the
    signed effect the paper implies at least (None where it implies no size), `ci` and `p` the 95% interval and the
    two-sided p over seeds (None with one seed: `inconclusive`).

    Significant (p < alpha) in the paper's direction: `held`, or `direction only` where the interval excludes the
    paper-implied effect (the direction, at a smaller size than the paper's); significant the other way:
    `did not hold`; not significant: `did not hold` where the interval excludes the paper-implied effect, else
    `inconclusive`."""
    if p is None or ci is None:
        return INCONCLUSIVE
    short = paper_effect is not None and excludes(ci, paper_effect)
    if p < alpha:
        if mean * sign > 0:
            return DIRECTION_ONLY if short else HELD
        return DID_NOT_HOLD
    return DID_NOT_HOLD if short else INCONCLUSIVE


def weaker(*verdicts: str) -> str:
    """The verdict of a finding that needs all of these (`RANK`; the first of equals)."""
    return min(verdicts, key=RANK.__getitem__)
