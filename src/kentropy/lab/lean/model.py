"""A plain-PyTorch causal LM for the lab's block types, for training only: its parameters have HF's names
and shapes, so an HF model's state dict loads into it and it saves back as an HF model directory.

    lean = LeanLM.from_hf([hf_model])            # one model
    lean = LeanLM.from_hf([m0, m1, m2])          # three members of equal shape, stacked
    loss = lean.loss(ids)                         # ids [K, B, T] -> per-member mean next-token loss [K]
    save_member(lean, 1, "out/step-000100", tok)  # member 1 as an HF directory (safetensors)

Block types (HF classes): Llama (RMSNorm, gated FFN with the config's activation: SwiGLU, ReGLU),
OLMo (non-parametric LayerNorm, SwiGLU, optional q/k/v clipping), Arcee (RMSNorm, plain FFN
down(act(up(x)))) and Nemotron (LayerNorm1P: weight + 1, plain FFN); rotary embeddings as HF computes
them (partial rotary included).

With K members every parameter carries a leading member dimension [K, *HF shape]; activations are
[K, B*T, d] and each linear layer is one batched matmul over the members. K = 1 with `stacked=False`
keeps HF's shapes exactly (`state_dict()` is the HF model's, less a tied LM head). The member
dimension is written into the model (rather than `torch.func.stack_module_state` + `vmap`) so that one
code path serves one model and K, compiles to the same kernels, and needs no functional-call wrapping
around the optimizer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kentropy.errors import KentropyError

FAMILIES = ("llama", "olmo", "arcee", "nemotron")
PLAIN_FFN = ("arcee", "nemotron")  # down(act(up(x))): no gate projection
RMS_NORM = ("llama", "arcee")


class Weights(nn.Module):
    """A holder of `weight` (and `bias`) under HF's parameter names."""

    def __init__(self, shape: tuple[int, ...] | None, members: int | None, bias: int | None = None) -> None:
        super().__init__()
        lead = () if members is None else (members,)
        if shape is not None:
            self.weight = nn.Parameter(torch.zeros(*lead, *shape))
        if bias is not None:
            self.bias = nn.Parameter(torch.zeros(*lead, bias))


class Block(nn.Module):
    def __init__(self, c, family: str, members: int | None) -> None:
        super().__init__()
        d, H, KV, hd, m = c.hidden_size, c.num_attention_heads, c.num_key_value_heads, head_dim(c), c.intermediate_size
        attn_bias = bool(getattr(c, "attention_bias", False))
        mlp_bias = bool(getattr(c, "mlp_bias", False))
        self.self_attn = nn.Module()
        for name, (o, i) in {"q_proj": (H * hd, d), "k_proj": (KV * hd, d), "v_proj": (KV * hd, d), "o_proj": (d, H * hd)}.items():
            setattr(self.self_attn, name, Weights((o, i), members, o if attn_bias else None))
        self.mlp = nn.Module()
        if family not in PLAIN_FFN:
            self.mlp.gate_proj = Weights((m, d), members, m if mlp_bias else None)
        self.mlp.up_proj = Weights((m, d), members, m if mlp_bias else None)
        self.mlp.down_proj = Weights((d, m), members, d if mlp_bias else None)
        self.input_layernorm = norm_weights(family, d, members)
        self.post_attention_layernorm = norm_weights(family, d, members)


def head_dim(c) -> int:
    return getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads


def norm_weights(family: str, d: int, members: int | None) -> Weights:
    if family == "olmo":
        return Weights(None, members)  # OLMo's LayerNorm has no parameters
    return Weights((d,), members, d if family == "nemotron" else None)


