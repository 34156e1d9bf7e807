"""Training-time plasticity methods of `kentropy train`: rehearsal, half fine-tuning, continual recycling.

    kentropy train MODEL ... --replay PRETRAIN.txt --replay-fraction 0.25
    kentropy train MODEL ... --freeze-half
    kentropy train MODEL ... --recycle-every 100 --threshold 0.1

- Rehearsal (`--replay`): the last round(R x B) rows of every global batch come from the replay
  corpus (packed as the training corpus is; a seeded order, repeated as often as the run needs).
  Injected passages go to the first rows (`corpus.inject`), so replay rows are never injected
  rows; the corpus rows they replace are simply not used, and every other row is the one the
  run would have had without replay.
- Half fine-tuning (`--freeze-half`, Hui et al. 2024): a *round* runs from the step after one
  injection step up to and including the next injection step (round 1 from step 0; steps after
  the last injection, if any, form one more round). At a round's first step each block's weight
  matrices (its parameters of two or more dimensions) are shuffled with a generator seeded by
  (--seed, round) and the first half frozen (an odd count: the middle one by a coin from the
  same generator). A frozen matrix gets no gradient (its .grad is dropped after the backward pass,
  before clipping, so it counts in neither the norm nor the update), hence no AdamW step, no
  weight decay, and its optimizer state is kept as it is, not reset.
- Continual recycling (`--recycle-every N --threshold τ`, Dohare et al. 2024 with ReDo's score):
  after the update of every step s with (s + 1) % N == 0 (never after the final step), Cbar is
  measured (no gradient, dropout off) on the global batch that step trained on, the τ-dormant
  neurons are recycled (`kentropy.edits.redo`, init from the model's initializer_range, a generator
  seeded by (--seed, s)), and their AdamW moments (exp_avg, exp_avg_sq) are set to 0 for exactly
  the recycled rows, bias entries and columns. torch's AdamW keeps one step count per tensor: it
  is left as it is. With --freeze-half as well, recycling also edits frozen matrices (freezing
  stops gradient updates, not recycling).
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from kentropy.edits.redo import dormant_per_layer, init_std_of, redo
from kentropy.errors import KentropyError
from kentropy.measurement.documents import load_texts
from kentropy.measurement.workflow import measure_ids
from kentropy.models.parameters import weight_matrices
from kentropy.models.registry import find_stacks
from kentropy.training.corpus import epochs_needed, pack_rows

HFT, RECYCLE, REPLAY = 1, 2, 3  # generator streams


def stream(seed: int, purpose: int, index: int) -> torch.Generator:
    """A generator for (seed, purpose, index), independent of the global RNG (so resuming needs only the step)."""
    state = np.random.SeedSequence([seed, purpose, index]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


@dataclass(frozen=True)
class PlasticitySettings:
    """The plasticity options of a run (`TrainConfig.plasticity_settings`), and what the methods need to know of the run."""

    replay: str | None  # --replay: the rehearsal corpus
    replay_fraction: float  # --replay-fraction
    freeze_half: bool  # --freeze-half
    recycle_every: int  # --recycle-every (0 = off)
    threshold: float | None  # --threshold: τ of recycling
    seed: int  # --seed: of the methods' generator streams (`stream`)
    steps: int
    batch_size: int  # global rows per step
    micro_batch: int  # rows per forward (recycling measures Cbar in these)
    seq_len: int

    @property
    def on(self) -> bool:
        """Whether any method is on."""
        return bool(self.replay or self.freeze_half or self.recycle_every)


def check_options(s: PlasticitySettings, *, fsdp: bool, knowledge: str | None) -> None:
    """Flag checks of the plasticity options (with the two other flags they depend on: --fsdp and --knowledge)."""
    r = s.replay_fraction
    if not (isinstance(r, (int, float)) and math.isfinite(r) and 0 <= r < 1):
        raise KentropyError(f"--replay-fraction {r}: must be in [0, 1)")
    if s.replay is None and r > 0:
        raise KentropyError("--replay-fraction needs --replay DATA")
    if s.replay is not None and r == 0:
        raise KentropyError("--replay needs --replay-fraction R > 0")
    if s.recycle_every < 0:
        raise KentropyError(f"--recycle-every {s.recycle_every}: must be >= 0 (0 = off)")
    if s.recycle_every and s.threshold is None:
        raise KentropyError("--recycle-every needs --threshold")
    if s.threshold is not None:
        if not s.recycle_every:
            raise KentropyError("--threshold needs --recycle-every N")
        t = s.threshold
        # s_i has mean 1 in every layer, so its maximum is >= 1: τ < 1 never recycles a whole layer
        if not (math.isfinite(t) and 0 <= t < 1):
            raise KentropyError(f"--threshold {t}: must be in [0, 1) (s_i = Cbar_i / mean(Cbar) averages 1)")
    if fsdp and s.recycle_every:
        raise KentropyError("--recycle-every: not with --fsdp (recycling edits rows of whole, unsharded tensors)")
    if s.freeze_half and not knowledge:
        raise KentropyError("--freeze-half needs --knowledge (it freezes per injection round)")


def replay_rows_per_step(s: PlasticitySettings) -> int:
    return round(s.replay_fraction * s.batch_size)


def injected_rows(items: int, batch: int) -> int:
    """Rows an injection of `items` passages touches (`corpus.row_groups`): one each while they fit, else all."""
    return min(items, batch)


def round_of(step: int, injection_steps: list[int]) -> int:
    """0-based round of `step`: the number of injection steps before it (a round ends on its injection step)."""
    return bisect.bisect_left(injection_steps, step)


def hft_frozen(blocks: list[list[tuple[str, torch.nn.Parameter]]], seed: int, round_index: int) -> list[tuple[str, torch.nn.Parameter]]:
    """The matrices frozen in a round: per block, the first half of a seeded shuffle (odd counts: a coin for the middle one)."""
    g = stream(seed, HFT, round_index)
    out = []
    for mats in blocks:
        perm = torch.randperm(len(mats), generator=g).tolist()
        k = len(mats) // 2 + (len(mats) % 2 if torch.randint(2, (1,), generator=g).item() else 0)
        out.extend(mats[i] for i in sorted(perm[:k]))
    return out


def block_matrices(model) -> list[list[tuple[str, torch.nn.Parameter]]]:
    """Per block of the model's layer stack(s): (name, parameter) of its weight matrices (`weight_matrices`)."""
    found = find_stacks(model)
    if found is None:
        raise KentropyError(f"--freeze-half: no layer stack found in {type(model).__name__}")
    return [[(f"{path}.{i}.{n}", p) for n, p in weight_matrices(block)]
            for path, stack in found[1] for i, block in enumerate(stack)]


