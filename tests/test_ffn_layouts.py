"""Every FFN layout of the registry against a manual FFN forward written here, on tiny random configs.

For each family the test captures each block's FFN input x (and, for mixture-of-experts
layers, the routing the model applies: top-k experts and weights) on one unpadded document at
a time, computes the coefficients by hand from the weights, and averages per document, then
over documents; `measure` runs batched (with padding) and must agree.
"""

import math

import pytest
import torch
import torch.nn.functional as F
import transformers as T
from conftest import V
from transformers.activations import ACT2FN

from kentropy.errors import KentropyError
from kentropy.models.registry import find_layout
from kentropy.measurement.workflow import measure, tokenize

_KW = dict(vocab_size=V, hidden_size=16, intermediate_size=24, num_hidden_layers=2, num_attention_heads=2)
_TOK = dict(bos_token_id=0, eos_token_id=1, pad_token_id=2)
_MOE = dict(num_experts_per_tok=2)


def _t5(cls, **kw):
    return cls(vocab_size=V, d_model=16, d_ff=24, num_layers=2, num_heads=2, d_kv=8, pad_token_id=2, eos_token_id=1,
               decoder_start_token_id=2, **kw)


CONFIGS = {
    "llama": lambda: T.LlamaConfig(**_KW, **_TOK),
    "mistral": lambda: T.MistralConfig(**_KW, num_key_value_heads=2, **_TOK),
    "qwen2": lambda: T.Qwen2Config(**_KW, num_key_value_heads=2, **_TOK),
    "qwen3": lambda: T.Qwen3Config(**_KW, num_key_value_heads=2, head_dim=8, **_TOK),
    "gemma": lambda: T.GemmaConfig(**_KW, num_key_value_heads=2, head_dim=8, **_TOK),
    "gemma2": lambda: T.Gemma2Config(**_KW, num_key_value_heads=2, head_dim=8, **_TOK),
    "gemma3": lambda: T.Gemma3TextConfig(**_KW, num_key_value_heads=2, head_dim=8, **_TOK),
    "olmo": lambda: T.OlmoConfig(**_KW, **_TOK),
    "olmo2": lambda: T.Olmo2Config(**_KW, **_TOK),
    "granite": lambda: T.GraniteConfig(**_KW, **_TOK),
    "phi3": lambda: T.Phi3Config(**_KW, **_TOK),
    "llama4": lambda: T.Llama4TextConfig(**_KW, num_key_value_heads=2, head_dim=8, intermediate_size_mlp=24, moe_layers=[], **_TOK),
    "gpt2": lambda: T.GPT2Config(vocab_size=V, n_embd=16, n_layer=2, n_head=2, n_positions=128, n_inner=24, **_TOK),
    "gpt_neox": lambda: T.GPTNeoXConfig(**_KW, **_TOK),
    "gptj": lambda: T.GPTJConfig(vocab_size=V, n_embd=16, n_layer=2, n_head=2, n_inner=24, rotary_dim=4, **_TOK),
    "phi": lambda: T.PhiConfig(**_KW, **_TOK),
    "opt": lambda: T.OPTConfig(vocab_size=V, hidden_size=16, ffn_dim=24, num_hidden_layers=2, num_attention_heads=2,
                               word_embed_proj_dim=16, max_position_embeddings=128, **_TOK),
    "bloom": lambda: T.BloomConfig(vocab_size=V, hidden_size=16, n_layer=2, n_head=2, **_TOK),
    "falcon": lambda: T.FalconConfig(vocab_size=V, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                     ffn_hidden_size=24, bias=True, **_TOK),
    "nemotron": lambda: T.NemotronConfig(**_KW, head_dim=8, num_key_value_heads=2, partial_rotary_factor=0.5, **_TOK),
    "arcee": lambda: T.ArceeConfig(**_KW, head_dim=8, num_key_value_heads=2, hidden_act="gelu", **_TOK),
    "bert": lambda: T.BertConfig(**_KW, pad_token_id=2),
    "roberta": lambda: T.RobertaConfig(**_KW, pad_token_id=2, max_position_embeddings=140),
    "modernbert": lambda: T.ModernBertConfig(**_KW, pad_token_id=2, bos_token_id=0, eos_token_id=1, cls_token_id=0,
                                             sep_token_id=1, global_attn_every_n_layers=1),
    "t5": lambda: _t5(T.T5Config),
    "mt5": lambda: _t5(T.MT5Config, feed_forward_proj="gated-gelu"),
    "olmoe": lambda: T.OlmoeConfig(**_KW, num_experts=4, **_MOE, **_TOK),
    "mixtral": lambda: T.MixtralConfig(**_KW, num_key_value_heads=2, num_local_experts=4, **_MOE, **_TOK),
    "qwen2_moe": lambda: T.Qwen2MoeConfig(**_KW, num_key_value_heads=2, num_experts=4, moe_intermediate_size=12, shared_expert_intermediate_size=20,
                                          mlp_only_layers=[0], **_MOE, **_TOK),
    "qwen3_moe": lambda: T.Qwen3MoeConfig(**_KW, num_key_value_heads=2, head_dim=8, num_experts=4, moe_intermediate_size=12, norm_topk_prob=True,
                                          **_MOE, **_TOK),
    "deepseek_v3": lambda: T.DeepseekV3Config(**_KW, num_key_value_heads=2, n_routed_experts=4, moe_intermediate_size=12, n_shared_experts=1,
                                              first_k_dense_replace=1, kv_lora_rank=8, q_lora_rank=8, qk_rope_head_dim=4,
                                              qk_nope_head_dim=4, v_head_dim=8, n_group=1, topk_group=1, **_MOE, **_TOK),
    "jamba": lambda: T.JambaConfig(**_KW, num_key_value_heads=2, num_experts=4, attn_layer_period=2, attn_layer_offset=1, expert_layer_period=2,
                                   expert_layer_offset=1, use_mamba_kernels=False, mamba_d_state=4, **_MOE, **_TOK),
    "nemotron_h": lambda: T.NemotronHConfig(vocab_size=V, hidden_size=16, intermediate_size=24, num_attention_heads=2,
                                            num_key_value_heads=2, head_dim=8,
                                            layers_block_type=["mamba", "attention", "mlp", "moe"], n_routed_experts=4,
                                            moe_intermediate_size=12, n_shared_experts=1,
                                            moe_shared_expert_intermediate_size=20, mamba_num_heads=4, mamba_head_dim=8,
                                            ssm_state_size=8, n_groups=1, use_mamba_kernels=False, **_MOE, **_TOK),
}
ENCODERS = {"bert", "roberta", "modernbert"}
SEQ2SEQ = {"t5", "mt5"}
MOE = {"olmoe", "mixtral", "qwen2_moe", "qwen3_moe", "deepseek_v3", "jamba", "nemotron_h"}


