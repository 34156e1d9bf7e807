"""Where each model family keeps its FFN: one registry, matched by module structure.

An FFN computes `FFN(x) = f(x K^T) V`. For every transformer block we need
- the down projection `V` (its *input* is the memory coefficient vector c, size m),
- the input-side projection whose row i produces coefficient i (`up` for gated FFNs,
  the single input projection for plain ones),
- the gate (gated FFNs only; resuscitation never touches it),
- the attention module, whose eager forward returns `(output, probs[B, H, T, T])`.

A family is found by structure, not by name: the first `nn.ModuleList` whose every child
has the family's submodules is the layer stack.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from kentropy.errors import KentropyError


@dataclass(frozen=True)
class Family:
    name: str
    down: str  # path inside a block to the down projection (input = coefficients)
    up: str  # path to the projection whose output row i feeds coefficient i
    gate: str | None  # gated FFNs: act(gate(x)) * up(x)
    attention: str  # module whose eager forward returns (output, probs)
    transposed: bool = False  # GPT-2's Conv1D stores weights as [in, out]


# One table. Order matters only where one layout is a subset of another (gated first).
FAMILIES: tuple[Family, ...] = (
    Family("gated: Llama, OLMo, OLMo2, Qwen2, Mistral, Gemma", "mlp.down_proj", "mlp.up_proj", "mlp.gate_proj", "self_attn"),
    Family("GPT-2", "mlp.c_proj", "mlp.c_fc", None, "attn", transposed=True),
    Family("GPT-NeoX/Pythia", "mlp.dense_4h_to_h", "mlp.dense_h_to_4h", None, "attention"),
    Family("GPT-J", "mlp.fc_out", "mlp.fc_in", None, "attn"),
    Family("Phi", "mlp.fc2", "mlp.fc1", None, "self_attn"),
    Family("OPT", "fc2", "fc1", None, "self_attn"),
    Family("BERT-style encoders (BERT, RoBERTa, ELECTRA)", "output.dense", "intermediate.dense", None, "attention.self"),
)


@dataclass
class Layer:
    """One block's FFN (and attention) modules."""

    down: nn.Module
    up: nn.Module
    gate: nn.Module | None
    attention: nn.Module


@dataclass
class Layout:
    """The FFN layout of one model: its family and one `Layer` per block, in order."""

    family: Family
    layers: list[Layer]

    @property
    def ffn_dim(self) -> int:
        """m, the number of memory coefficients per layer."""
        w = self.layers[0].down.weight
        return w.shape[0] if self.family.transposed else w.shape[1]

    @property
    def gated(self) -> bool:
        return self.family.gate is not None


def submodule(block: nn.Module, path: str) -> nn.Module | None:
    """`block.get_submodule(path)`, or None where the path does not exist."""
    try:
        return block.get_submodule(path)
    except AttributeError:
        return None


def find_stack(model: nn.Module, table, matches):
    """The layer stack: the first `nn.ModuleList` whose every block `matches(block, entry)` for an
    entry of `table` (tried in order). Returns (stack, entry), or None. Shared by every layout table."""
    for _, stack in model.named_modules():
        if not isinstance(stack, nn.ModuleList) or len(stack) == 0:
            continue
        for entry in table:
            if all(matches(block, entry) for block in stack):
                return stack, entry
    return None


def _matches(block: nn.Module, fam: Family) -> bool:
    paths = [fam.down, fam.up, fam.attention] + ([fam.gate] if fam.gate else [])
    mods = [submodule(block, p) for p in paths]
    if any(m is None for m in mods):
        return False
    # the coefficient-side modules must carry a 2-D weight (Linear or Conv1D)
    return all(getattr(m, "weight", None) is not None and m.weight.dim() == 2 for m in mods[:2])


def supported() -> str:
    return "; ".join(f.name for f in FAMILIES)


def find_layout(model: nn.Module) -> Layout:
    """Find the layer stack and each block's FFN by structure; clear error if none matches."""
    found = find_stack(model, FAMILIES, _matches)
    if found is not None:
        stack, fam = found
        layers = [
            Layer(
                down=block.get_submodule(fam.down),
                up=block.get_submodule(fam.up),
                gate=block.get_submodule(fam.gate) if fam.gate else None,
                attention=block.get_submodule(fam.attention),
            )
            for block in stack
        ]
        return Layout(fam, layers)
    raise KentropyError(
        f"unsupported model family {type(model).__name__}: no FFN layout found; supported: {supported()}"
    )


def coefficient_rows(layer: Layer, transposed: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The weight whose row i produces coefficient i, viewed as [m, d], and its bias [m] or None.

    For GPT-2's Conv1D (weight [d, m]) the view is a transpose: writes go to the parameter.
    """
    w = layer.up.weight
    rows = w.t() if transposed else w
    return rows, getattr(layer.up, "bias", None)
