"""measure() against a manual forward of each family's FFN, one document at a time, no padding."""

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import FAMILIES, GATED, tiny_model
from transformers.activations import ACT2FN

from kentropy.errors import KentropyError
from kentropy.models.registry import find_layout
from kentropy.measurement.workflow import measure, tokenize

ACT = {  # each family's FFN activation, by the config field that names it
    "gpt2": "activation_function", "opt": "activation_function",
}


def manual_coefficients(model, family, ids):
    """c_l for one unpadded document: the FFN input x captured, then act(gate(x)) * up(x) or act(fc(x)) by hand."""
    layout = find_layout(model)
    act = ACT2FN[getattr(model.config, ACT.get(family, "hidden_act"))]
    xs = {}
    handles = [layer.dense.up.register_forward_hook(lambda m, a, o, l=l: xs.__setitem__(l, a[0].detach().clone()))
               for l, layer in enumerate(layout.layers)]
    try:
        with torch.no_grad():
            kw = {"token_type_ids": torch.zeros(1, len(ids), dtype=torch.long)} if family == "bert" else {}
            model(input_ids=torch.tensor([ids]), **kw)
    finally:
        for h in handles:
            h.remove()
    out = []
    for l, layer in enumerate(layout.layers):
        x = xs[l].reshape(-1, xs[l].shape[-1])  # [T, d]
        if family in GATED:
            c = act(F.linear(x, layer.dense.gate.weight)) * F.linear(x, layer.dense.up.weight)
        elif family == "gpt2":  # Conv1D: y = x @ W + b with W [d, m]
            c = act(x @ layer.dense.up.weight + layer.dense.up.bias)
        else:
            c = act(F.linear(x, layer.dense.up.weight, layer.dense.up.bias))
        out.append(c)  # [T, m]
    return out


def reference_cbar(model, family, docs, activation="abs"):
    """Cbar_l = 1/|D| sum_s 1/|s| sum_j |c_l(s, j)|: per-instance means first, then over instances."""
    per_doc = []
    for ids in docs:
        cs = manual_coefficients(model, family, ids)
        mag = [(c.abs() if activation == "abs" else c.clamp_min(0)).double().mean(0) for c in cs]
        per_doc.append(torch.stack(mag))
    return torch.stack(per_doc).mean(0)


def reference_entropy(cbar):
    total = 0.0
    for row in cbar.tolist():
        s = sum(row)
        total += -sum(v / s * math.log(v / s) for v in row if v > 0)
    return total


@pytest.mark.parametrize("family", FAMILIES)
def test_coefficients_match_manual_ffn(family, tokenizer, sample_texts):
    model = tiny_model(family)
    texts = sample_texts[:7]
    docs = tokenize(tokenizer, texts, 48)
    ref = reference_cbar(model, family, docs)
    got = measure(model, tokenizer, texts, seq_len=48, batch_size=3, progress=False)
    assert got.coefficients.shape == (2, 24)
    assert torch.allclose(got.coefficients, ref, rtol=1e-5, atol=1e-7)
    assert got.knowledge_entropy == pytest.approx(reference_entropy(ref), rel=1e-6)
    assert got.knowledge_entropy <= 2 * math.log(24)
    assert got.instances == 7 and got.tokens == sum(len(d) for d in docs)


