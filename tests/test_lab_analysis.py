"""The lab's statistics and verdicts against values computed by hand."""

import math

import pytest
import scipy.stats

from kentropy.errors import KentropyError
from kentropy.lab.judge import stats as an
from kentropy.lab.judge.findings import core_plan, finding_1, finding_3, findings_2
from kentropy.lab.judge.plan import Pilot


def test_mean_ci_matches_t_interval_by_hand():
    xs = [1.0, 2.0, 4.0]
    m = 7 / 3
    sd = math.sqrt(((1 - m) ** 2 + (2 - m) ** 2 + (4 - m) ** 2) / 2)
    half = 4.302652729911275 * sd / math.sqrt(3)  # t_{0.975, 2}
    c = an.mean_ci(xs)
    assert c["mean"] == pytest.approx(m) and c["lo"] == pytest.approx(m - half) and c["hi"] == pytest.approx(m + half)
    assert an.mean_ci([5.0]) == {"mean": 5.0, "lo": None, "hi": None, "n": 1}


def test_a_seeds_entropy_trend_is_described_not_judged():
    steps = [0, 10, 20, 30, 40, 50, 60]
    down = an.entropy_trend(steps, [9.0, 8.5, 8.3, 8.0, 7.9, 7.7, 7.5])
    assert "verdict" not in down and down["monotone"] and down["spearman"]["rho"] == pytest.approx(-1.0)
    assert down["first"] == 8.5 and down["change"] == pytest.approx(-1.0)  # step 0 (the initialization) is not a pretrained checkpoint
    dip = an.entropy_trend(steps, [9.0, 8.0, 7.2, 6.8, 6.9, 7.0, 7.1])  # falls, then creeps back up
    assert not dip["monotone"] and dip["max_rise"] == pytest.approx(0.1)
    assert an.entropy_trend([0, 10, 20], [9.0, 8.0, 7.0])["spearman"]["rho"] is None  # fewer than 3 trained checkpoints


# ---- the core study: pretraining seeds as the unit --------------------------------------------
def _slope(x, y):
    mx, my = sum(x) / len(x), sum(y) / len(y)
    return sum((a - mx) * (b - my) for a, b in zip(x, y)) / sum((a - mx) ** 2 for a in x)


PASSED = {"passed": True, "why": None}


def test_one_seed_is_inconclusive_however_strong_its_trend():
    h, A = [9.0, 8.0, 7.0, 6.0], [10.0, 8.0, 6.0, 4.0]  # r = 1 over the checkpoints of one run
    _, out = findings_2([{"step": [1, 2, 3, 4], "H": h, "A": A, "F": [1.0] * 4, "dP": A}], ["2c", "2e"], layers=4, steps=4,
                        pilot=None, knowledge=PASSED)
    assert out["2e"]["verdict"] == "inconclusive" and out["2e"]["per_seed"] == [pytest.approx(2.0)]
    assert out["2e"]["ci"] is None and out["2e"]["p"] is None and out["2e"]["seeds"] == 1 and out["2e"]["why"].startswith("one seed")
    assert out["2c"]["verdict"] == "not measurable"  # its power cannot be known from one seed


def test_slopes_across_seeds_by_hand():
    xs = [[9.0, 8.0, 7.0], [9.5, 8.0, 7.5], [8.0, 7.5, 6.0]]
    ys = [[5.0, 4.0, 2.5], [6.0, 4.5, 4.0], [3.0, 3.2, 1.0]]
    slopes = [_slope(x, y) for x, y in zip(xs, ys)]
    m = sum(slopes) / 3
    sd = math.sqrt(sum((b - m) ** 2 for b in slopes) / 2)
    t = m / (sd / math.sqrt(3))
    per_seed = [{"step": [1, 2, 3], "H": x, "A": y, "F": y, "dP": y} for x, y in zip(xs, ys)]
    _, out = findings_2(per_seed, ["2e"], layers=2, steps=3, pilot=None, knowledge=PASSED)
    out = out["2e"]
    assert out["per_seed"] == pytest.approx(slopes) and out["mean"] == pytest.approx(m)
    assert out["p"] == pytest.approx(2 * scipy.stats.t.sf(abs(t), 2))
    half = 4.302652729911275 * sd / math.sqrt(3)
    assert out["ci"] == pytest.approx([m - half, m + half])
    assert out["verdict"] == ("held" if out["p"] < 0.05 else "inconclusive")


