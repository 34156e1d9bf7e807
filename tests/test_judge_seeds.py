"""Seed-level statistics against values worked out here.

Student's t has closed forms for 1 and 2 degrees of freedom, used as references without scipy:
df = 1 (Cauchy): P(T > t) = 1/2 − arctan(t)/π, quantile q(p) = tan(π (p − 1/2));
df = 2: P(T > t) = 1/2 − t / (2 sqrt(2 + t²)), quantile q(p) = a sqrt(2 / (1 − a²)) with a = 2p − 1.
"""

import math

import numpy as np
import pytest

from kentropy.errors import KentropyError
from kentropy.lab.judge.plan import plan_from_dict
from kentropy.lab.judge.seeds import (ArmSeeds, contrast_records, holm, p_equivalence, p_minimum_effect, p_two_sided,
                                      slopes_across_seeds, t_interval)
from kentropy.lab.judge.verdicts import CONTRAST_VERDICTS as VERDICTS
from kentropy.lab.judge.verdicts import DECAYED, DECAYED_SESOI, INCONCLUSIVE, NO_DECAY, ROSE

TESTS = ("p_direction", "p_minimum_effect", "p_equivalence")
KEYS = {"name", "from_step", "to_step", "per_seed", "mean", "ci", *TESTS, *(t + "_adjusted" for t in TESTS), "verdict",
        "last_layer"}


def sf1(t):
    return 0.5 - math.atan(t) / math.pi


def sf2(t):
    return 0.5 - t / (2 * math.sqrt(2 + t * t))


def q2(p):
    a = 2 * p - 1
    return a * math.sqrt(2 / (1 - a * a))


def test_closed_forms_are_the_known_table_values():
    assert q2(0.975) == pytest.approx(4.302653, abs=1e-6)  # t_{0.975, 2} in every table
    assert math.tan(math.pi * 0.475) == pytest.approx(12.706205, abs=1e-6)  # t_{0.975, 1}


def test_t_interval_and_the_direction_and_size_tests_three_seeds():
    d = [0.01, 0.02, 0.03]  # mean 0.02, sd 0.01, se 0.01 / sqrt 3
    se = 0.01 / math.sqrt(3)
    lo, hi = t_interval(d)
    assert lo == pytest.approx(0.02 - q2(0.975) * se, rel=1e-9) and hi == pytest.approx(0.02 + q2(0.975) * se, rel=1e-9)
    assert hi - lo == pytest.approx(2 * 4.302653 * 0.0057735, rel=1e-5)
    t = 0.02 / se  # = 2 sqrt 3
    assert p_two_sided(d) == pytest.approx(2 * sf2(t), rel=1e-9) == pytest.approx(0.074180, abs=1e-6)
    assert p_two_sided([-x for x in d]) == pytest.approx(2 * sf2(t), rel=1e-9)
    # minimum effect, H1: mean > SESOI: t = (0.02 − 0.01) / se = √3
    assert p_minimum_effect(d, 0.01) == pytest.approx(sf2(math.sqrt(3)), rel=1e-9) == pytest.approx(0.112702, abs=1e-6)
    assert p_minimum_effect(d, 0.03) > 0.5  # a SESOI above the mean


def test_two_seeds_use_one_degree_of_freedom():
    d = [0.0, 0.02]  # mean 0.01, sd 0.01 sqrt 2, se 0.01: t = 1
    assert p_two_sided(d) == pytest.approx(2 * sf1(1.0), rel=1e-9) == pytest.approx(0.5)
    assert p_minimum_effect(d, 0.0) == pytest.approx(sf1(1.0), rel=1e-9) == pytest.approx(0.25)
    lo, hi = t_interval(d)
    assert hi - 0.01 == pytest.approx(math.tan(math.pi * 0.475) * 0.01, rel=1e-9)