def act_name(cfg) -> str:
    for key in ("hidden_act", "hidden_activation", "activation_function", "mlp_hidden_act", "dense_act_fn", "activation"):
        if isinstance(getattr(cfg, key, None), str):
            return getattr(cfg, key)
    raise AssertionError(f"no activation in {type(cfg).__name__}")


def bloom_gelu(x):
    return x * 0.5 * (1.0 + torch.tanh(0.79788456 * x * (1 + 0.044715 * x * x)))


def build(family: str, seed: int = 0, over: dict | None = None, **kw):
    """A tiny `family` model in eval mode; `over`: config fields to set (hidden_act="relu"), `kw`: for from_config."""
    torch.manual_seed(seed)
    cfg = CONFIGS[family]()
    for k, v in (over or {}).items():
        setattr(cfg, k, v)
    cls = T.AutoModel if family in ENCODERS else T.AutoModelForSeq2SeqLM if family in SEQ2SEQ else T.AutoModelForCausalLM
    model = cls.from_config(cfg, attn_implementation="eager", **kw)
    with torch.no_grad():  # larger-than-default weights so that coefficients are far from uniform
        for n, p in model.named_parameters():
            if p.dim() >= 2:
                p.normal_(0, 0.3)
            elif n.endswith("bias"):
                p.normal_(0, 0.1)
    return model.eval()


