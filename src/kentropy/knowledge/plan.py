"""When each fictional-knowledge entry is injected into continual training, as JSON-ready data.

Kim et al. (ICLR 2025) §4 / Appendix B, after Chang et al. (2024): the *paraphrase* group
injects every entry once per round (the original in round 1, paraphrase r-1 in round r); the
*once* group injects each entry exactly once, spread evenly over the rounds in file order.

As the official code runs it (kaistAI/Knowledge-Entropy, `olmo/train.py`: injection when the
1-indexed global step is a multiple of the interval), round r = 1..R is in the batch of the
0-indexed optimizer step `interval * r - 1`: steps 159, 319, ..., 1599 in the paper, so the
last round lands on the final step, right before the probes. Each passage, followed by eos,
is prepended to one batch row (the row shifted right and truncated; `kentropy.training.corpus.inject`).
"""

from __future__ import annotations

import sys

from kentropy.errors import ArgumentError, KentropyError
from kentropy.io import read_json
from kentropy.knowledge.schema import check_strings, entry_list
from kentropy.runtime.arguments import integer

VERSION = 2  # 2: rounds numbered from 1, at step interval * round - 1 (the official timing)
PLACEMENT = "prepend"  # passage + eos, then the row shifted right and truncated to its length
GROUPS = ("paraphrase", "once")


def split_groups(n_entries: int, paraphrase: int, once: int, source: str = "knowledge") -> tuple[int, int]:
    """Group sizes for a file of `n_entries`: as asked, or scaled down in proportion (said on stderr)."""
    integer("paraphrase", paraphrase, low=0)
    if integer("once", once, low=0) + paraphrase == 0:
        raise ArgumentError("once", "no entry would be injected (paraphrase is 0 too)", once)
    if n_entries >= paraphrase + once:
        return paraphrase, once
    p = min(n_entries, int(n_entries * paraphrase / (paraphrase + once) + 0.5))
    o = n_entries - p
    print(f"note: {source} has {n_entries} entries: paraphrase group {p}, once group {o} "
          f"(asked {paraphrase}+{once})", file=sys.stderr)
    return p, o


