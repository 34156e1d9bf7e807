"""Circuit wiring: the hook points a circuit graph needs (norms, q/k/v, o_proj, MLP, post-norms, final norm).

Where each family keeps them is the `circuits` entry of that family in the one registry,
`kentropy.models.registry.FAMILIES`; the layer stack is found the same way as for measuring.
A block is wired by the first of its family's layouts whose paths it has (sandwich, then
post-norm, then pre-norm for the Llama-style family), and a block holding a norm that layout
leaves out is refused rather than traced wrong. A mixture-of-experts FFN is one MLP node.

Post-norms (`attn_post`, `mlp_post`) must be RMSNorms, `N(x) = g * x / rms(x)`: given one run's
scale `rms(x)` the norm is linear in its input, which is what splits a normalized attention
output into per-head contributions (`PostNorm.scale`). Post-norm blocks with LayerNorm
(OPT-350m, `do_layer_norm_before=False`), encoder-decoders and families without a `circuits`
entry are refused with a clear error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from kentropy.errors import KentropyError
from kentropy.models.registry import FAMILIES, Circuits, Family, find_stacks, submodule
from kentropy.models.loading import is_causal_lm


@dataclass
class PostNorm:
    """An RMSNorm applied to a node's output before it joins the residual: N(x) = gain * x / sqrt(mean(x²) + eps)."""

    module: nn.Module
    gain: torch.Tensor  # [d] float32: N(1) * sqrt(1 + eps), the effective gain (Gemma's 1 + w, OLMo 2's w)
    eps: float

    def scale(self, x: torch.Tensor) -> torch.Tensor:
        """[..., d] float32: gain / rms(x), the factor N applies to x (and, frozen, to each part of x)."""
        x = x.float()
        return self.gain.to(x.device) * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)


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
    norm: nn.Module | None = None  # a norm over the whole output (OLMo 2's q_norm / k_norm), applied by the tracer
    norm_site: tuple[nn.Module, str] | None = None  # (owner, attribute) of `norm`: an identity stands there while traced

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
    attn_norm: nn.Module | None  # None: the heads read the residual as it is (OLMo 2)
    mlp_norm: nn.Module | None  # None: the MLP reads the residual as it is
    projections: list[Projection]
    attention: nn.Module
    o_proj: nn.Module
    o_bias: torch.Tensor | None  # [d]
    w_out: torch.Tensor  # [H, d, dh]: head h writes z_h @ w_out[h].T (times the post-norm's scale, if any)
    mlp_in: nn.Module
    mlp_out: nn.Module
    attn_post: PostNorm | None = None
    mlp_post: PostNorm | None = None


@dataclass
class Wiring:
    """A model's blocks, resolved for circuit hooks."""

    family: Family
    layout: Circuits
    blocks: list[Block]
    final_norm: nn.Module
    heads: int
    head_dim: int
    d_model: int
    parallel: bool

    @property
    def layers(self) -> int:
        return len(self.blocks)

    @property
    def norms(self) -> str:
        """Where the blocks normalize: "pre" (node inputs), "post" (node outputs) or "sandwich" (both)."""
        pre, post = self.layout.attn_norm is not None, self.layout.attn_post is not None
        return "sandwich" if pre and post else "post" if post else "pre"


def _paths(arch: Circuits) -> list[str]:
    """The paths a layout needs in every block (projection norms are optional)."""
    fixed = [arch.attn_norm, arch.mlp_norm, arch.o_proj, arch.mlp_in, arch.mlp_out, arch.attn_post, arch.mlp_post]
    return [p for p in fixed if p is not None] + [p for p, _ in arch.projections]


def layout_of(block: nn.Module, fam: Family) -> Circuits | None:
    """The first of the family's layouts whose paths `block` has, unless the block has a norm it leaves out."""
    for arch in fam.circuits:
        if all(submodule(block, p) is not None for p in _paths(arch)):
            used = set(_paths(arch)) | {n for _, n in arch.projection_norms}
            others = {p for a in fam.circuits for p in _paths(a)} - used
            return None if any(submodule(block, p) is not None for p in others) else arch
    return None


def supported() -> str:
    return "; ".join(f.name for f in FAMILIES if f.circuits)


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


def _with_norm(proj: Projection, block: nn.Module, path: str, dh: int, where: str) -> Projection:
    """Attach a norm of the projection's output when it spans the whole output (a per-head norm needs nothing)."""
    norm = submodule(block, path)
    size = getattr(getattr(norm, "weight", None), "numel", lambda: None)()
    out = proj.weight.shape[0]
    if size == dh:  # over head_dim, applied per head after the projection (Gemma 3, Qwen 3): per-head inputs pass through it
        return proj
    if size != out:
        raise KentropyError(f"{where}: norm {path} has {size} weights; expected head_dim {dh} or the projection's {out} outputs")
    owner, _, name = path.rpartition(".")
    proj.norm, proj.norm_site = norm, (block.get_submodule(owner) if owner else block, name)
    return proj


