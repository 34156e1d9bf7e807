"""EAP-IG edge scores, circuit evaluation (patched runs) and exact single-edge patching.

Metric m(run) = mean over examples of the logit of the target's first token at the prompt's
last token. The attribution metric is the clean-minus-corrupted logit difference
m(run) - m(corrupted); its gradient is that of m(run).

EAP-IG, "inputs" variant (Hanna et al. 2024, Eq. 2 with the integrated gradients of
Sundararajan et al. 2017 taken over the input embeddings):

    score(u -> v) = sum_{b,t} (z'_u - z_u)[b, t] . 1/m sum_{k=1..m} dM/d(in_v)[b, t] at e' + k/m (e - e')

z_u / z'_u: output of u on the clean / corrupted prompt, in_v: the input of v, e / e': the
clean / corrupted input embeddings, m = `steps`. The score estimates how the metric moves
when edge u -> v is patched to its corrupted value (negative: the edge carries the recall).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from kentropy.circuits import metrics as M
from kentropy.circuits.tasks import Encoded
from kentropy.circuits.trace import Pass, Tracer
from kentropy.errors import KentropyError


def model_device(model) -> torch.device:
    return next(model.parameters()).device


def embed(model, ids: torch.Tensor) -> torch.Tensor:
    return model.get_input_embeddings()(ids)


def logits_of(model, embeds: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return model(inputs_embeds=embeds, attention_mask=mask, use_cache=False).logits


def target_logits(logits: torch.Tensor, enc: Encoded) -> torch.Tensor:
    """[N]: the logit of each example's target token at its last prompt token."""
    rows = torch.arange(logits.shape[0], device=logits.device)
    return logits[rows, enc.last.to(logits.device), enc.target.to(logits.device)].double()