def test_finding_1_across_seeds_planted_decay_and_one_seed():
    plan = core_plan(0.005)
    steps = [0, 25, 50, 75, 100]
    seeds = [{"seed": s, "steps": steps, "knowledge_entropy": [20.0, 19.0, 18.9 + 0.01 * s, 18.7, 18.5 - 0.01 * s]}
             for s in range(3)]
    _, out = finding_1(seeds, layers=4, ffn_dim=344, steps=100, plan=plan, pilot=None, regime=None)
    per = [((18.9 + 0.01 * s) - (18.5 - 0.01 * s)) / 4 for s in range(3)]
    assert out["per_seed"] == pytest.approx(per) and (out["from_step"], out["to_step"]) == (50, 100)
    assert out["verdict"] == "decayed, at least the SESOI" and out["paper"]["relation"] == "beyond OLMo-1B's whole-run bound"
    assert out["last_layer"] is None  # no per-layer entropy in these records
    _, one = finding_1(seeds[:1], layers=4, ffn_dim=344, steps=100, plan=plan, pilot=None, regime=None)
    assert one["verdict"] == "inconclusive" and one["ci"] is None and one["p_direction"] is None and one["why"].startswith("one seed")


def test_resuscitation_is_not_tested_where_entropy_fell():
    def rec(s, p, hb, ha, dA, dF):
        return {"seed": s, "amplify": p, "H_before": hb, "H_after": ha, "delta_A": dA, "delta_F": dF, "delta_P_after": dA / 10,
                "delta_D_after": -dF / 100}

    pilot = Pilot("p", (9, 10), {"3a": 0.1, "3b": 0.1})
    fell = [rec(0, 2.0, 20.0, 19.5, 5.0, -2.0), rec(1, 2.0, 20.1, 20.0, 6.0, -1.0)]
    _, out = finding_3(fell, layers=4, pilot=pilot, knowledge=PASSED)
    assert out["verdict_A"] == out["verdict_F"] == out["verdict"] == "not tested"
    assert [r["counted"] for r in out["resuscitation"]] == [False, False]
    assert out["by_amplify"][0]["uncounted_seeds"] == [0, 1] and out["resuscitation"][0]["delta_A"] == 5.0  # the numbers stay
    # H up by 0.02 nats over 4 layers: the paper implies ΔA ≥ 204.8 × 0.005 = 1.02 and ΔF ≤ −1.44
    rose = [rec(s, 2.0, 20.0, 20.02, a, f) for s, a, f in ((0, 5.0, -2.0), (1, 6.0, -1.5), (2, 5.5, -2.5))]
    _, out = finding_3(rose, layers=4, pilot=pilot, knowledge=PASSED)
    d = [5.0, 6.0, 5.5]
    t = 5.5 / (math.sqrt(sum((x - 5.5) ** 2 for x in d) / 2) / math.sqrt(3))
    assert out["by_amplify"][0]["3a"]["A"]["p"] == pytest.approx(2 * scipy.stats.t.sf(t, 2))
    assert out["verdict_A"] == out["verdict_F"] == "held"
    big = [dict(r, H_after=20.5) for r in rose]  # a rise of 0.125 per layer implies ΔA ≥ 25.6: these gains fall short of it
    assert finding_3(big, layers=4, pilot=pilot, knowledge=PASSED)[1]["verdict_A"] == "direction only"
    _, one = finding_3(rose[:1], layers=4, pilot=pilot, knowledge=PASSED)
    assert one["verdict_A"] == "not measurable" and "no test" in one["why_A"]  # one seed: no test, so no power
    _, flat = finding_3([rec(0, 2.0, 20.0, 20.0, 5.0, -2.0)], layers=4, pilot=pilot, knowledge=PASSED)
    assert flat["verdict"] == "not tested"  # H unchanged


def test_forgetting_standard_error_by_hand():
    before = {"D": 0.5, "tasks": {"a": {"score": 0.6, "n": 101}, "b": {"score": 0.4, "n": 51}}}
    after = {"D": 0.45, "tasks": {"a": {"score": 0.5, "n": 101}, "b": {"score": 0.4, "n": 51}}}
    se_b = math.sqrt(0.6 * 0.4 / 100 + 0.4 * 0.6 / 50) / 2
    se_a = math.sqrt(0.5 * 0.5 / 100 + 0.4 * 0.6 / 50) / 2
    assert an.downstream_se(before) == pytest.approx(se_b)
    # F = 100 (1 - D_a / D_b): dF/dD_a = -100 / D_b, dF/dD_b = 100 D_a / D_b^2
    assert an.forgetting_se(before, after) == pytest.approx(100 * math.sqrt((se_a / 0.5) ** 2 + (0.45 * se_b / 0.25) ** 2))


