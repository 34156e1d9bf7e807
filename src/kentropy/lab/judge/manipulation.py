"""A manipulation is checked before its outcome is judged: an edit meant to raise knowledge entropy
(resuscitation, any intervention) is judged only where the entropy measured after it is higher than before."""

from __future__ import annotations


def raised_entropy(h_before: float, h_after: float) -> bool:
    """True where the knowledge entropy measured after the edit is higher than before it."""
    return h_after > h_before
