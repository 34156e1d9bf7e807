"""The lab's statistics and verdicts against values computed by hand."""

import math

import pytest
import scipy.stats

from kentropy.lab.judge import stats as an


def test_mean_ci_matches_t_interval_by_hand():
    xs = [1.0, 2.0, 4.0]
    m = 7 / 3
    sd = math.sqrt(((1 - m) ** 2 + (2 - m) ** 2 + (4 - m) ** 2) / 2)
    half = 4.302652729911275 * sd / math.sqrt(3)  # t_{0.975, 2}
    c = an.mean_ci(xs)
    assert c["mean"] == pytest.approx(m) and c["lo"] == pytest.approx(m - half) and c["hi"] == pytest.approx(m + half)
    assert an.mean_ci([5.0]) == {"mean": 5.0, "lo": None, "hi": None, "n": 1}


def test_pearson_by_hand():
    x, y = [1.0, 2.0, 3.0, 4.0], [2.0, 1.0, 4.0, 3.0]
    mx, my = 2.5, 2.5
    r = sum((a - mx) * (b - my) for a, b in zip(x, y)) / math.sqrt(sum((a - mx) ** 2 for a in x) * sum((b - my) ** 2 for b in y))
    assert an.pearson(x, y)["r"] == pytest.approx(r) == pytest.approx(0.6)
    assert an.pearson([1.0, 2.0], [3.0, 4.0])["r"] is None  # n < 3


def test_entropy_decay_verdicts():
    steps = [0, 10, 20, 30, 40, 50, 60]
    held = an.entropy_decay(steps, [9.0, 8.5, 8.3, 8.0, 7.9, 7.7, 7.5])
    assert held["verdict"] == "held" and held["monotone"] and held["spearman"]["rho"] == pytest.approx(-1.0)
    assert held["first"] == 8.5  # step 0 (the initialization) is not a pretrained checkpoint
    dip = an.entropy_decay(steps, [9.0, 8.0, 7.2, 6.8, 6.9, 7.0, 7.1])  # falls, then creeps back up
    assert dip["verdict"] == "direction only" and not dip["monotone"] and dip["max_rise"] == pytest.approx(0.1)
    rebound = an.entropy_decay(steps, [9.0, 8.0, 7.0, 7.5, 7.6, 7.7, 7.9])  # the small-scale first trial: down, then up
    assert rebound["verdict"] == "did not hold" and rebound["max_rise"] == pytest.approx(0.5)
    assert an.entropy_decay(steps, [9.0, 7.0, 7.2, 7.4, 7.6, 7.8, 8.0])["verdict"] == "did not hold"
    assert an.entropy_decay([0, 10, 20], [9.0, 8.0, 7.0])["verdict"] == "not measurable"


def test_acquisition_forgetting_verdicts():
    steps, h = [100, 200, 300, 400, 500], [9.0, 8.0, 7.0, 6.0, 5.0]
    out = an.acquisition_forgetting(steps, h, [10.0, 8.0, 6.5, 4.0, 2.0], [1.0, 2.0, 3.0, 4.0, 5.5])
    assert out["verdict_A"] == out["verdict_F"] == out["verdict_step_A"] == out["verdict_step_F"] == "held"
    # entropy rising with steps: the correlation with entropy can hold while the step trend does not
    out = an.acquisition_forgetting(steps, h[::-1], [2.0, 4.0, 6.0, 8.0, 10.0], [None] * 5)
    assert out["verdict_A"] == "held" and out["verdict_step_A"] == "did not hold" and out["verdict_F"] == "not measured"
    assert an.acquisition_forgetting(steps[:2], h[:2], [1.0, 2.0], [1.0, 2.0])["verdict_A"] == "not measurable"


def test_resuscitation_verdicts_on_A_and_on_F():
    base = [1.0, 1.2, 0.9]
    out = an.resuscitation_helps(base, {0.5: [0.9, 1.1, 0.8], 1.0: [1.5, 1.8, 1.4], 2.0: [2.0, 2.1, 1.9]})
    assert out["verdict_A"] == "held" and out["verdict_F"] == "not measured" and out["verdict"] == "not measured"
    assert out["by_amplify"]["1.0"]["delta"]["mean"] == pytest.approx((0.5 + 0.6 + 0.5) / 3)
    assert an.resuscitation_helps([1.0], {1.0: [1.3]})["verdict_A"] == "direction only"  # one seed: no test
    assert an.resuscitation_helps([1.0], {1.0: [0.7], 2.0: [1.4]})["verdict_A"] == "did not hold"
    # F: resuscitation helps when it forgets *less* (F down); judged apart from A
    base_F = [5.0, 6.0, 4.0]
    less = {1.0: [3.0, 3.9, 2.1], 2.0: [2.0, 3.1, 1.2]}  # differences -2, -2.1, -1.9 and -3, -2.9, -2.8
    out = an.resuscitation_helps(base, {1.0: [1.5, 1.8, 1.4], 2.0: [2.0, 2.1, 1.9]}, base_F, less)
    assert out["verdict_A"] == out["verdict_F"] == out["verdict"] == "held"
    diffs = [-2.0, -2.1, -1.9]
    m, sd = -2.0, math.sqrt((0 + 0.01 + 0.01) / 2)
    t = m / (sd / math.sqrt(3))
    assert out["by_amplify"]["1.0"]["delta_F"]["mean"] == pytest.approx(sum(diffs) / 3)
    assert out["by_amplify"]["1.0"]["p_F"] == pytest.approx(2 * scipy.stats.t.sf(abs(t), 2))
    more = {1.0: [6.0, 7.0, 5.0], 2.0: [7.0, 8.0, 6.0]}  # forgets more: A held, F did not
    out = an.resuscitation_helps(base, {1.0: [1.5, 1.8, 1.4], 2.0: [2.0, 2.1, 1.9]}, base_F, more)
    assert (out["verdict_A"], out["verdict_F"], out["verdict"]) == ("held", "did not hold", "did not hold")
    out = an.resuscitation_helps([1.0], {1.0: [0.7]}, [5.0], {1.0: [4.0]})  # A down, F down, one seed
    assert (out["verdict_A"], out["verdict_F"]) == ("did not hold", "direction only")
