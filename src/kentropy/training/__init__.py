"""Continual pretraining with injected knowledge (Kim et al., ICLR 2025, §4 and Appendix B).

    loop.py         setup -> fit -> finish: the training loop as plain functions, and `train(cfg)`
    config.py       `TrainConfig`: every option of `kentropy train`, in the sections of its --help
    inputs.py       the run's inputs checked before its directory exists: --out, input digests, rows, knowledge, plan
    optimizer.py    AdamW with OLMo's weight-decay groups, and the lr schedule `lr_at`
    state.py        a checkpoint's resumable state: optimizer, random generators, steps done
    scores.py       P and D of the model during a run; the summary's A and F
    corpus.py       training rows, and where injected knowledge goes in each batch
    plasticity.py   rehearsal, half fine-tuning and continual recycling during training
    sharding.py     FSDP2: shard by block, clip sharded gradients, gather the full weights
    dcp.py          the resumable state of a sharded run as a Distributed Checkpoint
    memory.py       memory per rank, estimated before any weight loads
    trackers.py     TensorBoard or Weights & Biases
    rundir.py       `RunDir`: every path of a run directory
"""
