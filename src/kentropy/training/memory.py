"""Memory per rank of a training run, estimated before any weight is loaded (DDP or FSDP).

Per parameter, AdamW training holds fp32 weights (4 bytes), fp32 gradients (4) and two fp32
moments (8): 16 bytes, or 7B x 16 = 112 GB for OLMo-7B on every DDP rank. FSDP divides
those by the number of processes and adds the gathered working set (a block or two in the
compute dtype, plus the root's embeddings and head, plus one block's unsharded gradients).
Activations are counted for one micro-batch (gradient accumulation frees them between
micro-batches): per token and block, the tensors autograd keeps for a pre-norm block
without recomputation (norm inputs in fp32, q/k/v and attention output, the FFN's gate,
up, activation and product), plus the logits and their fp32 log-softmax.

On CPU the estimate is of the process's peak resident memory (RSS), so it adds what the
process already holds when it is made (Python, torch, transformers, the tokenizer, the packed
corpus: measured, not modelled), and what glibc's allocator keeps of freed memory: tensors under
its mmap threshold (32 MiB at most) go back to its heap, not to the system, and fragment it.
Measured (`python benchmarks/train_memory.py --estimate`), the peaks sit about two blocks'
activations above the tensors alive with one micro-batch per step, and about six with gradient
accumulation (the gradients held between micro-batches fragment the heap); a later micro-batch
also makes the head's new gradient before adding it into the held one.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import torch

from kentropy.errors import KentropyError
from kentropy.models.compat import load_config
from kentropy.models.loading import ModelRef
from kentropy.models.registry import find_layout
from kentropy.runtime.distributed import rank_world
from kentropy.training.config import TrainConfig
from kentropy.training.sharding import blocks

GiB = 1024**3
# CPU: blocks' worth of activations glibc's heap keeps at the peak beyond the tensors alive
# (measured: benchmarks/train_memory.py --estimate), with one micro-batch per step and with several
HEAP_BLOCKS, HEAP_BLOCKS_ACCUMULATING = 2, 6


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
    rows: int  # rows per step on this rank (micro_batch x micro-batches)
    seq_len: int
    bf16: bool
    cpu: bool  # the estimate is of RSS (held and heap count), else of GPU memory
    held: int  # CPU: what the process holds already (its RSS when the estimate is made)
    weights: int
    gradients: int
    optimizer: int
    working: int  # DDP: gradient buckets (+ autocast's bf16 weight copies); FSDP: gathered blocks and root
    activations: int
    heap: int  # CPU: freed memory the allocator keeps, and gradient accumulation's transient head gradient

    @property
    def total(self) -> int:
        return self.held + self.weights + self.gradients + self.optimizer + self.working + self.activations + self.heap

    @property
    def needed(self) -> int:
        """What must still fit in the free memory (`held` is in use already)."""
        return self.total - self.held

    def describe(self) -> str:
        g = lambda b: f"{b / GiB:.2f}"  # noqa: E731
        where = {"single": "one process", "ddp": f"DDP over {self.processes}", "fsdp": f"FSDP over {self.processes}"}[self.mode]
        working = "gathered blocks" if self.mode == "fsdp" else "buckets/casts"
        held = f"held now {g(self.held)} + " if self.cpu else ""
        heap = f" + allocator {g(self.heap)}" if self.cpu else ""
        return (f"estimated memory per rank ({where}): {held}weights {g(self.weights)} + gradients {g(self.gradients)} + "
                f"optimizer {g(self.optimizer)} + {working} {g(self.working)} + activations {g(self.activations)}{heap} "
                f"= {g(self.total)} GiB")


def estimate(shape: Shape, *, micro_batch: int, seq_len: int, processes: int, fsdp: bool, bf16: bool,
             rows: int | None = None, cpu: bool = False, held: int = 0) -> Estimate:
    """Bytes per rank for AdamW training of `shape` (fp32 master weights; bf16 compute if `bf16`); `rows`: per
    step on this rank (default `micro_batch`: no gradient accumulation).

    `cpu`: of the process's resident memory, which holds `held` bytes already (its RSS now), and adds the
    allocator's heap; else of GPU memory."""
    rows = micro_batch if rows is None else rows
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
    heap = 0
    if cpu:
        block = tokens * per_token_block
        head_gradient = 4 * shape.vocab * h  # fp32: a later micro-batch's, before it is added into the held one
        heap = HEAP_BLOCKS_ACCUMULATING * block + head_gradient if rows > micro_batch else HEAP_BLOCKS * block
    mode = "fsdp" if fsdp and processes > 1 else ("ddp" if processes > 1 else "single")
    return Estimate(mode, processes, micro_batch, rows, seq_len, bf16, cpu, held if cpu else 0, weights, gradients, optimizer,
                    working, activations, heap)