def scored(**rows: list[float]) -> dict:
    """`evaluate(rows=True)`'s result for tasks given by their per-document rows."""
    tasks = {k: {"score": sum(x) / len(x), "n": len(x), "rows": x} for k, x in rows.items()}
    return {"tasks": tasks, "D": sum(t["score"] for t in tasks.values()) / len(tasks)}


def test_paired_forgetting_standard_error_by_hand():
    """Two tasks of 4 and 5 documents. Task a: x_b = 1101, x_a = 1001: var_b = .75/3, var_a = 1/3, cov = .5/3;
    task b: x_b = 10101, x_a = 00101: var_b = var_a = 1.2/4, cov = .8/4. D_b = (.75 + .6)/2 = .675, D_a = .45, r = 2/3.
    Var(D_b) = (.25/4 + .3/5)/4 = 49/1600, Var(D_a) = (1/12 + .3/5)/4 = 43/1200, Cov = (1/24 + .2/5)/4 = 49/2400;
    Var(D_a) + r² Var(D_b) − 2 r Cov = (129 + 49 − 98)/3600 = 1/45."""
    before = scored(a=[1.0, 1.0, 0.0, 1.0], b=[1.0, 0.0, 1.0, 0.0, 1.0])
    after = scored(a=[1.0, 0.0, 0.0, 1.0], b=[0.0, 0.0, 1.0, 0.0, 1.0])
    assert an.paired_rows(before, after)
    assert an.downstream_moments(before, after) == pytest.approx((49 / 1600, 43 / 1200, 49 / 2400))
    paired = an.forgetting_se(before, after)
    assert paired == pytest.approx(100 / 0.675 * math.sqrt(1 / 45)) == pytest.approx(22.0846, abs=1e-4)
    # without the rows: the independent bound, Cov = 0 (the binomial variances equal the rows' for 0/1 outcomes)
    bound = 100 / 0.675 * math.sqrt(178 / 3600)
    strip = lambda d: {"D": d["D"], "tasks": {k: {"score": t["score"], "n": t["n"]} for k, t in d["tasks"].items()}}  # noqa: E731
    assert an.forgetting_se(strip(before), strip(after)) == pytest.approx(bound) and paired < bound
    assert an.forgetting_se(before, strip(after)) == pytest.approx(bound)  # one side without rows
    # the same documents scored the same before and after: D_a = D_b, every (co)variance equal, SE 0
    assert an.forgetting_se(before, scored(**{k: list(t["rows"]) for k, t in before["tasks"].items()})) == pytest.approx(0, abs=1e-12)
    # rows of another length (other documents) or other tasks: not paired, the bound
    other = scored(a=[1.0, 0.0, 0.0, 1.0, 0.0, 1.0], b=[0.0, 0.0, 1.0, 0.0, 1.0])
    assert not an.paired_rows(before, other) and not an.paired_rows(before, scored(a=after["tasks"]["a"]["rows"]))
    assert an.forgetting_se(before, other) == pytest.approx(an.forgetting_se(strip(before), strip(other)))
    assert an.forgetting_se(None, after) is None and an.forgetting_se(scored(a=[1.0]), scored(a=[0.0])) is None


def test_forgetting_se_method_names_the_estimate():
    assert an.forgetting_se_method([True, True])["estimate"] == "paired"
    assert an.forgetting_se_method([False])["estimate"] == an.forgetting_se_method([])["estimate"] == "independent upper bound"
    mixed = an.forgetting_se_method([True, False, True])
    assert mixed["estimate"] == "paired in 2 of 3 runs, else the independent upper bound"
    assert an.F_SE_METHODS["paired"] in mixed["method"] and an.F_SE_METHODS["independent upper bound"] in mixed["method"]


def test_d_before_against_the_prior_only_guess():
    from kentropy.lab.judge.stats import against_floor

    # the median of 0.24, 0.26, 0.30 is 0.26: 0.01 above a floor of 0.25
    k = against_floor([0.30, 0.24, 0.26], 0.25)
    assert k == {"median": 0.26, "floor": 0.25, "margin": pytest.approx(0.01), "above": True}
    # an even count takes the upper middle value: 0.26 of 0.2, 0.24, 0.26, 0.5; at the floor is not above it
    assert against_floor([0.5, 0.2, 0.26, 0.24], 0.26)["median"] == 0.26 and not against_floor([0.26], 0.26)["above"]
    with pytest.raises(KentropyError, match="no D before"):
        against_floor([], 0.25)
