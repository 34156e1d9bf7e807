"""Training rows for continual pretraining, and where injected knowledge goes in each batch.

The corpus is tokenized, documents joined with eos, and cut into rows of `seq_len` tokens
(the remainder is dropped). Row order is a seeded permutation per epoch, so the batch of any
step is a pure function of (seed, step): resuming needs only the step number. Injected
items take the front of one row each (truncated to the row), as the plan says.
"""

from __future__ import annotations

import math

import torch

from kentropy.errors import KentropyError


def pack_rows(tokenizer, texts: list[str], seq_len: int) -> torch.Tensor:
    """Documents joined with eos and cut into rows: [N, seq_len] long."""
    if seq_len <= 1:
        raise KentropyError(f"--seq-len {seq_len}: must be at least 2")
    eos = tokenizer.eos_token_id
    if eos is None:
        raise KentropyError("tokenizer has no eos token to join documents with")
    stream: list[int] = []
    for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]:
        stream.extend(ids)
        stream.append(eos)
    n = len(stream) // seq_len
    return torch.tensor(stream[: n * seq_len], dtype=torch.long).view(n, seq_len)


def epochs_needed(rows: int, steps: int, global_batch: int) -> int:
    return math.ceil(steps * global_batch / max(rows, 1))


def row_order(rows: int, epochs: int, seed: int) -> torch.Tensor:
    """Row indices for the whole run: one seeded permutation per epoch, concatenated."""
    g = torch.Generator().manual_seed(seed)
    return torch.cat([torch.randperm(rows, generator=g) for _ in range(epochs)])


def injection_schedule(plan: dict | None, steps: int, global_batch: int) -> dict[int, list[dict]]:
    """step -> items injected at that step. A round with more items than rows spills into the next steps."""
    if plan is None:
        return {}
    out: dict[int, list[dict]] = {}
    pending: list[dict] = []
    by_step = {r["step"]: r["items"] for r in plan["schedule"]}
    for step in range(steps):
        pending += by_step.get(step, [])
        if pending:
            out[step], pending = pending[:global_batch], pending[global_batch:]
    if pending:
        raise KentropyError(f"plan: {len(pending)} injected items do not fit before step {steps} (raise --steps or lower the plan)")
    late = [r["step"] for r in plan["schedule"] if r["step"] >= steps]
    if late:
        raise KentropyError(f"plan: injection rounds at steps {late} fall after the last step {steps - 1}")
    return out


def inject(rows: torch.Tensor, items: list[torch.Tensor]) -> torch.Tensor:
    """Write item j over the front of row j (truncated to the row). rows: [B, T] -> a new [B, T]."""
    rows = rows.clone()
    for j, ids in enumerate(items):
        n = min(len(ids), rows.shape[1])
        rows[j, :n] = ids[:n]
    return rows


def item_ids(tokenizer, text: str) -> torch.Tensor:
    """An injected paragraph as tokens, ending with eos (so the corpus text after it starts fresh)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return torch.tensor(ids, dtype=torch.long)
