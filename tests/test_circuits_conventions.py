"""Ou et al. 2025's conventions against references written out here: split q/k/v, logit difference, IG ranges,
BOS handling, exact patching of one edge, the exact check's statistics."""

import copy

import pytest
import torch
from conftest import tiny_model
from scipy.stats import spearmanr
from tokenizers import processors

from kentropy.circuits import encode_task, tasks_from_triples
from kentropy.circuits import metrics as M
from kentropy.circuits.eap import eap_ig, embed, exact_edge_effects, logits_of, metric_values, record
from kentropy.circuits.graph import Graph
from kentropy.circuits.agreement import check_exact_edges, sample_edges
from kentropy.circuits.tasks import Example, Task, corrupted_targets, split_tokens
from kentropy.circuits.trace import Tracer
from kentropy.errors import KentropyError

SUBJECTS = ["Ostrel", "Sable", "Carran", "Emrik", "Holt", "Vethan", "Alda", "Voss"]  # 4 tokens each under the test tokenizer


@pytest.fixture(scope="module")
def task(tokenizer):
    facts = [(s, "was born in", t, "born", True) for s, t in zip(SUBJECTS, ["salt", "fish", "timber", "music"] * 2)]
    (t,) = tasks_from_triples(facts, tokenizer)
    return t


@pytest.fixture(scope="module")
def enc(task, tokenizer):
    e = encode_task(task, tokenizer)
    assert e.corrupted_target is not None and not torch.equal(e.corrupted_target, e.target)
    return e


def gqa_llama():
    from test_circuits_eap import scaled_model

    return scaled_model("llama", 0.3, 0, num_attention_heads=4, num_key_value_heads=2)


def split_to_joint(split: torch.Tensor, g: Graph) -> torch.Tensor:
    """Sum the q, k, v columns of each head of a split-graph score matrix into the joint graph's layout."""
    joint = Graph(g.layers, g.heads, g.parallel, False)
    out = torch.zeros((g.n_up, joint.n_down), dtype=split.dtype)
    for l in range(g.layers):
        for part in "qkv":
            out[:, joint.head_down(l)] += split[:, g.head_down(l, part)]
        out[:, joint.mlp_down(l)] = split[:, g.mlp_down(l)]
    out[:, joint.logits_down] = split[:, g.logits_down]
    return out


@pytest.mark.parametrize("family", ["gpt2", "gpt_neox", "phi", "llama-gqa"])
def test_split_qkv_scores_sum_to_the_joint_score(family, enc):
    """A head's q, k and v read copies of one residual: d m / d in_h = sum over p of d m / d in_h<p>, so the
    joint score of u -> h is the sum of the scores of u -> h<q>, h<k>, h<v> (fused, separate and GQA projections)."""
    model = gqa_llama() if family == "llama-gqa" else tiny_model(family)
    joint = eap_ig(model, enc, steps=2, metric="logit-diff")
    split = eap_ig(model, enc, steps=2, metric="logit-diff", qkv_split=True)
    g = Tracer(model, qkv_split=True).graph
    assert split.scores.shape == (g.n_up, g.n_down) and g.n_down == g.layers * (3 * g.heads + 1) + 1
    assert split.clean == pytest.approx(joint.clean) and split.corrupted == pytest.approx(joint.corrupted)
    summed = split_to_joint(split.scores, g)
    assert joint.scores.abs().max() > 1e-2
    torch.testing.assert_close(summed, joint.scores, atol=2e-5 * float(joint.scores.abs().max()), rtol=1e-4)
    # the three parts are distinct edges, not one score copied three times
    l1 = split.scores[:, g.head_down(1, "q")] - split.scores[:, g.head_down(1, "v")]
    assert l1.abs().max() > 1e-4


