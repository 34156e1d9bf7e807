"""The resuscitation stage: Algorithm 1 on a checkpoint (`kentropy resuscitate`), with Cbar and the
entropy before and after measured on the held-out world text."""

from __future__ import annotations

from pathlib import Path

from kentropy.lab.cache import Done, Stages
from kentropy.lab.config import LabConfig


def resuscitate_stage(stages: Stages, cfg: LabConfig, final: str, pre: Done, corpora: Done, amplify: float, device: str,
                      name: str | None = None) -> Done:
    """Algorithm 1 on the final checkpoint (Cbar and entropy before/after on the held-out world text: whether
    H rose decides whether its outcome is judged, `judge/gates.py`); name: the stage's, default
    `resuscitate-PP`."""
    from kentropy.edits.resuscitate import ResuscitateConfig, run_resuscitate

    conf = {"pretrain": pre.hash, "corpora": corpora.hash, "ratio": cfg.resuscitate_ratio, "amplify": amplify, "seq_len": cfg.seq_len}

    def fn(d: Path) -> dict:
        report = run_resuscitate(ResuscitateConfig(model=final, out=str(d / "model"), ratio=cfg.resuscitate_ratio,
                                                   amplify=amplify, data=corpora.result["measure"], seq_len=cfg.seq_len,
                                                   batch_size=16, overwrite=True, device=device))
        return {"path": str(d / "model"), "report": report}

    return stages.run(name or f"resuscitate-P{amplify:g}", conf, fn, code=("kentropy.edits.resuscitate", "kentropy.edits.session", "kentropy.models.neurons",
                                                                              "kentropy.measurement.workflow"))
