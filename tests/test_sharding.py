"""FSDP building blocks: the block stack to shard, tensor byte counts, the memory estimate and its refusal."""

import pytest
import torch
from conftest import tiny_model

from kentropy.errors import KentropyError
from kentropy.training.memory import GiB, Shape, check_fits, estimate, model_shape
from kentropy.training.sharding import blocks, state_bytes


@pytest.mark.parametrize("family, path", [("llama", "model.layers"), ("gpt2", "transformer.h"),
                                          ("gpt_neox", "gpt_neox.layers"), ("opt", "model.decoder.layers")])
def test_blocks_are_the_layer_stack(family, path):
    model = tiny_model(family)
    assert blocks(model) == list(model.get_submodule(path))


def test_blocks_unknown_family_is_a_clear_error():
    with pytest.raises(KentropyError, match="unsupported model family"):
        blocks(torch.nn.Sequential(torch.nn.Linear(2, 2)))


def test_model_shape_counts_parameters():
    s = model_shape(tiny_model("llama"))
    h, m, V = 16, 24, 320
    block = 4 * h * h + 3 * h * m + 2 * h  # q, k, v, o; gate, up, down; two RMSNorms
    root = V * h + V * h + h  # embeddings, untied head, final norm
    assert (s.block_params, s.root_params, s.params) == (block, root, 2 * block + root)
    assert (s.layers, s.hidden, s.ffn_dim, s.vocab) == (2, h, m, V)


def test_state_bytes_of_a_plain_adamw_step():
    model = tiny_model("llama").train()
    P = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), fused=True)
    x = torch.randint(0, 320, (2, 8))
    model(input_ids=x, labels=x).loss.backward()
    opt.step()
    b = state_bytes(model, opt)
    assert b == {"weights": 4 * P, "gradients": 4 * P, "optimizer": 8 * P}  # fp32 weights, grads, exp_avg + exp_avg_sq


SEVEN_B = Shape(params=6_888_095_744, block_params=202_375_168, root_params=412_090_368, layers=32, hidden=4096,
                ffn_dim=11008, vocab=50304)  # OLMo-7B, as model_shape reports it from the config


def test_estimate_against_the_formula():
    s, P = SEVEN_B, SEVEN_B.params
    ddp = estimate(s, micro_batch=2, seq_len=1024, processes=4, fsdp=False, bf16=True)
    assert (ddp.weights, ddp.gradients, ddp.optimizer) == (4 * P, 4 * P, 8 * P)
    assert ddp.working == 4 * P + 2 * P  # DDP's gradient buckets + autocast's bf16 weight copies
    tokens = 2 * 1024
    per_token = 32 * (2 * (8 * 4096 + 4 * 11008) + 8 * 4096) + 50304 * (2 + 8)
    assert ddp.activations == tokens * per_token
    fsdp = estimate(s, micro_batch=2, seq_len=1024, processes=4, fsdp=True, bf16=True)
    assert (fsdp.weights, fsdp.gradients, fsdp.optimizer) == (P, P, 2 * P)  # 16 bytes / 4 ranks
    assert fsdp.working == (2 * s.block_params + s.root_params) * 2 + 4 * s.block_params
    assert fsdp.activations == ddp.activations
    assert (fsdp.weights + fsdp.gradients + fsdp.optimizer) / (ddp.weights + ddp.gradients + ddp.optimizer) == 0.25
    assert "FSDP over 4" in fsdp.describe() and f"{fsdp.total / GiB:.2f} GiB" in fsdp.describe()


def test_refusal_names_the_flag_that_helps():
    s = SEVEN_B
    ddp = estimate(s, micro_batch=2, seq_len=1024, processes=4, fsdp=False, bf16=True)
    with pytest.raises(KentropyError, match="use --fsdp to shard") as e:
        check_fits(s, ddp, 80 * GiB, "free on cuda:0")
    assert "\n" not in str(e.value) and "80.00 GiB free on cuda:0" in str(e.value)
    big_micro = estimate(s, micro_batch=32, seq_len=1024, processes=4, fsdp=True, bf16=True)
    with pytest.raises(KentropyError, match="lower --micro-batch to 8 or less"):
        check_fits(s, big_micro, 80 * GiB, "free on cuda:0")
    one = estimate(s, micro_batch=1, seq_len=1024, processes=1, fsdp=False, bf16=True)
    with pytest.raises(KentropyError, match="with --fsdp"):
        check_fits(s, one, 80 * GiB, "free on cuda:0")
    check_fits(s, estimate(s, micro_batch=2, seq_len=1024, processes=4, fsdp=True, bf16=True), 80 * GiB, "free")  # fits


def test_cpu_estimate_counts_what_the_process_holds_and_the_allocators_heap():
    """On CPU the estimate is of peak RSS: the process's RSS when it is made, plus the tensors, plus what glibc keeps
    in its heap (two blocks' activations; with gradient accumulation six, and the head's transient new gradient); only
    what is not held yet must fit in the available RAM."""
    s = Shape(params=58_000_000, block_params=6_000_000, root_params=10_000_000, layers=8, hidden=512, ffn_dim=1365, vocab=32000)
    held = 500 * 2**20
    gpu = estimate(s, micro_batch=4, seq_len=512, processes=1, fsdp=False, bf16=False)
    cpu = estimate(s, micro_batch=4, seq_len=512, processes=1, fsdp=False, bf16=False, cpu=True, held=held)
    block = 4 * 512 * (4 * (8 * 512 + 4 * 1365) + 2 * 4 * 512)  # tokens x one block's activations in fp32
    assert (gpu.held, gpu.heap) == (0, 0) and cpu.held == held and cpu.heap == 2 * block
    assert cpu.total == gpu.total + held + 2 * block and cpu.needed == cpu.total - held
    assert "held now 0.49 + " in cpu.describe() and "+ allocator " in cpu.describe() and "held" not in gpu.describe()
    accumulating = estimate(s, micro_batch=4, seq_len=512, processes=1, fsdp=False, bf16=False, rows=8, cpu=True, held=held)
    assert accumulating.heap == 6 * block + 4 * 32000 * 512 and accumulating.rows == 8
    assert estimate(s, micro_batch=4, seq_len=512, processes=1, fsdp=False, bf16=False, rows=8).heap == 0  # GPU: none
    check_fits(s, cpu, cpu.needed, "of available RAM")  # what is held is not asked of the free memory again
    with pytest.raises(KentropyError, match=r"of available RAM and the 0.49 GiB held: lower --micro-batch"):
        check_fits(s, cpu, cpu.needed - 1, "of available RAM")
