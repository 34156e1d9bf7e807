"""Rows, data order and injection placement for continual training."""

import pytest
import torch

from kentropy.corpus import epochs_needed, inject, injection_schedule, item_ids, pack_rows, row_order
from kentropy.errors import KentropyError


def test_pack_rows_joins_documents_with_eos(tokenizer):
    texts = ["alpha beta", "gamma", "delta epsilon zeta"]
    rows = pack_rows(tokenizer, texts, 4)
    stream = []
    for t in texts:
        stream += tokenizer(t, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    n = len(stream) // 4
    assert rows.tolist() == [stream[i * 4 : (i + 1) * 4] for i in range(n)]  # remainder dropped


def test_row_order_is_a_seeded_permutation_per_epoch():
    o = row_order(5, 3, seed=1)
    assert len(o) == 15 and all(sorted(o[i * 5 : (i + 1) * 5].tolist()) == list(range(5)) for i in range(3))
    assert torch.equal(o, row_order(5, 3, seed=1)) and not torch.equal(o, row_order(5, 3, seed=2))
    assert epochs_needed(rows=10, steps=3, global_batch=4) == 2 and epochs_needed(12, 3, 4) == 1


def plan(rounds):
    return {"schedule": [{"round": r, "step": s, "items": [{"entry": e, "group": "once", "variant": 0} for e in es]}
                         for r, (s, es) in enumerate(rounds)]}


def test_injection_schedule_spills_over_full_batches():
    p = plan([(0, [0, 1, 2]), (2, [3])])
    assert {k: [i["entry"] for i in v] for k, v in injection_schedule(p, 5, 2).items()} == {0: [0, 1], 1: [2], 2: [3]}
    assert injection_schedule(None, 5, 2) == {}
    with pytest.raises(KentropyError, match="after the last step"):
        injection_schedule(plan([(7, [0])]), 5, 2)


def test_inject_overwrites_row_fronts_truncated():
    rows = torch.arange(12).view(3, 4)
    out = inject(rows, [torch.tensor([100, 101]), torch.tensor([200, 201, 202, 203, 204, 205])])
    assert out.tolist() == [[100, 101, 2, 3], [200, 201, 202, 203], [8, 9, 10, 11]]
    assert rows[0, 0] == 0  # input untouched


def test_item_ids_end_with_eos(tokenizer):
    ids = item_ids(tokenizer, "Alda Voss")
    assert ids[-1] == tokenizer.eos_token_id and ids[:-1].tolist() == tokenizer("Alda Voss", add_special_tokens=False)["input_ids"]
