"""Continual pretraining with injected knowledge (Kim et al., ICLR 2025, §4 and Appendix B).

    loop.py         setup -> fit -> finish: the training loop as plain functions, and `train(cfg)`
    corpus.py       training rows, and where injected knowledge goes in each batch
    plasticity.py   rehearsal, half fine-tuning and continual recycling during training
    sharding.py     FSDP2: shard by block, clip sharded gradients, gather the full weights
    dcp.py          the resumable state of a sharded run as a Distributed Checkpoint
    memory.py       memory per rank, estimated before any weight loads
    trackers.py     TensorBoard or Weights & Biases
    rundir.py       `RunDir`: every path of a run directory
"""
