"""EAP-IG edge scores, a circuit's score (patched runs: faithfulness, Hit@k) and exact single-edge patching.

Metric m(run), a mean over examples at each prompt's last token (`metric`):
- "logit": the logit of the target's first token;
- "logit-diff": that logit minus the logit of the corrupted target's first token (the
  corrupting subject's answer), as in Ou et al. 2025 (whose code uses the negative).

EAP-IG, "inputs" variant (Hanna et al. 2024, Eq. 2 with the integrated gradients of
Sundararajan et al. 2017 taken over the input embeddings):

    score(u -> v) = 1/N sum_{b,t} (z'_u - z_u)[b, t] . 1/m sum_{k in K} dm_b/d(in_v)[b, t] at e' + k/m (e - e')

z_u / z'_u: output of u on the clean / corrupted prompt, in_v: the input of v, e / e': the
clean / corrupted input embeddings, m = `steps`, K = 1..m (`ig_range` "1..m", Ou et al.'s
vendored EAP-IG) or 0..m-1 ("0..m-1", hannamw/EAP-IG's current master). The score
estimates m(edge u -> v patched to its corrupted value) - m(clean): negative when the edge
carries the recall.
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


METRICS = ("logit", "logit-diff")
IG_RANGES = ("1..m", "0..m-1")


def target_logits(logits: torch.Tensor, enc: Encoded) -> torch.Tensor:
    """[N]: the logit of each example's target token at its last prompt token."""
    rows = torch.arange(logits.shape[0], device=logits.device)
    return logits[rows, enc.last.to(logits.device), enc.target.to(logits.device)].double()


def check_metric(metric: str, enc: Encoded | None = None) -> None:
    if metric not in METRICS:
        raise KentropyError(f"--metric {metric}: choose from {', '.join(METRICS)}")
    if metric == "logit-diff" and enc is not None and enc.corrupted_target is None:
        raise KentropyError("--metric logit-diff: the task has examples without a corrupted target")


def metric_values(logits: torch.Tensor, enc: Encoded, metric: str = "logit") -> torch.Tensor:
    """[N] float64: each example's metric at its last prompt token (module docstring)."""
    if metric == "logit":
        return target_logits(logits, enc)
    check_metric(metric, enc)
    rows = torch.arange(logits.shape[0], device=logits.device)
    last = logits[rows, enc.last.to(logits.device)]  # [N, V]
    return M.logit_difference(last, enc.target, enc.corrupted_target).double()


def ig_points(steps: int, ig_range: str = "1..m") -> list[float]:
    """The interpolation coefficients k/m of the integrated-gradient sum (K = 1..m or 0..m-1)."""
    if steps <= 0:
        raise KentropyError(f"--ig-steps {steps}: must be positive")
    if ig_range not in IG_RANGES:
        raise KentropyError(f"--ig-range {ig_range}: choose from {', '.join(IG_RANGES)}")
    ks = range(1, steps + 1) if ig_range == "1..m" else range(steps)
    return [k / steps for k in ks]


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


def eap_ig(model, enc: Encoded, *, steps: int = 5, batch_size: int = 16, progress: bool = False, metric: str = "logit",
           qkv_split: bool = False, ig_range: str = "1..m") -> Attribution:
    """EAP-IG scores of every edge of `model`'s circuit graph on a task (formula in the module docstring)."""
    alphas = ig_points(steps, ig_range)
    check_metric(metric, enc)
    dev = model_device(model)
    with Tracer(model, qkv_split) as tr:
        g = tr.graph
        scores = torch.zeros((g.n_up, g.n_down), dtype=torch.float32, device=dev)
        m_clean = m_corr = 0.0
        for a, b in tqdm(batch_ranges(len(enc), batch_size), desc="eap-ig", disable=not progress, leave=False):
            e = enc.rows(a, b).to(dev)
            with torch.no_grad():
                x, x_corr = embed(model, e.clean), embed(model, e.corrupted)
                z, logits = record(tr, model, x, e.mask)
                m_clean += float(metric_values(logits, e, metric).sum())
                z_corr, logits = record(tr, model, x_corr, e.mask)
                m_corr += float(metric_values(logits, e, metric).sum())
                diff = (z_corr - z).float()  # [n_up, B, T, d]
                del z, z_corr
            grads = torch.zeros((g.n_down,) + tuple(diff.shape[1:]), dtype=torch.float32, device=dev)
            for alpha in alphas:
                point = (x_corr + alpha * (x - x_corr)).detach().requires_grad_(True)
                p = tr.begin(Pass(grad=True))
                value = metric_values(logits_of(model, point, e.mask), e, metric).sum()
                tensors = [t for _, t in p.inputs]
                for (downs, _), gr in zip(p.inputs, torch.autograd.grad(value, tensors, allow_unused=True)):
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
class CircuitScore:
    clean: float  # m(clean)
    corrupted: float  # m(corrupted)
    circuit: float  # m(circuit run)
    faithfulness: float
    hit_at_k: float  # share of examples whose target is in the top-k of the circuit run's logits
    hit_at_k_clean: float  # the same for the full model
    k: int


