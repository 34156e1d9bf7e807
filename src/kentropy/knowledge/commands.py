"""The workflows behind `kentropy probe` and `kentropy knowledge generate|plan`: config in, JSON out."""

from __future__ import annotations

from dataclasses import dataclass

from kentropy.runtime.options import device_option, dtype_option, models_option, option, require, series_resume_option, to_dict, trust_remote_code_option
from kentropy.errors import KentropyError
from kentropy.io import check_out_file, read_text, write_json
from kentropy.knowledge.generate import MIN_FACTS, generate_knowledge
from kentropy.knowledge.plan import check_plan_entries, load_plan, make_plan
from kentropy.knowledge.probe import probe
from kentropy.knowledge.schema import load_knowledge
from kentropy.models.loading import gguf_fields, is_causal_lm, load_series, parse_checkpoints, pick_device, pick_dtype
from kentropy.runtime.series import progress_line, series_config


@dataclass
class ProbeConfig:
    """Score fictional-knowledge probes (mem, gen, hard_gen) of one or more checkpoints."""

    models: list[str] = models_option()
    knowledge: str = option(help="Fictional Knowledge JSON file (Chang et al. 2024 format).")
    out: str = option(help="Where to write the JSON results (atomically).")
    plan: str | None = option(None, "Injection plan JSON (`kentropy knowledge plan`): adds per-group scores.")
    batch_size: int = option(16, "Probes per forward pass (batches are grouped by length).")
    device: str = device_option()
    dtype: str = dtype_option()
    trust_remote_code: bool = trust_remote_code_option()
    resume: bool = series_resume_option()

    def __post_init__(self) -> None:
        require(self, "batch_size", low=0, low_open=True)
        check_out_file(self.out)


def probe_series(cfg: ProbeConfig, progress: bool = True, series=None) -> dict:
    """Probe every checkpoint of `cfg.models` in order; the JSON payload of `kentropy probe`.

    `series` (a `kentropy.runtime.series.Partial`) keeps each result as it finishes and skips those it holds.
    """
    n = len(parse_checkpoints(cfg.models))
    entries = load_knowledge(cfg.knowledge)
    plan = None
    if cfg.plan is not None:
        plan = load_plan(cfg.plan)
        check_plan_entries(plan, entries, source=cfg.plan)
    device = pick_device(cfg.device)
    results = []
    for item in load_series(cfg.models, skip=series.done if series else None, check=check_causal, device=device,
                            dtype=pick_dtype(cfg.dtype, device), trust_remote_code=cfg.trust_remote_code):
        if progress:
            progress_line("probe", item.index, n, str(item.checkpoint))
        scores = probe(item.model, item.tokenizer, entries, plan=plan, batch_size=cfg.batch_size, progress=progress)
        results.append({"model": item.checkpoint.name, "revision": item.checkpoint.revision, **gguf_fields(item.checkpoint), **scores})
        if series is not None:
            series.add(item.index, results[-1])
    return {"results": series.ordered() if series is not None else results, "config": series_config(to_dict(cfg))}


def check_causal(ckpt, config) -> None:
    """Probing scores next tokens: every checkpoint of a series is a causal LM, as its config shows."""
    if not is_causal_lm(config):
        kind = ", ".join(getattr(config, "architectures", None) or []) or config.model_type
        raise KentropyError(f"MODEL {ckpt}: probing needs a causal LM with a language-model head; its config is {kind}")


@dataclass
class GenerateConfig:
    """Generate fictional knowledge (paragraphs, paraphrases, mem/gen/hard_gen probes) in the Chang et al. 2024 format."""

    entries: int = option(help="Number of entries (entities; kinds in equal shares).")
    out: str = option(help="JSON file to write (atomically).")
    paraphrases: int = option(9, "Paraphrases per entry (the paper's paraphrase group needs rounds - 1 = 9).")
    seed: int = option(0, "Random seed: the same seed gives the same file.")
    avoid: str | None = option(None, "Text file of names/words (one per line) that no coined name may use.")
    facts: int | None = option(None, "At most this many facts per paragraph, the probes' among them (>= 8 is safe; "
                                     "default: every fact, ~200 words), for training rows too short for a whole one.")

    def __post_init__(self) -> None:
        require(self, "entries", low=1)
        require(self, "paraphrases", "seed", low=0)
        if self.facts is not None and self.facts < MIN_FACTS:
            raise KentropyError(f"--facts {self.facts}: must be at least {MIN_FACTS}")
        check_out_file(self.out)


def read_avoid(path: str | None) -> list[str]:
    """The avoid vocabulary: one name or word per line, blank lines skipped."""
    if path is None:
        return []
    return [line.strip() for line in read_text(path, "--avoid").splitlines() if line.strip()]


def generate_file(cfg: GenerateConfig) -> list[dict]:
    entries = generate_knowledge(cfg.entries, cfg.paraphrases, cfg.seed, read_avoid(cfg.avoid), facts=cfg.facts)
    write_json(cfg.out, entries)
    return entries


@dataclass
class PlanConfig:
    """Plan when each fictional-knowledge entry is injected during continual training (paraphrase and once groups)."""

    knowledge: str = option(help="Fictional Knowledge JSON file (Chang et al. 2024 format).")
    out: str = option(help="Plan JSON file to write (atomically).")
    paraphrase: int = option(70, "Entries injected every round, as the original then one paraphrase per round (paper: 70).")
    once: int = option(60, "Entries injected exactly once, spread evenly over the rounds (paper: 60).")
    rounds: int = option(10, "Injection rounds (paper: 10).")
    interval: int = option(160, "Training steps between rounds (paper: 160).")

    def __post_init__(self) -> None:
        if self.paraphrase < 0 or self.once < 0 or self.paraphrase + self.once == 0:
            raise KentropyError(f"--paraphrase {self.paraphrase} --once {self.once}: need non-negative sizes, not both 0")
        if self.rounds < 1:
            raise KentropyError(f"--rounds {self.rounds}: must be at least 1")
        if self.interval < 1:
            raise KentropyError(f"--interval {self.interval}: must be at least 1")
        check_out_file(self.out)


def plan_file(cfg: PlanConfig) -> dict:
    entries = load_knowledge(cfg.knowledge)
    plan = make_plan(entries, paraphrase=cfg.paraphrase, once=cfg.once, rounds=cfg.rounds, interval=cfg.interval,
                     source=cfg.knowledge)
    write_json(cfg.out, {**plan, "config": to_dict(cfg)})
    return plan
