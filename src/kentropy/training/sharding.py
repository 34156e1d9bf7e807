"""FSDP2 for `kentropy train --fsdp`: shard by transformer block, clip sharded gradients, and
move between sharded training state and the full HF weights the rest of kentropy reads.

    torchrun --nproc_per_node=4 -m kentropy train MODEL --fsdp ...

Each block of the layer stack (found through the model-family registry) is one FSDP unit,
then the root (embeddings, final norm, head). On CUDA, parameters are all-gathered and
computed in bf16 while the sharded fp32 parameters stay the optimizer's master weights and
gradients are reduced in fp32 (the paper's mixed precision); on CPU everything is fp32.
"""

from __future__ import annotations

import torch
from torch import nn

from kentropy.errors import KentropyError
from kentropy.models.registry import find_layout, find_stacks


def blocks(model: nn.Module) -> list[nn.Module]:
    """The transformer blocks, in order: every block of the layer stack(s) the model-family registry finds."""
    found = find_stacks(model)
    if found is None:
        find_layout(model)  # raises the registry's one-line error for an unknown family
        raise KentropyError(f"--fsdp: no transformer block stack found in {type(model).__name__}")
    return [block for _, stack in found[1] for block in stack]


def mixed_precision(device: torch.device, dtype: str = "bfloat16"):
    """bf16 compute and all-gather with fp32 reduction on CUDA (fp32 sharded master weights); fp32 on CPU."""
    from torch.distributed.fsdp import MixedPrecisionPolicy

    if device.type == "cuda" and dtype == "bfloat16":
        return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    return MixedPrecisionPolicy()


def shard(model: nn.Module, device: torch.device, dtype: str = "bfloat16") -> nn.Module:
    """`fully_shard` every block, then the root, over all processes; returns the (same) model.

    The model may sit on CPU: FSDP moves each rank's shards to `device`. Call after
    `init_process_group`; every rank must hold the same weights.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import FSDPModule, fully_shard

    mesh = init_device_mesh(device.type, (torch.distributed.get_world_size(),))
    mp = mixed_precision(device, dtype)
    stack = blocks(model)
    for i, block in enumerate(stack):
        # the last block's weights are needed again at once by backward: keep them gathered
        fully_shard(block, mesh=mesh, mp_policy=mp, reshard_after_forward=i < len(stack) - 1)
    fully_shard(model, mesh=mesh, mp_policy=mp, reshard_after_forward=False)
    # FSDP allocates the gathered parameters at the first all-gather and reuses them. Probing runs
    # under torch.inference_mode, and tensors made there cannot be updated by training later:
    # make them here, in normal mode, once.
    for module in reversed(list(model.modules())):
        if isinstance(module, FSDPModule):
            module.unshard()
            module.reshard()
    return model


def reshard(model: nn.Module) -> None:
    """Every FSDP unit back to its shards: a forward outside training leaves the root and the last block gathered
    (`reshard_after_forward=False`), and the optimizer and DCP expect the sharded parameters."""
    from torch.distributed.fsdp import FSDPModule

    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.reshard()


def clip_grad_norm(model: nn.Module, max_norm: float) -> float:
    """Clip the global gradient norm over all (possibly sharded) gradients; returns the norm before clipping.

    `clip_grad_norm_` reduces DTensor gradients across ranks itself: the norm is the full model's.
    """
    norm = torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.grad is not None], max_norm)
    return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)


def local_bytes(tensors) -> int:
    """Bytes this rank holds for `tensors` (a DTensor counts its local shard only)."""
    total = 0
    for t in tensors:
        if t is None:
            continue
        t = t.to_local() if hasattr(t, "to_local") else t
        total += t.numel() * t.element_size()
    return total


def state_bytes(model: nn.Module, opt: torch.optim.Optimizer) -> dict[str, int]:
    """Bytes this rank holds in weights, gradients and optimizer state, from the tensors themselves."""
    params = list(model.parameters())
    optim = [v for s in opt.state.values() for v in s.values() if torch.is_tensor(v) and v.dim() > 0]
    return {"weights": local_bytes(params), "gradients": local_bytes(p.grad for p in params),
            "optimizer": local_bytes(optim)}
