"""The conventions a circuit search fixes, and two named sets of them: kentropy's defaults and Ou et al. 2025's.

| choice   | kentropy | ou2025     | meaning                                                                |
|----------|----------|------------|------------------------------------------------------------------------|
| metric   | logit    | logit-diff | target logit, or target minus corrupted-target logit (`eap.metric_values`) |
| qkv      | joint    | split      | one input per head, or separate q / k / v inputs (`graph.Graph`)      |
| bos      | auto     | always     | tokenizer's default, or exactly one BOS prepended (`tasks.split_tokens`) |
| ig_range | 1..m     | 1..m       | integrated-gradient points k/m, k = 1..m or 0..m-1 (`eap.ig_points`)  |

ou2025 is the setup of zjunlp/DynamicKnowledgeCircuits (its vendored EAP-IG and TransformerLens:
`logit_diff(loss=True)`, `use_split_qkv_input=True`, `prepend_bos=True`, steps 1..m).
"""

from __future__ import annotations

from dataclasses import dataclass

from kentropy.circuits.eap import IG_RANGES, METRICS
from kentropy.circuits.tasks import BOS_MODES
from kentropy.errors import KentropyError

QKV_MODES = ("joint", "split")


@dataclass(frozen=True)
class Convention:
    metric: str = "logit"
    qkv: str = "joint"
    bos: str = "auto"
    ig_range: str = "1..m"

    def __post_init__(self) -> None:
        for flag, value, choices in (("--metric", self.metric, METRICS), ("--qkv", self.qkv, QKV_MODES),
                                     ("--bos", self.bos, BOS_MODES), ("--ig-range", self.ig_range, IG_RANGES)):
            if value not in choices:
                raise KentropyError(f"{flag} {value}: choose from {', '.join(choices)}")

    @property
    def qkv_split(self) -> bool:
        return self.qkv == "split"


CONVENTIONS = {
    "kentropy": Convention("logit", "joint", "auto", "1..m"),
    "ou2025": Convention("logit-diff", "split", "always", "1..m"),
}


def convention(name: str, **override: str | None) -> Convention:
    """The named convention with any of metric / qkv / bos / ig_range replaced (None: keep the convention's)."""
    if name not in CONVENTIONS:
        raise KentropyError(f"--convention {name}: choose from {', '.join(CONVENTIONS)}")
    base = CONVENTIONS[name]
    return Convention(**{k: (override.get(k) if override.get(k) is not None else getattr(base, k))
                         for k in ("metric", "qkv", "bos", "ig_range")})
