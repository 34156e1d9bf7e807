"""The neuron map on every layout (dense gated, T5 gated, plain, Conv1D, fused, MoE experts gated and
not, shared experts) against references written here:
- neuron i's up rows (and bias) are what its coefficient is linear in: doubled, the measured Cbar_i
  doubles exactly (x4 for relu²), and no other coefficient of the layer moves, so the map numbers
  neurons as measurement does (experts expert-major, then the shared expert);
- its gate rows are its own: copying neuron j's gate and up rows into neuron i makes c_i = c_j;
- its output column is the vector c_i multiplies: zeroed, the down projection's output (the experts'
  output, for a routed neuron) loses exactly c_i v_i, with v_i located by hand in the weight.
"""

import pytest
import torch
from test_ffn_layouts import build
from transformers.activations import ACT2FN

from kentropy.errors import KentropyError
from kentropy.measurement.workflow import measure_ids
from kentropy.models.neurons import check_coefficients, parts, split
from kentropy.models.registry import find_layout

# every layout, with an activation that makes c_i homogeneous in the up rows (degree 2 for relu²): dense gated,
# gated wi_0 / wi_1 in two stacks, plain with bias and ReLU, Conv1D [in, out], fused [gate | up], fused [input | gate]
# with bias, gated experts, gated experts with a (sigmoid-gated) shared expert, relu² experts with a plain shared expert
LAYOUTS = {"llama": None, "mt5": None, "opt": None, "gpt_neox": dict(hidden_act="relu"), "gpt2": dict(activation_function="relu"),
           "phi3": None, "modernbert": dict(mlp_bias=True), "olmoe": None, "qwen2_moe": None, "deepseek_v3": None, "nemotron_h": None}
POWER = {"nemotron_h": 2}  # relu²: c(k x) = k² c(x)

# (layout, layer l, neuron i in the layer's numbering, where its output column is by hand: module, kind, index)
PROBES = [
    ("llama", 1, 5, "model.layers.1.mlp.down_proj", "linear", 5),
    ("mt5", 0, 7, "encoder.block.0.layer.1.DenseReluDense.wo", "linear", 7),
    ("mt5", 3, 9, "decoder.block.1.layer.2.DenseReluDense.wo", "linear", 9),
    ("opt", 0, 3, "model.decoder.layers.0.fc2", "linear", 3),
    ("gpt_neox", 1, 10, "gpt_neox.layers.1.mlp.dense_4h_to_h", "linear", 10),
    ("gpt2", 0, 11, "transformer.h.0.mlp.c_proj", "conv1d", 11),
    ("phi3", 1, 20, "model.layers.1.mlp.down_proj", "linear", 20),
    ("modernbert", 0, 2, "layers.0.mlp.Wo", "linear", 2),
    ("olmoe", 0, 2 * 24 + 5, "model.layers.0.mlp.experts", "experts", (2, 5)),
    ("qwen2_moe", 0, 1, "model.layers.0.mlp.down_proj", "linear", 1),
    ("qwen2_moe", 1, 3 * 12 + 4, "model.layers.1.mlp.experts", "experts", (3, 4)),
    ("qwen2_moe", 1, 4 * 12 + 7, "model.layers.1.mlp.shared_expert.down_proj", "linear", 7),
    ("deepseek_v3", 1, 1 * 12 + 9, "model.layers.1.mlp.experts", "experts", (1, 9)),
    ("deepseek_v3", 1, 4 * 12 + 3, "model.layers.1.mlp.shared_experts.down_proj", "linear", 3),
    ("nemotron_h", 0, 4, "model.layers.2.mixer.down_proj", "linear", 4),
    ("nemotron_h", 1, 0 * 12 + 6, "model.layers.3.mixer.experts", "experts", (0, 6)),
    ("nemotron_h", 1, 4 * 12 + 2, "model.layers.3.mixer.shared_experts.down_proj", "linear", 2),
]
IDS = [[(7 * t + 3 * d) % 300 + 3 for t in range(n)] for d, n in enumerate([12, 9, 12, 5])]


def make(name: str):
    return build(name, over=LAYOUTS[name])


def cbar(model) -> list[torch.Tensor]:
    return list(measure_ids(model, IDS, 2, batch_size=3, progress=False).coefficients)


