"""The formulas, as pure functions on tensors (Kim et al., ICLR 2025). Natural log throughout."""

from __future__ import annotations

import torch


def coefficient_magnitude(c: torch.Tensor, activation: str) -> torch.Tensor:
    """|c| (`abs`, the default) or max(c, 0) (`relu`, the paper's alternative), elementwise."""
    if activation == "abs":
        return c.abs()
    if activation == "relu":
        return c.clamp_min(0)
    raise ValueError(f"activation must be 'abs' or 'relu', got {activation!r}")


def distribution(cbar: torch.Tensor) -> torch.Tensor:
    """p_l = Cbar_l / sum_i Cbar_l[i] (Eq. 2), along the last dim. cbar: [..., m]."""
    return cbar / cbar.sum(dim=-1, keepdim=True)


def entropy(p: torch.Tensor) -> torch.Tensor:
    """Shannon entropy -sum_i p_i ln p_i along the last dim, with 0 ln 0 = 0."""
    return -torch.special.xlogy(p, p).sum(dim=-1)


def knowledge_entropy_per_layer(cbar: torch.Tensor) -> torch.Tensor:
    """H_l(θ) = -sum_i p_l[i] ln p_l[i] (Eq. 2). cbar: [L, m] mean |coefficients| -> [L]."""
    return entropy(distribution(cbar))


def knowledge_entropy(cbar: torch.Tensor) -> torch.Tensor:
    """H(θ) = sum_l H_l(θ) (Eq. 2). Bounded by L ln m. cbar: [..., L, m] -> [...]."""
    return knowledge_entropy_per_layer(cbar).sum(-1)


def attention_entropy_per_query(probs: torch.Tensor) -> torch.Tensor:
    """Entropy of each query's attention distribution (Eq. 3), averaged over heads.

    probs: [B, H, T_query, T_key] (rows sum to 1) -> [B, T_query].
    """
    return entropy(probs.float()).mean(dim=1)


def next_token_entropy_per_position(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the predicted next-token distribution (paper A.3). logits [B, T, V] -> [B, T]."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(dim=-1)


def instance_weights(attention_mask: torch.Tensor) -> torch.Tensor:
    """w[b, t] = mask[b, t] / |s_b|: a weighted sum over tokens is a per-instance mean.

    Padding gets weight 0, so it never counts. attention_mask: [B, T] -> [B, T] float32.
    """
    m = attention_mask.float()
    return m / m.sum(dim=1, keepdim=True).clamp_min(1)


def expert_split(cbar: torch.Tensor, sizes: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Split H_l of a mixture-of-experts layer into expert mass and within-expert parts.

    cbar: [n] one layer's Cbar, made of consecutive groups of `sizes` (each routed expert's m,
    then the shared expert's). With mass_g = sum of group g's p and p_g = group g renormalized:
    H_l = H(mass) + sum_g mass_g H(p_g) exactly (chain rule of entropy).
    Returns (mass [G], entropy per group [G], H(mass), sum_g mass_g H(p_g)).
    """
    groups = torch.split(cbar, sizes)
    totals = torch.stack([g.sum() for g in groups])
    mass = totals / totals.sum()
    per_group = torch.stack([entropy(distribution(g)) if g.sum() > 0 else g.new_zeros(()) for g in groups])
    return mass, per_group, entropy(mass), (mass * per_group).sum()