def _tracer(model, edges_shape, qkv_split: bool) -> Tracer:
    tr = Tracer(model, qkv_split)
    g = tr.graph
    if tuple(edges_shape) != (g.n_up, g.n_down):
        raise KentropyError(f"edge mask of shape {tuple(edges_shape)}; this graph (qkv_split={qkv_split}) has "
                            f"[{g.n_up}, {g.n_down}]")
    return tr


def score_circuit(model, enc: Encoded, edges: torch.Tensor, *, k: int = 10, batch_size: int = 16, metric: str = "logit",
                  qkv_split: bool = False) -> CircuitScore:
    """Run with every edge outside `edges` ([n_up, n_down] bool) patched to its corrupted value.

    A node reads the residual of this run plus, for each of its in-edges not in the circuit,
    (corrupted output - this run's output) of the upstream node: the full graph is the clean
    run, the empty graph the corrupted one.
    """
    check_metric(metric, enc)
    dev = model_device(model)
    sums = torch.zeros(5, dtype=torch.float64)  # clean, corrupted, circuit, hits, hits clean
    with _tracer(model, edges.shape, qkv_split) as tr, torch.no_grad():
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
                float(metric_values(logits_clean, e, metric).sum()),
                float(metric_values(logits_corr, e, metric).sum()),
                float(metric_values(logits_circ, e, metric).sum()),
                float(M.hits_at_k(logits_circ[rows, e.last], e.target, k).sum()),
                float(M.hits_at_k(logits_clean[rows, e.last], e.target, k).sum()),
            ], dtype=torch.float64)
    c, r, m, h, hc = (sums / len(enc)).tolist()
    return CircuitScore(c, r, m, M.faithfulness(m, c, r), h, hc, k)


def exact_edge_effects(model, enc: Encoded, *, edges: torch.Tensor | None = None, batch_size: int = 16,
                       progress: bool = False, metric: str = "logit", qkv_split: bool = False) -> torch.Tensor:
    """[n_up, n_down]: m(only edge u -> v patched) - m(clean) for every edge in `edges` (default: all; 0 elsewhere).

    One forward pass per edge and batch: the ground truth EAP-IG approximates, for small models.
    """
    check_metric(metric, enc)
    dev = model_device(model)
    with Tracer(model, qkv_split) as tr, torch.no_grad():
        valid = tr.graph.valid()
        if edges is not None and tuple(edges.shape) != tuple(valid.shape):
            raise KentropyError(f"edge mask of shape {tuple(edges.shape)}; this graph has {list(valid.shape)}")
        out = torch.zeros(valid.shape, dtype=torch.float64)
        chosen = (valid if edges is None else valid & edges.bool()).nonzero().tolist()
        for a, b in batch_ranges(len(enc), batch_size):
            e = enc.rows(a, b).to(dev)
            x, x_corr = embed(model, e.clean), embed(model, e.corrupted)
            z_corr, _ = record(tr, model, x_corr, e.mask)
            tr.begin()
            clean = float(metric_values(logits_of(model, x, e.mask), e, metric).sum())
            for u, v in tqdm(chosen, desc="patch edges", disable=not progress, leave=False):
                keep = valid.clone()
                keep[u, v] = False
                _, logits = record(tr, model, x, e.mask, keep=keep.to(dev), corrupted=z_corr)
                out[u, v] += float(metric_values(logits, e, metric).sum()) - clean
            tr.begin()
    return (out / len(enc)).float()