def located(model, l: int, i: int):
    """Neuron i of layer l through the map: (part, index into the part's views)."""
    [(part, local, sel)] = split(find_layout(model).layers[l], torch.tensor([i]))
    assert sel.tolist() == [True]
    return part, part.where(local)


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_parts_number_the_layer_as_cbar_does(name):
    model = make(name)
    layout = find_layout(model)
    for layer in layout.layers:
        ps = parts(layer)
        assert [p.start for p in ps] == [sum(q.size for q in ps[:k]) for k in range(len(ps))]  # contiguous, in order
        assert sum(p.size for p in ps) == layer.size
        assert len(ps) == 1 + (layer.shared is not None)
        if layer.moe:
            assert ps[0].per_expert == layer.expert_dim and ps[0].size == layer.n_experts * layer.expert_dim
        if layer.shared is not None:
            assert ps[1].per_expert is None and ps[1].size == layer.shared.size
        for p in ps:  # every view shares its parameter's storage, so writes reach the model
            for s in p.sites:
                assert s.rows().untyped_storage().data_ptr() == s.param.untyped_storage().data_ptr()
                assert s.rows().shape[: 1 if p.per_expert is None else 2] == ((p.size,) if p.per_expert is None
                                                                               else (layer.n_experts, layer.expert_dim))


@pytest.mark.parametrize("probe", PROBES, ids=[f"{p[0]}-{p[1]}-{p[2]}" for p in PROBES])
def test_up_rows_scale_the_measured_coefficient_exactly(probe):
    name, l, i = probe[:3]
    model = make(name)
    before = cbar(model)
    part, where = located(model, l, i)
    with torch.no_grad():
        for site in (part.up, part.up_bias):
            if site is not None:
                site.rows()[where] *= 2  # a power of 2: exact in floating point
    after = cbar(model)
    k = 2 ** POWER.get(name, 1)
    assert after[l][i] == k * before[l][i] and before[l][i] > 0
    others = torch.arange(before[l].numel()) != i
    assert torch.equal(after[l][others], before[l][others])  # no other neuron of the layer moved
    assert all(torch.equal(a, b) for a, b in zip(after[:l], before[:l]))


@pytest.mark.parametrize("probe", PROBES, ids=[f"{p[0]}-{p[1]}-{p[2]}" for p in PROBES])
def test_input_rows_are_the_neurons_own(probe):
    """Neuron i+1's input rows and biases copied into neuron i (same part, same expert): c_i = c_{i+1}. Its up rows
    alone, or its gate rows alone: c_i is neither (a gated neuron's gate and up are both its own); its gate rows
    zeroed: c_i = act(0) · up = 0."""
    name, l, i = probe[:3]
    before = cbar(make(name))

    def edited(sites_of, value=None) -> float:
        """Cbar_i of a fresh model whose neuron i took neuron i+1's `sites_of(part)` (or `value`)."""
        model = make(name)
        part, where = located(model, l, i)
        _, other = located(model, l, i + 1)
        assert len(where) == len(other) and all(torch.equal(a, b) for a, b in zip(where[:-1], other[:-1]))  # same expert
        with torch.no_grad():
            for s in sites_of(part):
                if s is not None:
                    s.rows()[where] = s.rows()[other] if value is None else value
        return float(cbar(model)[l][i])

    target = float(before[l][i + 1])
    assert target != pytest.approx(float(before[l][i]), rel=1e-3)
    assert edited(lambda p: p.inputs) == pytest.approx(target, rel=1e-6)
    part, _ = located(make(name), l, i)
    if part.gate is None:
        assert part.gate_bias is None and name in {"opt", "gpt_neox", "gpt2", "nemotron_h"}
        return
    assert edited(lambda p: [p.up, p.up_bias]) != pytest.approx(target, rel=1e-3)
    assert edited(lambda p: [p.gate, p.gate_bias]) != pytest.approx(target, rel=1e-3)
    assert edited(lambda p: [p.gate, p.gate_bias], 0.0) == 0.0  # SiLU(0) = GELU(0) = 0


def _hand_column(weight: torch.Tensor, kind: str, index) -> torch.Tensor:
    """v_i written out per storage: Linear [h, m] column i; Conv1D [m, h] row i; experts down_proj [E, h, m] column i of e."""
    if kind == "linear":
        return weight[:, index]
    if kind == "conv1d":
        return weight[index]
    e, i = index
    return weight[e][:, i]


