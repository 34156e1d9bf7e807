"""Lab presets and stage caching."""

import json

import pytest

from kentropy.errors import KentropyError
from kentropy.lab.config import PRESETS, LabConfig, config_from_yaml, load_preset
from kentropy.lab.stages import Stages


@pytest.mark.parametrize("name", PRESETS)
def test_every_shipped_preset_loads_and_validates(name):
    cfg = load_preset(name)
    assert isinstance(cfg, LabConfig) and cfg.pretrain_steps >= cfg.checkpoints


def test_quick_is_the_defaults_and_paper_follows_the_protocol():
    assert load_preset("quick") == LabConfig(regimes=True, regime_tokens=200_000)
    p = load_preset("paper")
    assert (p.continual_steps, p.continual_batch, p.continual_lr, p.injection_rounds) == (1600, 128, 4e-4, 10)
    assert (p.knowledge_paraphrase, p.knowledge_once) == (70, 60) and p.repeat == 1


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