def test_split_graph_names_and_edges():
    g = Graph(layers=2, heads=2, qkv_split=True)
    assert g.down_names()[:7] == ["a0.h0<q>", "a0.h1<q>", "a0.h0<k>", "a0.h1<k>", "a0.h0<v>", "a0.h1<v>", "m0"]
    assert g.down_names()[-1] == "logits" and len(g.down_names()) == g.n_down == 15
    # layer 0 heads read input (6 x 1), m0 reads input + 2 heads (3), layer 1 heads 6 x 4, m1 6, logits 7
    assert int(g.valid().sum()) == 6 + 3 + 24 + 6 + 7
    assert [g.down_node(v) for v in g.head_down(1, "k")] == [g.head_up(1, 0), g.head_up(1, 1)]


def test_logit_difference_metric_and_its_gradient(enc):
    """m = logit[target] - logit[corrupted target] at the last prompt token, and its 1-step EAP-IG score is
    its derivative along each edge (central finite difference, float64 GPT-2, split q/k/v edges)."""
    model = tiny_model("gpt2").double()
    with torch.no_grad():
        logits = logits_of(model, embed(model, enc.clean), enc.mask)
    rows = torch.arange(len(enc))
    ref = logits[rows, enc.last, enc.target] - logits[rows, enc.last, enc.corrupted_target]
    torch.testing.assert_close(metric_values(logits, enc, "logit-diff"), ref.double())
    scores = eap_ig(model, enc, steps=1, metric="logit-diff", qkv_split=True).scores.double()
    eps = 1e-5
    with torch.no_grad(), Tracer(model, qkv_split=True) as tr:
        valid = tr.graph.valid()
        x, xc = embed(model, enc.clean), embed(model, enc.corrupted)
        z, _ = record(tr, model, x, enc.mask)
        zc, _ = record(tr, model, xc, enc.mask)
        fd = torch.zeros_like(scores)
        for u, v in valid.nonzero().tolist():
            keep = valid.clone()
            keep[u, v] = False
            m = [(lambda lg: (lg[rows, enc.last, enc.target] - lg[rows, enc.last, enc.corrupted_target]).mean())(
                record(tr, model, x, enc.mask, keep=keep, corrupted=z + s * eps * (zc - z))[1]) for s in (1, -1)]
            fd[u, v] = (m[0] - m[1]) / (2 * eps)
    assert fd[valid].abs().max() > 0.1
    torch.testing.assert_close(scores, fd, atol=1e-5, rtol=1e-4)


def test_head_roles_follow_the_metric(enc):
    """Direct attribution is linear in the metric: under logit-diff it is the target's minus the corrupted target's."""
    from dataclasses import replace

    from kentropy.circuits import head_attribution

    model = tiny_model("llama")
    diff = head_attribution(model, enc, metric="logit-diff")
    a = head_attribution(model, enc)
    b = head_attribution(model, replace(enc, target=enc.corrupted_target))
    for part in ("subject", "relation", "total"):
        torch.testing.assert_close(getattr(diff, part), getattr(a, part) - getattr(b, part), atol=1e-5, rtol=1e-4)
    assert diff.total.abs().max() > 1e-3


def test_ig_ranges_differ_by_the_endpoints(enc):
    """S(m) = 1/m sum_k G(k/m): with m = 2, S_{1..m} - S_{0..m-1} = (G(1) - G(0)) / 2, and G(1), G(0) are the
    one-step scores of the two ranges."""
    model = tiny_model("llama")
    s = {(m, r): eap_ig(model, enc, steps=m, ig_range=r).scores.double() for m in (1, 2) for r in ("1..m", "0..m-1")}
    lhs = s[(2, "1..m")] - s[(2, "0..m-1")]
    rhs = (s[(1, "1..m")] - s[(1, "0..m-1")]) / 2
    assert rhs.abs().max() > 1e-3
    torch.testing.assert_close(lhs, rhs, atol=1e-5, rtol=1e-4)
    with pytest.raises(KentropyError, match="--ig-range"):
        eap_ig(model, enc, steps=2, ig_range="0..m")


