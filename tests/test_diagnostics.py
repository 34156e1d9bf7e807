"""Mechanism diagnostics against hand computations: Cbar's KL to uniform, top shares and dormant
fraction; per-neuron ‖w_in,i‖·‖w_out,i‖ from the named weight matrices of tiny models."""

import math

import numpy as np

import pytest
import torch
import transformers as T
from conftest import V, tiny_model

from kentropy.measurement.diagnostics import (cbar_diagnostics, dormant_fraction, kl_to_uniform, neuron_weight_norms, top_share,
                                  weight_norm_summary)


def test_uniform_cbar():
    d = cbar_diagnostics(torch.full((2, 8), 0.3))
    assert d["kl_to_uniform"] == pytest.approx([0, 0], abs=1e-12)
    assert d["top1_share"] == pytest.approx([1 / 8] * 2) and d["top5_share"] == pytest.approx([5 / 8] * 2)
    assert d["dormant_fraction"] == [0.0, 0.0]


def test_one_hot_and_two_neuron_cbar():
    d = cbar_diagnostics(torch.tensor([[4.0, 0, 0, 0], [3.0, 1, 1, 1]]))
    assert d["kl_to_uniform"][0] == pytest.approx(math.log(4))  # H = 0
    p = [0.5, 1 / 6, 1 / 6, 1 / 6]
    assert d["kl_to_uniform"][1] == pytest.approx(math.log(4) + sum(x * math.log(x) for x in p))
    assert d["top1_share"] == pytest.approx([1.0, 0.5]) and d["top5_share"] == pytest.approx([1.0, 1.0])  # m < 5: all
    assert d["dormant_fraction"] == [0.75, 0.0]  # 0 < 0.1 * mean 1; 1 > 0.1 * 1.5
    # [3, 1]: p = (3/4, 1/4), KL = ln 2 + 3/4 ln 3/4 + 1/4 ln 1/4 = 0.130812 (≈ CV²/2 = 0.125)
    assert float(kl_to_uniform(torch.tensor([3.0, 1.0]))) == pytest.approx(0.130812, abs=1e-6)


def test_dormant_threshold_and_layers_of_different_size():
    c = torch.tensor([1.0] * 9 + [0.05])  # mean 0.905: 0.05 < 0.0905
    assert float(dormant_fraction(c)) == pytest.approx(0.1)
    assert float(dormant_fraction(torch.tensor([1.0, 1.0, 0.1]), tau=0.1)) == 0.0  # 0.1 is not < 0.07
    assert float(top_share(torch.tensor([1.0, 2.0, 3.0, 4.0]), 2)) == pytest.approx(0.7)
    d = cbar_diagnostics([torch.ones(6), torch.tensor([1.0, 0.0])])  # MoE-style: m_l differ
    assert d["kl_to_uniform"] == pytest.approx([0.0, math.log(2)]) and d["dormant_fraction"] == [0.0, 0.5]


def norms(w, dim):
    return w.detach().double().norm(dim=dim)


def test_weight_norms_llama():
    model = tiny_model("llama")
    got = neuron_weight_norms(model)
    assert len(got) == 2
    for layer, g in zip(model.model.layers, got):
        mlp = layer.mlp  # gate_proj, up_proj [m, h]; down_proj [h, m]
        w_in = torch.sqrt(norms(mlp.gate_proj.weight, 1) ** 2 + norms(mlp.up_proj.weight, 1) ** 2)
        assert g.shape == (24,)
        torch.testing.assert_close(g, w_in * norms(mlp.down_proj.weight, 0))


def test_weight_norms_gpt2():
    model = tiny_model("gpt2")
    got = neuron_weight_norms(model)
    for block, g in zip(model.transformer.h, got):
        mlp = block.mlp  # Conv1D: c_fc [h, m], c_proj [m, h]; the bias is not a weight
        torch.testing.assert_close(g, norms(mlp.c_fc.weight, 0) * norms(mlp.c_proj.weight, 1))


def test_weight_norms_gpt_neox_and_fused_phi3():
    model = tiny_model("gpt_neox")
    for layer, g in zip(model.gpt_neox.layers, neuron_weight_norms(model)):
        torch.testing.assert_close(g, norms(layer.mlp.dense_h_to_4h.weight, 1) * norms(layer.mlp.dense_4h_to_h.weight, 0))
    torch.manual_seed(0)
    cfg = T.Phi3Config(vocab_size=V, hidden_size=16, intermediate_size=24, num_hidden_layers=2, num_attention_heads=2,
                       bos_token_id=0, eos_token_id=1, pad_token_id=2)
    model = T.AutoModelForCausalLM.from_config(cfg)
    for layer, g in zip(model.model.layers, neuron_weight_norms(model)):
        gu = layer.mlp.gate_up_proj.weight  # [2m, h]: [gate | up]
        w_in = torch.sqrt(norms(gu[:24], 1) ** 2 + norms(gu[24:], 1) ** 2)
        torch.testing.assert_close(g, w_in * norms(layer.mlp.down_proj.weight, 0))


