"""Lean training for the lab's tiny models: a plain-PyTorch causal LM whose weights are an HF model's
(`model`), its pretraining loop with `kentropy train`'s semantics (`pretrain`), and K runs of equal shape
trained as one stacked model (`stacked`)."""