def check_config(c) -> str:
    """The family of an HF config, or an error naming what the lean model does not implement."""
    family = getattr(c, "model_type", None)
    if family not in FAMILIES:
        raise KentropyError(f"model type {family!r}: the lean trainer implements {', '.join(FAMILIES)}")
    rope = getattr(c, "rope_parameters", None) or {}
    if rope.get("rope_type", "default") != "default":
        raise KentropyError(f"model config: rope_type {rope.get('rope_type')!r}: the lean trainer implements the default rotary embedding")
    if getattr(c, "sliding_window", None):
        raise KentropyError("model config: sliding_window: the lean trainer implements full causal attention")
    return family


class LeanLM(nn.Module):
    """The causal LM of an HF config (see the module docstring); `members=None`: HF's shapes, one model."""

    def __init__(self, config, members: int | None = None) -> None:
        super().__init__()
        self.config = config
        self.family = check_config(config)
        self.members = members
        c = config
        self.model = nn.Module()
        self.model.embed_tokens = Weights((c.vocab_size, c.hidden_size), members)
        self.model.layers = nn.ModuleList(Block(c, self.family, members) for _ in range(c.num_hidden_layers))
        self.model.norm = norm_weights(self.family, c.hidden_size, members)
        self.tied = bool(c.tie_word_embeddings)
        if not self.tied:
            self.lm_head = Weights((c.vocab_size, c.hidden_size), members)
        rope = getattr(c, "rope_parameters", None) or {}
        theta = rope.get("rope_theta", getattr(c, "rope_theta", 10000.0))
        rot = int(head_dim(c) * rope.get("partial_rotary_factor", getattr(c, "partial_rotary_factor", 1.0)))
        # HF's default rotary embedding: inv_freq, then cos/sin of position x inv_freq, in float32
        inv_freq = 1.0 / (theta ** (torch.arange(0, rot, 2, dtype=torch.int64).to(dtype=torch.float) / rot))
        pos = torch.arange(c.max_position_embeddings, dtype=torch.int64).float()
        freqs = pos[:, None] * inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)  # [P, rot]
        self.register_buffer("cos", emb.cos(), persistent=False)
        self.register_buffer("sin", emb.sin(), persistent=False)
        self.act = _activation(c.hidden_act)
        # norm epsilons: Llama's and Arcee's RMSNorm and Nemotron's LayerNorm1P from the config; OLMo's LayerNorm is fixed at 1e-5
        self.eps = getattr(c, "rms_norm_eps", None) if self.family in RMS_NORM else {"nemotron": getattr(c, "norm_eps", 1e-5), "olmo": 1e-5}[self.family]
        self.clip_qkv = getattr(c, "clip_qkv", None) if self.family == "olmo" else None

    # ---- weights in and out -----------------------------------------------------------------
    @classmethod
    def from_hf(cls, models: list, stacked: bool | None = None) -> "LeanLM":
        """A lean model holding copies of these HF models' weights (one, or K stacked: equal configs)."""
        if not models:
            raise KentropyError("no models to stack")
        stacked = len(models) > 1 if stacked is None else stacked
        if len(models) > 1 and not stacked:
            raise KentropyError("several models need stacked=True")
        first = models[0].config.to_dict()
        for i, m in enumerate(models[1:], 1):
            diff = sorted(k for k in set(first) | set(m.config.to_dict()) if first.get(k) != m.config.to_dict().get(k)
                          and k not in ("_name_or_path", "transformers_version"))
            if diff:
                raise KentropyError(f"member {i}: config differs from member 0's in {', '.join(diff)}")
        lean = cls(models[0].config, members=len(models) if stacked else None)
        with torch.no_grad():
            for k, m in enumerate(models):
                sd = m.state_dict()
                for name, p in lean.named_parameters():
                    (p[k] if stacked else p).copy_(sd[name])
        return lean.to(next(models[0].parameters()).device)

    def member_state_dict(self, k: int = 0) -> dict[str, torch.Tensor]:
        """Member k's weights under HF's names and shapes (detached, on CPU, fp32)."""
        if self.members is None and k != 0:
            raise KentropyError(f"member {k}: the model is not stacked")
        sd = {n: (p if self.members is None else p[k]).detach().float().cpu().contiguous() for n, p in self.named_parameters()}
        if self.tied:
            sd["lm_head.weight"] = sd["model.embed_tokens.weight"]
        return sd

    def get_input_embeddings(self) -> nn.Module:
        return self.model.embed_tokens

    # ---- forward ------------------------------------------------------------------------------
    def _b(self, p: torch.Tensor) -> torch.Tensor:
        """A per-member vector [K, n] broadcast over tokens: [K, 1, n]."""
        return p if self.members is None else p.unsqueeze(1)

    def _linear(self, x: torch.Tensor, *ws: Weights) -> torch.Tensor:
        """x @ W.T (+ b) for the projections `ws` of the same input, as one matmul (their outputs concatenated)."""
        w = ws[0].weight if len(ws) == 1 else torch.cat([m.weight for m in ws], dim=-2)
        y = x @ w.mT  # [K, N, in] @ [K, in, out] (or HF's [out, in] shared over the one member)
        if getattr(ws[0], "bias", None) is None:
            return y
        return y + self._b(torch.cat([m.bias for m in ws], dim=-1))

    def _norm(self, x: torch.Tensor, w: Weights) -> torch.Tensor:
        if self.family in RMS_NORM:
            v = x.float().pow(2).mean(-1, keepdim=True)
            return self._b(w.weight) * (x.float() * torch.rsqrt(v + self.eps)).to(x.dtype)
        if self.family == "olmo":
            return F.layer_norm(x.float(), x.shape[-1:], None, None, eps=self.eps).to(x.dtype)
        if self.members is None:  # Nemotron's LayerNorm1P: weight + 1
            return F.layer_norm(x, x.shape[-1:], w.weight + 1.0, w.bias, eps=self.eps)
        return F.layer_norm(x, x.shape[-1:], None, None, eps=self.eps) * self._b(w.weight + 1.0) + self._b(w.bias)

    def hidden(self, ids: torch.Tensor) -> torch.Tensor:
        """ids [K, B, T] -> final hidden states [K, B*T, d] (after the final norm)."""
        c = self.config
        K, B, T = ids.shape
        H, KV, hd = c.num_attention_heads, c.num_key_value_heads, head_dim(c)
        emb = self.model.embed_tokens.weight
        if self.members is None:
            x = F.embedding(ids.reshape(1, B * T), emb)  # [1, N, d]
        else:  # member k's ids index rows k*V.. of the flattened tables
            offsets = torch.arange(K, device=ids.device).view(K, 1) * c.vocab_size
            x = F.embedding(ids.reshape(K, B * T) + offsets, emb.reshape(-1, emb.shape[-1]))  # [K, N, d]
        cos, sin = self.cos[:T].to(x.dtype), self.sin[:T].to(x.dtype)  # [T, rot]
        for layer in self.model.layers:
            a = layer.self_attn
            h = self._norm(x, layer.input_layernorm)
            q, k, v = self._linear(h, a.q_proj, a.k_proj, a.v_proj).split([H * hd, KV * hd, KV * hd], dim=-1)
            if self.clip_qkv is not None:
                q, k, v = (t.clamp(-self.clip_qkv, self.clip_qkv) for t in (q, k, v))
            q = q.view(K * B, T, H, hd).transpose(1, 2)  # [KB, H, T, hd]
            k = k.view(K * B, T, KV, hd).transpose(1, 2)
            v = v.view(K * B, T, KV, hd).transpose(1, 2)
            q, k = _rotary(q, cos, sin), _rotary(k, cos, sin)
            if KV != H:
                k, v = k.repeat_interleave(H // KV, dim=1), v.repeat_interleave(H // KV, dim=1)
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=hd**-0.5)
            x = x + self._linear(o.transpose(1, 2).reshape(K, B * T, H * hd), a.o_proj)
            h = self._norm(x, layer.post_attention_layernorm)
            f = layer.mlp
            if self.family in PLAIN_FFN:
                inner = self.act(self._linear(h, f.up_proj))
            else:
                gate, up = self._linear(h, f.gate_proj, f.up_proj).chunk(2, dim=-1)
                inner = self.act(gate) * up
            x = x + self._linear(inner, f.down_proj)
        return self._norm(x, self.model.norm)

    def _head(self) -> torch.Tensor:
        return self.model.embed_tokens.weight if self.tied else self.lm_head.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """ids [B, T] (one model) or [K, B, T] (stacked) -> logits [(K,) B, T, V]."""
        one = ids.dim() == 2
        ids = ids.unsqueeze(0) if one else ids
        K, B, T = ids.shape
        logits = (self.hidden(ids) @ self._head().mT).view(K, B, T, -1)
        return logits[0] if one else logits

    def loss(self, ids: torch.Tensor) -> torch.Tensor:
        """ids [K, B, T] -> [K]: each member's mean cross-entropy of token t+1 given tokens <= t, over its
        B (T - 1) predictions (HF's causal-LM loss with labels = ids and no padding)."""
        K, B, T = ids.shape
        h = self.hidden(ids).view(K, B, T, -1)[:, :, :-1]  # the last position predicts nothing
        logits = h.reshape(K, B * (T - 1), -1) @ self._head().mT  # [K, N', V]
        targets = ids[:, :, 1:].reshape(K, B * (T - 1))
        nll = CrossEntropy.apply(logits.float().reshape(K * B * (T - 1), -1), targets.reshape(-1))
        return nll.view(K, -1).mean(1)


