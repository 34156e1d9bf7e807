"""The formulas against values worked out by hand."""

import math

import pytest
import torch

from kentropy.measurement import entropy as E


def test_entropy_by_hand():
    # uniform over 4: ln 4; one-hot: 0; [0.5, 0.25, 0.25]: 1.5 ln 2
    assert E.entropy(torch.tensor([0.25] * 4, dtype=torch.float64)).item() == pytest.approx(math.log(4))
    assert E.entropy(torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)).item() == 0.0
    p = torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64)
    assert E.entropy(p).item() == pytest.approx(-(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25)))
    assert E.entropy(p).item() == pytest.approx(1.5 * math.log(2))


def test_knowledge_entropy_per_layer_and_total():
    cbar = torch.tensor([[1.0, 1.0, 2.0], [3.0, 0.0, 1.0]], dtype=torch.float64)
    # layer 0: p = [.25, .25, .5]; layer 1: p = [.75, 0, .25]
    h0 = -(2 * 0.25 * math.log(0.25) + 0.5 * math.log(0.5))
    h1 = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert E.knowledge_entropy_per_layer(cbar).tolist() == pytest.approx([h0, h1])
    assert E.knowledge_entropy(cbar).item() == pytest.approx(h0 + h1)
    # scale-invariant per layer; maximum L ln m at uniform
    assert E.knowledge_entropy(cbar * 7).item() == pytest.approx(h0 + h1)
    assert E.knowledge_entropy(torch.ones(2, 3, dtype=torch.float64)).item() == pytest.approx(2 * math.log(3))


def test_coefficient_magnitude():
    c = torch.tensor([-2.0, 0.0, 3.0])
    assert E.coefficient_magnitude(c, "abs").tolist() == [2.0, 0.0, 3.0]
    assert E.coefficient_magnitude(c, "relu").tolist() == [0.0, 0.0, 3.0]
    with pytest.raises(ValueError):
        E.coefficient_magnitude(c, "square")


def test_attention_entropy_per_query():
    # B=1, H=2, T=2: head 0 rows [1,0] and [.5,.5]; head 1 rows [1,0] and [1,0]
    probs = torch.tensor([[[[1.0, 0.0], [0.5, 0.5]], [[1.0, 0.0], [1.0, 0.0]]]])
    h = E.attention_entropy_per_query(probs)
    assert h.shape == (1, 2)
    assert h[0].tolist() == pytest.approx([0.0, math.log(2) / 2])


def test_next_token_entropy_uniform_and_peaked():
    logits = torch.tensor([[[0.0, 0.0, 0.0, 0.0], [100.0, 0.0, 0.0, 0.0]]])
    h = E.next_token_entropy_per_position(logits)
    assert h[0, 0].item() == pytest.approx(math.log(4))
    assert h[0, 1].item() == pytest.approx(0.0, abs=1e-6)


def test_instance_weights_give_per_instance_means():
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])
    w = E.instance_weights(mask)
    assert torch.allclose(w, torch.tensor([[1 / 3, 1 / 3, 1 / 3, 0], [1, 0, 0, 0]]))
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0], [5.0, 9.0, 9.0, 9.0]])  # padded values must not count
    assert (w * x).sum(1).tolist() == pytest.approx([2.0, 5.0])
