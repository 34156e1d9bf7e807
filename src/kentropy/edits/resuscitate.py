"""Resuscitation of inactive memory vectors (Kim et al., ICLR 2025, Algorithm 1).

Per layer l, from Cbar_l: the neurons at or below the q-quantile of Cbar_l (q = ratio) get
their coefficient scaled by `mean(Cbar_l) / Cbar_l[i] * p` (p = amplify), by scaling the
weights that produce coefficient i: row i of the up projection for gated FFNs (never the
gate, so c_i is scaled exactly; a fused gate_up projection by its up half only), row i of
the input projection and its bias entry for plain FFNs (exact for ReLU, approximate for
other activations). A mixture-of-experts layer takes the quantile over all of its memory
vectors (E*m, plus the shared expert's) and scales row i of expert e's up half (or row i of
the shared expert's up projection). Nothing else changes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from kentropy.runtime.options import option, require
from kentropy.errors import KentropyError
from kentropy.models.loading import gguf_fields
from kentropy.models.registry import Layer, Layout, find_layout

EXACT_ACTIVATIONS = {"relu"}  # plain FFNs: act(s*z) = s*act(z) only for positively homogeneous activations


def check_args(ratio: float, amplify: float) -> None:
    if not 0 < ratio < 1:  # also refuses NaN
        raise KentropyError(f"--ratio {ratio}: must be in (0, 1)")
    if not 0 < amplify < math.inf:
        raise KentropyError(f"--amplify {amplify}: must be a finite number > 0")


def select_and_scale(cbar: torch.Tensor, ratio: float, amplify: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Algorithm 1 for one layer. cbar: [m] -> (neuron indices [k], multipliers [k]).

    Selected: Cbar[i] <= torch.quantile(Cbar, ratio) (linear interpolation) and Cbar[i] > 0
    (a neuron whose coefficient is always 0 cannot be raised by scaling). Multiplier:
    mean(Cbar) / Cbar[i] * amplify.
    """
    check_args(ratio, amplify)
    cbar = cbar.double()
    q = torch.quantile(cbar, ratio)
    idx = torch.nonzero((cbar <= q) & (cbar > 0)).squeeze(1)
    return idx, cbar.mean() / cbar[idx] * amplify


def _parts(layer: Layer) -> list[tuple[int, torch.Tensor, torch.Tensor | None, int | None]]:
    """Where a layer's memory vectors are produced: (offset, rows, bias, m) per part, in vector order.

    rows is [n, d] (a dense FFN, a shared expert), or [E, m, d] with m given (routed experts, whose
    memory e*m + i is row i of expert e's up half). All are views: writes reach the parameters.
    """
    if not layer.moe:
        rows, bias = layer.dense.rows()
        return [(0, rows, bias, None)]
    parts = [(0, layer.expert_up_rows(), None, layer.expert_dim)]
    if layer.shared is not None:
        rows, bias = layer.shared.rows()
        parts.append((layer.n_experts * layer.expert_dim, rows, bias, None))
    return parts


