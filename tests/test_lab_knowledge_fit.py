"""The lab's injected passages fit their rows and hold their probes' facts, under the world's own tokenizer."""

import dataclasses

import pytest

from kentropy.errors import KentropyError
from kentropy.knowledge import item_text, load_knowledge, load_plan
from kentropy.lab.config import load_preset
from kentropy.lab.cache import Stages
from kentropy.lab.stages.continual import check_knowledge_fits
from kentropy.lab.stages.tokenizer import tokenizer_stage
from kentropy.lab.stages.world import world_stage


def _fits(name, tmp_path):
    from transformers import AutoTokenizer

    cfg = load_preset(name)
    stages = Stages(tmp_path)
    world, tok_done = world_stage(stages, cfg), tokenizer_stage(stages, cfg)
    fit = check_knowledge_fits(cfg, world, tok_done)
    tok = AutoTokenizer.from_pretrained(tok_done.result["path"])
    entries, plan = load_knowledge(world.result["knowledge"]), load_plan(world.result["plan"])
    injected = {(i["entry"], i["variant"]) for r in plan["schedule"] for i in r["items"]}
    assert len(injected) == len(fit["lengths"]) > 0
    for e, v in injected:
        text = item_text(entries[e], v)
        enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
        row = enc["input_ids"] + [tok.eos_token_id]  # what `kentropy train` prepends to a row
        assert len(row) <= cfg.continual_seq_len, (e, v, len(row))
        for target in set(entries[e]["mem_target"] + entries[e]["hard_gen_target"]):
            at = text.find(target)
            assert at >= 0, (e, v, target)
            # the target's characters are covered by tokens of the passage, all inside the row
            inside = [k for k, (a, b) in enumerate(enc["offset_mapping"]) if a < at + len(target) and b > at]
            assert inside and max(inside) < cfg.continual_seq_len
    # a row one token too short for the longest passage is refused, naming the config field
    short = dataclasses.replace(cfg, continual_seq_len=fit["longest"] - 1)
    with pytest.raises(KentropyError, match=f"continual_seq_len {fit['longest'] - 1} is shorter than"):
        check_knowledge_fits(short, world, tok_done)
    return cfg, fit


def test_smoke_passages_fit_their_rows(tmp_path):
    _fits("smoke", tmp_path)


@pytest.mark.slow
def test_quick_passages_fit_their_rows_at_about_half_a_row(tmp_path):
    cfg, fit = _fits("quick", tmp_path)
    mean = sum(fit["lengths"].values()) / len(fit["lengths"])
    assert 0.4 <= mean / cfg.continual_seq_len <= 0.8  # the paper: ~500-token passages in 1024-token rows
