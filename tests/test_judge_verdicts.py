"""The one verdict ladder on hand-made cases: slopes and intervention effects against the paper-implied effect."""

import pytest

from kentropy.lab.judge.findings import across, judge_effect
from kentropy.lab.judge.gates import not_applicable
from kentropy.lab.judge.verdicts import (DID_NOT_HOLD, DIRECTION_ONLY, HELD, INCONCLUSIVE, NOT_MEASURABLE, RANK, VERDICTS,
                                         effect_verdict, excludes, weaker)


def test_the_vocabulary_is_the_contract():
    assert VERDICTS == ("held", "direction only", "inconclusive", "did not hold", "decayed", "decayed, at least the SESOI",
                        "rose", "no decay", "not measurable", "not tested", "not measured")
    assert set(RANK) <= set(VERDICTS)


def test_an_underpowered_null_reads_inconclusive():
    """The loop's slope of A on H: a point estimate of the wrong sign, its interval [−324, +232] holding the paper's +102.4."""
    assert effect_verdict(-46.0, [-324.0, 232.0], 0.63, +1, 102.4, 0.05) == INCONCLUSIVE
    # the same interval from 4 seeds of values, through the gates' judge (no gate failed)
    stat = across([-150.0, 120.0, -300.0, 146.0])
    assert stat["ci"][0] < 0 < 102.4 < stat["ci"][1]
    assert judge_effect(stat, {"power": not_applicable("-")}, +1, 102.4)["verdict"] == INCONCLUSIVE


def test_did_not_hold_only_where_the_interval_excludes_the_paper_or_the_sign_is_significantly_wrong():
    assert effect_verdict(10.0, [-20.0, 40.0], 0.4, +1, 102.4, 0.05) == DID_NOT_HOLD  # interval wholly short of +102.4
    assert effect_verdict(-80.0, [-120.0, -40.0], 0.01, +1, 102.4, 0.05) == DID_NOT_HOLD  # significant the other way
    assert effect_verdict(-80.0, [-120.0, -40.0], 0.01, +1, None, 0.05) == DID_NOT_HOLD  # with no paper size too
    assert effect_verdict(10.0, [-20.0, 40.0], 0.4, +1, None, 0.05) == INCONCLUSIVE  # no paper size: a null is never a failure
    # negative paper direction (F on H): short of −144 means above it
    assert excludes([-100.0, 20.0], -144.0) and not excludes([-200.0, 20.0], -144.0)
    assert effect_verdict(-30.0, [-100.0, 20.0], 0.3, -1, -144.0, 0.05) == DID_NOT_HOLD


def test_held_and_direction_only():
    assert effect_verdict(150.0, [110.0, 190.0], 0.001, +1, 102.4, 0.05) == HELD
    assert effect_verdict(150.0, [90.0, 210.0], 0.003, +1, 102.4, 0.05) == HELD
    # significant in the paper's direction, but wholly short of the size the paper implies
    assert effect_verdict(30.0, [10.0, 50.0], 0.01, +1, 102.4, 0.05) == DIRECTION_ONLY
    assert effect_verdict(30.0, [10.0, 50.0], 0.01, +1, None, 0.05) == HELD
    assert effect_verdict(30.0, None, None, +1, 102.4, 0.05) == INCONCLUSIVE  # one seed


def test_weaker():
    assert weaker(HELD, INCONCLUSIVE) == INCONCLUSIVE and weaker(HELD, DID_NOT_HOLD) == DID_NOT_HOLD
    assert weaker(DIRECTION_ONLY, HELD) == DIRECTION_ONLY and weaker(NOT_MEASURABLE, HELD) == NOT_MEASURABLE
    with pytest.raises(KeyError):
        weaker("decayed")  # a contrast's verdict is no effect's