def test_tost_by_hand():
    d = [0.01, 0.02, 0.03]
    se = 0.01 / math.sqrt(3)
    lower = sf2((0.02 + 0.05) / se)  # H0: mean <= -0.05
    upper = sf2((0.05 - 0.02) / se)  # H0: mean >= +0.05
    assert upper > lower
    assert p_equivalence(d, 0.05) == pytest.approx(upper, rel=1e-9) == pytest.approx(0.017549, abs=1e-6)  # 1/2 − 3√3 / (2√29)
    # symmetric: the mirrored sample has the same TOST p
    assert p_equivalence([-x for x in d], 0.05) == pytest.approx(upper, rel=1e-9)
    # a SESOI inside the mean: equivalence is not shown (p > 1/2)
    assert p_equivalence(d, 0.01) > 0.5


def test_against_scipy_on_a_random_sample():
    from scipy import stats

    d = list(np.random.default_rng(3).normal(0.004, 0.01, size=6))
    assert p_minimum_effect(d, 0.003) == pytest.approx(stats.ttest_1samp(d, 0.003, alternative="greater").pvalue, rel=1e-9)
    assert p_two_sided(d) == pytest.approx(stats.ttest_1samp(d, 0).pvalue, rel=1e-9)
    tost = max(stats.ttest_1samp(d, -0.02, alternative="greater").pvalue, stats.ttest_1samp(d, 0.02, alternative="less").pvalue)
    assert p_equivalence(d, 0.02) == pytest.approx(tost, rel=1e-9)


def test_holm_by_hand():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.001, 0.011, 0.012, 0.5]) == pytest.approx([0.004, 0.033, 0.033, 0.5])  # 0.024 raised: monotone
    assert holm([0.6, 0.7]) == [1.0, 1.0]  # 1.2 capped at 1, then monotone
    assert holm([0.02, None, 0.5]) == [0.04, None, 0.5]  # an undefined p does not count in m
    assert holm([None]) == [None] and holm([]) == []


def test_contrast_ladder_order():
    from kentropy.lab.judge.verdicts import contrast_verdict as v

    assert VERDICTS == (DECAYED_SESOI, DECAYED, ROSE, NO_DECAY, INCONCLUSIVE)
    assert v(0.02, 0.01, 0.01, 0.01, 0.05) == DECAYED_SESOI  # direction and size both shown
    assert v(0.02, 0.01, 0.3, 0.01, 0.05) == DECAYED  # a significant direction below the SESOI: not "at least the SESOI"
    assert v(-0.01, 0.01, 1.0, 0.01, 0.05) == ROSE  # rose is tried before no decay
    assert v(-0.001, 0.2, 1.0, 0.01, 0.05) == NO_DECAY
    assert v(0.01, 0.2, 0.3, 0.3, 0.05) == INCONCLUSIVE
    assert v(0.01, 0.05, 0.05, 0.05, 0.05) == INCONCLUSIVE  # strictly below α
    assert v(0.05, None, None, None, 0.05) == INCONCLUSIVE  # one seed


PLAN = plan_from_dict({"contrasts": [{"name": "half", "from": 0.5, "to": 1.0}, {"name": "quarter", "from": 0.25, "to": 1.0}],
                       "primary": "half", "sesoi": 0.005, "alpha": 0.05}, "plan")
STEPS = [10, 25, 50, 75, 100]  # a 100-step run: 25, 50 and 100 are the plan's steps


def seed(k, h):
    return {"seed": k, "steps": STEPS, "knowledge_entropy": list(h), "loss": [0.0] * len(h)}


def arm_with(deltas_half, layers=4, rng=None):
    """Seeds whose H falls by delta * layers from step 50 to 100 (noise elsewhere)."""
    rng = rng or np.random.default_rng(0)
    seeds = []
    for k, d in enumerate(deltas_half):
        h = list(100 + rng.normal(0, 0.01, size=5))
        h[4] = h[2] - d * layers
        seeds.append(seed(k, h))
    return ArmSeeds(layers=layers, steps=100, seeds=seeds)


