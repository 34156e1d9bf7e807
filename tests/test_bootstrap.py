"""Per-document coefficients and the paired bootstrap over documents, against references written out here."""

import math

import numpy as np
import pytest
import torch

from conftest import tiny_model
from kentropy.measurement.bootstrap import bootstrap_entropy, percentile_interval
from kentropy.measurement.workflow import measure_ids


def per_document_reference(model, ids, down_of):
    """Each document alone (no padding anywhere): mean over its tokens of |input of the down projection|."""
    out = []
    for doc in ids:
        seen = {}
        handles = [down_of(l).register_forward_pre_hook(lambda m, a, l=l: seen.__setitem__(l, a[0].detach()))
                   for l in range(model.config.num_hidden_layers)]
        try:
            with torch.no_grad():
                model(input_ids=torch.tensor([doc]))
        finally:
            for h in handles:
                h.remove()
        out.append(torch.stack([seen[l][0].abs().double().mean(0) for l in range(len(seen))]))
    return torch.stack(out)  # [N, L, m]


@pytest.mark.parametrize("family, down", [("llama", lambda m, l: m.model.layers[l].mlp.down_proj),
                                          ("gpt_neox", lambda m, l: m.gpt_neox.layers[l].mlp.dense_4h_to_h)])
def test_instance_coefficients_equal_one_document_at_a_time(family, down):
    model = tiny_model(family, seed=1)
    g = torch.Generator().manual_seed(0)
    ids = [torch.randint(3, 300, (n,), generator=g).tolist() for n in (5, 9, 3, 12, 7, 7, 1)]
    # batches mix lengths: padding must not count; one forward gives the documents' vectors, Cbar and H
    m = measure_ids(model, ids, 2, batch_size=3, progress=False, instances=True)
    inst = m.instance_coefficients
    ref = per_document_reference(model, ids, lambda l: down(model, l))
    assert inst.shape == ref.shape and torch.allclose(inst, ref, rtol=1e-4, atol=1e-6)  # fp32 batch shapes differ
    # their mean over documents is Cbar (Eq. 2: per instance first, then over instances), and H its entropy
    assert torch.allclose(inst.mean(0), m.coefficients.double(), rtol=1e-5)
    assert m.knowledge_entropy == pytest.approx(entropy_ref(m.coefficients.double().numpy()), rel=1e-12)
    assert m.knowledge_entropy == pytest.approx(entropy_ref(inst.mean(0).numpy()), rel=1e-6)
    assert "instance_coefficients" not in m.to_json() and "capture_points" not in m.to_json()
    assert m.capture_points == [f"blocks.{l}.mlp.coef" for l in range(inst.shape[1])]  # the registry's canonical names
    # measuring without keeping them is the same forward: the same Cbar
    plain = measure_ids(model, ids, 2, batch_size=3, progress=False)
    assert torch.equal(plain.coefficients, m.coefficients) and plain.instance_coefficients is None


def entropy_ref(cbar):
    """H = sum_l -sum_i p ln p with p = Cbar_l / sum Cbar_l, in numpy."""
    p = cbar / cbar.sum(-1, keepdims=True)
    return float(-(p * np.log(p)).sum())


def test_bootstrap_draws_are_resampled_documents():
    g = torch.Generator().manual_seed(3)
    a = torch.rand(20, 2, 6, generator=g, dtype=torch.float64) + 0.1
    b = a * torch.linspace(0.5, 2, 6, dtype=torch.float64)  # another checkpoint on the same documents
    draws = bootstrap_entropy([a, b], n_boot=50, seed=7)
    assert draws.shape == (2, 50)
    # replicate k uses the indices of the k-th row of the same generator's draw, at both checkpoints
    idx = torch.randint(0, 20, (50, 20), generator=torch.Generator().manual_seed(7))
    for k in (0, 17, 49):
        for c, x in enumerate((a, b)):
            assert draws[c, k].item() == pytest.approx(entropy_ref(x[idx[k]].numpy().mean(0)), rel=1e-12)


def test_identical_documents_give_a_point_and_paired_changes_cancel():
    one = torch.rand(1, 2, 5, dtype=torch.float64) + 0.1
    same = one.repeat(30, 1, 1)
    draws = bootstrap_entropy([same, same.clone()], n_boot=200, seed=0)
    lo, hi = percentile_interval(draws[0])
    assert lo == pytest.approx(hi) == pytest.approx(entropy_ref(one[0].numpy()))
    varied = torch.rand(30, 2, 5, dtype=torch.float64) + 0.1
    d = bootstrap_entropy([varied, varied.clone()], n_boot=200, seed=0)
    assert torch.equal(d[0], d[1])  # paired: the same resample at both checkpoints
    lo, hi = percentile_interval(d[0])
    assert lo < entropy_ref(varied.numpy().mean(0)) < hi


def test_percentile_interval_by_hand():
    x = torch.arange(1, 1001, dtype=torch.float64)
    lo, hi = percentile_interval(x, 0.9)
    assert lo == pytest.approx(np.quantile(x.numpy(), 0.05)) and hi == pytest.approx(np.quantile(x.numpy(), 0.95))
    assert math.isclose(lo, 50.95) and math.isclose(hi, 950.05)