def _post_norm(block: nn.Module, path: str | None, d: int, where: str) -> PostNorm | None:
    """The post-norm at `path` as a `PostNorm`, checked to be an RMSNorm on a test vector."""
    if path is None:
        return None
    m = block.get_submodule(path)
    eps = next((getattr(m, a) for a in ("eps", "variance_epsilon") if isinstance(getattr(m, a, None), float)), None)
    w = getattr(m, "weight", None)
    if eps is None or not isinstance(w, torch.Tensor) or w.numel() != d:
        raise KentropyError(f"{where}: post-norm {path} is not an RMSNorm with weight [{d}] and eps")
    with torch.no_grad():
        gain = m(torch.ones(d, dtype=w.dtype, device=w.device)).float() * math.sqrt(1.0 + eps)
        v = torch.randn(4, d, generator=torch.Generator().manual_seed(0)).to(w.device) + 0.5  # off-centre: LayerNorm differs
        got = m(v.to(w.dtype)).float()
        want = gain * v * torch.rsqrt(v.pow(2).mean(-1, keepdim=True) + eps)
    if not torch.allclose(got, want, rtol=0.02, atol=0.02 * float(want.abs().max())):
        raise KentropyError(f"{where}: post-norm {path} is not an RMSNorm (g * x / rms(x)): circuits need one to split "
                            "its output per head")
    return PostNorm(m, gain, eps)


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
    name = type(model).__name__
    if getattr(cfg, "do_layer_norm_before", True) is False:
        raise KentropyError(f"{name}: post-norm blocks with LayerNorm (do_layer_norm_before=False) are not supported for circuits")

    if not is_causal_lm(cfg) or model.get_output_embeddings() is None:
        raise KentropyError(f"{name}: circuits need a causal LM with a next-token head")
    found = find_stacks(model)
    refusal = (f"unsupported model family {name} for circuits; supported: {supported()} "
               "(pre-norm, post-norm or sandwich blocks with separate or fused q/k/v projections)")
    if found is None:
        raise KentropyError(refusal)
    fam, stacks = found
    if not fam.circuits or len(stacks) != 1:
        raise KentropyError(refusal)
    stack = stacks[0][1]
    layouts = [layout_of(b, fam) for b in stack]
    if any(a is None for a in layouts) or any(a != layouts[0] for a in layouts):
        raise KentropyError(refusal)
    return _wire(model, stack, fam, layouts[0])


def _wire(model: nn.Module, stack: nn.ModuleList, fam: Family, arch: Circuits) -> Wiring:
    cfg = model.config
    name = type(model).__name__
    heads = int(cfg.num_attention_heads)
    o0 = stack[0].get_submodule(arch.o_proj)
    w0 = _weight(o0, arch.transposed)  # [d, H * dh]
    d, hd = w0.shape
    if hd % heads:
        raise KentropyError(f"{name}: o_proj input {hd} is not a multiple of {heads} heads")
    dh = hd // heads
    parallel = bool(getattr(cfg, "use_parallel_residual", False)) if arch.parallel is None else arch.parallel
    norms = dict(arch.projection_norms)
    blocks = []
    for l, block in enumerate(stack):
        where = f"{name} layer {l}"
        o = block.get_submodule(arch.o_proj)
        w = _weight(o, arch.transposed).detach()  # [d, H * dh]
        projections = []
        for p, parts in arch.projections:
            proj = _projection(block.get_submodule(p), parts, arch, heads, dh)
            if submodule(block, norms.get(p)) is not None:
                proj = _with_norm(proj, block, norms[p], dh, where)
            projections.append(proj)
        blocks.append(Block(
            attn_norm=submodule(block, arch.attn_norm),
            mlp_norm=submodule(block, arch.mlp_norm),
            projections=projections,
            attention=block.get_submodule(arch.o_proj.rpartition(".")[0]),
            o_proj=o,
            o_bias=o.bias.detach() if getattr(o, "bias", None) is not None else None,
            w_out=w.view(d, heads, dh).permute(1, 0, 2),
            mlp_in=block.get_submodule(arch.mlp_in),
            mlp_out=block.get_submodule(arch.mlp_out),
            attn_post=_post_norm(block, arch.attn_post, d, where),
            mlp_post=_post_norm(block, arch.mlp_post, d, where),
        ))
    return Wiring(fam, arch, blocks, _final_norm(model, arch), heads, dh, d, parallel)
