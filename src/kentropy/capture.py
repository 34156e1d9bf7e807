"""Hooks that reduce activations on the fly into float64 running sums.

Each hook turns one layer's activation into per-instance means (a masked, weighted sum
over tokens) and adds them to a running total, so no `[batch, seq, m]` tensor outlives the
layer's own forward. Hooks are removed in `finally` (use the classes as context managers).
"""

from __future__ import annotations

import torch

from kentropy.entropy import attention_entropy_per_query, coefficient_magnitude
from kentropy.ffn import Layout


class _Hooks:
    def __init__(self) -> None:
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self.weights: torch.Tensor | None = None  # [B, T] per-token weights of the current batch

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()


class CoefficientSums(_Hooks):
    """Sum over instances of the per-instance mean |c_l| for every layer: `sums[l]` is [m].

    After the data, Cbar_l = sums[l] / instances (Eq. 2).
    """

    def __init__(self, layout: Layout, activation: str = "abs") -> None:
        super().__init__()
        coefficient_magnitude(torch.zeros(1), activation)  # validate early
        self.activation = activation
        self.layers = len(layout.layers)
        self.sums: torch.Tensor | None = None  # [L, m] float64
        for l, layer in enumerate(layout.layers):
            self._handles.append(layer.down.register_forward_pre_hook(self._hook(l)))

    def _hook(self, l: int):
        def hook(module, args):
            c = args[0]  # [B, T, m]: the input of the down projection (OPT flattens to [B*T, m])
            a = coefficient_magnitude(c, self.activation)
            if a.dtype not in (torch.float32, torch.float64):
                a = a.float()  # bf16/fp16 activations: reduce in fp32
            w = self.weights.to(device=a.device, dtype=a.dtype)  # [B, T]
            # sum_b mean_t |c[b, t]| as one [1, B*T] @ [B*T, m] product
            per_layer = (w.reshape(1, -1) @ a.reshape(w.numel(), -1)).squeeze(0).double()
            if self.sums is None:
                self.sums = torch.zeros(self.layers, a.shape[-1], dtype=torch.float64, device=a.device)
            self.sums[l] += per_layer.to(self.sums.device)  # layers may live on several GPUs (--device-map)

        return hook


class AttentionEntropySums(_Hooks):
    """Sum over instances of the per-instance mean attention entropy, per layer: `sums` is [L].

    Needs eager attention (the module must return its probabilities).
    """

    def __init__(self, layout: Layout) -> None:
        super().__init__()
        self.layers = len(layout.layers)
        self.sums: torch.Tensor | None = None  # [L] float64
        for l, layer in enumerate(layout.layers):
            self._handles.append(layer.attention.register_forward_hook(self._hook(l)))

    def _hook(self, l: int):
        def hook(module, args, output):
            probs = output[1] if isinstance(output, tuple) and len(output) > 1 else None
            if probs is None or probs.dim() != 4:
                raise RuntimeError(
                    "attention entropy needs attention probabilities: load the model with attn_implementation='eager'"
                )
            h = attention_entropy_per_query(probs)  # [B, T]
            w = self.weights.to(device=h.device, dtype=h.dtype)
            if self.sums is None:
                self.sums = torch.zeros(self.layers, dtype=torch.float64, device=h.device)
            self.sums[l] += (w * h).sum().double().to(self.sums.device)

        return hook
