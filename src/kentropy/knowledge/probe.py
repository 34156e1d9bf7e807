"""Score fictional-knowledge probes with a causal LM (P, the input of acquisition A in `kentropy.evaluation.outcomes`).

A probe's score (Chang et al. 2024; docs/definitions.md) is the mean log-probability per
token of the target, where the model reads `input + " " + target` and only target tokens
are scored. Probes are batched by length with exact padding masks (left or right, as the
tokenizer pads) and only the logits that predict target tokens are computed.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from kentropy.errors import ArgumentError, KentropyError
from kentropy.knowledge.plan import GROUPS, check_plan_entries, group_of, validate_plan
from kentropy.knowledge.schema import KINDS, PROBES_PER_KIND, entry_list, validate_knowledge
from kentropy.models.loading import check_layers, max_positions, model_inputs
from kentropy.runtime.arguments import integer, transformers_model, transformers_tokenizer


@dataclass(frozen=True)
class EncodedProbe:
    """Token ids of `input + " " + target`; ids[start:end] are the scored target tokens."""

    ids: list[int]
    start: int
    end: int


def encode_probe(tokenizer, text: str, target: str, max_length: int | None = None) -> EncodedProbe:
    """Tokenize `text + " " + target` once, with the tokenizer's special tokens.

    Target tokens are those whose character span overlaps the target: a token that merges
    the separating space into the target's first word counts, a token of the space alone
    does not, and special tokens (bos, eos) never do. If the whole is longer than
    `max_length`, context tokens are dropped from the left (leading special tokens such as
    bos stay); the target is never cut.
    """
    full = text + " " + target
    try:
        enc = tokenizer(full, return_offsets_mapping=True, return_special_tokens_mask=True)
    except NotImplementedError:
        raise KentropyError("probing needs a fast tokenizer (character offsets)") from None
    ids, offsets, special = enc["input_ids"], enc["offset_mapping"], enc["special_tokens_mask"]
    t0 = len(text) + 1  # first character of the target
    hits = [j for j, ((s, e), sp) in enumerate(zip(offsets, special)) if not sp and e > t0 and e > s]
    if not hits:
        raise KentropyError(f"probe target {target!r}: no tokens")
    start, end = hits[0], hits[-1] + 1
    if any(special[j] for j in range(start, end)):
        raise KentropyError(f"probe target {target!r}: special tokens inside the target")
    if start == 0:
        raise KentropyError(f"probe target {target!r}: no token before it")
    if max_length is None or len(ids) <= max_length:
        return EncodedProbe(list(ids), start, end)
    lead = 0  # leading special tokens (bos) are kept
    while lead < start and special[lead]:
        lead += 1
    keep = max_length - lead - (len(ids) - start)  # context tokens that still fit
    if keep < (1 if lead == 0 else 0):
        raise KentropyError(f"probe target {target!r} ({end - start} tokens) does not fit in the model's "
                            f"{max_length} positions")
    context = ids[lead:start][len(ids[lead:start]) - keep:] if keep > 0 else []
    new = list(ids[:lead]) + list(context) + list(ids[start:])
    shift = len(ids) - len(new)
    return EncodedProbe(new, start - shift, end - shift)


def _accepts(model, name: str) -> bool:
    return name in inspect.signature(model.forward).parameters


@functools.lru_cache(maxsize=1)
def _masked_logits_to_keep() -> bool:
    """Whether this transformers takes `logits_to_keep` as a boolean mask [B, T] (newer releases)."""
    try:
        from transformers.modeling_utils import slice_logits_to_keep
    except ImportError:
        return False
    hidden = torch.arange(6.0).reshape(2, 3, 1)
    try:
        out = slice_logits_to_keep(hidden, torch.tensor([[True, False, False], [False, True, True]]))
    except Exception:
        return False
    return out.shape == (3, 1) and out.flatten().tolist() == [0.0, 4.0, 5.0]


def _target_logits(model, kw: dict, keep: torch.Tensor) -> torch.Tensor:
    """Logits [N, V] at the True positions of `keep` [B, T] (row by row), with the LM head run on as few as possible."""
    if _accepts(model, "logits_to_keep"):
        if _masked_logits_to_keep():
            logits = model(**kw, logits_to_keep=keep).logits
            if logits.dim() == 2 and logits.shape[0] == int(keep.sum()):
                return logits
            return model(**kw).logits[keep]  # a model with its own slicing (remote code): all positions
        cols = keep.any(0).nonzero()[:, 0]  # union of the rows' positions
        logits = model(**kw, logits_to_keep=cols).logits  # [B, len(cols), V]
        return logits[keep[:, cols]]
    return model(**kw).logits[keep]


def _score_batch(model, batch: list[EncodedProbe], pad_id: int, left: bool, device) -> list[float]:
    """Mean target log-prob of each probe of `batch`, in one padded forward pass."""
    B, T = len(batch), max(len(p.ids) for p in batch)
    input_ids = torch.full((B, T), pad_id, dtype=torch.long)
    mask = torch.zeros((B, T), dtype=torch.long)
    keep = torch.zeros((B, T), dtype=torch.bool)  # positions whose logits predict a target token
    targets, owner = [], []  # per scored token, in row-major order (the order of `keep`)
    for b, p in enumerate(batch):
        off = T - len(p.ids) if left else 0
        input_ids[b, off : off + len(p.ids)] = torch.tensor(p.ids)
        mask[b, off : off + len(p.ids)] = 1
        keep[b, off + p.start - 1 : off + p.end - 1] = True  # the logits at t-1 predict token t
        targets += p.ids[p.start : p.end]
        owner += [b] * (p.end - p.start)
    kw = model_inputs(model, input_ids.to(device), mask.to(device))
    if _accepts(model, "use_cache"):
        kw["use_cache"] = False  # one pass, nothing to cache
    if _accepts(model, "position_ids"):
        kw["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0).to(device)  # [B, T]: left padding starts at 0
    logits = _target_logits(model, kw, keep.to(device)).float()  # [N, V]
    target = torch.tensor(targets, device=device)
    logp = (logits.gather(-1, target[:, None])[:, 0] - torch.logsumexp(logits, -1)).double()  # [N]
    sums = torch.zeros(B, dtype=torch.float64, device=device).index_add_(0, torch.tensor(owner, device=device), logp)
    counts = torch.tensor([p.end - p.start for p in batch], dtype=torch.float64, device=device)
    return (sums / counts).tolist()


def score_probes(model, tokenizer, probes: list[tuple[str, str]], *, batch_size: int = 16,
                 progress: bool = False, labels: list[str] | None = None) -> list[float]:
    """Score `(input, target)` pairs: mean log-prob per target token, in the order given.

    `labels` name the probes in error messages (e.g. "entry 3: mem 2").
    """
    integer("batch_size", batch_size, low=1)
    check_layers(transformers_model("model", model).config, "model")
    if model.get_output_embeddings() is None:
        raise ArgumentError("model", "probing needs a causal LM with a language-model head")
    transformers_tokenizer("tokenizer", tokenizer)
    limit = max_positions(model)
    encoded = []
    for k, (text, target) in enumerate(probes):
        try:
            encoded.append(encode_probe(tokenizer, text, target, limit))
        except KentropyError as e:
            raise KentropyError(f"{labels[k] if labels else f'probe {k}'}: {e}") from None
    order = sorted(range(len(encoded)), key=lambda k: len(encoded[k].ids))  # similar lengths, little padding
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    left = getattr(tokenizer, "padding_side", "right") == "left"
    device = next(model.parameters()).device
    scores = [0.0] * len(encoded)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for batch in tqdm(batches, desc="probe", disable=not progress, leave=False):
                for k, s in zip(batch, _score_batch(model, [encoded[k] for k in batch], pad_id, left, device)):
                    scores[k] = s
    finally:
        model.train(was_training)
    return scores


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def _summary(rows: list[dict]) -> dict:
    """Mean score per kind and over all probes of `rows` (per-entry results)."""
    out = {kind: _mean([s for r in rows for s in r[kind]]) for kind in KINDS}
    out["overall"] = _mean([s for r in rows for kind in KINDS for s in r[kind]])
    return out


def probe(model, tokenizer, entries: list[dict], *, plan: dict | None = None, batch_size: int = 16,
          progress: bool = False) -> dict:
    """Score every probe of `entries` (Fictional Knowledge format); JSON-ready.

    Returns `mem`, `gen`, `hard_gen`, `overall` and per-entry scores (5 per kind). With a
    `plan`, also per-group results, and every top-level mean is the entry-count-weighted
    mean of the group means (entries outside both groups are left out of it). Every argument is checked
    (the entries down to the field, the plan against them) before the model runs.
    """
    entries = validate_knowledge(entry_list("entries", entries), source="entries")
    if plan is not None:
        check_plan_entries(validate_plan(plan, source="plan"), entries, source="plan")
        if not group_of(plan):
            raise ArgumentError("plan", "both groups are empty: no per-group scores to give")
    probes = [(e[f"{kind}_input"][j], e[f"{kind}_target"][j]) for e in entries for kind in KINDS
              for j in range(PROBES_PER_KIND)]
    labels = [f"entry {i}: {kind} probe {j}" for i in range(len(entries)) for kind in KINDS for j in range(PROBES_PER_KIND)]
    scores = score_probes(model, tokenizer, probes, batch_size=batch_size, progress=progress, labels=labels)
    per = len(KINDS) * PROBES_PER_KIND
    rows = []
    for i in range(len(entries)):
        s = scores[i * per : (i + 1) * per]
        rows.append({"index": i, **{kind: s[k * PROBES_PER_KIND : (k + 1) * PROBES_PER_KIND] for k, kind in enumerate(KINDS)}})
    if plan is None:
        return {**_summary(rows), "entries": rows}

    groups_of = group_of(plan)
    groups = {}
    for g in GROUPS:
        members = [rows[i] for i in sorted(i for i, gi in groups_of.items() if gi == g)]
        if members:
            groups[g] = {**_summary(members), "entries": len(members)}
    total = sum(v["entries"] for v in groups.values())
    top = {k: sum(v[k] * v["entries"] for v in groups.values()) / total for k in (*KINDS, "overall")}
    for r in rows:
        r["group"] = groups_of.get(r["index"])
    return {**top, "groups": groups, "entries": rows}