@dataclass
class Plasticity:
    """The training-time methods a run uses (made by `prepare`, attached to the model by `attach`)."""

    settings: PlasticitySettings
    injection_steps: list[int]
    replay: torch.Tensor | None = None  # [N, T] packed replay corpus
    replay_order: torch.Tensor | None = None  # [steps * n] row of every replay slot
    n_replay: int = 0
    model: torch.nn.Module | None = None
    opt: torch.optim.Optimizer | None = None
    blocks: list = field(default_factory=list)
    frozen: list = field(default_factory=list)
    round: int | None = None

    # ---- rehearsal ------------------------------------------------------------------------
    def mix(self, step: int, batch: torch.Tensor) -> torch.Tensor:
        """batch [B, T] with its last n rows replaced by this step's replay rows (before injection)."""
        if not self.n_replay:
            return batch
        batch = batch.clone()
        batch[-self.n_replay :] = self.replay[self.replay_order[step * self.n_replay : (step + 1) * self.n_replay]]
        return batch

    # ---- half fine-tuning -----------------------------------------------------------------
    def start_step(self, step: int) -> dict:
        """Before step `step`: a new round draws its frozen half. Returns fields for the step's log."""
        if not self.settings.freeze_half:
            return {}
        r = round_of(step, self.injection_steps)
        if r == self.round:
            return {}
        self.round = r
        self.frozen = hft_frozen(self.blocks, self.settings.seed, r)
        return {"round": r + 1, "frozen_matrices": len(self.frozen)}

    def drop_frozen_grads(self) -> None:
        """After the backward pass, before clipping and the update: frozen matrices get no gradient."""
        for _, p in self.frozen:
            p.grad = None

    # ---- continual recycling --------------------------------------------------------------
    def end_step(self, step: int, trained: torch.Tensor) -> dict:
        """After the update of step `step` (trained: its global batch [B, T]): recycle when due."""
        s = self.settings
        if not s.recycle_every or (step + 1) % s.recycle_every or step + 1 >= s.steps:
            return {}
        # full rows, no padding (the pad id is never used)
        cbar = measure_ids(self.model, trained.tolist(), 0, batch_size=s.micro_batch, progress=False).coefficients
        chosen = dormant_per_layer(self.model, cbar, s.threshold)
        done = redo(self.model, cbar, s.threshold, None, stream(s.seed, RECYCLE, step), chosen=chosen)
        done.reset_moments(self.opt)
        return {"recycled": done.total, "recycled_per_layer": [len(x.neurons) for x in done.layers]}

    def attach(self, model, opt) -> None:
        """Bind to the model and optimizer of the run (after they exist; before the first step)."""
        self.model, self.opt = model, opt
        if self.settings.freeze_half:
            self.blocks = block_matrices(model)
        if self.settings.recycle_every:
            init_std_of(model, None)  # a model without initializer_range fails here, before step 0

    def summary(self, records: list[dict]) -> dict:
        """The options as resolved, and what they did over the run's logged steps."""
        s = self.settings
        steps = [r for r in records if isinstance(r, dict) and isinstance(r.get("step"), int) and r["step"] >= 0]
        return {
            "replay": s.replay, "replay_fraction": s.replay_fraction, "replay_rows_per_step": self.n_replay,
            "replay_corpus_rows": int(self.replay.shape[0]) if self.replay is not None else None,
            "freeze_half": s.freeze_half,
            "rounds": list({r["round"]: {"round": r["round"], "frozen_matrices": r["frozen_matrices"]}  # a resumed round logs again
                            for r in steps if "frozen_matrices" in r}.values()),
            "recycle_every": s.recycle_every, "threshold": s.threshold,
            "recycled": [{"step": r["step"], "neurons": r["recycled"]} for r in steps if "recycled" in r],
        }


