"""Memory per rank of a training run, estimated before any weight is loaded (DDP or FSDP).

Per parameter, AdamW training holds fp32 weights (4 bytes), fp32 gradients (4) and two fp32
moments (8): 16 bytes, or 7B x 16 = 112 GB for OLMo-7B on every DDP rank. FSDP divides
those by the number of processes and adds the gathered working set (a block or two in the
compute dtype, plus the root's embeddings and head, plus one block's unsharded gradients).
Activations are counted for one micro-batch (gradient accumulation frees them between
micro-batches): per token and block, the tensors autograd keeps for a pre-norm block
without recomputation (norm inputs in fp32, q/k/v and attention output, the FFN's gate,
up, activation and product), plus the logits and their fp32 log-softmax.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import torch

from kentropy.errors import KentropyError
from kentropy.models.loading import Checkpoint
from kentropy.models.registry import find_layout
from kentropy.runtime.distributed import rank_world
from kentropy.training.config import TrainConfig
from kentropy.training.sharding import blocks

GiB = 1024**3


@dataclass(frozen=True)
class Shape:
    """What the estimate needs to know about a model."""

    params: int  # all parameters
    block_params: int  # the largest transformer block
    root_params: int  # parameters outside the blocks (embeddings, final norm, head)
    layers: int
    hidden: int
    ffn_dim: int
    vocab: int


def model_shape(model) -> Shape:
    """The `Shape` of a model (a meta-device model will do: nothing is read from the weights)."""
    stack = blocks(model)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    total = count(model)
    in_blocks = [count(b) for b in stack]
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    embed = model.get_input_embeddings()
    return Shape(params=total, block_params=max(in_blocks), root_params=total - sum(in_blocks), layers=len(stack),
                 hidden=embed.weight.shape[1], ffn_dim=find_layout(model).ffn_dim,
                 vocab=(head if head is not None else embed).weight.shape[0])


def shape_of_checkpoint(config) -> Shape:
    """The `Shape` of the model `config` describes, built on the meta device (no memory, no weights)."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return model_shape(model)


@dataclass(frozen=True)
class Estimate:
    """Bytes per rank."""

    mode: str  # "single", "ddp" or "fsdp"
    processes: int
    micro_batch: int
    seq_len: int
    bf16: bool
    weights: int
    gradients: int
    optimizer: int
    working: int  # DDP: gradient buckets (+ autocast's bf16 weight copies); FSDP: gathered blocks and root
    activations: int

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.working + self.activations

    def describe(self) -> str:
        g = lambda b: f"{b / GiB:.2f}"  # noqa: E731
        where = {"single": "one process", "ddp": f"DDP over {self.processes}", "fsdp": f"FSDP over {self.processes}"}[self.mode]
        working = "gathered blocks" if self.mode == "fsdp" else "buckets/casts"
        return (f"estimated memory per rank ({where}): weights {g(self.weights)} + gradients {g(self.gradients)} + "
                f"optimizer {g(self.optimizer)} + {working} {g(self.working)} + activations {g(self.activations)} "
                f"= {g(self.total)} GiB")


def estimate(shape: Shape, *, micro_batch: int, seq_len: int, processes: int, fsdp: bool, bf16: bool) -> Estimate:
    """Bytes per rank for AdamW training of `shape` (fp32 master weights; bf16 compute if `bf16`)."""
    P = shape.params
    compute = 2 if bf16 else 4  # bytes of a compute-dtype element
    shards = processes if fsdp else 1
    weights, gradients, optimizer = 4 * P // shards, 4 * P // shards, 8 * P // shards
    if fsdp and processes > 1:
        # two blocks gathered at once (one computing, one prefetched), the root kept gathered,
        # and one block's unsharded fp32 gradients before its reduce-scatter
        working = (2 * shape.block_params + shape.root_params) * compute + 4 * shape.block_params
    else:
        working = (4 * P if processes > 1 else 0) + (2 * P if bf16 else 0)  # DDP buckets; autocast's weight cache
    tokens = micro_batch * seq_len
    h, m = shape.hidden, shape.ffn_dim
    per_token_block = compute * (8 * h + 4 * m) + 2 * 4 * h  # + the two norms' fp32 inputs
    activations = tokens * (shape.layers * per_token_block + shape.vocab * (compute + 8))
    mode = "fsdp" if fsdp and processes > 1 else ("ddp" if processes > 1 else "single")
    return Estimate(mode, processes, micro_batch, seq_len, bf16, weights, gradients, optimizer, working, activations)


def available(device: torch.device) -> tuple[int, str]:
    """Bytes this rank can use on `device`, and a name for it: free GPU memory, or this host's
    available RAM shared by the processes of this node."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free, f"free on {device}"
    ram = _mem_available()
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return ram // per_node, "of available RAM per process" if per_node > 1 else "of available RAM"


def _mem_available() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def check_fits(shape: Shape, est: Estimate, free: int, where: str) -> None:
    """Refuse a run whose estimate exceeds what is free, naming the flag that would help."""
    if est.total <= free:
        return
    msg = f"{est.describe()} exceeds the {free / GiB:.2f} GiB {where}"
    kw = dict(seq_len=est.seq_len, processes=est.processes, bf16=est.bf16)
    fsdp = est.mode == "fsdp"
    if not fsdp and est.processes > 1 and estimate(shape, micro_batch=est.micro_batch, fsdp=True, **kw).total <= free:
        raise KentropyError(f"{msg}: use --fsdp to shard weights, gradients and optimizer state over the {est.processes} processes")
    fitting = [b for b in range(1, est.micro_batch) if estimate(shape, micro_batch=b, fsdp=fsdp, **kw).total <= free]
    if fitting:
        raise KentropyError(f"{msg}: lower --micro-batch to {max(fitting)} or less")
    if not fsdp:
        raise KentropyError(f"{msg}: run under torchrun over more GPUs with --fsdp (--micro-batch 1 does not fit either)")
    raise KentropyError(f"{msg}: use more processes (--fsdp with --micro-batch 1 does not fit over {est.processes})")


def check_memory(cfg: TrainConfig, ckpt: Checkpoint, device: torch.device, world_size: int, show: bool = True) -> None:
    """Print the estimated memory per rank (rank 0, if `show`) and refuse a run that clearly cannot fit, before any weight loads."""
    from transformers import AutoConfig

    rank, _ = rank_world()
    try:
        shape = shape_of_checkpoint(AutoConfig.from_pretrained(ckpt.name, revision=ckpt.revision))
    except (KentropyError, ValueError, OSError) as e:
        if cfg.fsdp:
            raise KentropyError(f"--fsdp: {e}") from None
        if rank == 0:
            print(f"note: no memory estimate for {ckpt}: {e}", file=sys.stderr)
        return
    est = estimate(shape, micro_batch=cfg.micro_batch, seq_len=cfg.seq_len, processes=world_size, fsdp=cfg.fsdp,
                   bf16=device.type == "cuda" and cfg.dtype == "bfloat16")
    free, where = available(device)
    if rank == 0 and show:
        print(f"{est.describe()} ({free / GiB:.2f} GiB {where})", file=sys.stderr)
    check_fits(shape, est, free, where)