# ---- the hand-written FFNs -----------------------------------------------------------------------
def dense_coefficients(ffn, x, family, act):
    """c for a dense FFN module `ffn` (the module whose input is x [T, d]), written out per family."""
    if family == "gpt2":  # Conv1D: x @ W + b, W [d, m]
        return act(x @ ffn.c_fc.weight + ffn.c_fc.bias)
    if family in ("gpt_neox", "falcon"):
        return act(F.linear(x, ffn.dense_h_to_4h.weight, ffn.dense_h_to_4h.bias))
    if family == "bloom":
        return bloom_gelu(F.linear(x, ffn.dense_h_to_4h.weight, ffn.dense_h_to_4h.bias))
    if family == "gptj":
        return act(F.linear(x, ffn.fc_in.weight, ffn.fc_in.bias))
    if family == "phi":
        return act(F.linear(x, ffn.fc1.weight, ffn.fc1.bias))
    if family == "opt":
        return act(F.linear(x, ffn.weight, ffn.bias))  # OPT: x is fc1's input, `ffn` is fc1
    if family in ("bert", "roberta"):
        return act(F.linear(x, ffn.dense.weight, ffn.dense.bias))
    if family == "modernbert":  # Wi = [input | gate]; c = act(input) * gate
        inp, gate = F.linear(x, ffn.Wi.weight, ffn.Wi.bias).chunk(2, dim=-1)
        return act(inp) * gate
    if family == "phi3":  # gate_up = [gate | up]; c = up * act(gate)
        gate, up = F.linear(x, ffn.gate_up_proj.weight).chunk(2, dim=-1)
        return up * act(gate)
    if family in ("nemotron", "nemotron_h"):  # relu², no gate
        return torch.relu(F.linear(x, ffn.up_proj.weight)) ** 2
    if family == "arcee":  # plain up/down, no gate; GELU here (its default is relu²)
        return F.gelu(F.linear(x, ffn.up_proj.weight))
    if family == "t5":
        return torch.relu(F.linear(x, ffn.wi.weight))
    if family == "mt5":  # wi_0 is the gate, wi_1 the linear part
        return act(F.linear(x, ffn.wi_0.weight)) * F.linear(x, ffn.wi_1.weight)
    return act(F.linear(x, ffn.gate_proj.weight)) * F.linear(x, ffn.up_proj.weight)  # gated


def moe_coefficients(moe, x, idx, g, family, act):
    """Effective coefficients g_e(t) * |c_{e,i}(t)| for every memory vector (expert-major, shared last): [T, E*m (+ms)]."""
    experts = moe.experts
    E = experts.down_proj.shape[0]
    m = experts.down_proj.shape[2]
    out = torch.zeros(x.shape[0], E * m, dtype=torch.float64)
    for t in range(x.shape[0]):
        for j in range(idx.shape[1]):
            e = int(idx[t, j])
            if family == "nemotron_h":
                c = torch.relu(experts.up_proj[e] @ x[t]) ** 2
            else:
                gu = experts.gate_up_proj[e] @ x[t]  # [2m] = [gate | up]
                c = act(gu[:m]) * gu[m:]
            out[t, e * m : (e + 1) * m] += float(g[t, j]) * c.abs().double()
    shared = getattr(moe, "shared_expert", None) or getattr(moe, "shared_experts", None)
    if shared is None:
        return out
    cs = dense_coefficients(shared, x, family, act).abs().double()
    gate = getattr(moe, "shared_expert_gate", None)
    if gate is not None:  # Qwen2-MoE: sigmoid(x w) scales the shared expert
        cs = cs * torch.sigmoid(F.linear(x, gate.weight)).double()
    return torch.cat([out, cs], dim=1)


