"""Lab presets and stage caching."""

import json
import math
import re

import pytest

from kentropy.errors import KentropyError
from kentropy.lab.config import PRESETS, LabConfig, config_from_yaml, load_preset
from kentropy.lab.stages import Stages, clean_partial_writes, config_hash


@pytest.mark.parametrize("name", PRESETS)
def test_every_shipped_preset_loads_and_validates(name):
    cfg = load_preset(name)
    assert isinstance(cfg, LabConfig) and cfg.pretrain_steps >= cfg.checkpoints


def test_quick_is_the_defaults_and_paper_follows_the_protocol():
    assert load_preset("quick") == LabConfig()
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
    ({"continual_steps": 105}, "continual_steps 105 must be a multiple of injection_rounds"),
    ({"continual_batch": 8}, "more than continual_batch 8"),
    ({"knowledge_facts": 5}, "knowledge_facts must be at least 6"),
    ({"schedule": "linear"}, "schedule must be one of"),
    ({"min_lr_ratio": 1.5}, "min_lr_ratio"),
    ({"warmup": 1.0}, "warmup"),
    ({"lr": float("nan")}, "lr must be a positive number"),
    ({"continual_seq_len": 0}, "continual_seq_len must be positive"),
])
def test_config_errors_name_the_field(over, field):
    with pytest.raises(KentropyError, match=re.escape(field)):
        LabConfig(**over)


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
    d = tmp_path / "stages" / f"beta-{config_hash({'k': 1})}"
    # what a kill leaves: write_dir_atomic's temp dir (a half-saved checkpoint) and write_atomic's temp file
    half = d / "run" / "checkpoints" / ".step-000010.ab3_x9zq"
    half.mkdir(parents=True)
    (half / "model.safetensors").write_bytes(b"half")
    (d / ".result.json.k2j4h6g8.tmp").write_text("{")
    keep = [d / "run" / "checkpoints" / "step-000005", d / ".hidden-by-the-user"]
    keep[0].mkdir()
    keep[1].write_text("x")
    seen = []
    s.run("beta", {"k": 1}, lambda w: seen.append(sorted(p.name for p in w.rglob("*"))) or {"ok": True})
    assert not half.exists() and not (d / ".result.json.k2j4h6g8.tmp").exists()
    assert all(p.exists() for p in keep) and ".step-000010.ab3_x9zq" not in seen[0]
    assert clean_partial_writes(d) == []  # nothing left to clean
