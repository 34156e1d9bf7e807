"""Head roles (Ou et al. 2025): does a head move the subject to the last token, or the relation?

For head h of layer l at an example's last prompt token t (clean run), split its output by
source position j:

    c_j = A_h[t, j] * (v_h[j] @ W_O^h)                    (sum_j c_j = the head's output at t)
    dla_j = c_j . g,  g = d m[t] / d x_final[t]

m is the circuit metric (the target logit, or target minus corrupted-target logit), x_final
the residual stream entering the final norm: dla_j is the direct effect of c_j on the metric
with the final norm linearized at the clean run (its Jacobian). In post-norm and sandwich
blocks c_j is also multiplied by the attention post-norm's factor at t on the clean run
(gain / rms of the attention output), as the head's recorded output is. The
head's subject (relation) attribution is the sum of dla_j over the subject's (relation
phrase's) tokens, averaged over examples; `metrics.classify_role` turns the two into
mover / relation / mixed (ratio of magnitudes >= 10). Needs eager attention.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kentropy.circuits.eap import batch_ranges, check_metric, embed, logits_of, metric_values, model_device
from kentropy.circuits.graph import Circuit
from kentropy.circuits.metrics import ROLE_RATIO, classify_role
from kentropy.circuits.tasks import Encoded
from kentropy.circuits.trace import Pass, Tracer


@dataclass
class HeadAttribution:
    subject: torch.Tensor  # [L, H] mean DLA carried from subject tokens
    relation: torch.Tensor  # [L, H] from relation-phrase tokens
    total: torch.Tensor  # [L, H] from all tokens (= the head's direct logit attribution)


def head_attribution(model, enc: Encoded, *, batch_size: int = 16, metric: str = "logit") -> HeadAttribution:
    """Per-head direct attribution to the metric (`eap.metric_values`), split by source tokens (module docstring)."""
    check_metric(metric, enc)
    dev = model_device(model)
    with Tracer(model) as tr:
        w, L = tr.wiring, tr.graph.layers
        sums = torch.zeros((3, L, w.heads), dtype=torch.float64)
        for a, b in batch_ranges(len(enc), batch_size):
            e = enc.rows(a, b).to(dev)
            x = embed(model, e.clean).detach().requires_grad_(True)
            p = tr.begin(Pass(grad=True, attention=True))
            value = metric_values(logits_of(model, x, e.mask), e, metric).sum()
            final = next(t for downs, t in p.inputs if downs == [tr.graph.logits_down])
            (g,) = torch.autograd.grad(value, [final])
            tr.begin()
            rows = torch.arange(b - a, device=dev)
            g_last = g[rows, e.last].float()  # [B, d]
            for l in range(L):
                probs = p.probs[l].detach()[rows, :, e.last, :].float()  # [B, H, T]
                vo = torch.einsum("bthk,hdk->bthd", p.values[l].detach().float(), w.blocks[l].w_out.float())
                g_l = g_last * p.post_scale[l][rows, e.last].detach() if l in p.post_scale else g_last
                dla = torch.einsum("bthd,bd->bht", vo, g_l) * probs  # [B, H, T]
                sums[0, l] += (dla * e.subject[:, None, :]).sum((0, 2)).double().cpu()
                sums[1, l] += (dla * e.relation[:, None, :]).sum((0, 2)).double().cpu()
                sums[2, l] += dla.sum((0, 2)).double().cpu()
    s = (sums / len(enc)).float()
    return HeadAttribution(s[0], s[1], s[2])


def head_roles(circuit: Circuit, attribution: HeadAttribution, ratio: float = ROLE_RATIO) -> dict[str, dict]:
    """Role of every attention head on the circuit: {"a3.h1": {"role", "subject", "relation"}}."""
    out = {}
    for name in sorted(circuit.nodes(), key=_node_key):
        if not name.startswith("a"):
            continue
        l, h = (int(x) for x in name[1:].split(".h"))
        s, r = float(attribution.subject[l, h]), float(attribution.relation[l, h])
        out[name] = {"role": classify_role(s, r, ratio), "subject": s, "relation": r}
    return out


def _node_key(name: str) -> tuple[int, int]:
    if name.startswith("a"):
        l, h = name[1:].split(".h")
        return int(l), int(h)
    return int(name[1:]), 10**9
