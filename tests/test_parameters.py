"""kentropy.models.parameters: the weight matrices (one selection for weight decay, shrink-perturb and half
fine-tuning) on families with tied embeddings, learned positions, biases, norms and expert tensors; and the
parameters holding non-finite values."""

import pytest
import torch
from test_ffn_layouts import build

from kentropy.edits.shrink_perturb import shrink_perturb
from kentropy.models.parameters import nonfinite_forward, nonfinite_parameters, weight_matrices
from kentropy.training.optimizer import decay_groups
from kentropy.training.plasticity import block_matrices

# every 2-D parameter that is an embedding, by name (token embeddings, learned positions)
EMBEDDINGS = {
    "llama": ["model.embed_tokens.weight"],
    "gemma": ["model.embed_tokens.weight"],  # a scaled embedding module, tied to the head
    "gpt2": ["transformer.wte.weight", "transformer.wpe.weight"],
    "opt": ["model.decoder.embed_tokens.weight", "model.decoder.embed_positions.weight"],
    "gpt_neox": ["gpt_neox.embed_in.weight"],
    "phi": ["model.embed_tokens.weight"],
    "bloom": ["transformer.word_embeddings.weight"],
    "mixtral": ["model.embed_tokens.weight"],
}
TIED = {"gemma", "gpt2", "opt", "bloom"}  # their LM head is the token embedding


def reference(family, model):
    """The rule written out: 2-D or more, not a listed embedding, not a head tied to one; each tensor once."""
    out, seen = [], set()
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in seen:
            continue
        seen.add(id(p))
        if p.dim() >= 2 and name not in EMBEDDINGS[family] and not (family in TIED and name == "lm_head.weight"):
            out.append(name)
    return out


@pytest.mark.parametrize("family", sorted(EMBEDDINGS))
def test_weight_matrices_are_the_rule_on_every_family(family):
    model = build(family)
    names = [n for n, _ in weight_matrices(model)]
    assert names == reference(family, model)
    params = dict(model.named_parameters())
    left = [n for n in params if n not in names]
    # what is left: the embeddings, and only one-dimensional norms and biases
    assert all(n in EMBEDDINGS[family] or (params[n].dim() == 1 and (n.endswith("bias") or "norm" in n or "ln" in n)) for n in left), left
    assert any(n.endswith("bias") for n in left) == (family in {"gpt2", "opt", "gpt_neox", "phi", "bloom"})
    head = model.get_output_embeddings().weight
    assert (id(head) in {id(p) for _, p in weight_matrices(model)}) == (family not in TIED)  # an untied head decays, as OLMo's
    if family == "mixtral":  # expert tensors [E, ., .] are weight matrices
        assert "model.layers.0.mlp.experts.gate_up_proj" in names and params["model.layers.0.mlp.experts.gate_up_proj"].dim() == 3


@pytest.mark.parametrize("family", ["gpt2", "gemma", "phi", "mixtral"])
def test_decay_shrink_perturb_and_half_fine_tuning_select_the_same_matrices(family):
    model = build(family)
    matrices = weight_matrices(model)
    decay, no_decay = decay_groups(model)
    assert [id(p) for p in decay] == [id(p) for _, p in matrices]  # same tensors, parameter order
    assert {id(p) for p in no_decay} == {id(p) for p in model.parameters()} - {id(p) for p in decay}
    in_blocks = [n for b in block_matrices(model) for n, _ in b]
    assert in_blocks == [n for n, _ in matrices if ".layers." in n or ".h." in n]
    report = shrink_perturb(model, 0.5, 0.0)
    assert [m for layer in report["layers"] for m in layer["matrices"]] == [n for n, _ in matrices]


def test_frozen_matrices_leave_the_optimizer_but_stay_weight_matrices():
    model = build("llama")
    model.model.layers[0].mlp.up_proj.weight.requires_grad_(False)
    decay, no_decay = decay_groups(model)
    frozen = model.model.layers[0].mlp.up_proj.weight
    assert all(p is not frozen for p in decay + no_decay)
    assert any(p is frozen for _, p in weight_matrices(model))


def test_nonfinite_parameters_are_named_and_blamed():
    model = build("gpt2")
    assert nonfinite_parameters(model) == []
    with torch.no_grad():
        model.transformer.h[1].mlp.c_proj.bias[3] = float("inf")
        model.transformer.wte.weight[5, 0] = float("nan")  # tied: named once, under its first name
    assert nonfinite_parameters(model) == ["transformer.wte.weight", "transformer.h.1.mlp.c_proj.bias"]
    e = nonfinite_forward(model, "ckpt/step-000004", "the loss of step 0")
    assert str(e) == ("ckpt/step-000004: the loss of step 0 came out NaN or infinite; its weights hold non-finite values "
                      "(in 2 tensors: transformer.wte.weight, transformer.h.1.mlp.c_proj.bias)")
    fine = build("llama")
    assert str(nonfinite_forward(fine, "m", "the logits of a forward pass")) == (
        "m: the logits of a forward pass came out NaN or infinite; its weights are all finite (the forward overflows in torch.float32)")
    with torch.no_grad():
        for p in list(fine.parameters())[:5]:
            p.fill_(float("nan"))
    assert str(nonfinite_forward(fine, "m", "x")).endswith(
        "(in 5 tensors: model.embed_tokens.weight, model.layers.0.self_attn.q_proj.weight, model.layers.0.self_attn.k_proj.weight, "
        "... (2 more))")
