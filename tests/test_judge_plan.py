"""The analysis plan: validation naming each field, its JSON, and checkpoints at exactly its fractions."""

import json
import math

import pytest

from kentropy.errors import KentropyError
from kentropy.lab.judge.plan import (AnalysisPlan, Contrast, checkpoint_steps, contrast_steps, fraction_step,
                                     plan_from_dict, plan_text)

GOOD = {"contrasts": [{"name": "late half", "from": 0.5, "to": 1.0}, {"name": "late three quarters", "from": 0.25, "to": 1}],
        "primary": "late half", "sesoi": 0.005, "alpha": 0.05}


def plan(**over):
    return plan_from_dict({**GOOD, **over}, "decay.plan")


def test_to_json_is_the_contract_and_round_trips():
    p = plan()
    j = p.to_json()
    assert j == {"contrasts": [{"name": "late half", "from": 0.5, "to": 1.0}, {"name": "late three quarters", "from": 0.25, "to": 1.0}],
                 "primary": "late half", "sesoi": 0.005, "alpha": 0.05, "correction": "holm", "unit": "seed"}
    assert plan_from_dict(json.loads(json.dumps(j)), "results.json") == p
    assert p.contrast("late half") == Contrast("late half", 0.5, 1.0)


@pytest.mark.parametrize("over, words", [
    ({"contrasts": []}, "contrasts"),
    ({"contrasts": [{"name": "a", "from": 0.0, "to": 1.0}], "primary": "a"}, "contrasts[0]: contrast 'a': from"),
    ({"contrasts": [{"name": "a", "from": 0.5, "to": 1.5}], "primary": "a"}, "contrasts[0]: contrast 'a': to"),
    ({"contrasts": [{"name": "a", "from": 0.5, "to": 0.5}], "primary": "a"}, "from (0.5) must be before to"),
    ({"contrasts": [{"name": "a", "from": "half", "to": 1}], "primary": "a"}, "contrast 'a': from must be a finite number"),
    ({"contrasts": [{"name": "", "from": 0.5, "to": 1}], "primary": ""}, "contrast name"),
    ({"contrasts": [{"name": "a", "from": 0.5, "to": 1}, {"name": "a", "from": 0.25, "to": 1}], "primary": "a"},
     "contrasts: names must be unique, repeated: a"),
    ({"contrasts": [{"name": "a", "from": 0.5, "to": 1, "by": 2}], "primary": "a"}, "contrasts[0]: unknown key(s) by"),
    ({"contrasts": [{"name": "a", "from": 0.5}], "primary": "a"}, "contrasts[0]: missing key(s) to"),
    ({"primary": "first half"}, "primary must name one of the contrasts"),
    ({"sesoi": 0}, "sesoi must be > 0"),
    ({"sesoi": -0.01}, "sesoi must be > 0"),
    ({"sesoi": math.nan}, "sesoi must be a finite number"),
    ({"alpha": 0}, "alpha must be in (0, 1)"),
    ({"alpha": 1.0}, "alpha must be in (0, 1)"),
    ({"alpha": True}, "alpha must be a finite number"),
    ({"correction": "bonferroni"}, "correction must be 'holm'"),
    ({"unit": "checkpoint"}, "unit must be 'seed'"),
    ({"seeds": 4}, "unknown key(s) seeds"),
])
def test_validation_names_the_field(over, words):
    with pytest.raises(KentropyError) as e:
        plan(**over)
    msg = str(e.value)
    assert msg.startswith("decay.plan: ") and words in msg and "\n" not in msg


def test_missing_keys_and_non_mapping():
    data = dict(GOOD)
    del data["sesoi"]
    with pytest.raises(KentropyError, match=r"^p: missing key\(s\) sesoi$"):
        plan_from_dict(data, "p")
    with pytest.raises(KentropyError, match="^p: must be a mapping"):
        plan_from_dict([GOOD], "p")


def test_dataclasses_validate_on_construction():
    with pytest.raises(KentropyError, match="contrast 'x': to must be a fraction"):
        Contrast("x", 0.5, 2.0)
    with pytest.raises(KentropyError, match="^primary must name"):
        AnalysisPlan((Contrast("x", 0.5, 1.0),), "y", 0.005, 0.05)


def test_plan_text_states_everything_before_the_run():
    text = plan_text(plan())
    lines = text.splitlines()
    assert all(x.startswith("[lab]") for x in lines)
    assert "'late half': ΔKL = (H at 50% − H at 100% of training) / L (primary" in text
    assert "H at 25%" in text and "±0.005" in text and "α = 0.05" in text and "Holm" in text and "seed" in text


def test_fraction_step_rounds_half_up():
    assert [fraction_step(f, 5) for f in (0.1, 0.3, 0.5, 0.7, 1.0)] == [1, 2, 3, 4, 5]  # 0.5 -> 1, 1.5 -> 2, 2.5 -> 3, 3.5 -> 4
    assert fraction_step(0.25, 2400) == 600 and fraction_step(0.5, 2401) == 1201


def test_checkpoint_steps_hold_the_plan_fractions_exactly():
    p = plan()
    steps = checkpoint_steps(p, 2400, warmup_steps=48, n_early=6, n_late=9)
    assert steps == sorted(set(steps)) and steps[0] >= 1 and steps[-1] == 2400
    assert {600, 1200, 2400} <= set(steps)
    assert contrast_steps(p, 2400) == {"late half": (1200, 2400), "late three quarters": (600, 2400)}
    late = [s for s in steps if s >= 1200]
    assert late == [1200, 1350, 1500, 1650, 1800, 1950, 2100, 2250, 2400]  # linspace(1200, 2400, 9)
    early = [s for s in steps if s < 1200 and s != 600]
    assert early == [12, 30, 76, 190, 478]  # geomspace(48 // 4, 1200, 6) rounded, 1200 already counted
    # an odd length: the fractions land where fraction_step puts them, and still in the list
    p2 = plan(contrasts=[{"name": "a", "from": 0.3, "to": 0.9}], primary="a")
    s2 = checkpoint_steps(p2, 1001, warmup_steps=0, n_early=4, n_late=5)
    assert contrast_steps(p2, 1001) == {"a": (300, 901)} and {300, 901, 1001} <= set(s2)


def test_run_too_short_for_the_plan():
    with pytest.raises(KentropyError, match="^steps: a 1-step run cannot separate contrast 'late half'"):
        contrast_steps(plan(), 1)
    with pytest.raises(KentropyError, match="^n_late must be"):
        checkpoint_steps(plan(), 100, 0, 3, -1)
