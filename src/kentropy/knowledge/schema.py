"""The Fictional Knowledge format of Chang et al. (2024): load a file and check every entry.

A file is a JSON list of entries. Each entry has `train_context` (the paragraph), the probe
pairs `mem_input`/`mem_target`, `gen_input`/`gen_target`, `hard_gen_input`/`hard_gen_target`
(5 strings each) and optionally `paraphrases` (strings). Other fields are kept untouched.
"""

from __future__ import annotations

from kentropy.errors import ArgumentError, KentropyError
from kentropy.io import read_json
from kentropy.runtime.arguments import sequence

KINDS = ("mem", "gen", "hard_gen")  # memorization, semantic and compositional generalization
PROBES_PER_KIND = 5
PROBE_FIELDS = tuple(f"{k}_{part}" for k in KINDS for part in ("input", "target"))


def load_knowledge(path: str) -> list[dict]:
    """Read and validate a Fictional Knowledge JSON file; entries are returned as read."""
    return validate_knowledge(read_json(path, "knowledge file"), source=str(path))


def validate_knowledge(entries, source: str = "knowledge") -> list[dict]:
    """Check `entries` against the format; raise `KentropyError` naming `source`, the entry index and field."""
    if not isinstance(entries, list):
        raise KentropyError(f"{source}: expected a JSON list of entries, got {type(entries).__name__}")
    if not entries:
        raise KentropyError(f"{source}: no entries")
    for i, entry in enumerate(entries):
        where = f"{source}: entry {i}"
        if not isinstance(entry, dict):
            raise KentropyError(f"{where}: expected an object, got {type(entry).__name__}")
        context = entry.get("train_context")
        if not isinstance(context, str) or not context.strip():
            raise KentropyError(f"{where}: field 'train_context' must be a non-empty string")
        for field in PROBE_FIELDS:
            check_strings(entry, field, where, exactly=PROBES_PER_KIND)
        if "paraphrases" in entry:
            check_strings(entry, "paraphrases", where)
    return entries


def entry_list(name: str, entries) -> list[dict]:
    """The Python API's `entries` argument: a list of entry dicts (one entry alone, or a str, is refused)."""
    entries = sequence(name, entries, "entry dicts")
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ArgumentError(f"{name}[{i}]", f"expected an entry dict, got {type(entry).__name__}")
    return entries


def check_strings(entry: dict, field: str, where: str, exactly: int | None = None) -> None:
    """`entry[field]` is a list of non-empty strings (`exactly` of them where given); errors say `where`."""
    value = entry.get(field)
    shape = f"a list of {exactly} strings" if exactly is not None else "a list of strings"
    if field not in entry:
        raise KentropyError(f"{where}: missing field '{field}' ({shape})")
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise KentropyError(f"{where}: field '{field}' must be {shape}")
    if exactly is not None and len(value) != exactly:
        raise KentropyError(f"{where}: field '{field}' must be {shape} (got {len(value)})")
    for j, v in enumerate(value):
        if not v.strip():
            raise KentropyError(f"{where}: field '{field}' item {j} is empty")