def _where(local: torch.Tensor, m: int | None) -> tuple[torch.Tensor, ...]:
    return (local,) if m is None else (local // m, local % m)


@dataclass
class LayerEdit:
    neurons: torch.Tensor  # [k] indices into the layer's memory vectors
    multipliers: torch.Tensor  # [k] float64
    saved: list = field(repr=False, default_factory=list)  # per part: (part, local idx, rows [k', d], bias [k'] | None)


@dataclass
class Resuscitation:
    """What `resuscitate` changed, and how to undo it bit for bit."""

    ratio: float
    amplify: float
    family: str
    exact: bool
    note: str
    edits: list[LayerEdit]
    _layout: Layout = field(repr=False)

    def undo(self) -> None:
        """Restore every changed row (and bias entry) to its original bits."""
        with torch.no_grad():
            for layer, e in zip(self._layout.layers, self.edits):
                parts = _parts(layer)
                for p, local, rows0, bias0 in e.saved:
                    _, rows, bias, m = parts[p]
                    where = _where(local, m)
                    rows[where] = rows0
                    if bias is not None:
                        bias[where] = bias0

    def to_json(self) -> dict:
        return {
            "ratio": self.ratio,
            "amplify": self.amplify,
            "family": self.family,
            "exact": self.exact,
            "note": self.note,
            "layers": [
                {
                    "layer": l,
                    "neurons_scaled": int(e.neurons.numel()),
                    "min_multiplier": float(e.multipliers.min()) if e.neurons.numel() else None,
                    "max_multiplier": float(e.multipliers.max()) if e.neurons.numel() else None,
                }
                for l, e in enumerate(self.edits)
            ],
        }


def _activation_name(model) -> str:
    cfg = model.config
    for key in ("hidden_act", "activation_function", "hidden_activation", "mlp_hidden_act", "dense_act_fn"):
        if isinstance(getattr(cfg, key, None), str):
            return getattr(cfg, key)
    return "unknown"


def resuscitate(model, coefficients, ratio: float, amplify: float) -> Resuscitation:
    """Apply Algorithm 1 in place. coefficients: Cbar [L, m] measured on some data (or a list of [m_l]
    tensors where layers differ in size, as `measure` returns for mixed dense / MoE models).

    Returns what changed; `.undo()` restores the model exactly. To keep the original, call
    this on a copy (`copy.deepcopy(model)`).
    """
    check_args(ratio, amplify)
    layout = find_layout(model)
    want = layout.sizes
    got = [int(c.numel()) for c in coefficients] if len(coefficients) == len(want) else None
    if got != want:
        shape = tuple(coefficients.shape) if isinstance(coefficients, torch.Tensor) else [int(c.numel()) for c in coefficients]
        raise KentropyError(f"coefficients have shape {shape}, model needs {len(want)} layers of {want} memory vectors")
    exact, note = _exactness(model, layout)
    edits = []
    with torch.no_grad():
        for layer, cbar in zip(layout.layers, coefficients):
            idx, mult = select_and_scale(cbar.reshape(-1), ratio, amplify)
            edit = LayerEdit(idx, mult)
            for p, (start, rows, bias, m) in enumerate(_parts(layer)):
                n = rows.shape[0] * (m or 1)
                sel = (idx >= start) & (idx < start + n)
                if not sel.any():
                    continue
                local = (idx[sel] - start).to(rows.device)
                where = _where(local, m)
                saved_rows = rows[where].clone()
                saved_bias = bias[where].clone() if bias is not None else None
                scale = mult[sel].to(device=rows.device, dtype=torch.float64)
                new_rows = (saved_rows.double() * scale[:, None]).to(rows.dtype)
                if not torch.isfinite(new_rows).all():  # a Cbar entry so small that the multiplier overflows the dtype
                    Resuscitation(ratio, amplify, layout.family.name, exact, note, edits + [edit], layout).undo()
                    raise KentropyError(f"layer {len(edits)}: multipliers up to {float(mult.max()):.3g} overflow "
                                        f"{rows.dtype} weights (coefficients too close to 0)")
                rows[where] = new_rows
                if bias is not None:
                    bias[where] = (saved_bias.double() * scale).to(bias.dtype)
                edit.saved.append((p, local, saved_rows, saved_bias))
            edits.append(edit)
    return Resuscitation(ratio, amplify, layout.family.name, exact, note, edits, layout)


def _exactness(model, layout: Layout) -> tuple[bool, str]:
    act = _activation_name(model)
    if layout.gated:
        what = "mixture-of-experts: rows of each expert's up half" if layout.moe else "gated FFN: up-projection rows"
        return True, f"{what} scaled, so each coefficient is scaled exactly"
    if act in EXACT_ACTIVATIONS:
        return True, f"plain FFN with {act}: input row and bias scaled, coefficient scaled exactly"
    return False, f"plain FFN with {act}: input row and bias scaled; act(s*z) != s*act(z), so coefficients scale only approximately"


@dataclass
class ResuscitateConfig:
    """Resuscitate inactive memory vectors (Algorithm 1) and save the edited model as an HF directory."""

    model: str = option(help="Model dir or hub id (NAME@rev for one revision).", argument=True)
    out: str = option(help="Output directory: an HF model (tokenizer included) plus resuscitation.json.")
    ratio: float = option(help="Q: neurons at or below this quantile of each layer's Cbar are scaled, in (0, 1).")
    amplify: float = option(help="P: multiplier mean(Cbar)/Cbar[i] * P, > 0.")
    data: str | None = option(None, "Documents to measure Cbar on, and entropy before/after (.jsonl, .txt, dataset).")
    coefficients: str | None = option(None, "Cbar from `kentropy measure --coefficients-out` (a .safetensors file or a dir with one).")
    max_instances: int | None = option(None, "Use at most this many documents.")
    seq_len: int = option(1024, "Truncate each document to this many tokens.")
    batch_size: int = option(8, "Documents per forward pass.")
    activation: str = option("abs", "Coefficient magnitude: abs or relu.")
    overwrite: bool = option(False, "Replace an existing output directory.")
    device: str = option("auto", "auto, cpu, cuda, cuda:N.")
    trust_remote_code: bool = option(False, "Allow model code from the hub.")

    def __post_init__(self) -> None:
        from kentropy.io import check_out_dir

        check_args(self.ratio, self.amplify)
        require(self, "max_instances", "seq_len", "batch_size", low=0, low_open=True)
        if self.data is None and self.coefficients is None:
            raise KentropyError("give --data DATA or --coefficients DIR")
        if self.activation not in ("abs", "relu"):
            raise KentropyError(f"--activation {self.activation}: choose abs or relu")
        check_out_dir(self.out)


def run_resuscitate(cfg: ResuscitateConfig) -> dict:
    """Measure (or read) Cbar, apply Algorithm 1, measure again, save model + resuscitation.json atomically."""
    from kentropy.runtime.options import to_dict
    from kentropy.edits.session import check_out_free, entropy_fields, open_edit
    from kentropy.measurement.workflow import load_coefficients

    check_out_free(cfg.out, cfg.overwrite)
    e = open_edit(cfg.model, command="resuscitate", data=cfg.data, max_instances=cfg.max_instances, seq_len=cfg.seq_len,
                  batch_size=cfg.batch_size, activation=cfg.activation, device=cfg.device, trust_remote_code=cfg.trust_remote_code)
    before = e.measure()
    cbar = load_coefficients(cfg.coefficients) if cfg.coefficients else before.coefficients
    done = resuscitate(e.model, cbar, cfg.ratio, cfg.amplify)
    after = e.measure()
    report = done.to_json() | {
        "model": e.ckpt.name,
        "revision": e.ckpt.revision,
        **gguf_fields(e.ckpt),
        "coefficients_from": cfg.coefficients or cfg.data,
        **entropy_fields(before, after, cfg.data),
        "config": to_dict(cfg),
    }
    e.save(cfg.out, "resuscitation.json", report)
    return report
