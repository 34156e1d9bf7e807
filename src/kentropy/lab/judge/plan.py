"""A lab study's preregistered analysis plan: contrasts at fixed fractions of training, the unit (the
pretraining seed), the smallest effect of interest and α with Holm's correction; and the gates' fixed parts:
the thresholds every study uses (`KNOWLEDGE_MARGIN`, `KNOWLEDGE_SE`, `POWER_TARGET`, `AMPLIFY_GRID`, `REGIME`)
and a preset's `pilot` (`Pilot`: the between-seed standard deviations a pilot measured, per finding).

The plan is fixed before anything runs: `plan_text` is printed first, `to_json` is stored in
`results.json`, and `checkpoint_steps` saves a checkpoint exactly at every fraction it names.

    plan = plan_from_dict({"contrasts": [{"name": "late half", "from": 0.5, "to": 1.0}],
                           "primary": "late half", "sesoi": 0.005, "alpha": 0.05}, "decay.plan")
    print(plan_text(plan))
    saves = checkpoint_steps(plan, steps=2400, warmup_steps=48, n_early=6, n_late=9)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from kentropy.errors import KentropyError

# the findings of Kim et al. (ICLR 2025) the lab tests, by the keys of `gates` and `testable` in results.json
FINDINGS = {"1": "Knowledge entropy decays during pretraining",
            "2a": "Later checkpoints acquire less (slope of A on step)",
            "2b": "Later checkpoints forget more (slope of F on step)",
            "2c": "Acquisition follows knowledge entropy (slope of A on H)",
            "2d": "Forgetting follows it inversely (slope of F on H)",
            "2e": "The raw probe gain follows it (slope of ΔP on H)",
            "3a": "Resuscitation raises acquisition A",
            "3b": "Resuscitation lowers forgetting F"}
KNOWLEDGE_MARGIN = 0.10  # D before continual learning must exceed the prior-only floor by this much ...
KNOWLEDGE_SE = 5.0  # ... and by this many standard errors of D, per seed and start
POWER_TARGET = 0.8  # the power a test across seeds must have against the paper-implied effect
AMPLIFY_GRID = (1.0, 1.5, 2.0)  # Algorithm 1's p that a study testing finding 3 runs, at least
REGIME = {"tokens_per_parameter": 300.0, "cumulative_weight_decay": 5.0}  # the paper's regime, at least (OLMo-1B: ~2,500, ~16)


def _number(value, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise KentropyError(f"{field} must be a finite number, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Contrast:
    """ΔKL per layer between two fractions of training: (H at `from_` − H at `to`) / L."""

    name: str
    from_: float  # fraction of training, in (0, 1]
    to: float  # fraction of training, in (0, 1], after `from_`

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise KentropyError(f"contrast name must be a non-empty string, got {self.name!r}")
        for field, value in (("from", self.from_), ("to", self.to)):
            v = _number(value, f"contrast {self.name!r}: {field}")
            if not 0 < v <= 1:
                raise KentropyError(f"contrast {self.name!r}: {field} must be a fraction of training in (0, 1], got {v}")
            object.__setattr__(self, "from_" if field == "from" else "to", v)
        if not self.from_ < self.to:
            raise KentropyError(f"contrast {self.name!r}: from ({self.from_}) must be before to ({self.to})")


@dataclass(frozen=True)
class AnalysisPlan:
    """What a study tests, decided before it runs."""

    contrasts: tuple[Contrast, ...]
    primary: str  # the contrast whose verdict is the arm's verdict
    sesoi: float  # smallest effect size of interest, KL nats per layer: TOST against ±sesoi
    alpha: float  # family-wise error rate of each test across arms
    correction: str = "holm"  # Holm's step-down, across arms, separately for the decay and equivalence tests
    unit: str = "seed"  # the unit of replication: the pretraining seed

    def __post_init__(self) -> None:
        contrasts = tuple(self.contrasts) if isinstance(self.contrasts, (list, tuple)) else None
        if not contrasts or not all(isinstance(c, Contrast) for c in contrasts):
            raise KentropyError(f"contrasts must be a non-empty list of contrasts, got {self.contrasts!r}")
        object.__setattr__(self, "contrasts", contrasts)
        names = [c.name for c in contrasts]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise KentropyError(f"contrasts: names must be unique, repeated: {', '.join(dup)}")
        if self.primary not in names:
            raise KentropyError(f"primary must name one of the contrasts ({', '.join(names)}), got {self.primary!r}")
        sesoi = _number(self.sesoi, "sesoi")
        if not sesoi > 0:
            raise KentropyError(f"sesoi must be > 0 (KL nats per layer), got {sesoi}")
        alpha = _number(self.alpha, "alpha")
        if not 0 < alpha < 1:
            raise KentropyError(f"alpha must be in (0, 1), got {alpha}")
        object.__setattr__(self, "sesoi", sesoi)
        object.__setattr__(self, "alpha", alpha)
        if self.correction != "holm":
            raise KentropyError(f"correction must be 'holm', got {self.correction!r}")
        if self.unit != "seed":
            raise KentropyError(f"unit must be 'seed', got {self.unit!r}")

    def contrast(self, name: str) -> Contrast:
        return next(c for c in self.contrasts if c.name == name)

    def to_json(self) -> dict:
        """The plan as stored in results.json: fractions of training under `from` and `to`."""
        return {"contrasts": [{"name": c.name, "from": c.from_, "to": c.to} for c in self.contrasts],
                "primary": self.primary, "sesoi": self.sesoi, "alpha": self.alpha,
                "correction": self.correction, "unit": self.unit}


_PLAN_KEYS = {"contrasts", "primary", "sesoi", "alpha", "correction", "unit"}
_PLAN_REQUIRED = {"contrasts", "primary", "sesoi", "alpha"}
_CONTRAST_KEYS = {"name", "from", "to"}


def _check_keys(data: Mapping, known: set[str], required: set[str], where: str) -> None:
    """Unknown or missing keys of a mapping: one error naming them and `where`."""
    unknown = sorted(set(data) - known)
    if unknown:
        raise KentropyError(f"{where}: unknown key(s) {', '.join(map(str, unknown))}; known: {', '.join(sorted(known))}")
    missing = sorted(required - set(data))
    if missing:
        raise KentropyError(f"{where}: missing key(s) {', '.join(missing)}")


def plan_from_dict(data, where: str) -> AnalysisPlan:
    """An AnalysisPlan from a preset's mapping (the shape `to_json` writes); unknown or missing keys
    are an error. `where` names the mapping in messages (e.g. `presets/decay.yaml: decay.plan`)."""
    if not isinstance(data, Mapping):
        raise KentropyError(f"{where}: must be a mapping, got {type(data).__name__}")
    _check_keys(data, _PLAN_KEYS, _PLAN_REQUIRED, where)
    items = data["contrasts"]
    if not isinstance(items, list) or not items:
        raise KentropyError(f"{where}: contrasts must be a non-empty list of {{name, from, to}}, got {items!r}")
    contrasts = []
    for i, item in enumerate(items):
        at = f"{where}: contrasts[{i}]"
        if not isinstance(item, Mapping):
            raise KentropyError(f"{at} must be a mapping with name, from, to; got {item!r}")
        _check_keys(item, _CONTRAST_KEYS, _CONTRAST_KEYS, at)
        try:
            contrasts.append(Contrast(item["name"], item["from"], item["to"]))
        except KentropyError as e:
            raise KentropyError(f"{at}: {e}") from None
    try:
        return AnalysisPlan(tuple(contrasts), data["primary"], data["sesoi"], data["alpha"],
                            data.get("correction", "holm"), data.get("unit", "seed"))
    except KentropyError as e:
        raise KentropyError(f"{where}: {e}") from None


def plan_text(plan: AnalysisPlan) -> str:
    """The plan, printed before anything runs (one `[lab]` line each)."""
    lines = ["[lab] analysis plan (preregistered: fixed before any run, stored in results.json):"]
    for c in plan.contrasts:
        tag = " (primary: the arm's verdict)" if c.name == plan.primary else ""
        lines.append(f"[lab]   contrast {c.name!r}: ΔKL = (H at {c.from_:.0%} − H at {c.to:.0%} of training) / L{tag}")
    lines += [
        "[lab]   unit: the pretraining seed; per arm the mean ΔKL over seeds with its 95% t-interval",
        f"[lab]   decay: one-sided one-sample t-test, H1 ΔKL > 0; equivalence: TOST against ±{plan.sesoi:g} "
        f"KL nats per layer (SESOI)",
        f"[lab]   α = {plan.alpha:g}, Holm across arms, separately for the decay and the equivalence test",
        "[lab]   verdict, first that holds: decayed (adjusted decay p < α), no decay (adjusted TOST p < α), "
        "rose (95% interval below 0), inconclusive",
    ]
    return "\n".join(lines)


def fraction_step(fraction: float, steps: int) -> int:
    """The optimizer step at `fraction` of a `steps`-step run: floor(fraction · steps + 1/2), i.e.
    rounded half up (not Python's half-to-even), so 0.5 of 5 steps is step 3."""
    return math.floor(fraction * steps + 0.5)


def contrast_steps(plan: AnalysisPlan, steps: int) -> dict[str, tuple[int, int]]:
    """Each contrast's (from_step, to_step) in a `steps`-step run, through `fraction_step`; both are
    among `checkpoint_steps(plan, steps, ...)`. A run too short to separate them (or whose from_step
    would be the initialization) is an error naming `steps`."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise KentropyError(f"steps must be a positive integer, got {steps!r}")
    out = {}
    for c in plan.contrasts:
        a, b = fraction_step(c.from_, steps), fraction_step(c.to, steps)
        if not 1 <= a < b:
            raise KentropyError(f"steps: a {steps}-step run cannot separate contrast {c.name!r} "
                                f"({c.from_:g} -> step {a}, {c.to:g} -> step {b})")
        out[c.name] = (a, b)
    return out


def checkpoint_steps(plan: AnalysisPlan, steps: int, warmup_steps: int, n_early: int, n_late: int) -> list[int]:
    """The steps at which to save checkpoints, sorted and unique (the initialization, step 0, is not among them):

    - every contrast's from_step and to_step, exactly (`contrast_steps`: floor(fraction · steps + 1/2));
    - `n_late` steps linearly spaced over the second half, from steps/2 to steps inclusive (the figure);
    - `n_early` steps log-spaced from max(1, warmup_steps // 4) to steps/2 (the early collapse);
    - the last step.

    Spaced steps are rounded to the nearest integer; where rounding merges two, the list is shorter.
    """
    import numpy as np

    fixed = contrast_steps(plan, steps)
    for field, v in (("warmup_steps", warmup_steps), ("n_early", n_early), ("n_late", n_late)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise KentropyError(f"{field} must be a non-negative integer, got {v!r}")
    out = {s for pair in fixed.values() for s in pair} | {steps}
    if n_late:
        out |= {int(round(x)) for x in np.linspace(steps / 2, steps, n_late)}
    lo = max(1, warmup_steps // 4)
    if n_early and lo < steps / 2:
        out |= {int(round(x)) for x in np.geomspace(lo, steps / 2, n_early)}
    return sorted(s for s in out if s >= 1)


@dataclass(frozen=True)
class Pilot:
    """What a pilot of a design measured, fixed in the preset before the main runs: per finding (`FINDINGS`) the
    between-seed standard deviation of its per-seed statistic, in the finding's units (`judge.paper.UNITS`), from
    the pretraining seeds `seeds` (which the main runs must not reuse), and where (`source`: run, commit, design)."""

    source: str
    seeds: tuple[int, ...]
    sd: dict[str, float]

    def to_json(self) -> dict:
        return {"source": self.source, "seeds": list(self.seeds), "sd": dict(self.sd)}


_PILOT_KEYS = {"source", "seeds", "sd"}


def pilot_from_dict(data, where: str) -> Pilot | None:
    """A Pilot from a preset's mapping (the shape `Pilot.to_json` writes, and `pilot_estimates` in results.json);
    None for null. Unknown or missing keys, a finding not in FINDINGS, a standard deviation that is not a positive
    number, or fewer than 2 distinct seeds are an error naming `where`."""
    if data is None:
        return None
    if not isinstance(data, Mapping):
        raise KentropyError(f"{where}: must be a mapping with {', '.join(sorted(_PILOT_KEYS))}, or null; got {type(data).__name__}")
    _check_keys(data, _PILOT_KEYS, _PILOT_KEYS, where)
    if not isinstance(data["source"], str) or not data["source"].strip():
        raise KentropyError(f"{where}: source must say where the pilot was run, got {data['source']!r}")
    seeds = data["seeds"]
    if (not isinstance(seeds, list) or any(isinstance(x, bool) or not isinstance(x, int) for x in seeds)
            or len(set(seeds)) != len(seeds) or len(seeds) < 2):
        raise KentropyError(f"{where}: seeds must list at least 2 distinct integer seeds, got {seeds!r}")
    sd = data["sd"]
    if not isinstance(sd, Mapping) or not sd:
        raise KentropyError(f"{where}: sd must map findings ({', '.join(FINDINGS)}) to standard deviations, got {sd!r}")
    unknown = sorted(set(map(str, sd)) - set(FINDINGS))
    if unknown:
        raise KentropyError(f"{where}: sd: unknown finding(s) {', '.join(unknown)}; known: {', '.join(FINDINGS)}")
    out = {}
    for k, v in sd.items():
        x = _number(v, f"{where}: sd.{k}")
        if not x > 0:
            raise KentropyError(f"{where}: sd.{k} must be > 0, got {x}")
        out[str(k)] = x
    return Pilot(data["source"].strip(), tuple(seeds), out)


def check_pilot_seeds(pilot: Pilot | None, seeds, where: str) -> None:
    """The main runs' `seeds` share none with the pilot's: the power was fixed on other runs than those it judges."""
    shared = sorted(set(seeds) & set(pilot.seeds)) if pilot else []
    if shared:
        raise KentropyError(f"{where}: seed(s) {', '.join(map(str, shared))} were the pilot's (pilot.seeds); the main runs "
                            f"need fresh seeds")