def ffn_modules(model, family):
    """(name, FFN module or MoE block) per measured block, found here by hand, in measure's order."""
    if family in SEQ2SEQ:
        return ([(f"enc{i}", b.layer[1].DenseReluDense) for i, b in enumerate(model.encoder.block)]
                + [(f"dec{i}", b.layer[2].DenseReluDense) for i, b in enumerate(model.decoder.block)])
    if family in ("bert", "roberta"):
        return [(i, b.intermediate) for i, b in enumerate(model.encoder.layer)]
    if family == "modernbert":
        return [(i, b.mlp) for i, b in enumerate(model.layers)]
    if family in ("gpt2", "gptj", "bloom", "falcon"):
        return [(i, b.mlp) for i, b in enumerate(model.transformer.h)]
    if family == "gpt_neox":
        return [(i, b.mlp) for i, b in enumerate(model.gpt_neox.layers)]
    if family == "opt":
        return [(i, b.fc1) for i, b in enumerate(model.model.decoder.layers)]
    if family in ("llama4", "jamba"):
        return [(i, b.feed_forward) for i, b in enumerate(model.model.layers)]
    if family == "nemotron_h":
        return [(i, b.mixer) for i, b in enumerate(model.model.layers) if b.block_type in ("mlp", "moe")]
    return [(i, b.mlp) for i, b in enumerate(model.model.layers)]


def reference_cbar(model, family, docs, activation="abs"):
    """Cbar per layer: per-document means of |c| (MoE: g * |c|) first, then the mean over documents."""
    act = ACT2FN[act_name(model.config)] if family != "bloom" else bloom_gelu
    mods = ffn_modules(model, family)
    per_doc = []
    for ids in docs:
        seen = {}
        handles = []
        for name, mod in mods:
            if hasattr(mod, "experts"):
                handles.append(mod.experts.register_forward_pre_hook(
                    lambda m, a, kw, n=name: seen.__setitem__(n, ("moe", *[t.detach().clone() for t in a])), with_kwargs=True))
            else:
                handles.append(mod.register_forward_pre_hook(lambda m, a, n=name: seen.__setitem__(n, ("dense", a[0].detach().clone()))))
        kw = {}
        if family in SEQ2SEQ:
            kw["decoder_input_ids"] = model._shift_right(torch.tensor([ids]))
        if getattr(model.config, "type_vocab_size", 0):
            kw["token_type_ids"] = torch.zeros(1, len(ids), dtype=torch.long)
        try:
            with torch.no_grad():
                model(input_ids=torch.tensor([ids]), **kw)
        finally:
            for h in handles:
                h.remove()
        rows = []
        with torch.no_grad():
            for name, mod in mods:
                kind, x, *routing = seen[name]
                x = x.reshape(-1, x.shape[-1])  # [T, d]
                if kind == "moe":
                    a = moe_coefficients(mod, x, *routing, family, act)
                else:
                    c = dense_coefficients(mod, x, family, act).double()
                    a = c.abs() if activation == "abs" else c.clamp_min(0)
                rows.append(a.mean(0))
        per_doc.append(rows)
    return [torch.stack([d[l] for d in per_doc]).mean(0) for l in range(len(mods))]


def entropy_of(row) -> float:
    s = sum(row)
    return -sum(v / s * math.log(v / s) for v in row if v > 0)


