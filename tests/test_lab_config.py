"""Lab presets and stage caching."""

import json
import math
import os
import re

import pytest

from kentropy.errors import KentropyError
from kentropy.lab.config import PRESETS, LabConfig, config_from_yaml, load_preset
from kentropy.io import clean_stale_temps
from kentropy.lab.cache import Stages, code_hash


@pytest.mark.parametrize("name", PRESETS)
def test_every_shipped_preset_loads_and_validates(name):
    cfg = load_preset(name)
    assert isinstance(cfg, LabConfig) and cfg.pretrain_steps >= cfg.checkpoints


def test_quick_is_the_defaults_and_paper_follows_the_protocol():
    assert load_preset("quick") == LabConfig(pretrain_seeds=[0, 1])  # the defaults, two seeds to fit the demo's 10 minutes
    p = load_preset("paper")
    assert (p.continual_steps, p.continual_batch, p.continual_lr, p.injection_rounds) == (1600, 128, 4e-4, 10)
    assert (p.knowledge_paraphrase, p.knowledge_once) == (70, 60) and p.repeat == 1
    assert p.injected_rows == 70 + 6 and (p.continual_seq_len, p.knowledge_facts) == (1024, None)


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_injects_about_the_papers_share_of_a_batch(name):
    """The paper: a round's 70 paraphrase + 60 / 10 once passages fill 76 of 128 rows (59%)."""
    cfg = load_preset(name)
    rows = cfg.knowledge_paraphrase + math.ceil(cfg.knowledge_once / cfg.injection_rounds)
    assert cfg.injected_rows == rows
    assert 0.5 <= rows / cfg.continual_batch <= 0.7, (rows, cfg.continual_batch)


@pytest.mark.parametrize("over, field", [
    ({"continual_steps": 103}, "continual_steps 103 must be a multiple of injection_rounds"),
    ({"continual_batch": 8}, "more than continual_batch 8"),
    ({"knowledge_facts": 5}, "knowledge_facts must be at least 6"),
    ({"schedule": "linear"}, "schedule must be one of"),
    ({"min_lr_ratio": 1.5}, "min_lr_ratio"),
    ({"warmup": 1.0}, "warmup"),
    ({"lr": float("nan")}, "lr must be a positive number"),
    ({"continual_seq_len": 0}, "continual_seq_len must be positive"),
    ({"continual_seq_len": 512}, "continual_seq_len 512 is longer than seq_len 384, the positions the model was pretrained on"),
    ({"seq_len": 128}, "continual_seq_len 384 is longer than seq_len 128"),
    ({"pretrain_seeds": []}, "pretrain_seeds must list at least one seed"),
    ({"pretrain_seeds": [1, 1]}, "pretrain_seeds must list at least one seed, each once"),
    ({"decay_sesoi": 0.0}, "decay_sesoi must be a positive number"),
])
def test_config_errors_name_the_field(over, field):
    with pytest.raises(KentropyError, match=re.escape(field)):
        LabConfig(**over)


def test_every_preset_continues_on_pretrained_positions_at_the_pretraining_peak_lr():
    """Continual rows never reach positions pretraining did not train; the continual lr defaults to the pretraining peak."""
    for name in PRESETS:
        cfg = load_preset(name)
        assert cfg.continual_seq_len <= cfg.seq_len, name
    cfg = LabConfig()
    assert cfg.continual_lr == cfg.lr and len(cfg.pretrain_seeds) >= 3
    assert LabConfig(lr=2e-3).continual_lr == 2e-3 and LabConfig(continual_lr=5e-4).continual_lr == 5e-4
    assert len(load_preset("smoke").pretrain_seeds) == 2


def test_preset_errors_name_the_problem():
    with pytest.raises(KentropyError, match="unknown lab key\\(s\\) hiden"):
        config_from_yaml("version: 1\nlab: {hiden: 3}\n", "x.yaml")
    with pytest.raises(KentropyError, match="x.yaml: version"):
        config_from_yaml("lab: {}\n", "x.yaml")
    with pytest.raises(KentropyError, match="--preset huge"):
        load_preset("huge")
    with pytest.raises(KentropyError, match="continual_at"):
        LabConfig(continual_at=[1.5])