def prepare(s: PlasticitySettings, tok, schedule: dict[int, list[dict]]) -> Plasticity | None:
    """Check what needs the data and the plan (room for replay rows beside the injected ones) and load
    the replay corpus; None when no method is on. Runs before the run directory exists."""
    if not s.on:
        return None
    p = Plasticity(s, sorted(schedule))
    if s.replay:
        n = replay_rows_per_step(s)
        if n == 0:
            raise KentropyError(f"--replay-fraction {s.replay_fraction}: rounds to 0 of --batch-size {s.batch_size} rows")
        worst = max((injected_rows(len(items), s.batch_size) for items in schedule.values()), default=0)
        if n + worst > s.batch_size:
            raise KentropyError(f"--replay-fraction {s.replay_fraction}: {n} replay rows and up to {worst} injected rows "
                                f"exceed --batch-size {s.batch_size}; lower it or raise --batch-size")
        rows = pack_rows(tok, load_texts(s.replay), s.seq_len)
        if len(rows) == 0:
            raise KentropyError(f"--replay {s.replay}: no full row of {s.seq_len} tokens")
        g = stream(s.seed, REPLAY, 0)
        epochs = epochs_needed(len(rows), s.steps, n)
        p.replay, p.n_replay = rows, n
        p.replay_order = torch.cat([torch.randperm(len(rows), generator=g) for _ in range(epochs)])
    return p