@pytest.mark.parametrize("family", list(CONFIGS))
def test_layout_matches_manual_ffn(family, tokenizer, sample_texts):
    model = build(family)
    texts = sample_texts[:5]
    docs = tokenize(tokenizer, texts, 24)
    ref = reference_cbar(model, family, docs)
    got = measure(model, tokenizer, texts, seq_len=24, batch_size=3, progress=False)
    cbar = list(got.coefficients)
    assert [c.numel() for c in cbar] == [r.numel() for r in ref]
    for l, (c, r) in enumerate(zip(cbar, ref)):
        assert torch.allclose(c, r, rtol=1e-4, atol=1e-7), (family, l, (c - r).abs().max())
    assert got.knowledge_entropy_per_layer == pytest.approx([entropy_of(r.tolist()) for r in ref], rel=1e-6)
    assert got.layers == len(ref) and got.tokens == sum(len(d) for d in docs) and got.instances == 5


def test_llama4_moe_layers_are_refused():
    torch.manual_seed(0)
    cfg = T.Llama4TextConfig(**_KW, head_dim=8, intermediate_size_mlp=24, num_local_experts=4, moe_layers=[1], **_TOK)
    with pytest.raises(KentropyError, match="unsupported model family Llama4ForCausalLM"):
        find_layout(T.AutoModelForCausalLM.from_config(cfg))


def test_canonical_points_and_skipped_blocks():
    layout = find_layout(build("nemotron_h"))
    assert [layer.name for layer in layout.layers] == ["blocks.2", "blocks.3"]
    assert layout.skipped == ["blocks.0", "blocks.1"]
    assert set(layout.points) == {"blocks.2.mlp.coef", "blocks.3.mlp.coef"}  # hybrid FFN blocks have no attention
    t5 = find_layout(build("t5"))
    assert [n for n, _ in t5.stacks] == ["encoder", "decoder"]
    assert "decoder.blocks.1.attn.probs" in t5.points and "encoder.blocks.0.mlp.coef" in t5.points
    model = build("llama")
    points = find_layout(model).points
    assert points["blocks.1.mlp.coef"] is model.model.layers[1].mlp.down_proj
    assert points["blocks.0.attn.probs"] is model.model.layers[0].self_attn


# ---- mixture-of-experts: implementations, outputs untouched, the entropy split -----------------------
@pytest.mark.parametrize("family", ["olmoe", "qwen2_moe", "nemotron_h"])
@pytest.mark.parametrize("impl", ["eager", "batched_mm", "grouped_mm"])
def test_moe_every_implementation_matches_reference_and_leaves_outputs_alone(family, impl, tokenizer, sample_texts):
    model = build(family, experts_implementation=impl)
    assert model.config._experts_implementation == impl
    texts = sample_texts[:4]
    docs = tokenize(tokenizer, texts, 20)
    ref = reference_cbar(model, family, docs)
    x = torch.tensor([docs[0]])
    with torch.no_grad():
        before = model(input_ids=x).logits
    got = measure(model, tokenizer, texts, seq_len=20, batch_size=2, metrics=("knowledge", "next-token"), progress=False)
    for c, r in zip(got.coefficients, ref):
        assert torch.allclose(c, r, rtol=1e-4, atol=1e-7)
    with torch.no_grad():
        after = model(input_ids=x).logits
    assert torch.equal(before, after)  # hooks and patches are gone
    experts = [m for m in model.modules() if hasattr(m, "has_gate")]
    assert experts and all("forward" not in vars(e) and "_apply_gate" not in vars(e) for e in experts)


@pytest.mark.parametrize("impl", ["eager", "batched_mm", "grouped_mm"])
def test_measuring_does_not_change_logits(impl, tokenizer, sample_texts):
    """The logits a measuring forward computes are bit-identical to a plain forward's (same implementation)."""
    from kentropy.measurement.capture import CoefficientSums
    from kentropy.measurement.entropy import instance_weights

    model = build("mixtral", experts_implementation=impl)
    ids = tokenize(tokenizer, sample_texts[:3], 16)
    x = torch.tensor([d + [2] * (16 - len(d)) for d in ids])
    mask = (torch.arange(16)[None, :] < torch.tensor([len(d) for d in ids])[:, None]).long()
    with torch.no_grad():
        plain = model(input_ids=x, attention_mask=mask).logits
        with CoefficientSums(find_layout(model)) as sums, sums.batch(instance_weights(mask)):
            measured = model(input_ids=x, attention_mask=mask).logits
    assert torch.equal(plain, measured)
    assert sums.sums is not None and all(s.sum() > 0 for s in sums.sums)


