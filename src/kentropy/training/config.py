"""`TrainConfig`: every option of `kentropy train`, in sections (the sections of `kentropy train --help`).

The fields are flat (`cfg.lr`, `--lr`) so that the CLI, the Python API and the lab name each option
the same way; the sections group them for the reader: the run itself, then the optimizer, the lr
schedule, knowledge injection, evaluation, checkpoints, plasticity methods, hardware and tracking.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from kentropy.errors import KentropyError
from kentropy.io import check_out_dir
from kentropy.runtime.options import device_option, option, require, to_dict
from kentropy.training.plasticity import PlasticitySettings, check_options
from kentropy.training.trackers import check_tracker

SCHEDULES = ("cosine", "constant", "wsd")

_optimizer = partial(option, section="Optimizer")
_schedule = partial(option, section="Schedule")
_injection = partial(option, section="Injection")
_evaluation = partial(option, section="Evaluation")
_checkpoints = partial(option, section="Checkpoints")
_plasticity = partial(option, section="Plasticity")
_hardware = partial(option, section="Hardware")
_tracking = partial(option, section="Tracking")

RESUMABLE = ("resume", "overwrite", "report_to")  # flags a resume may change: not in the run's config.json


@dataclass
class TrainConfig:
    """Continue pretraining a checkpoint on a corpus, injecting fictional knowledge; measure A and F."""

    # ---- the run ---------------------------------------------------------------------------
    model: str = option(help="Starting checkpoint: model dir or hub id (NAME@rev).", argument=True)
    data: str = option(help="Training corpus (.jsonl field 'text', .txt, or dataset); documents joined with eos.")
    out: str = option(help="Run directory (refused if it exists, unless --resume or --overwrite).")
    steps: int = option(1600, "Optimizer steps.")
    batch_size: int = option(128, "Global batch in rows (sequences), across all processes.")
    micro_batch: int = option(8, "Rows per forward/backward on one process; gradients accumulate up to the global batch.")
    seq_len: int = option(1024, "Tokens per row.")
    epochs: int | None = option(None, "Allow this many passes over a corpus too small for --steps (default: refuse).")
    seed: int = option(0, "Seed for data order, injection order and initialization of anything random.")

    # ---- optimizer: AdamW as OLMo ----------------------------------------------------------
    lr: float = _optimizer(4e-4, "Peak learning rate.")
    beta1: float = _optimizer(0.9, "AdamW beta1.")
    beta2: float = _optimizer(0.95, "AdamW beta2.")
    weight_decay: float = _optimizer(0.1, "AdamW weight decay (weight matrices only: not embeddings, norms or biases, as OLMo).")
    grad_clip: float = _optimizer(1.0, "Clip the global gradient norm to this (0 = off).")

    # ---- lr schedule -----------------------------------------------------------------------
    warmup: float = _schedule(0.05, "Fraction of steps of linear warmup, from 0.1 x lr to lr (OLMo's).")
    schedule: str = _schedule("cosine", "After warmup: cosine (to --min-lr-ratio x lr; OLMo's, the paper's), constant, "
                                       "or wsd (warmup-stable-decay: constant, then linear to --min-lr-ratio x lr over --decay-fraction of the steps).")
    min_lr_ratio: float = _schedule(0.1, "Final lr as a fraction of --lr for cosine and wsd (OLMo's alpha_f = 0.1).")
    decay_fraction: float = _schedule(0.2, "wsd only: the last fraction of steps over which the lr decays.")

    # ---- knowledge injection ---------------------------------------------------------------
    knowledge: str | None = _injection(None, "Fictional knowledge JSON (Chang et al. 2024 format) to inject and probe.")
    plan: str | None = _injection(None, "Injection plan JSON (`kentropy knowledge plan`); default: the paper's plan for --knowledge.")
    inject_interval: int = _injection(160, "Steps between injection rounds when the plan is made here (round r in step interval x r - 1).")
    rounds: int = _injection(10, "Injection rounds when the plan is made here (paraphrase group needs rounds-1 paraphrases).")

    # ---- evaluation: P (probes) during the run, D (downstream) before and after -------------
    eval_every: int = _evaluation(160, "Probe the injected knowledge every this many steps (0 = only before and after).")
    tasks: str | None = _evaluation(None, "Downstream tasks for D (comma-separated lm-eval names; 'paper' = the paper's six, with OLMo's metrics); F needs them.")
    task_dir: str | None = _evaluation(None, "Directory of local lm-eval task YAMLs for --tasks.")
    eval_limit: int | None = _evaluation(None, "Evaluate at most this many examples per task.")

    # ---- checkpoints -----------------------------------------------------------------------
    save_every: int = _checkpoints(400, "Save a resumable checkpoint every this many steps (and at the end).")
    save_at: list[int] = _checkpoints([], "Also save a checkpoint after each of these step counts (repeatable; e.g. log-spaced).")
    resume: bool = _checkpoints(False, "Continue an interrupted run from its last checkpoint.")
    overwrite: bool = _checkpoints(False, "Delete an existing run directory first.")

    # ---- plasticity methods (training/plasticity.py) ---------------------------------------
    replay: str | None = _plasticity(None, "Rehearsal: corpus (.jsonl, .txt, dataset) whose rows replace the last --replay-fraction of every batch's rows (never injected rows).")
    replay_fraction: float = _plasticity(0.0, "Share of each global batch's rows taken from --replay, in [0, 1).")
    freeze_half: bool = _plasticity(False, "Half fine-tuning: in each injection round (the steps after one injection step up to the next) "
                                          "a seeded random half of each block's weight matrices is frozen (optimizer state kept).")
    recycle_every: int = _plasticity(0, "ReDo every this many steps (0 = off): recycle τ-dormant neurons (Cbar of the step's batch) and reset their AdamW moments.")
    threshold: float | None = _plasticity(None, "--recycle-every: τ in [0, 1); neurons with Cbar_i / mean(Cbar) <= τ are recycled.")

    # ---- hardware --------------------------------------------------------------------------
    device: str = device_option(section="Hardware")
    dtype: str = _hardware("bfloat16", "Compute dtype on CUDA (bfloat16 or float32; fp32 master weights either way); CPU trains in float32.")
    compile: bool = _hardware(False, "torch.compile the training forward and backward (faster steps after a one-off compile).")
    fsdp: bool = _hardware(False, "Shard weights, gradients and optimizer state over the torchrun processes (FSDP2, block by block) "
                                 "instead of DDP; resumable checkpoints are then sharded (DCP) and resume on any number of processes.")

    # ---- tracking --------------------------------------------------------------------------
    report_to: str = _tracking("none", "Also log the curves (loss, lr, grad norm, tokens/s, P per round) to tensorboard "
                                      "(RUN/tensorboard) or wandb (offline unless WANDB_MODE is set); none: metrics.jsonl only.")

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "micro_batch", "seq_len", "rounds"):
            if getattr(self, name) <= 0:
                raise KentropyError(f"--{name.replace('_', '-')} {getattr(self, name)}: must be positive")
        if not 0 <= self.warmup < 1:
            raise KentropyError(f"--warmup {self.warmup}: must be in [0, 1)")
        if self.resume and self.overwrite:
            raise KentropyError("--resume and --overwrite exclude each other")
        if self.plan and not self.knowledge:
            raise KentropyError("--plan needs --knowledge")
        if self.epochs is not None and self.epochs <= 0:
            raise KentropyError(f"--epochs {self.epochs}: must be positive")
        if self.schedule not in SCHEDULES:
            raise KentropyError(f"--schedule {self.schedule}: choose {', '.join(SCHEDULES)}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise KentropyError(f"--min-lr-ratio {self.min_lr_ratio}: must be in [0, 1]")
        if not 0 < self.decay_fraction <= 1:
            raise KentropyError(f"--decay-fraction {self.decay_fraction}: must be in (0, 1]")
        if self.schedule == "wsd" and self.warmup + self.decay_fraction > 1:
            raise KentropyError(f"--warmup {self.warmup} + --decay-fraction {self.decay_fraction}: must not exceed 1")
        bad = [s for s in self.save_at if not 0 < s <= self.steps]
        if bad:
            raise KentropyError(f"--save-at {bad[0]}: must be a step count in 1..{self.steps}")
        if self.dtype not in ("bfloat16", "float32"):
            raise KentropyError(f"--dtype {self.dtype}: choose bfloat16 or float32")
        require(self, "lr", low=0, low_open=True)
        require(self, "beta1", "beta2", low=0, high=1, high_open=True)
        require(self, "weight_decay", "grad_clip", "save_every", "eval_every", "seed", low=0)
        require(self, "inject_interval", low=1)
        require(self, "eval_limit", low=0, low_open=True)
        check_options(self.plasticity_settings, fsdp=self.fsdp, knowledge=self.knowledge)
        check_out_dir(self.out)
        check_tracker(self.report_to)

    @property
    def plasticity_settings(self) -> PlasticitySettings:
        """What the plasticity methods read of this config."""
        return PlasticitySettings(replay=self.replay, replay_fraction=self.replay_fraction, freeze_half=self.freeze_half,
                                  recycle_every=self.recycle_every, threshold=self.threshold, seed=self.seed, steps=self.steps,
                                  batch_size=self.batch_size, micro_batch=self.micro_batch, seq_len=self.seq_len)

    @property
    def task_names(self) -> list[str]:
        """--tasks as a list of names (`paper` not yet expanded)."""
        return [t.strip() for t in self.tasks.split(",") if t.strip()] if self.tasks else []


def saved_config(cfg: TrainConfig) -> dict:
    """The run's config.json: every flag but those a resume may change."""
    return {k: v for k, v in to_dict(cfg).items() if k not in RESUMABLE}
