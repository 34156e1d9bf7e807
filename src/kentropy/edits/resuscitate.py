"""Resuscitation of inactive memory vectors (Kim et al., ICLR 2025, Algorithm 1).

Per layer l, from Cbar_l: the neurons at or below the q-quantile of Cbar_l (q = ratio) get
their coefficient scaled by `mean(Cbar_l) / Cbar_l[i] * p` (p = amplify), by scaling the
weights that produce coefficient i: row i of the up projection for gated FFNs (never the
gate, so c_i is scaled exactly; a fused gate_up projection by its up half only), row i of
the input projection and its bias entry for plain FFNs (exact for ReLU, approximate for
other activations). A mixture-of-experts layer takes the quantile over all of its memory
vectors (E*m, plus the shared expert's) and scales row i of expert e's up half (or row i of
the shared expert's up projection). Nothing else changes. Where those rows are, in every layout,
is the neuron map's (`kentropy.models.neurons`).

    done = resuscitate(model, cbar, ratio=0.5, amplify=2.0)   # in place; done.undo() restores every bit
    kentropy resuscitate MODEL --data DOCS --ratio 0.5 --amplify 2 --out DIR
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from kentropy.edits.session import EditConfig, edit_checkpoint
from kentropy.errors import ArgumentError, KentropyError
from kentropy.models.neurons import Site, check_coefficients, split
from kentropy.models.registry import Layout, find_layout
from kentropy.runtime.options import option

EXACT_ACTIVATIONS = {"relu"}  # plain FFNs: act(s*z) = s*act(z) only for positively homogeneous activations
RATIO = "Q: neurons at or below this quantile of each layer's Cbar are scaled, in (0, 1)."
AMPLIFY = "P: neuron i's multiplier is mean(Cbar) / Cbar_i * P, > 0."


def check_args(ratio: float, amplify: float) -> None:
    if not (isinstance(ratio, (int, float)) and 0 < ratio < 1):  # also refuses NaN
        raise ArgumentError("ratio", "must be in (0, 1)", ratio)
    if not (isinstance(amplify, (int, float)) and 0 < amplify < math.inf):
        raise ArgumentError("amplify", "must be a finite number > 0", amplify)


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


@dataclass
class LayerEdit:
    neurons: torch.Tensor  # [k] indices into the layer's memory vectors
    multipliers: torch.Tensor  # [k] float64
    saved: list = field(repr=False, default_factory=list)  # (site, index, the slices as they were) per change


@dataclass
class Resuscitation:
    """What `resuscitate` changed, and how to undo it bit for bit."""

    ratio: float
    amplify: float
    family: str
    exact: bool
    note: str
    edits: list[LayerEdit]

    def undo(self) -> None:
        """Restore every changed row (and bias entry) to its original bits."""
        with torch.no_grad():
            for e in self.edits:
                for site, where, old in e.saved:
                    site.rows()[where] = old

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


def _scale(site: Site, where: tuple, scale: torch.Tensor, edit: LayerEdit) -> bool:
    """Multiply the slices `where` of `site` by `scale` ([k] float64, one per neuron) in float64, rounded once to
    the weights' dtype; keep the old slices in `edit`. False, writing nothing, where a product overflows the dtype."""
    v = site.rows()
    old = v[where]
    new = (old.double() * scale.reshape(-1, *[1] * (old.dim() - 1))).to(v.dtype)
    if not torch.isfinite(new).all():
        return False
    v[where] = new
    edit.saved.append((site, where, old))
    return True


def resuscitate(model, coefficients, ratio: float, amplify: float) -> Resuscitation:
    """Apply Algorithm 1 in place. coefficients: Cbar [L, m] measured on some data (or a list of [m_l]
    tensors where layers differ in size, as `measure` returns for mixed dense / MoE models): finite,
    non-negative, no layer all zero.

    Returns what changed; `.undo()` restores the model exactly. To keep the original, call
    this on a copy (`copy.deepcopy(model)`).
    """
    check_args(ratio, amplify)
    layout = find_layout(model)
    check_coefficients(layout, coefficients, nonzero=True)
    exact, note = _exactness(model, layout)
    done = Resuscitation(ratio, amplify, layout.family.name, exact, note, [])
    with torch.no_grad():
        for l, (layer, cbar) in enumerate(zip(layout.layers, coefficients)):
            idx, mult = select_and_scale(cbar.reshape(-1), ratio, amplify)
            edit = LayerEdit(idx, mult)
            done.edits.append(edit)
            for part, local, sel in split(layer, idx):
                device = part.up.param.device
                where = part.where(local.to(device))
                scale = mult[sel].to(device=device, dtype=torch.float64)
                for site in (part.up, part.up_bias):
                    if site is not None and not _scale(site, where, scale, edit):
                        done.undo()  # a Cbar entry so small that the multiplier overflows the dtype
                        raise ArgumentError("coefficients", f"layer {l}: multipliers up to {float(mult.max()):.3g} overflow "
                                            f"{site.param.dtype} weights (entries too close to 0)")
    return done


def _exactness(model, layout: Layout) -> tuple[bool, str]:
    act = _activation_name(model)
    if layout.gated:
        what = "mixture-of-experts: rows of each expert's up half" if layout.moe else "gated FFN: up-projection rows"
        return True, f"{what} scaled, so each coefficient is scaled exactly"
    if act in EXACT_ACTIVATIONS:
        return True, f"plain FFN with {act}: input row and bias scaled, coefficient scaled exactly"
    return False, f"plain FFN with {act}: input row and bias scaled; act(s*z) != s*act(z), so coefficients scale only approximately"


def check_cbar(model, cbar) -> None:
    """A Cbar from a file fits the model: one finite, non-negative, not all-zero vector per layer, of its size."""
    check_coefficients(find_layout(model), cbar, nonzero=True)


@dataclass(kw_only=True)
class ResuscitateConfig(EditConfig):
    """Resuscitate inactive memory vectors (Algorithm 1) and save the edited model plus resuscitation.json."""

    ratio: float = option(help=RATIO)
    amplify: float = option(help=AMPLIFY)

    def __post_init__(self) -> None:
        check_args(self.ratio, self.amplify)
        if self.data is None and self.coefficients is None:
            raise KentropyError("give --data DATA or --coefficients DIR")
        super().__post_init__()


def run_resuscitate(cfg: ResuscitateConfig) -> dict:
    """Measure (or read) Cbar, apply Algorithm 1, measure again, save model + resuscitation.json atomically."""
    e, done, fields = edit_checkpoint(cfg, "resuscitate", lambda model, cbar: resuscitate(model, cbar, cfg.ratio, cfg.amplify),
                                      check=check_cbar)
    report = done.to_json() | fields
    e.save(cfg.out, "resuscitation.json", report)
    return report