def test_moe_fields_and_exact_split(tokenizer, sample_texts):
    model = build("qwen2_moe")
    got = measure(model, tokenizer, sample_texts[:6], seq_len=24, progress=False)
    j = got.to_json()
    assert j["experts"] == {"num_experts": 4, "expert_dim": 12, "shared_expert_dim": 20, "moe_layers": [1]}
    assert j["ffn_dim_per_layer"] == [24, 4 * 12 + 20] and j["ffn_dim"] == 68
    assert j["expert_entropy_per_layer"][0] is None and j["expert_mass_per_layer"][0] is None  # layer 0 is dense
    cbar = got.coefficients[1].tolist()
    # by hand: masses of the 4 experts and the shared expert, their entropies, and the chain rule
    groups = [cbar[e * 12 : (e + 1) * 12] for e in range(4)] + [cbar[48:]]
    total = sum(cbar)
    mass = [sum(g) / total for g in groups]
    assert j["expert_mass_per_layer"][1] == pytest.approx(mass, rel=1e-9)
    assert j["per_expert_entropy_per_layer"][1] == pytest.approx([entropy_of(g) for g in groups], rel=1e-9)
    h_mass = -sum(p * math.log(p) for p in mass if p > 0)
    assert j["expert_entropy_per_layer"][1] == pytest.approx(h_mass, rel=1e-9)
    h = j["knowledge_entropy_per_layer"][1]
    assert j["expert_entropy_per_layer"][1] + j["within_expert_entropy_per_layer"][1] == pytest.approx(h, rel=1e-12)
    assert h == pytest.approx(entropy_of(cbar), rel=1e-9)
    assert got.max_knowledge_entropy == pytest.approx(math.log(24) + math.log(68))


def test_moe_relu_activation(tokenizer, sample_texts):
    """--activation relu on MoE: max(g c, 0) = g max(c, 0), routing weights being non-negative."""
    model = build("olmoe")
    texts = sample_texts[:3]
    docs = tokenize(tokenizer, texts, 16)
    got = measure(model, tokenizer, texts, seq_len=16, activation="relu", progress=False)
    ab = measure(model, tokenizer, texts, seq_len=16, progress=False)
    assert (got.coefficients <= ab.coefficients + 1e-12).all() and (got.coefficients < ab.coefficients).any()
    assert got.coefficients.shape == (2, 4 * 24) and len(docs) == 3


def test_encoder_decoder_per_stack(tokenizer, sample_texts):
    model = build("mt5")
    got = measure(model, tokenizer, sample_texts[:4], seq_len=20, batch_size=2,
                  metrics=("knowledge", "attention", "next-token"), progress=False)
    j = got.to_json()
    enc, dec = j["stacks"]["encoder"], j["stacks"]["decoder"]
    assert enc["layers"] == dec["layers"] == 2 and j["layers"] == 4
    assert j["knowledge_entropy_per_layer"] == enc["knowledge_entropy_per_layer"] + dec["knowledge_entropy_per_layer"]
    assert j["knowledge_entropy"] == pytest.approx(enc["knowledge_entropy"] + dec["knowledge_entropy"])
    assert j["blocks"] == ["encoder.blocks.0", "encoder.blocks.1", "decoder.blocks.0", "decoder.blocks.1"]
    assert len(enc["attention_entropy_per_layer"]) == 2 and j["next_token_entropy"] > 0


