"""The top-level Python API mirrors the CLI: one function per command."""

import copy

import torch
from conftest import tiny_model

import kentropy


def test_top_level_functions_are_the_commands(tokenizer, sample_texts):
    model = tiny_model("qwen2")
    m = kentropy.measure(model, tokenizer, sample_texts[:4], seq_len=32, progress=False)
    assert isinstance(m, kentropy.Measurement) and m.coefficients.shape == (2, 24)
    before = copy.deepcopy(model.state_dict())
    done = kentropy.resuscitate(model, m.coefficients, 0.5, 1.0)
    assert sum(e.neurons.numel() for e in done.edits) > 0
    done.undo()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    entries = kentropy.generate_knowledge(2, n_paraphrases=1, seed=3)
    scores = kentropy.probe(model, tokenizer, entries, plan=kentropy.make_plan(entries, paraphrase=1, once=1, rounds=2, interval=1))
    assert set(scores["groups"]) == {"paraphrase", "once"}
    assert kentropy.acquisition(-4.0, -3.0) == 25.0