@pytest.mark.parametrize("probe", PROBES, ids=[f"{p[0]}-{p[1]}-{p[2]}" for p in PROBES])
def test_output_column_is_what_the_coefficient_multiplies(probe):
    name, l, i, path, kind, index = probe
    model = make(name)
    module = model.get_submodule(path)
    weight = module.down_proj if kind == "experts" else module.weight
    v = _hand_column(weight, kind, index).detach().clone()
    seen = []
    hooks = [module.register_forward_pre_hook(lambda m, a: seen.append(["in", [t.detach().clone() for t in a]])),
             module.register_forward_hook(lambda m, a, out: seen.append(["out", out.detach().clone()]))]
    try:
        cbar(model)
        part, where = located(model, l, i)
        original = {k: t.clone() for k, t in model.state_dict().items()}
        with torch.no_grad():
            part.out.rows()[where] = 0
        cbar(model)
    finally:
        for h in hooks:
            h.remove()
    # by hand: the weight slice v_i is 0 and nothing else of the model changed
    assert torch.equal(_hand_column(weight, kind, index), torch.zeros_like(v)) and v.abs().sum() > 0
    state = model.state_dict()
    changed = [k for k in state if not torch.equal(state[k], original[k])]
    assert len(changed) == 1 and state[changed[0]].data_ptr() == weight.data_ptr()
    calls = len(seen) // 2  # entries of the forwards before the edit: an input and an output per batch
    assert calls >= 2 and [k for k, _ in seen] == ["in", "out"] * calls
    with torch.no_grad():
        _compare(seen, calls, kind, model, module, index, v, name)


def _compare(seen, calls, kind, model, module, index, v, name) -> None:
    """Each forward call after the edit gave the output before it, less c_i v_i."""
    for (_, args), (_, y0), (_, _), (_, y1) in zip(seen[0:calls:2], seen[1:calls:2], seen[calls::2], seen[calls + 1::2]):
        drop = _routed_drop(model, module, args, index, v, name) if kind == "experts" else args[0][..., index, None] * v
        torch.testing.assert_close(y1, y0 - drop.to(y0.dtype), rtol=1e-5, atol=1e-5)


def _routed_drop(model, experts, args, index, v, name) -> torch.Tensor:
    """Σ over the routings of token t to expert e: g · c_{e,i}(x_t) · v, c_{e,i} written out from the weights."""
    x, top, g = args[0], args[1], args[2]  # [N, h], [N, k], [N, k]
    e, i = index
    m = experts.down_proj.shape[2]
    if name == "nemotron_h":  # relu² without a gate
        c = torch.relu(x @ experts.up_proj[e, i]) ** 2
    else:  # gate_up_proj [E, 2m, h]: [gate | up]
        c = ACT2FN[model.config.hidden_act](x @ experts.gate_up_proj[e, i]) * (x @ experts.gate_up_proj[e, m + i])
    weight = (g * (top == e)).sum(-1)  # g_e(t), 0 where t is not routed to e
    return (weight * c)[:, None] * v


def test_check_coefficients_against_the_layout():
    layout = find_layout(make("qwen2_moe"))
    ok = [torch.ones(24, dtype=torch.float64), torch.ones(4 * 12 + 20, dtype=torch.float64)]
    check_coefficients(layout, ok)
    check_coefficients(layout, [ok[0], torch.zeros(68)])  # an all-zero layer is a Cbar (ReDo: no score there)
    with pytest.raises(KentropyError, match=r"^coefficients: layer 1 is all zero$"):
        check_coefficients(layout, [ok[0], torch.zeros(68)], nonzero=True)
    with pytest.raises(KentropyError, match=r"^cbar: shape \(2, 24\); the model needs 2 layers of \[24, 68\] memory vectors$"):
        check_coefficients(layout, torch.ones(2, 24), "cbar")
    with pytest.raises(KentropyError, match=r"^coefficients: layer 0 holds negative values"):
        check_coefficients(layout, [-ok[0], ok[1]])


def test_plain_layouts_have_no_gate_and_a_bias():
    for name in ("opt", "gpt_neox", "gpt2"):
        for layer in find_layout(make(name)).layers:
            [part] = parts(layer)
            assert part.gate is None and part.gate_bias is None and part.up_bias is not None
