"""Measuring knowledge entropy (Kim et al., ICLR 2025, Eq. 2), attention entropy (Eq. 3) and next-token entropy.

    entropy.py      the formulas, as pure functions with their equation numbers
    capture.py      hooks that reduce activations on the fly into float64 running sums
    documents.py    documents for measurement: .jsonl, .txt or a `datasets` dataset
    workflow.py     model x documents -> a `Measurement`; `kentropy measure` over a checkpoint series
    diagnostics.py  per-layer mechanism diagnostics (KL to uniform, mass concentration, weight spread)
    bootstrap.py    intervals for H from a bootstrap over documents
    monitor.py      knowledge entropy as a callback inside someone else's training loop
    plot.py         the paper's figures (2, 3, 8) from measure results
"""
