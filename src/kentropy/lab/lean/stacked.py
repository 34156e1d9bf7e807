"""K pretraining runs of equal shape trained as one stacked model: each member keeps its own init, data
and row order (seed), lr schedule, weight decay, AdamW state and gradient clipping, and its own run
directory, exactly as if it had run alone with `kentropy.lab.lean.pretrain.pretrain`.

    from kentropy.lab.lean.stacked import pretrain_stacked
    cfgs = [TrainConfig(model=f"init-{s}", data="corpus.txt", out=f"runs/seed{s}", seed=s, lr=lr, ...) for s, lr in ...]
    pretrain_stacked(cfgs, compile=True)        # checkpoints at each member's --save-at / --save-every

Members must agree on the model config and on everything that shapes a step (--steps, --batch-size,
--micro-batch, --seq-len, betas, --device, --dtype); lr, schedule, weight decay, clipping, seed,
data, epochs and checkpoints are per member. It pays on a GPU, where one tiny model leaves the device
idle; on a CPU two one-thread runs side by side are faster (`benchmarks/pretrain_speed.py`).

The optimizer is AdamW written over the stacked tensors (one parameter group cannot hold K learning
rates): with lr_k and wd_k member k's, p_k <- p_k (1 - lr_k wd_k), m <- b1 m + (1 - b1) g,
v <- b2 v + (1 - b2) g^2, p_k <- p_k - lr_k / (1 - b1^t) m / (sqrt(v / (1 - b2^t)) + eps)
(Loshchilov & Hutter 2019, Alg. 2; the order of torch's fused AdamW). Decay follows `decay_groups`.
"""

from __future__ import annotations

import math
import time

import torch

from kentropy.errors import KentropyError
from kentropy.io import append_jsonl
from kentropy.lab.lean.pretrain import autocast, check_pretraining, compiled, load_data, open_run, save_steps
from kentropy.lab.lean.model import LeanLM, save_member
from kentropy.training.config import TrainConfig
from kentropy.training.optimizer import lr_at

SHARED = ("steps", "batch_size", "micro_batch", "seq_len", "beta1", "beta2", "device", "dtype")
EPS = 1e-8  # torch.optim.AdamW's default, as `make_optimizer` uses


def decayed(model: LeanLM) -> list[bool]:
    """Per parameter of the stacked model: weight-decayed? `decay_groups`' rule on the member's shape:
    matrices decay, embeddings (and a head tied to them), norms and biases do not."""
    emb = model.get_input_embeddings().weight
    return [p.dim() - 1 >= 2 and p is not emb for p in model.parameters()]


