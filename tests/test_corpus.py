"""Rows, data order and injection placement for continual training."""

import pytest
import torch

from kentropy.training.corpus import epochs_needed, inject, injected_lengths, injection_schedule, item_ids, pack_rows, row_groups, row_order
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
    return {"schedule": [{"round": r + 1, "step": s, "items": [{"entry": e, "group": "once", "variant": 0} for e in es]}
                         for r, (s, es) in enumerate(rounds)]}


def test_injection_schedule_maps_steps_to_items():
    p = plan([(1, [0, 1, 2]), (3, [3])])
    assert {k: [i["entry"] for i in v] for k, v in injection_schedule(p, 5).items()} == {1: [0, 1, 2], 3: [3]}
    assert injection_schedule(None, 5) == {}
    with pytest.raises(KentropyError, match="after the last step"):
        injection_schedule(plan([(7, [0])]), 5)


def test_inject_prepends_passage_and_shifts_the_row_right():
    rows = torch.arange(12).view(3, 4)
    passage = torch.tensor([100, 101, 1])  # passage + eos
    out = inject(rows, [passage, torch.tensor([200, 201, 202, 203, 204, 205])])
    # official insert_data: torch.cat((k, row))[:seq_len]
    assert out[0].tolist() == torch.cat([passage, rows[0]])[:4].tolist() == [100, 101, 1, 0]
    assert out[1].tolist() == [200, 201, 202, 203]
    assert out[2].tolist() == [8, 9, 10, 11]  # rows without an item are untouched
    assert rows[0, 0] == 0  # input untouched


def test_more_items_than_rows_share_rows_in_contiguous_groups():
    rows = torch.zeros(2, 8, dtype=torch.long)
    items = [torch.tensor([10 + k]) for k in range(5)]
    out = inject(rows, items)
    # 5 items over 2 rows: sizes 3 and 2, in order (official split_and_concatenate)
    assert out.tolist() == [[10, 11, 12, 0, 0, 0, 0, 0], [13, 14, 0, 0, 0, 0, 0, 0]]
    assert [list(g) for g in row_groups(5, 2)] == [[0, 1, 2], [3, 4]]
    assert injected_lengths([torch.zeros(3), torch.zeros(4), torch.zeros(5)], 2) == [7, 5]


def test_item_ids_end_with_eos(tokenizer):
    ids = item_ids(tokenizer, "Alda Voss")
    assert ids[-1] == tokenizer.eos_token_id and ids[:-1].tolist() == tokenizer("Alda Voss", add_special_tokens=False)["input_ids"]
