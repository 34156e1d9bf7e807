"""`train --report-to tensorboard`: the event files read back hold what metrics.jsonl holds (loss, lr,
grad norm, tokens/s per step, P at each probe round, the starting P at step 0), and knowledge entropy
from an attached EntropyMonitor equals a measurement of the saved checkpoint."""

from __future__ import annotations

import importlib.util
import json

import pytest
from conftest import run_cli

from kentropy.knowledge import generate_knowledge

needs_tensorboard = pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="needs kentropy[tensorboard]")


@pytest.fixture(scope="module")
def inputs(model_dir, sample_texts, tmp_path_factory):
    d = tmp_path_factory.mktemp("report")
    (d / "corpus.txt").write_text("\n".join(sample_texts) + "\n")
    entries = generate_knowledge(2, n_paraphrases=1, seed=0)
    for e in entries:
        e["train_context"] = " ".join(e["train_context"].split()[:6])
        e["paraphrases"] = [" ".join(p.split()[:6]) for p in e["paraphrases"]]
    (d / "fk.json").write_text(json.dumps(entries))
    return {"model": model_dir("llama", 5), "corpus": d / "corpus.txt", "fk": d / "fk.json"}


def scalars(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    return {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}


@needs_tensorboard
def test_tensorboard_events_hold_the_metrics_log(inputs, tmp_path, capsys):
    run = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", inputs["model"], "--data", inputs["corpus"], "--knowledge", inputs["fk"], "--out", run,
                           "--steps", 4, "--batch-size", 2, "--micro-batch", 2, "--seq-len", 32, "--rounds", 2,
                           "--eval-every", 2, "--epochs", 20, "--report-to", "tensorboard")
    assert code == 0, err
    log = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    got = scalars(run)
    steps = [r for r in log if r["step"] >= 0]
    for key in ("loss", "lr", "grad_norm", "tokens_per_s"):
        assert got[f"train/{key}"] == pytest.approx({r["step"] + 1: r[key] for r in steps}, rel=1e-6), key
    probed = {r["step"] + 1: r["probes"]["overall"] for r in steps if "probes" in r}
    assert sorted(probed) == [2, 4]  # each round (every 2 steps)
    before = log[0]
    assert before["event"] == "before"
    assert got["probe/P"] == pytest.approx({0: before["probes"]["overall"], **probed}, rel=1e-6)
    assert "report_to" not in json.loads((run / "config.json").read_text())  # a resume may change it


@needs_tensorboard
def test_entropy_monitor_is_logged(inputs, sample_texts, tmp_path):
    from kentropy import EntropyMonitor, TrainConfig, measure, train
    from kentropy.models.loading import ModelRef, load_model, load_tokenizer

    run = tmp_path / "run"
    tok = load_tokenizer(ModelRef(str(inputs["model"])))
    texts = sample_texts[:6]
    monitor = EntropyMonitor(tok, texts, every=2, seq_len=32)
    cfg = TrainConfig(model=str(inputs["model"]), data=str(inputs["corpus"]), out=str(run), steps=4, batch_size=2, micro_batch=2,
                      seq_len=32, rounds=2, eval_every=0, epochs=20, report_to="tensorboard")
    train(cfg, monitor=monitor, show_memory=False)
    log = {r["step"]: r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())}
    assert [s for s, r in log.items() if "knowledge_entropy" in r] == [1, 3]  # after 2 and 4 optimizer steps
    assert scalars(run)["entropy/knowledge"] == pytest.approx({2: log[1]["knowledge_entropy"], 4: log[3]["knowledge_entropy"]}, rel=1e-6)
    final = load_model(ModelRef(str(run / "checkpoints" / "step-000004")))
    assert log[3]["knowledge_entropy"] == pytest.approx(measure(final, tok, texts, seq_len=32, progress=False).knowledge_entropy, rel=1e-5)


def test_memory_estimate_once_and_hidden_on_request(inputs, tmp_path, capsys):
    from kentropy import TrainConfig, train

    cfg = dict(model=str(inputs["model"]), data=str(inputs["corpus"]), steps=2, batch_size=2, micro_batch=2, seq_len=32,
               rounds=1, eval_every=0, epochs=20)
    capsys.readouterr()
    train(TrainConfig(out=str(tmp_path / "a"), **cfg))
    assert capsys.readouterr().err.count("estimated memory") == 1
    train(TrainConfig(out=str(tmp_path / "b"), **cfg), show_memory=False)
    assert "estimated memory" not in capsys.readouterr().err


class _FakeRun:
    def __init__(self, calls):
        self.calls = calls

    def log(self, values, step):
        self.calls.append(("log", step, values))

    def finish(self):
        self.calls.append(("finish",))


@pytest.mark.parametrize("mode", [None, "online"])
def test_wandb_is_offline_unless_configured(mode, inputs, tmp_path, monkeypatch):
    """W&B without the network by default; WANDB_MODE set by the user wins. (A stand-in `wandb` module
    records the calls: the package is an optional extra.)"""
    import importlib.machinery
    import sys
    import types

    from kentropy import TrainConfig, train

    calls = []
    fake = types.ModuleType("wandb")
    fake.__spec__ = importlib.machinery.ModuleSpec("wandb", None)
    fake.init = lambda **kw: calls.append(("init", kw)) or _FakeRun(calls)
    monkeypatch.setitem(sys.modules, "wandb", fake)
    if mode is None:
        monkeypatch.delenv("WANDB_MODE", raising=False)
    else:
        monkeypatch.setenv("WANDB_MODE", mode)
    run = tmp_path / "run"
    train(TrainConfig(model=str(inputs["model"]), data=str(inputs["corpus"]), out=str(run), steps=2, batch_size=2, micro_batch=2,
                      seq_len=32, rounds=1, eval_every=0, epochs=20, report_to="wandb"), show_memory=False)
    init = calls[0][1]
    assert init["mode"] == (mode or "offline") and init["dir"] == str(run) and init["config"]["steps"] == 2
    losses = {step: v["train/loss"] for kind, *rest in calls if kind == "log" for step, v in [rest] if "train/loss" in v}
    log = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert losses == {r["step"] + 1: r["loss"] for r in log if r["step"] >= 0}
    assert calls[-1] == ("finish",)
