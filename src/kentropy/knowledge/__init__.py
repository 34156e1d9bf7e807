"""Fictional knowledge: load and validate, generate, plan injections, probe (A and F are in `kentropy.evaluation.outcomes`)."""

from kentropy.knowledge.generate import generate_knowledge
from kentropy.knowledge.plan import check_plan_entries, group_of, item_text, items_at, load_plan, make_plan, validate_plan
from kentropy.knowledge.probe import encode_probe, probe, score_probes
from kentropy.knowledge.schema import KINDS, load_knowledge, validate_knowledge

__all__ = [
    "KINDS", "check_plan_entries", "encode_probe", "generate_knowledge",
    "group_of", "item_text", "items_at", "load_knowledge", "load_plan", "make_plan", "probe", "score_probes",
    "validate_knowledge", "validate_plan",
]
