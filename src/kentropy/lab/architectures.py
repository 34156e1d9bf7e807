"""The lab's model families, built from HF configs: the core study's model and the decay study's
2 x 2 factorial of norm x FFN, one HF family per cell.

    norm \\ FFN   swiglu: down(silu(gate(x)) * up(x))     gelu: down(gelu(up(x)))  (plain)
    layernorm    Olmo (OLMo-1B's block: the reference)     Nemotron (LayerNorm1P)
    rmsnorm      Llama                                     Arcee (hidden_act gelu)

Every cell has the same inner dimension m (a plain FFN then has 2 d m weights where a gated one has
3 d m), rotary embeddings on every head dimension (theta 10000), norm eps 1e-5, no biases in attention
or FFN, and tied or untied embeddings as asked. What differs besides the factor (`FAMILY_NOTES`):
OLMo's LayerNorm is non-parametric, Nemotron's LayerNorm1P has a trained gain (stored as gain − 1,
set to 0 here so that it starts at gain 1 as OLMo's) and bias; RMSNorm has a trained gain.
Initialization is HF's default (normal, std 0.02) or OLMo's `mitchell`.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from kentropy.errors import KentropyError
from kentropy.lab.config import ARCHS, INITS, NORMS, family

def model_config(arch: str, *, vocab: int, hidden: int, layers: int, heads: int, gated_ffn: int, positions: int, tie: bool, tok,
                 norm: str = "rmsnorm"):
    """The HF config of a lab model (FFN `arch`, inner dimension `gated_ffn`, `norm`); positions: the longest row
    it will read (at least 512 are allotted)."""
    import transformers as T

    if arch not in ARCHS:
        raise KentropyError(f"lab config: arch {arch!r}: choose {', '.join(ARCHS)}")
    if norm not in NORMS:
        raise KentropyError(f"lab config: norm {norm!r}: choose {', '.join(NORMS)}")
    common = dict(vocab_size=vocab, hidden_size=hidden, intermediate_size=gated_ffn, num_hidden_layers=layers,
                  num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=max(positions, 512),
                  bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                  tie_word_embeddings=tie, attention_bias=False)
    fam = family(arch, norm)
    if fam == "olmo":
        return T.OlmoConfig(**common, hidden_act="silu", clip_qkv=None)
    if fam == "llama":
        return T.LlamaConfig(**common, hidden_act="silu", mlp_bias=False, rms_norm_eps=1e-5)
    if fam == "arcee":
        return T.ArceeConfig(**common, hidden_act="gelu", mlp_bias=False, rms_norm_eps=1e-5, head_dim=hidden // heads)
    return T.NemotronConfig(**common, hidden_act="gelu", mlp_bias=False, head_dim=hidden // heads, norm_eps=1e-5,
                            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 1.0})


def build_model(arch: str, init: str, seed: int, norm: str = "rmsnorm", **config):
    """A freshly initialized causal LM of FFN `arch` and `norm` (fp32, train mode), seeded."""
    from transformers import AutoModelForCausalLM

    if init not in INITS:
        raise KentropyError(f"lab config: init {init!r}: choose {', '.join(INITS)}")
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(model_config(arch, norm=norm, **config))
    if init == "mitchell":
        mitchell_init(model, seed)
    if family(arch, norm) == "nemotron":  # LayerNorm1P scales by weight + 1: a zero weight is OLMo's gain of 1
        with torch.no_grad():
            for m in model.modules():
                if type(m).__name__ == "NemotronLayerNorm1P":
                    m.weight.zero_()
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
