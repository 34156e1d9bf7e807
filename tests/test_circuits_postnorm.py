"""Circuits on post-norm (OLMo 2), sandwich (Gemma 2, Gemma 3) and mixture-of-experts (Mixtral, OLMoE, Qwen2-MoE)
blocks, checked against a float64 reference of the circuit graph written out here from the models' weights."""

import inspect

import pytest
import torch
import transformers as T
from conftest import V

from kentropy.circuits import CONVENTIONS, Tracer, eap_ig, encode_task, exact_edge_effects, head_attribution, score_circuit
from kentropy.circuits.agreement import check_exact_edges
from kentropy.circuits.arch import wire
from kentropy.circuits.eap import embed, logits_of, metric_values, record
from kentropy.circuits.tasks import Example, Task
from kentropy.circuits.trace import Pass
from kentropy.errors import KentropyError

_KW = dict(vocab_size=V, hidden_size=16, intermediate_size=24, num_hidden_layers=2, num_attention_heads=2)
_TOK = dict(bos_token_id=0, eos_token_id=1, pad_token_id=2)
_GEMMA = dict(num_key_value_heads=1, head_dim=8, sliding_window=3)  # grouped-query; a window shorter than the prompts

# family: config, the norms around attention and MLP (attention pre, attention post, MLP pre, MLP post), Gemma's gain 1 + w
ARCH = {
    "olmo2": (lambda: T.Olmo2Config(**{**_KW, "num_attention_heads": 4}, num_key_value_heads=2, **_TOK),  # q/k norms over all heads
              (None, "post_attention_layernorm", None, "post_feedforward_layernorm"), False),
    "gemma2": (lambda: T.Gemma2Config(**_KW, **_GEMMA, **_TOK),
               ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm", "post_feedforward_layernorm"), True),
    "gemma3": (lambda: T.Gemma3TextConfig(**_KW, **_GEMMA, layer_types=["sliding_attention", "full_attention"], **_TOK),
               ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm", "post_feedforward_layernorm"), True),
    "mixtral": (lambda: T.MixtralConfig(**_KW, num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2, **_TOK),
                ("input_layernorm", None, "post_attention_layernorm", None), False),
}
MORE_MOE = {
    "olmoe": lambda: T.OlmoeConfig(**_KW, num_experts=4, num_experts_per_tok=2, **_TOK),
    "qwen2_moe": lambda: T.Qwen2MoeConfig(**_KW, num_key_value_heads=2, num_experts=4, moe_intermediate_size=12,
                                          shared_expert_intermediate_size=20, mlp_only_layers=[0], num_experts_per_tok=2, **_TOK),
}
NORMS = {"olmo2": "post", "gemma2": "sandwich", "gemma3": "sandwich", "mixtral": "pre"}
SUBJECTS = ["Ostrel", "Sable", "Carran", "Emrik", "Holt", "Vethan", "Alda", "Voss"]  # 4 tokens each under the test tokenizer
TARGETS = ["salt", "fish", "timber", "music"] * 2


def build(family: str, std: float = 0.3, seed: int = 0, double: bool = False):
    """A tiny random model: matrices N(0, std), norm gains 1 + N(0, 0.3) (so that no gain is trivially 1).

    `double`: in float64, experts run one by one (the grouped matmul has no float64 kernel)."""
    torch.manual_seed(seed)
    cfg = ARCH[family][0]() if family in ARCH else MORE_MOE[family]()
    kw = {"experts_implementation": "eager"} if double and family in ("mixtral", *MORE_MOE) else {}
    model = T.AutoModelForCausalLM.from_config(cfg, attn_implementation="eager", **kw)
    plus_one = ARCH.get(family, (None, None, False))[2]
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                p.normal_(0, std)
            elif "norm" in name:
                p.normal_(0, 0.3) if plus_one else p.normal_(1, 0.3)
    return model.double().eval() if double else model.eval()


@pytest.fixture(scope="module")
def task():
    """One recall task whose prompts differ in length (9 and 11 tokens: right padding, longer than the window)."""
    n = len(SUBJECTS)
    return Task("born", "born", "related", [
        Example(s, "was born in" if i % 2 else "is known for", t, SUBJECTS[(i + 2) % n], TARGETS[(i + 2) % n])
        for i, (s, t) in enumerate(zip(SUBJECTS, TARGETS))])


@pytest.fixture(scope="module")
def encs(task, tokenizer):
    return {name: encode_task(task, tokenizer, bos=c.bos) for name, c in CONVENTIONS.items()}


# ---- the reference: the circuit graph in float64, written from the weights ----------------------------------------
class Reference:
    """Every node reads the sum of the outputs of the nodes before it (an edge's upstream output is the clean one, or
    the corrupted run's where the edge is patched), plus a zero leaf to take its gradient. A head's output is its
    value-weighted sum times its slice of o_proj; behind a post-norm RMSNorm it is multiplied by gain / rms of this
    run's whole attention output. Heads read q, k, v from their own input: with a norm over the whole q (k)
    projection the head's input is projected in full and normalized before the head's slice is taken."""

    def __init__(self, model, family: str):
        self.model, self.cfg = model, model.config
        self.attn_pre, self.attn_post, self.mlp_pre, self.mlp_post = ARCH[family][1]
        self.plus_one = ARCH[family][2]
        self.L, self.H = self.cfg.num_hidden_layers, self.cfg.num_attention_heads
        self.Hkv = self.cfg.num_key_value_heads
        self.dh = model.model.layers[0].self_attn.head_dim

    # the graph, laid out as docs/definitions.md says: upstream input, then per layer its heads and its MLP;
    # downstream per layer its head inputs (q, k, v apart when split) and its MLP, then logits
    def sizes(self, split):
        S = self.H * (3 if split else 1)
        return 1 + self.L * (self.H + 1), self.L * (S + 1) + 1, S

    def avail(self, v, split):
        n_up, n_down, S = self.sizes(split)
        if v == n_down - 1:
            return n_up
        layer, k = divmod(v, S + 1)
        return 1 + layer * (self.H + 1) + (self.H if k == S else 0)

    def factor(self, path, x, layer=None):
        """gain / rms(x) of the RMSNorm at `path` (in layer `layer`)."""
        m = self.model.model.get_submodule(path if layer is None else f"layers.{layer}.{path}")
        eps = getattr(m, "eps", getattr(m, "variance_epsilon", None))
        g = 1 + m.weight.double() if self.plus_one else m.weight.double()
        return g / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps)

    def rms(self, path, x, layer=None):
        return x * self.factor(path, x, layer)

    def rope(self, x, l):
        pos = torch.arange(x.shape[1])[None]
        rot = self.model.model.rotary_emb
        extra = (self.cfg.layer_types[l],) if "layer_type" in inspect.signature(rot.forward).parameters else ()
        cos, sin = (t.double() for t in rot(x, pos, *extra))
        return cos, sin

    def attention(self, l, xs, mask):
        """xs: q, k, v inputs [H, B, T, d] -> per-head outputs [H, B, T, d] (before any post-norm)."""
        a = self.model.model.layers[l].self_attn
        H, dh, B, T = self.H, self.dh, xs[0].shape[1], xs[0].shape[2]
        pre = (lambda x: self.rms(self.attn_pre, x, l)) if self.attn_pre else (lambda x: x)
        q, k, v = (torch.einsum("hbtd,od->hbto", pre(x), p.weight.double()) for x, p in zip(xs, (a.q_proj, a.k_proj, a.v_proj)))
        per_head = getattr(a, "q_norm", None) is not None and a.q_norm.weight.numel() == dh  # Gemma 3
        if getattr(a, "q_norm", None) is not None and not per_head:  # over the whole projection (OLMo 2)
            q, k = self.rms("self_attn.q_norm", q, l), self.rms("self_attn.k_norm", k, l)
        cos, sin = self.rope(xs[0][0], l)
        i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
        allowed = (j <= i)[None] & mask.bool()[:, None, :]  # [B, T, T]
        window = getattr(a, "sliding_window", None)
        if window is not None:
            allowed = allowed & (j > i - window)[None]
        out = []
        for h in range(H):
            g = h // (H // self.Hkv)
            qh, kh, vh = q[h, ..., h * dh:(h + 1) * dh], k[h, ..., g * dh:(g + 1) * dh], v[h, ..., g * dh:(g + 1) * dh]
            if per_head:
                qh, kh = self.rms("self_attn.q_norm", qh, l), self.rms("self_attn.k_norm", kh, l)
            rot = lambda x: torch.cat([-x[..., dh // 2:], x[..., : dh // 2]], -1)  # noqa: E731
            qh, kh = qh * cos + rot(qh) * sin, kh * cos + rot(kh) * sin
            s = qh @ kh.transpose(-1, -2) * a.scaling
            cap = getattr(self.cfg, "attn_logit_softcapping", None)
            if cap is not None:
                s = torch.tanh(s / cap) * cap
            probs = torch.softmax(s.masked_fill(~allowed, float("-inf")), -1)
            out.append((probs @ vh) @ a.o_proj.weight.double()[:, h * dh:(h + 1) * dh].T)
        return torch.stack(out)

    def run(self, emb, mask, split, keep=None, corrupt=None, leaves=None):
        """(logits [B, T, V], node outputs in upstream order)."""
        outs = [emb]
        n_up, n_down, S = self.sizes(split)

        def read(v):
            x = sum(outs[u] if keep is None or keep[u, v] else corrupt[u] for u in range(self.avail(v, split)))
            return x + leaves[v] if leaves is not None else x

        for l in range(self.L):
            base = l * (S + 1)
            parts = [torch.stack([read(base + i * self.H + h) for h in range(self.H)]) for i in range(3 if split else 1)]
            o = self.attention(l, parts if split else parts * 3, mask)
            if self.attn_post:
                o = o * self.factor(self.attn_post, o.sum(0), l)  # this run's gain / rms(attention output)
            outs += list(o)
            x = read(base + S)
            y = self.model.model.layers[l].mlp(self.rms(self.mlp_pre, x, l) if self.mlp_pre else x)
            outs.append(self.rms(self.mlp_post, y, l) if self.mlp_post else y)
        logits = self.rms("norm", read(n_down - 1)) @ self.model.lm_head.weight.double().T
        cap = getattr(self.cfg, "final_logit_softcapping", None)
        return (torch.tanh(logits / cap) * cap if cap is not None else logits), outs

    def metric(self, logits, enc, metric):
        rows = torch.arange(len(enc))
        m = logits[rows, enc.last, enc.target]
        return m - logits[rows, enc.last, enc.corrupted_target] if metric == "logit-diff" else m

    def eap_ig(self, enc, metric, split, steps):
        """The EAP-IG scores, edge by edge: (z'_u - z_u) . mean over k = 1..m of dm/d in_v at e' + k/m (e - e')."""
        with torch.no_grad():
            e, ec = (self.model.get_input_embeddings()(ids).double() for ids in (enc.clean, enc.corrupted))
            _, z = self.run(e, enc.mask, split)
            _, zc = self.run(ec, enc.mask, split)
        n_up, n_down, _ = self.sizes(split)
        grads = [torch.zeros_like(e) for _ in range(n_down)]
        for k in range(1, steps + 1):
            leaves = [torch.zeros_like(e, requires_grad=True) for _ in range(n_down)]
            logits, _ = self.run(ec + k / steps * (e - ec), enc.mask, split, leaves=leaves)
            for v, g in enumerate(torch.autograd.grad(self.metric(logits, enc, metric).sum(), leaves)):
                grads[v] += g
        scores = torch.zeros(n_up, n_down, dtype=torch.float64)
        for v in range(n_down):
            for u in range(self.avail(v, split)):
                scores[u, v] = float(((zc[u] - z[u]) * grads[v]).sum()) / (steps * len(enc))
        return scores

    def patched(self, enc, metric, split, t=1.0):
        """m(edge u -> v alone carries z_u + t (z'_u - z_u)) - m(clean), edge by edge (t = 1: exact patching)."""
        e, ec = (self.model.get_input_embeddings()(ids).double() for ids in (enc.clean, enc.corrupted))
        with torch.no_grad():
            logits, z = self.run(e, enc.mask, split)
            clean = self.metric(logits, enc, metric).mean()
            _, zc = self.run(ec, enc.mask, split)
            toward = [a + t * (b - a) for a, b in zip(z, zc)]
            n_up, n_down, _ = self.sizes(split)
            out = torch.zeros(n_up, n_down, dtype=torch.float64)
            for v in range(n_down):
                for u in range(self.avail(v, split)):
                    keep = torch.ones(n_up, n_down, dtype=torch.bool)
                    keep[u, v] = False
                    out[u, v] = self.metric(self.run(e, enc.mask, split, keep, toward)[0], enc, metric).mean() - clean
        return out


# ---- tests ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", list(ARCH))
def test_reference_is_the_model(family, encs):
    """The reference's clean run gives the model's logits: it computes the model, not something near it."""
    model, enc = build(family, double=True), encs["kentropy"]
    ref = Reference(model, family)
    with torch.no_grad():
        e = embed(model, enc.clean)
        want = logits_of(model, e, enc.mask)
        got, _ = ref.run(e, enc.mask, split=False)
    real = enc.mask.bool()
    torch.testing.assert_close(got[real], want[real], rtol=1e-6, atol=1e-6 * float(want.abs().max()))


@pytest.mark.parametrize("family", list(ARCH) + list(MORE_MOE))
@pytest.mark.parametrize("conv", list(CONVENTIONS))
def test_full_graph_is_clean_and_empty_graph_is_corrupted(family, conv, encs):
    model, enc, split = build(family), encs[conv], CONVENTIONS[conv].qkv_split
    with torch.no_grad(), Tracer(model, split) as tr:
        assert tr.wiring.norms == NORMS.get(family, "pre")
        x, xc = embed(model, enc.clean), embed(model, enc.corrupted)
        plain, plain_corr = logits_of(model, x, enc.mask), logits_of(model, xc, enc.mask)
        valid = tr.graph.valid()
        zc, _ = record(tr, model, xc, enc.mask)
        _, full = record(tr, model, x, enc.mask, keep=valid, corrupted=zc)
        _, empty = record(tr, model, x, enc.mask, keep=torch.zeros_like(valid), corrupted=zc)
    scale = float(plain.abs().max())
    assert (full - plain).abs().max() <= 1e-5 * scale
    assert (empty - plain_corr).abs().max() <= 1e-5 * scale
    metric = CONVENTIONS[conv].metric
    ev_full = score_circuit(model, enc, valid, metric=metric, qkv_split=split)
    ev_empty = score_circuit(model, enc, torch.zeros_like(valid), metric=metric, qkv_split=split)
    assert abs(ev_full.clean - ev_full.corrupted) > 1e-3
    assert ev_full.faithfulness == pytest.approx(1.0, abs=1e-4) and ev_empty.faithfulness == pytest.approx(0.0, abs=1e-4)


def per_head_gap(model, enc) -> tuple[float, float]:
    """max |sum of a layer's recorded head outputs - its normalized attention output| and the same for the MLPs,
    both relative to the largest node output, on the clean run (float32, as run by users)."""
    seen = {}
    layers = model.model.layers
    hooks = [getattr(layers[l], name).register_forward_hook(lambda m, a, out, key=(l, name): seen.__setitem__(key, out))
             for l in range(len(layers)) for name in ("post_attention_layernorm", "post_feedforward_layernorm")]
    try:
        with torch.no_grad(), Tracer(model) as tr:
            rec, _ = record(tr, model, embed(model, enc.clean), enc.mask)
    finally:
        for h in hooks:
            h.remove()
    g, real = tr.graph, enc.mask.bool()
    heads = max(float((rec[g.head_up(l, 0):g.head_up(l, 0) + g.heads].sum(0) - seen[(l, "post_attention_layernorm")])[real].abs().max())
                for l in range(g.layers))
    mlps = max(float((rec[g.mlp_up(l)] - seen[(l, "post_feedforward_layernorm")])[real].abs().max()) for l in range(g.layers))
    scale = float(rec[:, real].abs().max())
    return heads / scale, mlps / scale


@pytest.mark.parametrize("family", ["olmo2", "gemma2", "gemma3"])
def test_heads_sum_to_the_normalized_attention_output(family, encs):
    heads, mlps = per_head_gap(build(family), encs["kentropy"])
    assert heads < 1e-6 and mlps < 1e-6, (heads, mlps)


@pytest.mark.parametrize("family", list(ARCH))
@pytest.mark.parametrize("conv", list(CONVENTIONS))
def test_eap_ig_is_the_float64_reference(family, conv, encs):
    """Every edge's EAP-IG score equals the reference's, computed edge by edge in float64 (3 IG steps, k = 1..m)."""
    c = CONVENTIONS[conv]
    model, enc = build(family, double=True), encs[conv]
    want = Reference(model, family).eap_ig(enc, c.metric, c.qkv_split, steps=3)
    got = eap_ig(model, enc, steps=3, metric=c.metric, qkv_split=c.qkv_split, ig_range=c.ig_range).scores.double()
    assert want.abs().max() > 1e-2
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6 * float(want.abs().max()))


@pytest.mark.parametrize("family", list(ARCH))
@pytest.mark.parametrize("conv", list(CONVENTIONS))
def test_exact_patching_is_the_float64_reference(family, conv, encs):
    """A patched edge carries what its upstream node wrote into the corrupted run's residual: a head behind a
    post-norm with the corrupted run's scale (the norm is not recomputed on a mixture of clean and corrupted heads)."""
    c = CONVENTIONS[conv]
    model, enc = build(family, double=True), encs[conv]
    want = Reference(model, family).patched(enc, c.metric, c.qkv_split)
    got = exact_edge_effects(model, enc, metric=c.metric, qkv_split=c.qkv_split).double()
    assert want.abs().max() > 1e-2
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6 * float(want.abs().max()))


@pytest.mark.parametrize("family", ["olmo2", "gemma3"])
def test_head_attribution_behind_a_post_norm(family, encs):
    """A head's direct attribution is its recorded (post-norm scaled) output at the last token . dm/d(final residual)."""
    model, enc = build(family), encs["kentropy"]
    attr = head_attribution(model, enc)
    with Tracer(model) as tr:
        x = embed(model, enc.clean).detach().requires_grad_(True)
        g = tr.graph
        rec = torch.zeros((g.n_up,) + x.shape)
        p = tr.begin(Pass(record=rec, grad=True))
        (grad,) = torch.autograd.grad(metric_values(logits_of(model, x, enc.mask), enc).sum(), [p.inputs[-1][1]])
    rows = torch.arange(len(enc))
    want = torch.tensor([[float((rec[g.head_up(l, h)][rows, enc.last] * grad[rows, enc.last]).sum(-1).mean())
                          for h in range(g.heads)] for l in range(g.layers)])
    assert want.abs().max() > 1e-3
    torch.testing.assert_close(attr.total, want, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(attr.subject + attr.relation, attr.total, rtol=1e-4, atol=1e-6)  # no BOS here


def soft_post_norms(model, family: str, gain: float):
    """Scale every post-norm's gain to `gain`: node outputs then perturb the residual, where first-order attribution
    is meaningful (with gains near 1 a 16-wide random net is far from linear)."""
    plus_one = ARCH[family][2]
    with torch.no_grad():
        for path in (p for p in ARCH[family][1][1::2] if p):
            for layer in model.model.layers:
                w = getattr(layer, path).weight
                w.copy_((1 + w) * gain - 1 if plus_one else w * gain)
    return model


@pytest.mark.parametrize("family", list(ARCH))
def test_eap_ig_ranks_edges_like_exact_patching(family, encs):
    """EAP-IG (5 steps) against exact patching of every edge, both conventions, post-norm gains at 0.2.

    Measured Spearman (kentropy / ou2025): OLMo 2 0.87 / 0.92, Gemma 2 0.93 / 0.83, Gemma 3 0.91 / 0.73, Mixtral 0.79 / 0.76.
    """
    model = soft_post_norms(build(family), family, 0.2)
    for conv, c in CONVENTIONS.items():
        kw = dict(metric=c.metric, qkv_split=c.qkv_split)
        scores = eap_ig(model, encs[conv], steps=5, ig_range=c.ig_range, **kw).scores
        exact = exact_edge_effects(model, encs[conv], **kw)
        graph = Tracer(model, c.qkv_split).graph
        check = check_exact_edges(scores, exact, graph.valid(), graph, top_n=10)
        assert check["spearman"] > 0.7, (conv, check)


@pytest.mark.parametrize("family", ["olmo2", "gemma2"])
def test_one_step_score_is_the_first_order_effect_of_the_frozen_scale_patch(family, encs):
    """With 1 step EAP-IG is plain EAP: its score is d/dε of m when edge u -> v carries z_u + ε (z'_u - z_u), with
    z'_u the corrupted run's output (post-norm scale of the corrupted run), by central difference on the reference."""
    model, enc = build(family, double=True), encs["kentropy"]
    ref = Reference(model, family)
    got = eap_ig(model, enc, steps=1).scores.double()
    eps = 1e-6
    fd = (ref.patched(enc, "logit", False, eps) - ref.patched(enc, "logit", False, -eps)) / (2 * eps)
    assert fd.abs().max() > 1e-2
    torch.testing.assert_close(got, fd, rtol=1e-4, atol=1e-6 * float(fd.abs().max()))


def test_a_norm_the_layout_leaves_out_is_refused():
    """A block is wired by a layout only when it has no norm that layout ignores, and post-norms must be RMSNorms."""
    model = build("mixtral")
    for layer in model.model.layers:  # input_layernorm + post norms: neither pre-norm, post-norm nor sandwich
        layer.post_feedforward_layernorm = type(layer.input_layernorm)(16)
    with pytest.raises(KentropyError, match="unsupported model family MixtralForCausalLM for circuits"):
        wire(model)
    model = build("gemma3")
    model.model.layers[1].post_feedforward_layernorm = torch.nn.LayerNorm(16)
    with pytest.raises(KentropyError, match="layer 1: post-norm post_feedforward_layernorm is not an RMSNorm"):
        wire(model)


def test_the_input_node_is_gemmas_scaled_embedding(encs):
    """Gemma multiplies the token embeddings by sqrt(d) in its embedding module: the input node is the scaled vector."""
    model, enc = build("gemma3"), encs["kentropy"]
    with torch.no_grad(), Tracer(model) as tr:
        rec, _ = record(tr, model, embed(model, enc.clean), enc.mask)
    want = model.model.embed_tokens.weight[enc.clean] * model.config.hidden_size ** 0.5
    torch.testing.assert_close(rec[0], want, rtol=1e-6, atol=1e-6)
