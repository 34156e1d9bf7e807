"""Training rows for continual pretraining, and where injected knowledge goes in each batch.

The corpus is tokenized, documents joined with eos, and cut into rows of `seq_len` tokens
(the remainder is dropped). Row order is a seeded permutation per epoch, so the batch of any
step is a pure function of (seed, step): resuming needs only the step number. Injected
passages are prepended to rows, which are shifted right and truncated, as the official code does.
"""

from __future__ import annotations

import math

import torch

from kentropy.errors import KentropyError


def pack_rows(tokenizer, texts: list[str], seq_len: int, chunk: int = 4096) -> torch.Tensor:
    """Documents joined with eos and cut into rows: [N, seq_len] long. Tokenized in chunks of
    documents into int32 arrays, so a corpus of many millions of tokens never becomes a Python list."""
    import numpy as np

    if seq_len <= 1:
        raise KentropyError(f"--seq-len {seq_len}: must be at least 2")
    eos = tokenizer.eos_token_id
    if eos is None:
        raise KentropyError("tokenizer has no eos token to join documents with")
    texts = list(texts)
    parts = []
    for i in range(0, len(texts), chunk):
        ids = tokenizer(texts[i : i + chunk], add_special_tokens=False)["input_ids"]
        lengths = np.fromiter((len(x) + 1 for x in ids), dtype=np.int64, count=len(ids))
        flat = np.fromiter((t for x in ids for t in (*x, eos)), dtype=np.int32, count=int(lengths.sum()))
        parts.append(flat)
    stream = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)
    n = len(stream) // seq_len
    return torch.from_numpy(stream[: n * seq_len].astype(np.int64)).view(n, seq_len)


def epochs_needed(rows: int, steps: int, global_batch: int) -> int:
    return math.ceil(steps * global_batch / max(rows, 1))


def row_order(rows: int, epochs: int, seed: int) -> torch.Tensor:
    """Row indices for the whole run: one seeded permutation per epoch, concatenated."""
    g = torch.Generator().manual_seed(seed)
    return torch.cat([torch.randperm(rows, generator=g) for _ in range(epochs)])


def injection_schedule(plan: dict | None, steps: int) -> dict[int, list[dict]]:
    """step -> the items injected into that step's batch (the plan's rounds, all inside the run)."""
    if plan is None:
        return {}
    late = [r["step"] for r in plan["schedule"] if r["step"] >= steps]
    if late:
        raise KentropyError(f"plan: injection rounds at steps {late} fall after the last step {steps - 1} "
                            f"(--steps {steps}; a plan of R rounds every I steps needs --steps R x I)")
    return {r["step"]: list(r["items"]) for r in plan["schedule"] if r["items"]}


def row_groups(n_items: int, n_rows: int) -> list[range]:
    """Which items share a row: one item per row while they fit, else the items split into `n_rows`
    contiguous groups whose sizes differ by at most one (the official `split_and_concatenate`)."""
    if n_items <= n_rows:
        return [range(j, j + 1) for j in range(n_items)]
    size, extra = divmod(n_items, n_rows)
    out, start = [], 0
    for j in range(n_rows):
        end = start + size + (1 if j < extra else 0)
        out.append(range(start, end))
        start = end
    return out


def inject(rows: torch.Tensor, items: list[torch.Tensor]) -> torch.Tensor:
    """Prepend the items to the first rows of the batch, each row then truncated to its length:
    row j becomes `cat(items of group j, row j)[:T]` (official `insert_data`). rows: [B, T] -> a new [B, T]."""
    rows = rows.clone()
    T = rows.shape[1]
    for j, group in enumerate(row_groups(len(items), rows.shape[0])):
        prefix = torch.cat([items[k] for k in group])
        rows[j] = torch.cat([prefix, rows[j]])[:T]
    return rows


def injected_lengths(items: list[torch.Tensor], n_rows: int) -> list[int]:
    """Tokens each row's injected prefix takes (to check that every passage fits its row)."""
    return [sum(len(items[k]) for k in group) for group in row_groups(len(items), n_rows)]


def item_ids(tokenizer, text: str) -> torch.Tensor:
    """An injected paragraph as tokens, ending with eos (so the corpus text after it starts fresh)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return torch.tensor(ids, dtype=torch.long)
