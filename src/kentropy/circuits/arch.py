"""Circuit wiring: the hook points a circuit graph needs (norms, q/k/v, o_proj, MLP, final norm).

Where each family keeps them is the `circuits` entry of that family in the one registry,
`kentropy.models.registry.FAMILIES`; the layer stack is found the same way as for measuring. A circuit
graph needs the residual stream to be a plain sum of node outputs, so post-norm blocks (Gemma
2/3, OLMo 2, OPT-350m), mixture-of-experts layers, encoder-decoders and families without a
`circuits` entry are refused with a clear error.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from kentropy.errors import KentropyError
from kentropy.models.registry import FAMILIES, Circuits, Family, MoE, block_ffn, find_stacks, submodule

POST_NORM = ("post_feedforward_layernorm",)  # Gemma 2/3, OLMo 2: a block output is normalized before the residual


@dataclass
class Projection:
    """One q/k/v projection read per head: output of head h = y_h @ rows[h].T + bias[h]."""

    module: nn.Module
    weight: torch.Tensor  # [out, d], a view of the parameter
    bias: torch.Tensor | None  # [out]
    idx: torch.Tensor  # [H, r]: the output rows head h reads (a GQA key/value head is shared)
    order: torch.Tensor | None  # output position j -> flat index into [H * r]; None: identity
    v_offset: int | None  # where head h's value vector starts in its r outputs (None: no values here)
    parts: str = "qkv"  # "q", "k", "v", or fused "qkv" (head h's r outputs: q, then k, then v)

    @property
    def in_place(self) -> bool:
        """True when head h reads rows h*r .. (h+1)*r - 1, in order (no shared or permuted rows)."""
        if not hasattr(self, "_in_place"):
            self._in_place = self.order is None and torch.equal(self.idx.reshape(-1), torch.arange(self.idx.numel()))
        return self._in_place

    @property
    def expands(self) -> bool:
        """True when traced outputs outnumber the module's (GQA: one key/value copy per query head)."""
        return self.idx.numel() != self.weight.shape[0]

    def rows(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Per-head weight rows [H, r, d] and bias [H, r] (views when no row is shared)."""
        H, r = self.idx.shape
        if self.in_place:
            return self.weight.view(H, r, -1), (self.bias.view(H, r) if self.bias is not None else None)
        return self.weight[self.idx], (self.bias[self.idx] if self.bias is not None else None)


@dataclass
class Block:
    attn_norm: nn.Module
    mlp_norm: nn.Module
    projections: list[Projection]
    attention: nn.Module
    o_proj: nn.Module
    w_out: torch.Tensor  # [H, d, dh]: head h writes z_h @ w_out[h].T into the residual
    mlp_in: nn.Module
    mlp_out: nn.Module


@dataclass
class Wiring:
    """A model's blocks, resolved for circuit hooks."""

    family: Family
    blocks: list[Block]
    final_norm: nn.Module
    heads: int
    head_dim: int
    d_model: int
    parallel: bool

    @property
    def layers(self) -> int:
        return len(self.blocks)


def _matches(block: nn.Module, arch: Circuits) -> bool:
    paths = [arch.attn_norm, arch.mlp_norm, arch.o_proj, arch.mlp_in, arch.mlp_out] + [p for p, _ in arch.projections]
    return all(submodule(block, p) is not None for p in paths)


def supported() -> str:
    return "; ".join(f.name for f in FAMILIES if f.circuits is not None)


def _weight(module: nn.Module, transposed: bool) -> torch.Tensor:
    """The weight as [out, in], whatever the module stores."""
    w = module.weight
    return w.t() if transposed else w


def _projection(module: nn.Module, parts: str, arch: Circuits, heads: int, dh: int) -> Projection:
    w = _weight(module, arch.transposed).detach()  # [out, d]
    b = module.bias.detach() if getattr(module, "bias", None) is not None else None
    out = w.shape[0]
    if parts == "qkv":
        if out != 3 * heads * dh:
            raise KentropyError(f"fused qkv projection has {out} outputs, expected 3 * {heads} * {dh}")
        if arch.interleaved:  # [h][q k v][i]
            idx = torch.arange(out).view(heads, 3 * dh)
            order = None
        else:  # [q k v][h][i]
            idx = torch.arange(out).view(3, heads, dh).permute(1, 0, 2).reshape(heads, 3 * dh)
            order = torch.arange(heads * 3 * dh).view(heads, 3, dh).permute(1, 0, 2).reshape(-1)
        v_offset = 2 * dh
    else:
        groups = out // dh
        if groups * dh != out or heads % groups:
            raise KentropyError(f"projection {parts} has {out} outputs: not a multiple of head_dim {dh} dividing {heads} heads")
        # query head h reads key/value head h // (heads / groups) (grouped-query attention)
        group = torch.arange(heads) // (heads // groups)
        idx = group[:, None] * dh + torch.arange(dh)[None, :]  # [H, dh]
        order = None
        v_offset = 0 if parts == "v" else None
    return Projection(module, w, b, idx, order, v_offset, parts)


def _final_norm(model: nn.Module, arch: Circuits) -> nn.Module:
    base = model.base_model
    for path in arch.final_norm:
        m = submodule(base, path)
        if m is not None:
            return m
    raise KentropyError(f"{type(model).__name__}: no final norm ({', '.join(arch.final_norm)}) found")


def wire(model: nn.Module) -> Wiring:
    """Resolve the circuit hook points of `model`; a clear error for an unsupported family."""
    cfg = model.config
    if getattr(cfg, "do_layer_norm_before", True) is False:
        raise KentropyError(f"{type(model).__name__}: post-norm blocks (do_layer_norm_before=False) are not supported for circuits")
    from kentropy.models.loading import is_causal_lm

    if not is_causal_lm(cfg) or model.get_output_embeddings() is None:
        raise KentropyError(f"{type(model).__name__}: circuits need a causal LM with a next-token head")
    found = find_stacks(model)
    refusal = (f"unsupported model family {type(model).__name__} for circuits; supported: {supported()} "
               "(pre-norm blocks whose heads and MLPs add straight into the residual stream)")
    if found is None:
        raise KentropyError(refusal)
    fam, stacks = found
    if fam.circuits is None or len(stacks) != 1:
        raise KentropyError(refusal)
    stack = stacks[0][1]
    if any(isinstance(block_ffn(b, fam), MoE) for b in stack):
        raise KentropyError(f"unsupported model family {type(model).__name__} for circuits: mixture-of-experts layers")
    if any(submodule(b, p) is not None for b in stack for p in POST_NORM):
        raise KentropyError(f"unsupported model family {type(model).__name__} for circuits: post-norm blocks ({', '.join(POST_NORM)})")
    if not all(_matches(b, fam.circuits) for b in stack):
        raise KentropyError(refusal)
    return _wire(model, stack, fam)


def _wire(model: nn.Module, stack: nn.ModuleList, fam: Family) -> Wiring:
    cfg = model.config
    arch = fam.circuits
    heads = int(cfg.num_attention_heads)
    o0 = stack[0].get_submodule(arch.o_proj)
    w0 = _weight(o0, arch.transposed)  # [d, H * dh]
    d, hd = w0.shape
    if hd % heads:
        raise KentropyError(f"{type(model).__name__}: o_proj input {hd} is not a multiple of {heads} heads")
    dh = hd // heads
    parallel = bool(getattr(cfg, "use_parallel_residual", False)) if arch.parallel is None else arch.parallel
    blocks = []
    for block in stack:
        o = block.get_submodule(arch.o_proj)
        w = _weight(o, arch.transposed).detach()  # [d, H * dh]
        blocks.append(Block(
            attn_norm=block.get_submodule(arch.attn_norm),
            mlp_norm=block.get_submodule(arch.mlp_norm),
            projections=[_projection(block.get_submodule(p), parts, arch, heads, dh) for p, parts in arch.projections],
            attention=block.get_submodule(arch.o_proj.rpartition(".")[0]),
            o_proj=o,
            w_out=w.view(d, heads, dh).permute(1, 0, 2),
            mlp_in=block.get_submodule(arch.mlp_in),
            mlp_out=block.get_submodule(arch.mlp_out),
        ))
    return Wiring(fam, blocks, _final_norm(model, arch), heads, dh, d, parallel)