class StackedAdamW:
    """AdamW over stacked parameters [K, ...] with per-member lr and weight decay (see the module docstring)."""

    def __init__(self, params: list[torch.Tensor], decay: list[bool], betas: tuple[float, float], eps: float = EPS) -> None:
        self.params, self.decay, self.betas, self.eps = params, decay, betas, eps
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]
        self.t = 0

    @torch.no_grad()
    def step(self, lr: torch.Tensor, wd: torch.Tensor) -> None:
        """lr, wd: [K] this step's per-member learning rate and weight decay."""
        b1, b2 = self.betas
        self.t += 1
        c1, c2 = 1 - b1**self.t, math.sqrt(1 - b2**self.t)
        for p, m, v, dec in zip(self.params, self.m, self.v, self.decay):
            if p.grad is None:
                continue
            shape = (-1,) + (1,) * (p.dim() - 1)
            g = p.grad
            if dec:
                p.mul_((1 - lr * wd).view(shape))
            m.lerp_(g, 1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            p.addcdiv_(m * (lr / c1).view(shape), (v.sqrt() / c2).add_(self.eps), value=-1)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None


def clip_per_member(params: list[torch.Tensor], max_norm: torch.Tensor) -> torch.Tensor:
    """Clip each member's own global gradient norm to max_norm[k] (0: off); returns the norms before [K],
    as `clip_grad_norm_` computes them (coefficient max_norm / (norm + 1e-6), at most 1)."""
    grads = [p.grad for p in params if p.grad is not None]
    K = grads[0].shape[0]
    norms = torch.stack([g.reshape(K, -1).norm(dim=1) for g in grads]).norm(dim=0)  # [K]
    coef = torch.where(max_norm > 0, (max_norm / (norms + 1e-6)).clamp(max=1.0), torch.ones_like(norms))
    for g in grads:
        g.mul_(coef.view((-1,) + (1,) * (g.dim() - 1)))
    return norms


def check_members(cfgs: list[TrainConfig]) -> None:
    if not cfgs:
        raise KentropyError("no members to train")
    for i, c in enumerate(cfgs):
        check_pretraining(c, f"member {i}")
        for name in SHARED:
            if getattr(c, name) != getattr(cfgs[0], name):
                raise KentropyError(f"member {i}: --{name.replace('_', '-')} {getattr(c, name)} differs from member 0's "
                                    f"{getattr(cfgs[0], name)} (stacked members share it)")
    outs = [str(c.out) for c in cfgs]
    if len(set(outs)) < len(outs):
        raise KentropyError("members: each needs its own --out")


def pretrain_stacked(cfgs: list[TrainConfig], *, compile: bool | None = None, rows: torch.Tensor | None = None) -> list[list[dict]]:
    """Train the members of `cfgs` as one stacked model; returns each member's per-step records (also in
    its run's metrics.jsonl) and saves each member's checkpoints as HF directories in its run directory.
    compile: torch.compile the loss and its backward (default: member 0's --compile). rows: the corpus
    every member reads, already packed [N, seq_len] (else each member's --data is read and packed here)."""
    from kentropy.models.loading import ModelRef, load_model, load_tokenizer, pick_device

    check_members(cfgs)
    c0 = cfgs[0]
    toks = [load_tokenizer(ModelRef(c.model)) for c in cfgs]
    packed: dict = {}  # corpora shared by members are packed once
    data = []
    for c, tok in zip(cfgs, toks):
        key = (str(c.data), _tokenizer_key(tok))
        d = load_data(c, tok, rows if rows is not None else packed.get(key))
        packed[key] = d.rows
        data.append(d)
    device = pick_device(c0.device)
    model = LeanLM.from_hf([load_model(ModelRef(c.model), device=device) for c in cfgs], stacked=True)
    runs = [open_run(c) for c in cfgs]
    torch.manual_seed(c0.seed)
    params = list(model.parameters())
    opt = StackedAdamW(params, decayed(model), (c0.beta1, c0.beta2))
    wd = torch.tensor([c.weight_decay for c in cfgs], device=device)
    clip = torch.tensor([c.grad_clip for c in cfgs], device=device)
    loss_fn = compiled(model.loss, device) if (c0.compile if compile is None else compile) else model.loss
    K, accum, mb = len(cfgs), c0.batch_size // c0.micro_batch, c0.micro_batch
    saves = [save_steps(c) for c in cfgs]
    logs, pending = [[] for _ in cfgs], [[] for _ in cfgs]
    for step in range(c0.steps):
        t0 = time.perf_counter()
        lrs = [lr_at(step, c) for c in cfgs]
        batch = torch.stack([d.batch(c, step) for d, c in zip(data, cfgs)])  # [K, B, T]
        loss_sum = torch.zeros(K, device=device)
        for k in range(accum):
            x = batch[:, k * mb : (k + 1) * mb].to(device)
            with autocast(device, c0.dtype):
                loss = loss_fn(x) / accum  # [K]: members' gradients are independent
            loss.sum().backward()
            loss_sum += loss.detach()
        losses = loss_sum.tolist()
        bad = [i for i, v in enumerate(losses) if not math.isfinite(v)]
        if bad:
            raise KentropyError(f"member {bad[0]} ({cfgs[bad[0]].out}): loss became {losses[bad[0]]} at step {step}; stopped "
                                f"(rerun with a lower --lr)")
        norms = clip_per_member(params, clip).tolist()
        opt.step(torch.tensor(lrs, device=device), wd)
        opt.zero_grad()
        tps = c0.batch_size * c0.seq_len / (time.perf_counter() - t0)  # per member
        for i, c in enumerate(cfgs):
            record = {"step": step, "loss": losses[i], "lr": lrs[i], "tokens_per_s": tps,
                      "grad_norm": norms[i] if c.grad_clip > 0 else None, "injected": 0}
            logs[i].append(record)
            pending[i].append(record)
            if step + 1 in saves[i]:
                for r in pending[i]:
                    append_jsonl(runs[i].metrics, r)
                pending[i] = []
                save_member(model, i, runs[i].checkpoint(step + 1), toks[i])
    return logs


def _tokenizer_key(tok) -> str:
    backend = getattr(tok, "backend_tokenizer", None)
    return backend.to_str() if backend is not None else str(getattr(tok, "name_or_path", id(tok)))