@pytest.mark.parametrize("family", ["llama", "gpt2", "opt", "bert"])
def test_relu_activation_matches_reference(family, tokenizer, sample_texts):
    model = tiny_model(family)
    texts = sample_texts[:5]
    ref = reference_cbar(model, family, tokenize(tokenizer, texts, 32), activation="relu")
    got = measure(model, tokenizer, texts, seq_len=32, activation="relu", progress=False)
    assert torch.allclose(got.coefficients, ref, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("family", ["llama", "gpt2", "bert"])
def test_padding_invariance(family, tokenizer, sample_texts):
    """The same documents batched with different padding (and order) give the same result."""
    model = tiny_model(family)
    texts = sample_texts[:9]
    metrics = ("knowledge", "attention") + (("next-token",) if family != "bert" else ())
    runs = [measure(model, tokenizer, t, batch_size=b, seq_len=40, metrics=metrics, progress=False)
            for t, b in [(texts, 1), (texts, 4), (texts[::-1], 9)]]
    for r in runs[1:]:
        assert torch.allclose(r.coefficients, runs[0].coefficients, rtol=1e-5, atol=1e-8)
        assert r.attention_entropy == pytest.approx(runs[0].attention_entropy, rel=1e-5)
        if family != "bert":
            assert r.next_token_entropy == pytest.approx(runs[0].next_token_entropy, rel=1e-5)


@pytest.mark.parametrize("family", ["llama", "gpt2", "bert"])
def test_attention_and_next_token_entropy_reference(family, tokenizer, sample_texts):
    model = tiny_model(family)
    texts = sample_texts[:4]
    docs = tokenize(tokenizer, texts, 32)
    att = torch.zeros(2, dtype=torch.float64)
    nxt = 0.0
    for ids in docs:
        kw = {"token_type_ids": torch.zeros(1, len(ids), dtype=torch.long)} if family == "bert" else {}
        with torch.no_grad():
            out = model(input_ids=torch.tensor([ids]), output_attentions=True, **kw)
        for l, a in enumerate(out.attentions):  # [1, H, T, T]
            p = a[0].double()
            h = -(p * torch.where(p > 0, p.log(), torch.zeros_like(p))).sum(-1)  # [H, T]
            att[l] += h.mean()  # mean over heads and positions
        if family != "bert":
            lp = torch.log_softmax(out.logits[0].double(), -1)
            nxt += -(lp.exp() * lp).sum(-1).mean().item()
    got = measure(model, tokenizer, texts, seq_len=32, batch_size=2,
                  metrics=("knowledge", "attention", "next-token"), progress=False)
    assert got.attention_entropy_per_layer == pytest.approx((att / len(docs)).tolist(), rel=1e-5)
    assert got.attention_entropy == pytest.approx(float(att.sum() / len(docs)), rel=1e-5)
    if family == "bert":
        assert got.next_token_entropy is None
    else:
        assert got.next_token_entropy == pytest.approx(nxt / len(docs), rel=1e-5)


def test_measurement_is_deterministic_in_train_mode(tokenizer, sample_texts):
    model = tiny_model("gpt2").train()  # dropout 0.1 would make a train-mode forward random
    a = measure(model, tokenizer, sample_texts[:4], seq_len=32, progress=False)
    b = measure(model, tokenizer, sample_texts[:4], seq_len=32, progress=False)
    assert torch.equal(a.coefficients, b.coefficients) and model.training


def test_truncation_to_seq_len(tokenizer, sample_texts):
    model = tiny_model("llama")
    got = measure(model, tokenizer, sample_texts[:3], seq_len=5, progress=False)
    assert got.tokens == 15


def test_bad_input(tokenizer, sample_texts):
    model = tiny_model("llama")
    with pytest.raises(KentropyError, match="seq_len=0"):
        measure(model, tokenizer, sample_texts[:2], seq_len=0, progress=False)
    with pytest.raises(KentropyError, match="document 1: no tokens"):
        measure(model, tokenizer, ["hello", ""], progress=False)
    with pytest.raises(KentropyError, match="no documents"):
        measure(model, tokenizer, [], progress=False)
    with pytest.raises(KentropyError, match="metrics"):
        measure(model, tokenizer, sample_texts[:2], metrics=("knowledge", "loss"), progress=False)
    gpt2 = tiny_model("gpt2")  # 128 positions
    with pytest.raises(KentropyError, match="exceed the model's 128 positions"):
        measure(gpt2, tokenizer, [" ".join(sample_texts[:20])], seq_len=1024, progress=False)


def test_unknown_family_lists_supported():
    import transformers as T

    cfg = T.MambaConfig(vocab_size=64, hidden_size=16, state_size=4, num_hidden_layers=2, pad_token_id=0)
    model = T.AutoModelForCausalLM.from_config(cfg)  # Mamba blocks only: no FFN anywhere
    with pytest.raises(KentropyError, match=r"unsupported model family MambaForCausalLM.*supported: gated.*mixtral.*T5"):
        find_layout(model)


def head_config(family: str):
    """Tiny configs whose LM heads differ: tied or not, biased (Phi), soft-capped (Gemma 2/3), scaled
    (Cohere multiplies, Granite divides), or fed a rescaled hidden state (T5, tied)."""
    import transformers as T
    from conftest import V, family_config

    kw = dict(vocab_size=V, hidden_size=16, intermediate_size=24, num_hidden_layers=2, num_attention_heads=2,
              num_key_value_heads=2, bos_token_id=0, eos_token_id=1, pad_token_id=2)
    return {
        "gemma2": lambda: T.Gemma2Config(**kw, head_dim=8, final_logit_softcapping=2.0),
        "gemma3_text": lambda: T.Gemma3TextConfig(**kw, head_dim=8, final_logit_softcapping=1.5, tie_word_embeddings=True),
        "cohere": lambda: T.CohereConfig(**kw, logit_scale=0.3),
        "granite": lambda: T.GraniteConfig(**kw, logits_scaling=0.25),
        "t5": lambda: T.T5Config(vocab_size=V, d_model=16, d_kv=8, d_ff=24, num_layers=2, num_heads=2, pad_token_id=2,
                                 eos_token_id=1, decoder_start_token_id=2),
    }.get(family, lambda: family_config(family))()


HEAD_FAMILIES = ["llama", "gpt2", "gpt_neox", "phi", "opt", "olmo2", "gemma2", "gemma3_text", "cohere", "granite", "t5"]


def head_model(family: str):
    import transformers as T

    torch.manual_seed(0)
    cfg = head_config(family)
    cls = T.AutoModelForSeq2SeqLM if family == "t5" else T.AutoModelForCausalLM
    model = cls.from_config(cfg, attn_implementation="eager")
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.3)
    return model.eval()