def _no_bos(tok):
    t = copy.deepcopy(tok)
    t.bos_token = None
    return t


def _adds_bos(tok):
    t = copy.deepcopy(tok)
    t.backend_tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", tok.bos_token_id)])
    return t


def test_bos_modes(tokenizer):
    """auto: the tokenizer's own encoding; always: exactly one BOS (EOS without a BOS), whether or not the
    tokenizer adds its own; never: none. The subject span moves with the prepended token."""
    plain = tokenizer("Ostrel was born in", add_special_tokens=False)["input_ids"]
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    assert tokenizer("Ostrel was born in")["input_ids"] == plain  # the test tokenizer adds no BOS
    adds = _adds_bos(tokenizer)
    assert adds("Ostrel was born in")["input_ids"] == [bos] + plain
    assert getattr(adds, "add_bos_token", False) is False  # the attribute does not tell: encoding does
    expect = {
        (tokenizer, "auto"): (plain, 0), (tokenizer, "always"): ([bos] + plain, 1), (tokenizer, "never"): (plain, 0),
        (_no_bos(tokenizer), "always"): ([eos] + plain, 1),
        (adds, "auto"): ([bos] + plain, 1), (adds, "always"): ([bos] + plain, 1), (adds, "never"): (plain, 0),
    }
    for (tok, mode), (ids, start) in expect.items():
        got, s0, s1 = split_tokens(tok, "Ostrel", "was born in", mode)
        assert got == ids, mode
        assert (s0, s1) == (start, start + 4), mode
        assert got.count(bos) + (got.count(eos) if tok.bos_token_id is None else 0) == start
    with pytest.raises(KentropyError, match="--bos"):
        split_tokens(tokenizer, "Ostrel", "was born in", "twice")


def test_bos_reaches_the_encoded_task(task, tokenizer):
    enc = encode_task(task, _adds_bos(tokenizer), bos="always")
    assert (enc.clean[:, 0] == tokenizer.bos_token_id).all() and (enc.clean[:, 1] != tokenizer.bos_token_id).all()
    assert not enc.subject[:, 0].any() and not enc.relation[:, 0].any()
    plain = encode_task(task, tokenizer)
    assert torch.equal(enc.last, plain.last + 1) and torch.equal(enc.target, plain.target)


def test_tasks_from_triples_give_the_corrupting_subjects_answer(tokenizer):
    facts = [(s, "was born in", t, "born", True) for s, t in zip(SUBJECTS, ["salt", "fish", "timber", "music"] * 2)]
    facts += [(s, "taught", t, "born", True) for s, t in zip(SUBJECTS[:4], ["music", "timber", "fish", "salt"])]
    answer = {(s, r): t for s, r, t, _, _ in facts}
    (task,) = tasks_from_triples(facts, tokenizer)
    assert len(task.examples) == len(facts)
    for ex in task.examples:  # same phrase first ("taught"), else the same relation type
        want = answer.get((ex.corrupted_subject, ex.relation_phrase), answer.get((ex.corrupted_subject, "was born in")))
        assert ex.corrupted_target == want


def test_corrupted_target_from_the_corrupting_subjects_example(tokenizer):
    ex = [Example("Ostrel", "was born in", "salt", "Sable"), Example("Sable", "was born in", "fish", "Ostrel"),
          Example("Carran", "was born in", "timber", "Emrik", "music"), Example("Holt", "was born in", "salt", "Vethan")]
    t = Task("born/new", "born", "new", ex)
    assert corrupted_targets(t) == ["fish", "salt", "music", None]
    assert encode_task(t, tokenizer).corrupted_target is None  # one example without: the metric refuses
    enc = encode_task(Task("born/new", "born", "new", ex[:3]), tokenizer)
    ref = [tokenizer(" " + w, add_special_tokens=False)["input_ids"][0] for w in ("fish", "salt", "music")]
    assert enc.corrupted_target.tolist() == ref
    with pytest.raises(KentropyError, match="logit-diff"):
        eap_ig(tiny_model("llama"), encode_task(t, tokenizer), steps=1, metric="logit-diff")