def test_records_have_the_contract_keys_and_exact_per_seed():
    rng = np.random.default_rng(1)
    arms = {"a": ArmSeeds(4, 100, [seed(k, rng.normal(80, 1, size=5)) for k in range(3)]),
            "b": ArmSeeds(2, 100, [seed(k, rng.normal(80, 1, size=5)) for k in range(4)])}
    out = contrast_records(arms, PLAN)
    assert list(out) == ["a", "b"]
    for name, recs in out.items():
        assert [r["name"] for r in recs] == ["half", "quarter"]
        for r in recs:
            assert set(r) == KEYS and r["verdict"] in VERDICTS and r["last_layer"] is None  # no per-layer entropy given
            i, j = STEPS.index(r["from_step"]), STEPS.index(r["to_step"])
            assert (r["from_step"], r["to_step"]) == ((50, 100) if r["name"] == "half" else (25, 100))
            assert r["per_seed"] == [(s["knowledge_entropy"][i] - s["knowledge_entropy"][j]) / arms[name].layers
                                     for s in arms[name].seeds]
            assert r["mean"] == pytest.approx(np.mean(r["per_seed"]))
            assert r["p_direction"] == p_two_sided(r["per_seed"]) and r["ci"] == t_interval(r["per_seed"])
            assert r["p_minimum_effect"] == p_minimum_effect(r["per_seed"], PLAN.sesoi)
    # Holm across the two arms, per contrast, separately per test
    for c in range(2):
        for t in TESTS:
            assert [out[a][c][t + "_adjusted"] for a in "ab"] == holm([out[a][c][t] for a in "ab"])


def test_the_last_layer_apart():
    per_layer = [[[5.0, 4.0]] * 3 + [[4.9, 3.5], [4.8, 3.0]], [[5.0, 4.0]] * 3 + [[4.9, 3.6], [4.9, 3.2]]]
    seeds = [dict(seed(k, [sum(x) for x in pl]), knowledge_entropy_per_layer=pl) for k, pl in enumerate(per_layer)]
    r = contrast_records({"a": ArmSeeds(2, 100, seeds)}, PLAN)["a"][0]  # step 50 (index 2) -> 100 (index 4)
    assert r["last_layer"]["per_seed"] == pytest.approx([1.0, 0.8]) and r["last_layer"]["mean"] == pytest.approx(0.9)
    assert r["per_seed"] == pytest.approx([(9.0 - 7.8) / 2, (9.0 - 8.1) / 2])


def test_planted_decay_is_detected():
    rng = np.random.default_rng(7)
    for _ in range(20):
        arms = {"planted": arm_with(0.02 + rng.normal(0, 0.002, size=4), rng=rng),
                "other": arm_with(rng.normal(0, 0.002, size=4), rng=rng)}
        r = contrast_records(arms, PLAN)["planted"][0]
        assert r["verdict"] == DECAYED_SESOI and r["ci"][0] > 0  # 0.02 against a SESOI of 0.005


def test_flat_null_is_not_called_decayed():
    rng = np.random.default_rng(11)
    verdicts = []
    for _ in range(300):  # studies of 3 flat arms, 4 seeds each
        arms = {f"arm{k}": arm_with(rng.normal(0, 0.002, size=4), rng=rng) for k in range(3)}
        verdicts += [recs[0]["verdict"] for recs in contrast_records(arms, PLAN).values()]
    n = len(verdicts)
    decayed = verdicts.count(DECAYED) + verdicts.count(DECAYED_SESOI)
    assert decayed <= 0.05 * n / 3 + 3 * math.sqrt(0.05 * n / 3)  # Holm keeps each study's rate below α
    assert verdicts.count(DECAYED_SESOI) == 0
    assert (verdicts.count(NO_DECAY) + verdicts.count(INCONCLUSIVE)) / n >= 0.9  # the two-sided test calls rose as often as decayed
    assert verdicts.count(NO_DECAY) / n >= 0.5  # SESOI 0.005 against se ~0.001: equivalence is mostly shown


def test_one_seed_is_inconclusive_and_leaves_holm_to_the_others():
    arms = {"one": arm_with([0.05]), "two": arm_with([0.02, 0.021, 0.019]), "three": arm_with([0.0, 0.001, -0.001])}
    out = contrast_records(arms, PLAN)
    r = out["one"][0]
    assert r["per_seed"] == pytest.approx([0.05])
    assert r["ci"] is None and all(r[t] is None and r[t + "_adjusted"] is None for t in TESTS) and r["verdict"] == INCONCLUSIVE
    pd = [out[a][0]["p_direction"] for a in ("two", "three")]
    assert [out[a][0]["p_direction_adjusted"] for a in ("two", "three")] == holm(pd)  # m = 2, not 3


