"""Hooks that run an HF model as a circuit graph: record node outputs, patch edges, expose node inputs.

Inside `Tracer(model)` every forward pass (set up with `begin`) can
- record the output of every upstream node ([n_up, B, T, d]): the embeddings entering
  block 0, each head's output (its slice of the attention output times its slice of
  o_proj, bias left out: it is the same in every run), each MLP's output;
- in post-norm and sandwich blocks record what a node adds to the residual: the MLP's
  normalized output, and per head its output times this run's post-norm factor
  gain / rms(attention output) (plus 1/H of the o_proj bias, whose normalized value changes
  between runs), so that the heads of a layer sum to its normalized attention output;
- patch edges: each downstream node reads `residual + sum over patched edges u -> v of
  (corrupted_u - current_u)`, so a node whose every in-edge is kept reads the clean
  residual, and one whose every in-edge is patched reads the corrupted one;
- keep the node inputs (per head [B, T, H, d], per MLP and logits [B, T, d]) in the autograd
  graph, so that the gradient of a metric with respect to each can be taken.

Heads get separate inputs by recomputing q, k and v per head from the (per-head patched)
residual: the attention norm runs on [B, T, H, d] and the projection outputs are replaced.
A norm over a whole q or k projection (OLMo 2, OLMoE) is applied by the projection's hook, to
the full projection of each head's input, before the head's rows are taken; an identity
stands in its place while traced.
With `qkv_split` the q, k and v of each head are computed from three separately patched
residuals (one per downstream node `a{l}.h{h}<q>`, `<k>`, `<v>`). For grouped-query
attention every query head gets its own copy of its key/value head (the module's
`num_key_value_groups` is set to 1 while traced, and restored).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from kentropy.circuits.arch import Wiring, wire
from kentropy.circuits.graph import Graph
from kentropy.errors import KentropyError


@dataclass
class Pass:
    """What one forward pass does; filled as it runs."""

    record: torch.Tensor | None = None  # [n_up, B, T, d] to fill with node outputs
    corrupted: torch.Tensor | None = None  # [n_up, B, T, d] node outputs on the corrupted input
    keep: torch.Tensor | None = None  # [n_up, n_down] bool: edges not patched
    grad: bool = False  # keep node inputs for autograd
    attention: bool = False  # keep attention probabilities and value vectors (head roles)
    inputs: list = field(default_factory=list)  # (downstream indices, tensor) in forward order
    probs: dict = field(default_factory=dict)  # layer -> [B, H, T, T]
    values: dict = field(default_factory=dict)  # layer -> [B, T, H, dh]
    resid_attn: dict = field(default_factory=dict)
    resid_mlp: dict = field(default_factory=dict)
    normed: dict = field(default_factory=dict)  # (layer, part) -> attn_norm(per-head input), [B, T, H, d]
    post_scale: dict = field(default_factory=dict)  # layer -> attention post-norm factor gain / rms, [B, T, d] (with attention)


class Tracer:
    """Context manager: installs the hooks on `model`, removes them (and restores attributes) on exit."""

    def __init__(self, model, qkv_split: bool = False):
        self.model = model
        self.wiring: Wiring = wire(model)
        w = self.wiring
        self.graph = Graph(w.layers, w.heads, w.parallel, qkv_split)
        self.current = Pass()  # a plain pass unless `begin` says otherwise
        self._handles = []
        self._restore = []

    # ---- setup ------------------------------------------------------------------------------
    def __enter__(self) -> "Tracer":
        w = self.wiring
        try:
            for l, b in enumerate(w.blocks):
                shared = b.attn_norm is not None and b.attn_norm is b.mlp_norm
                if b.attn_norm is not None:
                    self._handles.append(b.attn_norm.register_forward_pre_hook(self._resid_hook(l, shared)))
                else:  # the heads read the block input itself
                    self._handles.append(b.attention.register_forward_pre_hook(self._resid_hook(l, False), with_kwargs=True))
                if b.mlp_norm is not None and not shared:
                    self._handles.append(b.mlp_norm.register_forward_pre_hook(self._mlp_resid_hook(l)))
                for p in b.projections:
                    self._handles.append(p.module.register_forward_hook(self._proj_hook(l, p)))
                    if p.norm_site is not None:
                        owner, name = p.norm_site
                        self._restore.append((owner, name, p.norm))
                        setattr(owner, name, nn.Identity())
                self._handles.append(b.o_proj.register_forward_pre_hook(self._heads_out_hook(l)))
                if b.attn_post is not None:
                    self._handles.append(b.attn_post.module.register_forward_pre_hook(self._attn_post_hook(l)))
                self._handles.append(b.attention.register_forward_hook(self._probs_hook(l)))
                self._handles.append(b.mlp_in.register_forward_pre_hook(self._mlp_in_hook(l)))
                mlp_written = b.mlp_post.module if b.mlp_post is not None else b.mlp_out
                self._handles.append(mlp_written.register_forward_hook(self._mlp_out_hook(l)))
                if getattr(b.attention, "num_key_value_groups", 1) != 1:
                    self._restore.append((b.attention, "num_key_value_groups", b.attention.num_key_value_groups))
                    b.attention.num_key_value_groups = 1
            self._handles.append(w.final_norm.register_forward_pre_hook(self._logits_hook()))
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        for obj, name, value in reversed(self._restore):
            setattr(obj, name, value)
        self._restore.clear()
        self.current = Pass()

    def begin(self, p: Pass | None = None) -> Pass:
        """Make `p` (default: a plain pass) the pass the next forward runs under."""
        self.current = p if p is not None else Pass()
        return self.current

    # ---- patching ---------------------------------------------------------------------------
    def _delta(self, downs: list[int], like: torch.Tensor) -> torch.Tensor | None:
        """sum over patched edges u -> v of (corrupted_u - current_u), [B, T, |downs|, d]; None: nothing patched.

        All `downs` read the same upstream prefix. Sums over whichever row set is smaller:
        the patched edges, or everything minus the kept edges.
        """
        p = self.current
        if p.keep is None:
            return None
        n = self.graph.avail(downs[0])
        keep = p.keep[:n][:, downs].to(like.device)  # [n, V]
        patched = ~keep
        rows_p = patched.any(1).nonzero().squeeze(1)
        if rows_p.numel() == 0:
            return None
        rows_k = keep.any(1).nonzero().squeeze(1)
        diff = lambda rows: p.corrupted[rows] - p.record[rows]  # noqa: E731  [r, B, T, d]
        if rows_p.numel() <= rows_k.numel():
            return torch.einsum("uv,ubtd->btvd", patched[rows_p].to(like.dtype), diff(rows_p))
        total = (p.corrupted[:n] - p.record[:n]).sum(0)  # [B, T, d]
        kept = torch.einsum("uv,ubtd->btvd", keep[rows_k].to(like.dtype), diff(rows_k))
        return total[:, :, None, :] - kept

    # ---- hooks ------------------------------------------------------------------------------
    def _resid_hook(self, l: int, shared_with_mlp: bool):
        def hook(module, args, kwargs=None):  # kwargs: registered on the attention module itself
            p = self.current
            x = args[0] if args else kwargs["hidden_states"]
            p.resid_attn[l] = x
            for key in [k for k in p.normed if k[0] == l]:
                del p.normed[key]
            if shared_with_mlp:
                p.resid_mlp[l] = x
            if l == 0 and p.record is not None:
                p.record[0] = x.detach()
            return None

        return hook

    def _mlp_resid_hook(self, l: int):
        def hook(module, args):
            self.current.resid_mlp[l] = args[0]
            return None

        return hook

    def _per_head_normed(self, l: int, part: str | None) -> torch.Tensor:
        """attn_norm of each head's (patched) residual, [B, T, H, d]; computed once per layer, part and pass.

        `part`: None for the joint head input, "q" / "k" / "v" for split inputs.
        """
        p = self.current
        if (l, part) not in p.normed:
            x = p.resid_attn[l]  # [B, T, d]
            downs = self.graph.head_down(l, part)
            delta = self._delta(downs, x)
            xh = x[:, :, None, :].expand(-1, -1, self.wiring.heads, -1)
            xh = xh + delta if delta is not None else xh.clone()  # [B, T, H, d], one input per head
            if p.grad:
                p.inputs.append((downs, xh))
            # .forward: the norm's own pre-hook must not fire on this per-head input
            norm = self.wiring.blocks[l].attn_norm
            p.normed[(l, part)] = norm.forward(xh) if norm is not None else xh
        return p.normed[(l, part)]

    def _proj_hook(self, l: int, proj):
        split = self.graph.qkv_split
        dh = self.wiring.head_dim

        def hook(module, args, output):
            p = self.current
            if p.keep is None and not p.grad and not p.attention and not proj.expands:
                # a plain pass: the module's own output is the per-head one
                return proj.norm(output) if proj.norm is not None else None
            rows, bias = proj.rows()  # [H, r, d], [H, r]

            def project(part, w):  # [B, T, H, d] per-head normed input of `part` times w [H, r', d]
                y = self._per_head_normed(l, part)
                return torch.einsum("bthd,hrd->bthr", y, w.to(y.dtype))

            if proj.norm is not None:  # each head's input projected in full and normalized, then the head's rows
                y = self._per_head_normed(l, proj.parts if split else None)
                full = torch.einsum("bthd,od->btho", y, proj.weight.to(y.dtype))
                if proj.bias is not None:
                    full = full + proj.bias.to(full.dtype)
                full = proj.norm(full)
                out = full.gather(-1, proj.idx.to(full.device).expand(full.shape[:2] + proj.idx.shape))
            elif not split:
                out = project(None, rows)
            elif proj.parts == "qkv":  # fused: head h's r = 3 dh rows are its q, k, v, each read from its own input
                out = torch.cat([project(part, rows[:, i * dh:(i + 1) * dh]) for i, part in enumerate("qkv")], -1)
            else:
                out = project(proj.parts, rows)
            if bias is not None and proj.norm is None:
                out = out + bias.to(out.dtype)
            if p.attention and proj.v_offset is not None:
                p.values[l] = out[..., proj.v_offset : proj.v_offset + dh]
            B, T, H, r = out.shape
            out = out.reshape(B, T, H * r)
            if proj.order is not None:
                out = out[..., proj.order.to(out.device)]
            return out.to(output.dtype)

        return hook

    def _heads_out_hook(self, l: int):
        def hook(module, args):
            p = self.current
            if p.record is None:
                return None
            z = args[0]  # [B, T, H * dh]
            B, T, _ = z.shape
            w = self.wiring
            z = z.reshape(B, T, w.heads, w.head_dim)
            out = torch.einsum("bthk,hdk->hbtd", z, w.blocks[l].w_out.to(z.dtype))  # [H, B, T, d]
            start = self.graph.head_up(l, 0)
            p.record[start : start + w.heads] = out.detach()
            return None

        return hook

    def _attn_post_hook(self, l: int):
        """Scale the recorded head outputs by this run's post-norm factor: they then sum to the norm's output."""
        block, H = self.wiring.blocks[l], self.wiring.heads
        start = self.graph.head_up(l, 0)

        def hook(module, args):
            p = self.current
            if p.record is None and not p.attention:
                return None
            scale = block.attn_post.scale(args[0])  # [B, T, d]
            if p.attention:
                p.post_scale[l] = scale
            if p.record is not None:
                heads = p.record[start : start + H].float()
                if block.o_bias is not None:
                    heads = heads + block.o_bias.float() / H
                p.record[start : start + H] = (heads * scale.detach()).to(p.record.dtype)
            return None

        return hook

    def _probs_hook(self, l: int):
        def hook(module, args, output):
            p = self.current
            if p.attention:
                probs = output[1] if isinstance(output, tuple) and len(output) > 1 else None
                if probs is None:
                    raise KentropyError("head roles need attention probabilities: load the model with eager attention")
                p.probs[l] = probs
            return None

        return hook

    def _mlp_in_hook(self, l: int):
        def hook(module, args):
            p = self.current
            if p.keep is None and not p.grad:
                return None
            norm = self.wiring.blocks[l].mlp_norm
            x = p.resid_mlp[l] if norm is not None else args[0]  # no norm: the MLP reads the residual itself
            flat = x.shape  # OPT runs its MLP on [B * T, d]
            x = x.reshape(p.resid_attn[l].shape)
            down = self.graph.mlp_down(l)
            delta = self._delta([down], x)
            xin = x + delta[:, :, 0, :] if delta is not None else x.clone()
            if p.grad:
                p.inputs.append(([down], xin))
            xin = xin.reshape(flat)
            return (norm.forward(xin) if norm is not None else xin,) + tuple(args[1:])

        return hook

    def _mlp_out_hook(self, l: int):
        def hook(module, args, output):
            p = self.current
            if p.record is not None:
                p.record[self.graph.mlp_up(l)] = output.detach().reshape(p.record.shape[1:])
            return None

        return hook

    def _logits_hook(self):
        def hook(module, args):
            p = self.current
            if p.keep is None and not p.grad:
                return None
            x = args[0]
            down = self.graph.logits_down
            delta = self._delta([down], x)
            xin = x + delta[:, :, 0, :] if delta is not None else x.clone()
            if p.grad:
                p.inputs.append(([down], xin))
            return (xin,) + tuple(args[1:])

        return hook


def graph_of(model, qkv_split: bool = False) -> Graph:
    """The circuit graph of `model` (layers, heads, parallel residual or not), heads with one or three inputs."""
    w = wire(model)
    return Graph(w.layers, w.heads, w.parallel, qkv_split)