def test_hybrid_names_skipped_blocks(tokenizer, sample_texts):
    j = measure(build("nemotron_h"), tokenizer, sample_texts[:3], seq_len=16, progress=False).to_json()
    assert j["skipped_blocks"] == ["blocks.0", "blocks.1"] and j["blocks"] == ["blocks.2", "blocks.3"]
    assert j["experts"]["moe_layers"] == [1] and j["experts"]["shared_expert_dim"] == 20
    with pytest.raises(KentropyError, match="blocks.2, blocks.3 have an FFN but no self-attention"):
        measure(build("nemotron_h"), tokenizer, sample_texts[:3], seq_len=16, metrics=("knowledge", "attention"),
                progress=False)


def test_registry_routing_weights_are_the_models():
    """OLMoE routing by hand (softmax over experts, top-k, no renormalization) equals what the experts receive."""
    model = build("olmoe")
    seen = {}
    h = model.model.layers[0].mlp.experts.register_forward_pre_hook(
        lambda m, a: seen.update(x=a[0].clone(), idx=a[1].clone(), g=a[2].clone()))
    try:
        with torch.no_grad():
            model(input_ids=torch.tensor([[5, 9, 33, 70, 3]]))
    finally:
        h.remove()
    probs = torch.softmax(seen["x"] @ model.model.layers[0].mlp.gate.weight.T, dim=-1)
    top = probs.topk(2, dim=-1)
    assert torch.equal(top.indices.sort(-1).values, seen["idx"].sort(-1).values)
    assert torch.allclose(top.values.sort(-1).values, seen["g"].sort(-1).values)


def test_plot_draws_expert_usage_panel(tmp_path, monkeypatch, tokenizer, sample_texts):
    import matplotlib.pyplot as plt

    from kentropy.measurement import plot

    model = build("qwen2_moe")
    results = [measure(model, tokenizer, sample_texts[:3], seq_len=16, progress=False, name=f"m{i}").to_json() for i in range(2)]
    drawn = {}
    real = plot.expert_usage
    monkeypatch.setattr(plot, "expert_usage", lambda axes, r, labels: drawn.update(n=len(r)) or real(axes, r, labels))
    out = plot.plot_measurements(results, str(tmp_path / "moe.png"))
    assert drawn == {"n": 2} and (tmp_path / "moe.png").stat().st_size > 0
    plain = [measure(build("llama"), tokenizer, sample_texts[:3], seq_len=16, progress=False).to_json()]
    plot.plot_measurements(plain, str(tmp_path / "plain.png"))  # no expert panel, no error
    assert out.endswith("moe.png") and not plt.get_fignums()


def test_coefficients_out_round_trip_for_mixed_layers(tmp_path, tokenizer, sample_texts):
    """--coefficients-out saves [E*m (+shared)] per MoE layer beside dense layers' [m]; resuscitate reads it back."""
    from kentropy.measurement.workflow import load_coefficients, save_coefficients
    from kentropy.edits.resuscitate import resuscitate

    model = build("deepseek_v3")
    got = measure(model, tokenizer, sample_texts[:3], seq_len=16, progress=False, name="ds")
    save_coefficients([got], str(tmp_path), "abs")
    back = load_coefficients(str(tmp_path))
    assert [c.numel() for c in back] == [24, 4 * 12 + 12]
    assert all(torch.equal(a, b) for a, b in zip(back, got.coefficients))
    resuscitate(model, back, 0.5, 1.0).undo()


def test_circuits_wiring_from_the_registry():
    from kentropy.circuits.arch import wire

    assert wire(build("olmoe")).norms == "pre"  # a mixture-of-experts FFN is one MLP node
    assert wire(build("olmo2")).norms == "post" and wire(build("gemma3")).norms == "sandwich"
    with pytest.raises(KentropyError, match="unsupported model family Phi3ForCausalLM for circuits; supported: gated"):
        wire(build("phi3"))
    assert wire(build("llama")).family.name.startswith("gated")