@pytest.mark.parametrize("part", ["q", "k", "v"])
def test_exact_patching_of_one_edge_is_a_hand_patched_forward(part, enc):
    """Edge m0 -> a1.h1<part> of GPT-2, patched by hand: in block 1, the c_attn columns of head 1's `part`
    are recomputed from ln_1(residual + mlp0(corrupted) - mlp0(clean)); nothing else changes."""
    model = tiny_model("gpt2")
    d, H = model.config.n_embd, model.config.n_head
    dh = d // H
    block0, block1 = model.transformer.h[0], model.transformer.h[1]
    mlp0 = {}

    def keep_mlp(name):
        return block0.mlp.register_forward_hook(lambda m, a, out: mlp0.__setitem__(name, out.detach()))

    def run(ids, patch=False):
        hooks = []
        try:
            if patch:
                resid = {}
                hooks.append(block1.ln_1.register_forward_pre_hook(lambda m, a: resid.__setitem__("x", a[0])))
                cols = slice("qkv".index(part) * d + dh, "qkv".index(part) * d + 2 * dh)  # [q k v][h][i], head 1

                def swap(m, a, out):
                    y = m.forward(block1.ln_1.forward(resid["x"] + mlp0["corrupted"] - mlp0["clean"]))
                    out = out.clone()
                    out[..., cols] = y[..., cols]
                    return out

                hooks.append(block1.attn.c_attn.register_forward_hook(swap))
            with torch.no_grad():
                return model(input_ids=ids, attention_mask=enc.mask).logits
        finally:
            for h in hooks:
                h.remove()

    for name, ids in (("corrupted", enc.corrupted), ("clean", enc.clean)):
        h = keep_mlp(name)
        try:
            clean_logits = run(ids)
        finally:
            h.remove()
    patched = run(enc.clean, patch=True)
    ref = float((metric_values(patched, enc, "logit-diff") - metric_values(clean_logits, enc, "logit-diff")).mean())

    g = Graph(2, H, False, True)
    edge = torch.zeros((g.n_up, g.n_down), dtype=torch.bool)
    u, v = g.mlp_up(0), g.head_down(1, part)[1]
    edge[u, v] = True
    exact = exact_edge_effects(model, enc, edges=edge, metric="logit-diff", qkv_split=True)
    assert abs(ref) > 1e-3
    assert float(exact[u, v]) == pytest.approx(ref, rel=1e-4, abs=1e-6)
    assert int((exact != 0).sum()) == 1


def test_exact_check_statistics():
    """Spearman against scipy (ties averaged), overlap by hand, the sample's top-n scaled to its size."""
    g = Graph(2, 2)
    torch.manual_seed(0)
    scores = torch.randn(g.n_up, g.n_down).round(decimals=1)
    exact = scores + 0.3 * torch.randn_like(scores)
    sample = sample_edges(g, 13, seed=3)
    assert int(sample.sum()) == 13 and not (sample & ~g.valid()).any()
    assert torch.equal(sample, sample_edges(g, 13, seed=3)) and not torch.equal(sample, sample_edges(g, 13, seed=4))
    c = check_exact_edges(scores, exact, sample, g, top_n=8)
    a, b = scores[sample], exact[sample]
    assert c["edges"] == 13 and c["of_edges"] == 26 and c["top_n"] == 4  # round(8 * 13 / 26)
    assert c["spearman"] == pytest.approx(spearmanr(a.numpy(), b.numpy()).correlation, abs=1e-12)
    top = lambda x: set(torch.argsort(x.abs(), descending=True)[:4].tolist())  # noqa: E731
    assert c["top_overlap"] == len(top(a) & top(b)) / 4
    assert M.spearman(torch.tensor([1.0, 2, 2, 3]), torch.tensor([4.0, 3, 3, 1])) == pytest.approx(-1.0)