def test_an_interval_wholly_below_zero_reads_rose():
    """Two arms whose seeds all rose (interval below 0): `rose`, never `no decay`, even where TOST is also shown."""
    arms = {"rms": arm_with([-0.003, -0.0035, -0.0032, -0.0031]), "gelu": arm_with([-0.002, -0.0024, -0.0021, -0.0022])}
    for recs in contrast_records(arms, PLAN).values():
        r = recs[0]
        assert r["ci"][1] < 0 and r["p_equivalence_adjusted"] < 0.05 and r["verdict"] == ROSE


def test_a_significant_decay_below_the_sesoi_is_decayed_not_at_least_the_sesoi():
    """The reference arm's case: +0.0078 per layer, significant, against a SESOI of 0.01."""
    plan = plan_from_dict({"contrasts": [{"name": "half", "from": 0.5, "to": 1.0}], "primary": "half", "sesoi": 0.01,
                           "alpha": 0.05}, "plan")
    r = contrast_records({"reference": arm_with([0.0075, 0.0081, 0.0078, 0.0077])}, plan)["reference"][0]
    assert r["mean"] == pytest.approx(0.0078, abs=1e-4) and r["p_direction_adjusted"] < 0.05
    assert r["p_minimum_effect"] > 0.9 and r["verdict"] == DECAYED


def test_zero_spread_takes_the_limit():
    assert p_minimum_effect([0.02, 0.02, 0.02], 0.0) == 0.0 and t_interval([0.02] * 3) == [0.02, 0.02]
    assert p_equivalence([0.02] * 3, 0.005) == 1.0  # outside ±SESOI for sure
    assert p_minimum_effect([0.0] * 3, 0.0) == 1.0 and p_equivalence([0.0] * 3, 0.005) == 0.0  # 0/0: no evidence of decay
    assert p_minimum_effect([-0.01] * 3, 0.0) == 1.0 and p_two_sided([0.0] * 3) == 1.0 and p_two_sided([0.01] * 3) == 0.0


def test_missing_contrast_step_names_arm_and_step():
    arm = arm_with([0.01, 0.02])
    bad = dict(arm.seeds[1], steps=[10, 25, 60, 75, 100])
    with pytest.raises(KentropyError, match="^arm x: seed 1: no checkpoint at step 50"):
        contrast_records({"x": ArmSeeds(4, 100, [arm.seeds[0], bad])}, PLAN)
    with pytest.raises(KentropyError, match="^arm x: no seeds"):
        contrast_records({"x": ArmSeeds(4, 100, [])}, PLAN)
    with pytest.raises(KentropyError, match="^arm x: steps: a 1-step run cannot separate"):
        contrast_records({"x": ArmSeeds(4, 1, arm.seeds)}, PLAN)


def test_slopes_across_seeds_by_hand():
    xs = [[1, 2, 3], [0, 1], [1, 2, 3, 4]]
    ys = [[2, 4, 6], [1, 4], [0.5, 1.5, 2.5, 3.5]]  # slopes 2, 3, 1
    out = slopes_across_seeds(xs, ys)
    assert set(out) == {"per_seed", "mean", "ci", "p"}
    assert out["per_seed"] == pytest.approx([2, 3, 1]) and out["mean"] == pytest.approx(2)
    se = 1 / math.sqrt(3)  # sd 1 over 3 seeds
    assert out["ci"] == pytest.approx([2 - q2(0.975) * se, 2 + q2(0.975) * se])
    assert out["p"] == pytest.approx(2 * sf2(2 / se), rel=1e-9)
    # pairs with a missing value are dropped
    assert slopes_across_seeds([[1, 2, 3]], [[None, 1, 3]])["per_seed"] == pytest.approx([2])
    one = slopes_across_seeds([[1, 2]], [[1, 0]])
    assert one["ci"] is None and one["p"] is None and one["mean"] == pytest.approx(-1)
    with pytest.raises(KentropyError, match="^seed 0: x does not vary"):
        slopes_across_seeds([[1, 1]], [[1, 2]])
    with pytest.raises(KentropyError, match="^seed 0: 1 complete"):
        slopes_across_seeds([[1, 2]], [[None, 2]])