class CrossEntropy(torch.autograd.Function):
    """Per-row cross-entropy with its gradient in one pass: loss_i = logsumexp(z_i) - z_i[y_i],
    d loss_i / d z_i = softmax(z_i) - onehot(y_i). Keeps only the logits and the row's logsumexp
    for the backward (no [N, V] log-softmax), which the compiler fuses into one kernel each way.

    logits [N, V] float, targets [N] long -> [N]."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        lse = torch.logsumexp(logits, -1)
        ctx.save_for_backward(logits, lse, targets)
        return lse - logits.gather(-1, targets[:, None]).squeeze(-1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        logits, lse, targets = ctx.saved_tensors
        hit = torch.arange(logits.shape[-1], device=logits.device) == targets[:, None]
        return (torch.exp(logits - lse[:, None]) - hit.to(logits.dtype)) * grad[:, None], None


def _rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """HF's rotary embedding on the first `rot` dims of x [.., T, hd]: x cos + rotate_half(x) sin."""
    rot = cos.shape[-1]
    r, rest = x[..., :rot], x[..., rot:]
    half = rot // 2
    rotated = torch.cat((-r[..., half:], r[..., :half]), dim=-1)
    out = r * cos + rotated * sin
    return out if rest.shape[-1] == 0 else torch.cat((out, rest), dim=-1)


def _activation(name: str):
    from transformers.activations import ACT2FN

    if name not in ACT2FN:
        raise KentropyError(f"model config: hidden_act {name!r} unknown")
    return ACT2FN[name]


def save_member(lean: LeanLM, k: int, path, tok=None):
    """Member k as an HF model directory (the HF class of its config; safetensors), written atomically."""
    from transformers import AutoModelForCausalLM

    from kentropy.io import write_dir_atomic

    hf = AutoModelForCausalLM.from_config(lean.config)
    missing, unexpected = hf.load_state_dict(lean.member_state_dict(k), strict=False)
    if unexpected or [m for m in missing if m != "lm_head.weight"]:
        raise KentropyError(f"lean -> HF: missing {missing}, unexpected {unexpected}")

    def write(d):
        hf.save_pretrained(d)
        if tok is not None:
            tok.save_pretrained(d)

    return write_dir_atomic(path, write)