def available(device: torch.device) -> tuple[int, str]:
    """Bytes this rank can use on `device`, and a name for it: free GPU memory, or this host's
    available RAM shared by the processes of this node."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free, f"free on {device}"
    ram = _mem_available()
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return ram // per_node, "of available RAM per process" if per_node > 1 else "of available RAM"


def resident() -> int:
    """This process's resident memory now (bytes; 0 where the system does not say)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


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
    """Refuse a run whose estimate exceeds what is free (beyond what the process holds already), naming the flag that would help."""
    if est.needed <= free:
        return
    msg = f"{est.describe()} exceeds the {free / GiB:.2f} GiB {where}" + (f" and the {est.held / GiB:.2f} GiB held" if est.cpu else "")
    kw = dict(seq_len=est.seq_len, processes=est.processes, bf16=est.bf16, rows=est.rows, cpu=est.cpu, held=est.held)
    fsdp = est.mode == "fsdp"
    if not fsdp and est.processes > 1 and estimate(shape, micro_batch=est.micro_batch, fsdp=True, **kw).needed <= free:
        raise KentropyError(f"{msg}: use --fsdp to shard weights, gradients and optimizer state over the {est.processes} processes")
    fitting = [b for b in range(1, est.micro_batch) if est.rows % b == 0 and estimate(shape, micro_batch=b, fsdp=fsdp, **kw).needed <= free]
    if fitting:
        raise KentropyError(f"{msg}: lower --micro-batch to {max(fitting)} or less")
    if not fsdp:
        raise KentropyError(f"{msg}: run under torchrun over more GPUs with --fsdp (--micro-batch 1 does not fit either)")
    raise KentropyError(f"{msg}: use more processes (--fsdp with --micro-batch 1 does not fit over {est.processes})")


def check_memory(cfg: TrainConfig, ckpt: ModelRef, device: torch.device, world_size: int, show: bool = True) -> None:
    """Print the estimated memory per rank (rank 0, if `show`) and refuse a run that clearly cannot fit, before any weight loads."""
    rank, _ = rank_world()
    try:
        shape = shape_of_checkpoint(load_config(ckpt))
    except (KentropyError, ValueError, OSError) as e:
        if cfg.fsdp:
            raise KentropyError(f"--fsdp: {e}") from None
        if rank == 0:
            print(f"note: no memory estimate for {ckpt}: {e}", file=sys.stderr)
        return
    cpu = device.type == "cpu"
    est = estimate(shape, micro_batch=cfg.micro_batch, seq_len=cfg.seq_len, processes=world_size, fsdp=cfg.fsdp,
                   bf16=device.type == "cuda" and cfg.dtype == "bfloat16", rows=cfg.batch_size // world_size, cpu=cpu,
                   held=resident() if cpu else 0)  # after the shape: the model's code is imported by now
    free, where = available(device)
    if rank == 0 and show:
        print(f"{est.describe()} ({free / GiB:.2f} GiB {where})", file=sys.stderr)
    check_fits(shape, est, free, where)
