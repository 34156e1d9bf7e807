"""The yardstick: the paper's numbers with their provenance, and the effects they imply in the lab's units."""

import math

import pytest

from kentropy.lab.judge.paper import (IMPLIED, PAPER_REFERENCE, UNITS, compare_to_paper, implied_effect, last_layer_text,
                                      scale_text)


def test_the_fall_is_a_range_read_from_the_figure():
    assert PAPER_REFERENCE["model"] == "OLMo-1B" and PAPER_REFERENCE["whole_run_fall_nats"] == 0.5
    assert PAPER_REFERENCE["delta_kl_per_layer"] == pytest.approx((143.8 - 143.3) / 16) == pytest.approx(0.03125)
    assert PAPER_REFERENCE["fraction_of_max"] == pytest.approx(0.5 / (16 * math.log(8192)))
    assert 0.0034 < PAPER_REFERENCE["fraction_of_max"] < 0.0035  # ≤ 0.35% of 144.17 nats
    assert PAPER_REFERENCE["second_half_share"] is None and PAPER_REFERENCE["last_layer_fall_nats"] == {"at_most": 0.5, "value": None}
    src = PAPER_REFERENCE["source"]
    assert "Fig. 7" in src and "144.17" in src and "y-axis range" in src and "second half is not given" in src and "Fig. 8" in src


def test_table_2_implies_at_least_these_effects():
    # A 25.2 -> 18.8 and F 10.5 -> 19.5 over at most 0.5 / 16 KL nats per layer
    assert IMPLIED["A_per_kl"] == pytest.approx(-6.4 / 0.03125) == pytest.approx(-204.8)
    assert IMPLIED["F_per_kl"] == pytest.approx(9.0 / 0.03125) == pytest.approx(288.0)
    span = (738_000 - 118_000) / 739_328
    assert IMPLIED["fraction_span"] == pytest.approx(span) and IMPLIED["A_per_fraction"] == pytest.approx(-6.4 / span)
    assert len(IMPLIED["assumptions"]) == 4


def test_implied_effects_in_the_findings_units():
    # slopes on H summed over L layers: dA/dH = −dA/dKL / L (KL per layer = ln m − H / L)
    assert implied_effect("2c", layers=2) == pytest.approx(102.4) and implied_effect("2d", layers=2) == pytest.approx(-144.0)
    assert implied_effect("2c", layers=4) == pytest.approx(51.2)
    assert implied_effect("2a", layers=2, steps=1000) == pytest.approx(-6.4 / ((738_000 - 118_000) / 739_328) / 1000)
    assert implied_effect("2b", layers=2, steps=1000) > 0
    # resuscitation that raised H by 0.01 nats per layer: KL falls by as much
    assert implied_effect("3a", layers=2, kl_rise=0.01) == pytest.approx(2.048)
    assert implied_effect("3b", layers=2, kl_rise=0.01) == pytest.approx(-2.88)
    assert implied_effect("3a", layers=2, kl_rise=-0.01) is None and implied_effect("3a", layers=2) is None
    assert implied_effect("1", layers=2) is None and implied_effect("2e", layers=2) is None
    assert set(UNITS) == {"1", "2a", "2b", "2c", "2d", "2e", "3a", "3b"}


def test_compare_to_paper_states_a_range_never_a_ratio():
    c = compare_to_paper(0.068, layers=4, ffn_dim=256)
    assert c["relation"] == "beyond OLMo-1B's whole-run bound"
    assert c["percent_of_max"] == pytest.approx(100 * 0.068 / math.log(256))
    assert "at most 0.031 nats per layer" in c["text"] and "second-half share is not given" in c["text"]
    assert "quarter" not in c["text"] and "larger than" not in c["text"]
    assert compare_to_paper(0.0078, 2, 86)["relation"] == "within OLMo-1B's whole-run range"
    assert compare_to_paper(-0.1, 4, 64)["relation"] == "a rise or no change"


def test_last_layer_and_scale():
    assert "1/16 of its layers; here it is 1/2" in last_layer_text(2)
    assert "gemma-3-270m (base) sits at 0.27" in scale_text() and "its random init at 0.05" in scale_text()
    assert scale_text(0.041).startswith("here 0.041 KL nats per layer")