def batch_ranges(n: int, batch_size: int):
    if batch_size <= 0:
        raise KentropyError(f"--batch-size {batch_size}: must be positive")
    return [(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]


def record(tr: Tracer, model, embeds, mask, keep=None, corrupted=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Run once, recording every upstream node's output: ([n_up, B, T, d], logits)."""
    B, T, d = embeds.shape
    rec = torch.zeros((tr.graph.n_up, B, T, d), dtype=embeds.dtype, device=embeds.device)
    tr.begin(Pass(record=rec, keep=keep, corrupted=corrupted))
    logits = logits_of(model, embeds, mask)
    return rec, logits


@dataclass
class Attribution:
    scores: torch.Tensor  # [n_up, n_down] float32, mean over examples; 0 on non-edges
    clean: float  # m(clean)
    corrupted: float  # m(corrupted)
    examples: int
    steps: int


def eap_ig(model, enc: Encoded, *, steps: int = 5, batch_size: int = 16, progress: bool = False) -> Attribution:
    """EAP-IG scores of every edge of `model`'s circuit graph on a task (formula in the module docstring)."""
    if steps <= 0:
        raise KentropyError(f"--ig-steps {steps}: must be positive")
    dev = model_device(model)
    with Tracer(model) as tr:
        g = tr.graph
        scores = torch.zeros((g.n_up, g.n_down), dtype=torch.float32, device=dev)
        m_clean = m_corr = 0.0
        for a, b in tqdm(batch_ranges(len(enc), batch_size), desc="eap-ig", disable=not progress, leave=False):
            e = enc.rows(a, b).to(dev)
            with torch.no_grad():
                x, x_corr = embed(model, e.clean), embed(model, e.corrupted)
                z, logits = record(tr, model, x, e.mask)
                m_clean += float(target_logits(logits, e).sum())
                z_corr, logits = record(tr, model, x_corr, e.mask)
                m_corr += float(target_logits(logits, e).sum())
                diff = (z_corr - z).float()  # [n_up, B, T, d]
                del z, z_corr
            grads = torch.zeros((g.n_down,) + tuple(diff.shape[1:]), dtype=torch.float32, device=dev)
            for k in range(1, steps + 1):
                point = (x_corr + (k / steps) * (x - x_corr)).detach().requires_grad_(True)
                p = tr.begin(Pass(grad=True))
                metric = target_logits(logits_of(model, point, e.mask), e).sum()
                tensors = [t for _, t in p.inputs]
                for (downs, _), gr in zip(p.inputs, torch.autograd.grad(metric, tensors, allow_unused=True)):
                    if gr is None:
                        continue
                    gr = gr.float()
                    if gr.dim() == 4:  # per-head inputs [B, T, H, d]
                        grads[downs] += gr.permute(2, 0, 1, 3)
                    else:
                        grads[downs[0]] += gr
                tr.begin()
            scores += torch.einsum("ubtd,vbtd->uv", diff, grads) / steps
        valid = g.valid().to(dev)
    n = len(enc)
    return Attribution((scores * valid / n).cpu(), m_clean / n, m_corr / n, n, steps)


@dataclass
class Evaluation:
    clean: float  # m(clean)
    corrupted: float  # m(corrupted)
    circuit: float  # m(circuit run)
    faithfulness: float
    hit_at_k: float  # share of examples whose target is in the top-k of the circuit run's logits
    hit_at_k_clean: float  # the same for the full model
    k: int


def evaluate(model, enc: Encoded, edges: torch.Tensor, *, k: int = 10, batch_size: int = 16) -> Evaluation:
    """Run with every edge outside `edges` ([n_up, n_down] bool) patched to its corrupted value.

    A node reads the residual of this run plus, for each of its in-edges not in the circuit,
    (corrupted output - this run's output) of the upstream node: the full graph is the clean
    run, the empty graph the corrupted one.
    """
    dev = model_device(model)
    sums = torch.zeros(5, dtype=torch.float64)  # clean, corrupted, circuit, hits, hits clean
    with Tracer(model) as tr, torch.no_grad():
        keep = edges.to(dev) | ~tr.graph.valid().to(dev)
        for a, b in batch_ranges(len(enc), batch_size):
            e = enc.rows(a, b).to(dev)
            x, x_corr = embed(model, e.clean), embed(model, e.corrupted)
            z_corr, logits_corr = record(tr, model, x_corr, e.mask)
            tr.begin()
            logits_clean = logits_of(model, x, e.mask)
            _, logits_circ = record(tr, model, x, e.mask, keep=keep, corrupted=z_corr)
            tr.begin()
            rows = torch.arange(b - a, device=dev)
            sums += torch.tensor([
                float(target_logits(logits_clean, e).sum()),
                float(target_logits(logits_corr, e).sum()),
                float(target_logits(logits_circ, e).sum()),
                float(M.hits_at_k(logits_circ[rows, e.last], e.target, k).sum()),
                float(M.hits_at_k(logits_clean[rows, e.last], e.target, k).sum()),
            ], dtype=torch.float64)
    c, r, m, h, hc = (sums / len(enc)).tolist()
    return Evaluation(c, r, m, M.faithfulness(m, c, r), h, hc, k)


def exact_edge_effects(model, enc: Encoded, *, batch_size: int = 16, progress: bool = False) -> torch.Tensor:
    """[n_up, n_down]: m(only edge u -> v patched) - m(clean) for every edge (0 on non-edges).

    One forward pass per edge and batch: the ground truth EAP-IG approximates, for small models.
    """
    dev = model_device(model)
    with Tracer(model) as tr, torch.no_grad():
        valid = tr.graph.valid()
        out = torch.zeros(valid.shape, dtype=torch.float64)
        edges = valid.nonzero().tolist()
        for a, b in batch_ranges(len(enc), batch_size):
            e = enc.rows(a, b).to(dev)
            x, x_corr = embed(model, e.clean), embed(model, e.corrupted)
            z_corr, _ = record(tr, model, x_corr, e.mask)
            tr.begin()
            clean = float(target_logits(logits_of(model, x, e.mask), e).sum())
            for u, v in tqdm(edges, desc="patch edges", disable=not progress, leave=False):
                keep = valid.clone()
                keep[u, v] = False
                _, logits = record(tr, model, x, e.mask, keep=keep.to(dev), corrupted=z_corr)
                out[u, v] += float(target_logits(logits, e).sum()) - clean
            tr.begin()
    return (out / len(enc)).float()