def test_weight_norms_olmoe():
    torch.manual_seed(0)
    cfg = T.OlmoeConfig(vocab_size=V, hidden_size=16, intermediate_size=24, num_hidden_layers=2, num_attention_heads=2,
                        num_experts=4, num_experts_per_tok=2, bos_token_id=0, eos_token_id=1, pad_token_id=2)
    model = T.AutoModelForCausalLM.from_config(cfg)
    for layer, g in zip(model.model.layers, neuron_weight_norms(model)):
        ex = layer.mlp.experts  # gate_up_proj [E, 2m, h] ([gate | up]), down_proj [E, h, m]
        want = torch.cat([torch.sqrt(norms(ex.gate_up_proj[e, :24], 1) ** 2 + norms(ex.gate_up_proj[e, 24:], 1) ** 2)
                          * norms(ex.down_proj[e], 0) for e in range(4)])
        torch.testing.assert_close(g, want)  # experts in order, as Cbar lists them


def test_weight_norms_shared_and_ungated_experts():
    """Routed experts then the shared expert, as Cbar lists them: Qwen2-MoE (gated experts, gated shared expert) and
    NemotronH (relu² experts with up_proj only, a plain shared expert): ‖w_in‖ is then the up row alone."""
    from test_ffn_layouts import build

    model = build("qwen2_moe")
    got = neuron_weight_norms(model)
    mlp = model.model.layers[1].mlp
    ex, sh = mlp.experts, mlp.shared_expert  # gate_up_proj [4, 24, 16], down_proj [4, 16, 12]; shared [20, 16], [16, 20]
    routed = [torch.sqrt(norms(ex.gate_up_proj[e, :12], 1) ** 2 + norms(ex.gate_up_proj[e, 12:], 1) ** 2) * norms(ex.down_proj[e], 0)
              for e in range(4)]
    shared = torch.sqrt(norms(sh.gate_proj.weight, 1) ** 2 + norms(sh.up_proj.weight, 1) ** 2) * norms(sh.down_proj.weight, 0)
    torch.testing.assert_close(got[1], torch.cat(routed + [shared]))
    assert got[0].shape == (24,)  # layer 0 is dense (mlp_only_layers)
    model = build("nemotron_h")
    mixer = model.model.layers[3].mixer
    ex, sh = mixer.experts, mixer.shared_experts  # up_proj [4, 12, 16], down_proj [4, 16, 12]; shared up [20, 16], down [16, 20]
    want = torch.cat([norms(ex.up_proj[e], 1) * norms(ex.down_proj[e], 0) for e in range(4)]
                     + [norms(sh.up_proj.weight, 1) * norms(sh.down_proj.weight, 0)])
    torch.testing.assert_close(neuron_weight_norms(model)[1], want)


def test_weight_norm_summary():
    s = weight_norm_summary([torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.full((3,), 2.0)])
    assert s["mean"] == pytest.approx([2.5, 2.0])
    assert s["cv"] == pytest.approx([math.sqrt(1.25) / 2.5, 0.0])
    assert s["min_over_max"] == pytest.approx([0.25, 1.0])


def _reference_position_stats(model, docs: list[list[int]]) -> dict[str, list[float]]:
    """Each document alone (no padding): per layer the mean over tokens of max_i |c| / median_i |c| (numpy's
    interpolated median), and Σ_i |c| at position 0 over Σ_t Σ_i |c|; then the mean over documents."""

    from kentropy.models.registry import find_layout

    layout = find_layout(model)
    rows = []
    for doc in docs:
        caught = []
        hooks = [layer.dense.down.register_forward_pre_hook(lambda mod, args: caught.append(args[0][0].abs().double()))
                 for layer in layout.layers]
        try:
            with torch.no_grad():
                model(input_ids=torch.tensor([doc]))
        finally:
            for h in hooks:
                h.remove()
        rows.append([(float(np.mean([c[t].max().item() / np.median(c[t].numpy()) for t in range(len(doc))])),
                      float(c[0].sum() / c.sum())) for c in caught])
    L = len(rows[0])
    return {"max_over_median": [sum(r[l][0] for r in rows) / len(rows) for l in range(L)],
            "first_position_share": [sum(r[l][1] for r in rows) / len(rows) for l in range(L)]}


@pytest.mark.parametrize("family", ["llama", "gpt_neox"])
def test_position_stats_against_documents_one_by_one(family):
    """max/median of |c| and the first position's share of Σ|c|, from the capture hook on padded batches
    (right padding, several lengths), equal the same statistics of each document measured alone."""
    from kentropy.measurement.workflow import measure_ids

    model = tiny_model(family)
    docs = [[5, 9, 13, 22, 7, 40, 3], [8, 11, 2], [30, 31, 32, 33, 34, 35, 36, 37, 38, 39], [17, 4]]
    got = measure_ids(model, docs, pad_id=0, batch_size=3, progress=False, positions=True).position_stats
    want = _reference_position_stats(model, docs)
    assert got["max_over_median"] == pytest.approx(want["max_over_median"], rel=1e-5)
    assert got["first_position_share"] == pytest.approx(want["first_position_share"], rel=1e-5)
    assert all(0 < s < 1 for s in got["first_position_share"]) and all(r > 1 for r in got["max_over_median"])
    assert "position_stats" not in measure_ids(model, docs, pad_id=0, progress=False).to_json()


@pytest.mark.parametrize("shape", [(3, 5, 86), (2, 7, 9), (4, 4, 2), (2, 3, 1)])
def test_median_is_numpys(shape):
    """The capture hook's median: numpy's interpolated median, also where the lower middle value repeats."""
    from kentropy.measurement.capture import median

    a = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    a[0, 0, : shape[-1] // 2 + 1] = 0.5  # the lower middle value repeats past the middle
    a[-1, -1] = 0.25  # every value equal
    torch.testing.assert_close(median(a), torch.from_numpy(np.median(a.double().numpy(), -1)), rtol=0, atol=1e-15)
