"""The lab's pretraining stage through the lean loop: per-step losses equal to `kentropy train`'s on the
same initialization, the same checkpoint layout and result; families the lean model lacks fall back."""

from __future__ import annotations

import json

from pathlib import Path

import pytest
import torch

from kentropy.measurement.documents import sample_text_path
from kentropy.lab.cache import Done, Stages
from kentropy.lab.stages.pretrain import INIT, first_rows, lean_trains, pretrain_stage
from kentropy.training.config import TrainConfig
from kentropy.training.loop import train

MODELS = {  # the decay study's reference (OLMo's block, mitchell init, tied) and the core study's model (Llama, untied)
    "olmo": dict(arch="swiglu", norm="layernorm", init="mitchell", seed=1, hidden=16, layers=2, heads=2, gated_ffn=24,
                 positions=32, tie=True),
    "llama": dict(arch="swiglu", norm="rmsnorm", init="hf", seed=2, hidden=16, layers=2, heads=2, gated_ffn=24, positions=32,
                  tie=False),
}


def tcfg(**kw) -> TrainConfig:
    base = dict(model="-", data=str(sample_text_path()), out="-", steps=30, batch_size=4, micro_batch=2, seq_len=32, lr=1e-2,
                weight_decay=0.5, warmup=0.1, eval_every=0, save_every=0, save_at=[5, 12], epochs=20, seed=3)
    return TrainConfig(**{**base, **kw})


@pytest.mark.parametrize("fam", ["olmo", "llama"])
def test_stage_through_lean_equals_kentropy_train(fam, tokenizer, tmp_path):
    tok_dir = tmp_path / "tok"
    tokenizer.save_pretrained(tok_dir)
    tok, corpora = Done({"path": str(tok_dir)}, tok_dir, "tok"), Done({}, tmp_path, "corpora")
    assert lean_trains(MODELS[fam], tcfg())
    done = pretrain_stage(Stages(tmp_path / "lab", record_timings=False), "pre", MODELS[fam], tcfg(), tok, corpora, "cpu", first=6)
    res = done.result
    run = done.dir / "run"
    assert json.loads((run / "config.json").read_text())["trainer"] == "kentropy.lab.lean"
    assert [c["step"] for c in res["checkpoints"]] == [0, 5, 12, 30]
    assert [c["path"].rsplit("/", 1)[-1] for c in res["checkpoints"]] == [INIT, "step-000005", "step-000012", "step-000030"]
    assert all((tmp_path / c["path"] / "model.safetensors").is_file() for c in res["checkpoints"])
    init = res["checkpoints"][0]["path"]
    train(tcfg(model=init, out=str(tmp_path / "ref"), device="cpu"))
    ref = [json.loads(x) for x in (tmp_path / "ref" / "metrics.jsonl").read_text().splitlines() if x.strip()]
    ref = [(r["step"], r["loss"]) for r in ref if r.get("step", -1) >= 0 and "loss" in r]
    assert [s for s, _ in res["loss"]] == [s for s, _ in ref] == list(range(30))
    for (_, ours), (_, theirs) in zip(res["loss"], ref):
        assert ours == pytest.approx(theirs, rel=1e-5, abs=0)
    assert ref[-1][1] < ref[0][1] - 0.5  # it learned: not two idle runs compared
    assert res["final_loss"] == res["loss"][-1][1] and res["steps"] == 30 and res["tokens_per_s"] > 0
    from safetensors.torch import load_file

    kept = load_file(res["first_rows"])["ids"]
    assert kept.shape == (6, 32) and torch.equal(kept, first_rows(Path(init), tcfg(), 6))  # packed afresh here


def test_families_and_runs_lean_lacks_fall_back():
    assert lean_trains({**MODELS["llama"], "arch": "gelu"}, tcfg())  # gelu x rmsnorm: Arcee's block
    assert lean_trains({**MODELS["olmo"], "arch": "gelu"}, tcfg())  # gelu x layernorm: Nemotron's block
    assert not lean_trains(MODELS["llama"], tcfg(recycle_every=5, threshold=0.1))
    assert not lean_trains(MODELS["llama"], tcfg(replay=str(sample_text_path()), replay_fraction=0.25))


def test_packed_once_equals_packed_by_the_run(tokenizer, tmp_path):
    """A run given its text packed by a rows stage trains and keeps its first rows exactly as one that packs
    the text itself; rows of another text or length are refused."""
    from safetensors.torch import load_file

    from kentropy.errors import KentropyError
    from kentropy.lab.stages.pretrain import load_rows, packed_rows, rows_stage

    tok_dir = tmp_path / "tok"
    tokenizer.save_pretrained(tok_dir)
    tok, corpora = Done({"path": str(tok_dir)}, tok_dir, "tok"), Done({}, tmp_path, "corpora")
    stages = Stages(tmp_path / "lab", record_timings=False)
    rows = rows_stage(stages, "rows", tcfg().data, tok, 32)
    alone = pretrain_stage(stages, "alone", MODELS["olmo"], tcfg(), tok, corpora, "cpu", first=6)
    shared = pretrain_stage(stages, "shared", MODELS["olmo"], tcfg(), tok, corpora, "cpu", first=6, rows=rows)
    assert torch.equal(load_rows(rows), packed_rows(Path(alone.result["checkpoints"][0]["path"]), tcfg()))
    assert load_rows(rows).dtype == torch.int64 and rows.result["rows"] == len(load_rows(rows))
    assert shared.hash != alone.hash and shared.result["loss"] == alone.result["loss"]
    assert torch.equal(load_file(shared.result["first_rows"])["ids"], load_file(alone.result["first_rows"])["ids"])
    with pytest.raises(KentropyError, match="not the run's"):
        pretrain_stage(stages, "other", MODELS["olmo"], tcfg(seq_len=16), tok, corpora, "cpu", rows=rows)
