"""Outcomes of continual knowledge learning (Kim et al., ICLR 2025, §4).

    downstream.py  downstream accuracy D through lm-evaluation-harness (`kentropy evaluate`)
    outcomes.py    acquisition A from probe scores P, forgetting F from D
"""
