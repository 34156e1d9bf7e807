"""The power gate's arithmetic: the noncentral-t power of the two-sided t-test across seeds, checked against a
simulation of that very test, and the minimum detectable effect and seeds needed that follow from it."""

import numpy as np
import pytest
from scipy import stats

from kentropy.errors import KentropyError
from kentropy.lab.judge.power import minimum_detectable_effect, power, seeds_needed


def simulated_power(effect: float, sd: float, n: int, alpha: float, runs: int, seed: int) -> float:
    x = np.random.default_rng(seed).normal(effect, sd, size=(runs, n))
    return float((stats.ttest_1samp(x, 0.0, axis=1).pvalue < alpha).mean())


@pytest.mark.parametrize("effect, sd, n", [(1.0, 1.0, 4), (0.5, 1.0, 6), (102.4, 175.0, 6), (0.003, 0.002, 3)])
def test_power_against_a_simulation(effect, sd, n):
    runs = 40_000
    want = power(effect, sd, n, 0.05)
    got = simulated_power(effect, sd, n, 0.05, runs, seed=n)
    assert got == pytest.approx(want, abs=4 * np.sqrt(want * (1 - want) / runs) + 1e-3)


def test_the_minimum_detectable_effect_is_detected_at_the_target_rate():
    for n in (3, 6, 10):
        mde = minimum_detectable_effect(2.0, n, 0.05, 0.8)
        assert power(mde, 2.0, n, 0.05) == pytest.approx(0.8, abs=1e-9)
        assert simulated_power(mde, 2.0, n, 0.05, 40_000, seed=100 + n) == pytest.approx(0.8, abs=0.01)
    # scale: the MDE is in the units of sd
    assert minimum_detectable_effect(20.0, 6, 0.05, 0.8) == pytest.approx(10 * minimum_detectable_effect(2.0, 6, 0.05, 0.8))
    # more seeds, a smaller MDE; no effect, the test's own size
    assert minimum_detectable_effect(1.0, 12, 0.05, 0.8) < minimum_detectable_effect(1.0, 6, 0.05, 0.8)
    assert power(0.0, 1.0, 5, 0.05) == pytest.approx(0.05, abs=1e-9)


def test_seeds_needed():
    n = seeds_needed(102.4, 175.0, 0.05, 0.8)
    assert power(102.4, 175.0, n, 0.05) >= 0.8 > power(102.4, 175.0, n - 1, 0.05)
    assert seeds_needed(30.0, 1.0, 0.05, 0.8) == 2 and seeds_needed(10.0, 1.0, 0.05, 0.8) == 3 and seeds_needed(0.0, 1.0, 0.05, 0.8) is None
    assert seeds_needed(0.001, 1.0, 0.05, 0.8) is None  # beyond the search


def test_bad_arguments_are_named():
    with pytest.raises(KentropyError, match="sd must be a positive number"):
        power(1.0, 0.0, 4, 0.05)
    with pytest.raises(KentropyError, match="n must be an integer of at least 2 seeds"):
        power(1.0, 1.0, 1, 0.05)
    with pytest.raises(KentropyError, match="target power must be in"):
        minimum_detectable_effect(1.0, 4, 0.05, 1.0)