def test_stages_cache_by_config_hash(tmp_path):
    calls = []

    def fn(d):
        calls.append(d)
        (d / "artifact.txt").write_text("x")
        return {"value": len(calls)}

    s = Stages(tmp_path)
    a = s.run("alpha", {"k": 1}, fn)
    b = s.run("alpha", {"k": 1}, fn)  # cached: fn not called again
    assert a.result == b.result == {"value": 1} and len(calls) == 1 and a.hash == b.hash
    c = s.run("alpha", {"k": 2}, fn)  # another config: another stage
    assert c.result == {"value": 2} and c.dir != a.dir
    assert json.loads((tmp_path / "timings.json").read_text())["alpha"]["stage"] == c.dir.name
    # a stage interrupted before its result was written runs again, and may find its partial work
    (c.dir / "result.json").unlink()

    def resume(d):
        return {"found": (d / "artifact.txt").exists()}

    assert Stages(tmp_path).run("alpha", {"k": 2}, resume).result == {"found": True}


def test_rerun_of_a_stage_removes_what_interrupted_atomic_writes_left(tmp_path):
    s = Stages(tmp_path)
    seen = []

    def fn(w):
        seen.append(sorted(p.name for p in w.rglob("*")))
        return {"ok": True}

    d = tmp_path / "stages" / f"beta-{s.hash({'k': 1}, fn)}"
    dead = 2**31 - 2  # above any pid_max: a process that is gone
    # what a kill leaves: write_dir_atomic's temp dir (a half-saved checkpoint) and write_atomic's temp file, named by
    # kentropy.io (with the writer's pid) or, by older versions, without it
    half = d / "run" / "checkpoints" / f".step-000010.tmp-{dead}-ab3_x9zq"
    old_half = d / "run" / "checkpoints" / ".step-000020.ab3_x9zq"
    for h in (half, old_half):
        h.mkdir(parents=True)
        (h / "model.safetensors").write_bytes(b"half")
    temps = [d / f".result.json.tmp-{dead}-k2j4h6g8.tmp", d / ".config.json.k2j4h6g8.tmp"]
    for t in temps:
        t.write_text("{")
    live = d / f".other.json.tmp-{os.getppid()}-k2j4h6g8.tmp"  # a writer that is alive: kept
    live.write_text("{")
    keep = [d / "run" / "checkpoints" / "step-000005", d / ".hidden-by-the-user", live]
    keep[0].mkdir()
    keep[1].write_text("x")
    s.run("beta", {"k": 1}, fn)
    assert not any(p.exists() for p in [half, old_half, *temps])
    assert all(p.exists() for p in keep) and half.name not in seen[0]
    assert clean_stale_temps(d, legacy=True, recursive=True) == []  # nothing left to clean


def test_a_changed_stage_code_runs_again(tmp_path, monkeypatch):
    """The hash covers the source of the modules a stage names: editing one re-runs the stage, not the cache."""
    import importlib
    import sys

    mod = tmp_path / "stage_code_probe.py"
    mod.write_text("FACTOR = 2\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    probe = importlib.import_module("stage_code_probe")
    before = code_hash([probe])
    s = Stages(tmp_path / "lab")
    a = s.run("gamma", {"k": 1}, lambda d: {"v": 1}, code=("stage_code_probe",))
    assert s.run("gamma", {"k": 1}, lambda d: {"v": 2}, code=("stage_code_probe",)).result == {"v": 1}  # cached
    mod.write_text("FACTOR = 3\n")
    assert code_hash([probe]) != before
    b = s.run("gamma", {"k": 1}, lambda d: {"v": 3}, code=("stage_code_probe",))
    assert b.result == {"v": 3} and b.dir != a.dir
    sys.modules.pop("stage_code_probe")


def test_worker_stages_leave_timings_to_the_parent(tmp_path):
    """A worker's Stages keeps its wall times in memory: the parent's timings.json has one writer."""
    Stages(tmp_path, record_timings=False).run("delta", {"k": 1}, lambda d: {"ok": True})
    assert not (tmp_path / "timings.json").exists()
    parent = Stages(tmp_path)
    parent.record("runs", 12.345, "2 runs side by side")
    assert json.loads((tmp_path / "timings.json").read_text()) == {"runs": {"seconds": 12.35, "stage": "2 runs side by side"}}
