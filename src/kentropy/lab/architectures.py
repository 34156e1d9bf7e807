"""The lab's model families, built from HF configs: the core study's model and one FFN layout per arm
of the decay study.

    swiglu  Llama: down(silu(gate(x)) * up(x))                      (OLMo, Llama: the paper's)
    reglu   Llama with a ReLU gate: down(relu(gate(x)) * up(x))
    gelu    Nemotron with GELU: down(gelu(up(x)))                    (plain FFN, GPT-2 / Pythia style)
    relu    Nemotron with ReLU: down(relu(up(x)))                    (plain FFN, OPT / T5 style)

Gated FFNs have three m x d matrices, plain ones two, so a plain FFN gets 1.5 x the inner
dimension and the same parameter count. The plain-FFN arms change the block's norm too
(Nemotron's LayerNorm1P for Llama's RMSNorm): no HF family has a plain FFN with RMSNorm, and
the report says so. Everything else (rotary on every dimension, no biases, embeddings tied or
not) is the same. Initialization is HF's default (normal, std 0.02) or OLMo's `mitchell`.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from kentropy.errors import KentropyError
from kentropy.lab.config import ARCHS, GATED, INITS, ffn_dim


def model_config(arch: str, *, vocab: int, hidden: int, layers: int, heads: int, gated_ffn: int, positions: int, tie: bool, tok):
    """The HF config of a lab model; positions: the longest row it will read (at least 512 are allotted)."""
    import transformers as T

    if arch not in ARCHS:
        raise KentropyError(f"lab config: arch {arch!r}: choose {', '.join(ARCHS)}")
    common = dict(vocab_size=vocab, hidden_size=hidden, intermediate_size=ffn_dim(arch, gated_ffn), num_hidden_layers=layers,
                  num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=max(positions, 512),
                  bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                  tie_word_embeddings=tie, attention_bias=False)
    if arch in GATED:
        return T.LlamaConfig(**common, hidden_act="silu" if arch == "swiglu" else "relu", mlp_bias=False)
    return T.NemotronConfig(**common, hidden_act=arch, mlp_bias=False, head_dim=hidden // heads,
                            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 1.0})


def build_model(arch: str, init: str, seed: int, **config):
    """A freshly initialized causal LM of `arch` (fp32, train mode), seeded."""
    from transformers import AutoModelForCausalLM

    if init not in INITS:
        raise KentropyError(f"lab config: init {init!r}: choose {', '.join(INITS)}")
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(model_config(arch, **config))
    if init == "mitchell":
        mitchell_init(model, seed)
    return model


def _trunc_normal(w: torch.Tensor, std: float, g: torch.Generator) -> None:
    with torch.no_grad():
        w.copy_(torch.nn.init.trunc_normal_(torch.empty_like(w), std=std, a=-3 * std, b=3 * std, generator=g))


def mitchell_init(model, seed: int) -> None:
    """OLMo's `mitchell` init (OLMo-1B's; olmo/initialization.py, OLMoSequentialBlock.reset_parameters):
    truncated normal at 3 std with std 1/sqrt(d_in) for embeddings, q/k/v and the FFN's input
    projections, 1/sqrt(2 d (l+1)) for the attention output and 1/sqrt(2 m (l+1)) for the FFN
    output of layer l (0-based); norms at their defaults (ones, zero bias)."""
    g = torch.Generator().manual_seed(seed)
    d = model.config.hidden_size
    _trunc_normal(model.get_input_embeddings().weight, 1 / math.sqrt(d), g)
    head = model.get_output_embeddings()
    if head is not None and head.weight is not model.get_input_embeddings().weight:
        _trunc_normal(head.weight, 1 / math.sqrt(d), g)
    for l, block in enumerate(model.model.layers):
        for name, module in block.named_modules():
            if not isinstance(module, nn.Linear):
                continue
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "o_proj":
                std = 1 / math.sqrt(2 * d * (l + 1))
            elif leaf == "down_proj":
                std = 1 / math.sqrt(2 * module.in_features * (l + 1))
            else:  # q, k, v, gate, up
                std = 1 / math.sqrt(module.in_features)
            _trunc_normal(module.weight, std, g)