def make_plan(entries: list[dict], *, paraphrase: int = 70, once: int = 60, rounds: int = 10,
              interval: int = 160, source: str = "knowledge") -> dict:
    """The injection plan for `entries` (defaults: the paper's 70 + 60 entries, 10 rounds every 160 steps:
    rounds at steps 159, 319, ..., 1599).

    Entries 0..P-1 form the paraphrase group, the next O the once group; later entries are not
    injected (a held-out control). Each paraphrase-group entry needs `rounds - 1` paraphrases.
    """
    entries = entry_list("entries", entries)
    integer("rounds", rounds, low=1)
    integer("interval", interval, low=1)
    p, o = split_groups(len(entries), paraphrase, once, source)
    para, single = list(range(p)), list(range(p, p + o))
    for i in para:
        if "paraphrases" in entries[i]:
            check_strings(entries[i], "paraphrases", f"{source}: entry {i}")
        have = len(entries[i].get("paraphrases", []))
        if have < rounds - 1:
            raise KentropyError(f"{source}: entry {i}: the paraphrase group needs {rounds - 1} paraphrases "
                                f"({rounds} rounds), field 'paraphrases' has {have}")
    # once-group entry j goes to round 1 + floor(j * R / O): evenly spread, in file order
    once_round = {i: 1 + j * rounds // o for j, i in enumerate(single)} if o else {}
    schedule = []
    for r in range(1, rounds + 1):
        items = [{"entry": i, "group": "paraphrase", "variant": r - 1} for i in para]
        items += [{"entry": i, "group": "once", "variant": 0} for i in single if once_round[i] == r]
        schedule.append({"round": r, "step": round_step(r, interval), "items": items})
    return {"version": VERSION, "rounds": rounds, "interval": interval, "placement": PLACEMENT,
            "groups": {"paraphrase": para, "once": single}, "schedule": schedule}


def round_step(r: int, interval: int) -> int:
    """The 0-indexed optimizer step whose batch holds round r (1-based): the official `interval * r - 1`."""
    return interval * r - 1


def item_text(entry: dict, variant: int) -> str:
    """The text of one injection: variant 0 is `train_context`, variant v >= 1 is `paraphrases[v - 1]`."""
    if variant == 0:
        return entry["train_context"]
    paraphrases = entry.get("paraphrases", [])
    if not 1 <= variant <= len(paraphrases):
        raise KentropyError(f"variant {variant}: the entry has {len(paraphrases)} paraphrases")
    return paraphrases[variant - 1]


def items_at(plan: dict, step: int) -> list[dict]:
    """The items injected at training step `step` ([] when no round starts there)."""
    for rnd in plan["schedule"]:
        if rnd["step"] == step:
            return list(rnd["items"])
    return []


def group_of(plan: dict) -> dict[int, str]:
    """Entry index -> group name, for the entries the plan injects."""
    return {i: g for g in GROUPS for i in plan["groups"].get(g, [])}


def load_plan(path: str) -> dict:
    """Read a plan file and check its structure; errors name the file and the field."""
    plan = read_json(path, "plan file")
    validate_plan(plan, source=str(path))
    return plan


def check_plan_entries(plan: dict, entries: list[dict], source: str = "plan") -> None:
    """Every planned item must name an entry of `entries` and a variant that entry has."""
    for k, rnd in enumerate(plan["schedule"]):
        for j, item in enumerate(rnd["items"]):
            i, v = item["entry"], item["variant"]
            field = f"schedule[{k}].items[{j}]"
            if i >= len(entries):
                raise KentropyError(f"{source}: field '{field}.entry' is {i}, but there are {len(entries)} entries")
            if v > len(entries[i].get("paraphrases", [])):
                raise KentropyError(f"{source}: field '{field}.variant' is {v}, but entry {i} has "
                                    f"{len(entries[i].get('paraphrases', []))} paraphrases")
    for g in GROUPS:
        for i in plan["groups"][g]:
            if i >= len(entries):
                raise KentropyError(f"{source}: field 'groups.{g}' names entry {i}, but there are {len(entries)} entries")


def validate_plan(plan, source: str = "plan") -> dict:
    """Structure and consistency of a plan dict (see `make_plan`); raises naming the field."""

    def bad(field: str, why: str):
        raise KentropyError(f"{source}: field '{field}' {why}")

    def natural(value, field: str, least: int = 0) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            bad(field, f"must be an integer >= {least}")
        return value

    if not isinstance(plan, dict):
        raise KentropyError(f"{source}: expected a JSON object, got {type(plan).__name__}")
    for key in ("version", "rounds", "interval", "placement", "groups", "schedule"):
        if key not in plan:
            bad(key, "is missing")
    if plan["version"] != VERSION:
        bad("version", f"must be {VERSION} (got {plan['version']!r})")
    rounds = natural(plan["rounds"], "rounds", 1)
    interval = natural(plan["interval"], "interval", 1)
    if plan["placement"] != PLACEMENT:
        bad("placement", f"must be {PLACEMENT!r} (got {plan['placement']!r})")
    groups = plan["groups"]
    if not isinstance(groups, dict) or set(groups) != set(GROUPS):
        bad("groups", f"must be an object with exactly {', '.join(GROUPS)}")
    seen: dict[int, str] = {}
    for g in GROUPS:
        if not isinstance(groups[g], list):
            bad(f"groups.{g}", "must be a list of entry indices")
        for j, i in enumerate(groups[g]):
            natural(i, f"groups.{g}[{j}]")
            if i in seen:
                bad(f"groups.{g}[{j}]", f"repeats entry {i} (already in {seen[i]})")
            seen[i] = g
    schedule = plan["schedule"]
    if not isinstance(schedule, list) or len(schedule) != rounds:
        bad("schedule", f"must be a list of {rounds} rounds")
    for k, rnd in enumerate(schedule):
        f = f"schedule[{k}]"
        if not isinstance(rnd, dict):
            bad(f, "must be an object")
        if rnd.get("round") != k + 1:
            bad(f"{f}.round", f"must be {k + 1}")
        if rnd.get("step") != round_step(k + 1, interval):
            bad(f"{f}.step", f"must be {round_step(k + 1, interval)} (interval {interval} x round {k + 1} - 1)")
        if not isinstance(rnd.get("items"), list):
            bad(f"{f}.items", "must be a list")
        for j, item in enumerate(rnd["items"]):
            fi = f"{f}.items[{j}]"
            if not isinstance(item, dict):
                bad(fi, "must be an object")
            i = natural(item.get("entry"), f"{fi}.entry")
            natural(item.get("variant"), f"{fi}.variant")
            if item.get("group") not in GROUPS:
                bad(f"{fi}.group", f"must be one of {', '.join(GROUPS)}")
            if seen.get(i) != item["group"]:
                bad(f"{fi}.group", f"is {item['group']!r}, but entry {i} is not in that group")
    return plan