@pytest.mark.parametrize("family", HEAD_FAMILIES)
def test_next_token_entropy_in_chunks_equals_full_logits(family, tokenizer, sample_texts, monkeypatch):
    """Chunks of 5 positions (ragged at the end of every batch) give the entropy of the model's full logits,
    one document at a time with no padding; no head call ever sees more than 5 positions."""
    from kentropy.measurement import capture

    monkeypatch.setattr(capture, "LOGIT_CHUNK", 1)
    monkeypatch.setattr(capture, "MIN_ROWS", 5)
    seen = []
    reduce = capture.next_token_entropy_per_position
    monkeypatch.setattr(capture, "next_token_entropy_per_position", lambda z: seen.append(z.shape[0]) or reduce(z))
    model = head_model(family)
    texts = sample_texts[:5]
    ref = 0.0
    for ids in tokenize(tokenizer, texts, 24):
        x = torch.tensor([ids])
        kw = {"decoder_input_ids": model._shift_right(x)} if family == "t5" else {}
        with torch.no_grad():
            lp = torch.log_softmax(model(input_ids=x, **kw).logits[0].double(), -1)  # [T, V]
        ref += -(lp.exp() * lp).sum(-1).mean().item()
    got = measure(model, tokenizer, texts, seq_len=24, batch_size=3, metrics=("knowledge", "next-token"), progress=False)
    assert got.next_token_entropy == pytest.approx(ref / len(texts), rel=1e-5)
    assert seen and max(seen) <= 5


def test_unknown_logit_transform_is_refused(tokenizer, sample_texts, monkeypatch):
    """A model whose logits are made in a way the reduction does not reproduce fails the check on the first
    document (here: Gemma 2's soft-capping, hidden from the reduction) instead of giving a wrong number."""
    from kentropy.measurement import capture

    model = head_model("gemma2")
    monkeypatch.setattr(capture, "logit_transform", lambda m: lambda z: z)
    with pytest.raises(KentropyError, match="next-token: Gemma2ForCausalLM makes its logits"):
        measure(model, tokenizer, sample_texts[:2], seq_len=24, metrics=("knowledge", "next-token"), progress=False)
    assert "forward" not in vars(model.get_output_embeddings())  # the head is restored


def test_head_forward_set_on_the_instance_is_kept(tokenizer, sample_texts):
    """accelerate (--device-map) puts its own forward on a module instance: the reduction wraps it and puts
    it back after; two captures never patch one head at once."""
    from kentropy.measurement.capture import NextTokenEntropySums

    model = tiny_model("llama")
    head = model.get_output_embeddings()
    calls = []
    placed = head.forward

    def device_placing(x):
        calls.append(x.shape)
        return placed(x)

    head.forward = device_placing
    got = measure(model, tokenizer, sample_texts[:3], seq_len=24, metrics=("knowledge", "next-token"), progress=False)
    assert vars(head)["forward"] is device_placing and calls
    del head.forward
    want = measure(model, tokenizer, sample_texts[:3], seq_len=24, metrics=("knowledge", "next-token"), progress=False)
    assert got.next_token_entropy == pytest.approx(want.next_token_entropy, rel=1e-9)
    with NextTokenEntropySums(model), pytest.raises(KentropyError, match="already patched"):
        NextTokenEntropySums(model)
    assert "forward" not in vars(head)


def test_attention_maps_are_freed_layer_by_layer(tokenizer, sample_texts):
    """Each layer's [B, H, T, T] probabilities are reduced in that layer's hook and not kept: by the time the
    next layer's attention runs, the previous layer's map is gone."""
    import weakref

    model = tiny_model("llama")
    layout = find_layout(model)
    maps, alive = [], []

    def keep(module, args, output):
        alive.append(sum(r() is not None for r in maps))  # earlier layers' maps still alive when this one runs
        maps.append(weakref.ref(output[1]))

    handles = [layer.attention.register_forward_hook(keep) for layer in layout.layers]
    try:
        measure(model, tokenizer, sample_texts[:4], seq_len=24, batch_size=2, metrics=("knowledge", "attention"), progress=False)
    finally:
        for h in handles:
            h.remove()
    assert len(maps) == 2 * len(layout.layers) and max(alive) == 0
