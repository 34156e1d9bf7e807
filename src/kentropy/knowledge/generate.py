"""Generate fictional knowledge in the Fictional Knowledge format of Chang et al. (2024).

    kentropy knowledge generate --entries 130 --paraphrases 9 --seed 0 --out knowledge.json

Each entry is one coined entity (person, place, organization, species, artifact or event)
described by a paragraph of one sentence per fact, with `n_paraphrases` rewordings that
keep every fact but change the templates and the order of the sentences. Probes: `mem`
copies the start of a paragraph sentence up to a named target (a name, number or date);
`gen` words the same fact with another template; `hard_gen` asks for a target that takes
two facts of the paragraph combined. `facts=N` keeps paragraphs short (for short training
rows): the introduction, the facts the probes need, and others up to N facts in all.
"""

from __future__ import annotations

import random
import re
from typing import Iterable

from kentropy.errors import ArgumentError
from kentropy.knowledge.kinds import BUILDERS
from kentropy.knowledge.names import Namer
from kentropy.knowledge.schema import PROBES_PER_KIND
from kentropy.knowledge.templates import COMPOSITIONS, DESCRIPTORS, RELATIONS, UNNAMED
from kentropy.runtime.arguments import integer, strings

KINDS = tuple(BUILDERS)  # person, place, organization, species, artifact, event
MIN_FACTS = 1 + PROBES_PER_KIND  # the introduction and five probed facts, at the least
TRIES = 200  # draws of probes per entry before a `facts` limit is declared too tight


def generate_knowledge(n_entries: int, n_paraphrases: int = 9, seed: int = 0, avoid: Iterable[str] = (),
                       facts: int | None = None) -> list[dict]:
    """`n_entries` entries (kinds in equal shares, shuffled), deterministic for `seed`.

    `avoid`: a list of names and words that no coined name, nor any word of one, may equal (case-insensitive).
    `facts`: at most this many facts (sentences) per paragraph, the probes' facts among them
    (see `short_selection`); None: every fact of the entity (the default, hundreds of tokens).
    Besides the format's fields each entry carries `name` (the entity) and `kind`.
    """
    integer("n_entries", n_entries, low=1)
    integer("n_paraphrases", n_paraphrases, low=0)
    integer("seed", seed, low=0)
    avoid = strings("avoid", avoid, empty=True)
    if facts is not None and integer("facts", facts) < MIN_FACTS:
        raise ArgumentError("facts", f"must be at least {MIN_FACTS} (the introduction and the probes' facts)", facts)
    rng = random.Random(seed)
    namer = Namer(rng, avoid)
    kinds = [KINDS[i % len(KINDS)] for i in range(n_entries)]
    rng.shuffle(kinds)
    return [make_entry(kind, BUILDERS[kind](namer, rng), rng, n_paraphrases, facts) for kind in kinds]


def probe_prefix(template: str, slot: str, values: dict) -> str:
    """The words of `template` before its `slot`, filled in (without the space before the target)."""
    left = template.split("{" + slot + "}", 1)[0]
    return left.format(**values)[:-1]


def blocks(relations: list[tuple[str, list[str]]]) -> list[list[int]]:
    """Consecutive relations that stay together when sentences are reordered.

    A relation whose every template names a target of the block before it (the river of the
    birthplace, the city of the mentor) follows that block, so that reordered text still reads well.
    """
    out: list[list[int]] = []
    for k, (_, templates) in enumerate(relations):
        if out and k > 0 and out[-1][0] != 0:
            slots = {relations[j][0] for j in out[-1]}
            if all(any("{" + s + "}" in t for s in slots) for t in templates):
                out[-1].append(k)
                continue
        out.append([k])
    return out


def probe_ready(template: str, slot: str) -> bool:
    """Whether the words before `slot` name the fact's subject (a name slot), so that they make a probe."""
    before = set(re.findall(r"\{(\w+)\}", template.split("{" + slot + "}", 1)[0]))
    return bool(before - DESCRIPTORS)


def _probeable(relations: list[tuple[str, list[str]]]) -> list[int]:
    """Relations with a named target and two or more templates whose words before it make a probe."""
    return [k for k, (slot, ts) in enumerate(relations) if slot not in UNNAMED and sum(probe_ready(t, slot) for t in ts) >= 2]


def _slots(template: str) -> set[str]:
    return set(re.findall(r"\{(\w+)\}", template))


def needed(kind: str, facts: Iterable[int], prefixes: Iterable[str] = ()) -> set[int]:
    """The relations (indices into `RELATIONS[kind]`) a paragraph must state for `facts` and for
    probes that read `prefixes`: the introduction, the facts, the facts whose targets the prefixes
    name, and, transitively, the facts that every template of a needed fact refers to (the
    birthplace, for "the river of the birthplace")."""
    relations = RELATIONS[kind]
    index = {slot: k for k, (slot, _) in enumerate(relations)}
    need = {0, *facts} | {index[s] for p in prefixes for s in _slots(p) if s in index}
    todo = list(need)
    while todo:
        slot, templates = relations[todo.pop()]
        common = set.intersection(*(_slots(t) for t in templates)) - {slot}
        for s in common:
            if s in index and index[s] not in need:
                need.add(index[s])
                todo.append(index[s])
    return need


def short_selection(kind: str, rng: random.Random, facts: int) -> tuple[list[int], list, set[int]]:
    """(mem/gen facts, hard_gen compositions as (slot, prefix), kept relations) for a paragraph of at
    most `facts` facts: compositions drawn at random until their facts and five probed facts fit,
    the probed facts preferably among those the compositions need; the rest filled in at random."""
    probeable = _probeable(RELATIONS[kind])
    for _ in range(TRIES):
        composed = [(slot, rng.choice(prefixes)) for slot, prefixes in rng.sample(COMPOSITIONS[kind], PROBES_PER_KIND)]
        index = {slot: k for k, (slot, _) in enumerate(RELATIONS[kind])}
        need = needed(kind, [index.get(slot, 0) for slot, _ in composed], [p for _, p in composed])  # name: the introduction
        inside = [k for k in probeable if k in need]
        picked = rng.sample(inside, min(PROBES_PER_KIND, len(inside)))
        picked += rng.sample([k for k in probeable if k not in need], PROBES_PER_KIND - len(picked))
        need = needed(kind, need | set(picked))
        if len(need) <= facts:
            rest = [k for k in range(len(RELATIONS[kind])) if k not in need]
            return picked, composed, need | set(rng.sample(rest, min(len(rest), facts - len(need))))
    raise ArgumentError("facts", f"too few for the probes of a {kind} entry (its compositions need more facts)", facts)


def make_entry(kind: str, values: dict, rng: random.Random, n_paraphrases: int, facts: int | None = None) -> dict:
    """One entry from the facts `values` of a `kind` entity (see `kinds.py`); `facts`: see `generate_knowledge`."""
    relations = RELATIONS[kind]
    composed = None
    if facts is None:
        picked = rng.sample(_probeable(relations), PROBES_PER_KIND)  # the facts that get mem and gen probes
    else:
        picked, composed, kept = short_selection(kind, rng, facts)
        keep = sorted(kept)
        relations = [relations[k] for k in keep]  # the paragraph states these, in the usual order
        picked = [keep.index(k) for k in picked]
    chosen = []
    for k, (slot, templates) in enumerate(relations):
        pool = [j for j, t in enumerate(templates) if k not in picked or probe_ready(t, slot)]
        chosen.append(rng.choice(pool))
    context = " ".join(templates[c].format(**values) for (_, templates), c in zip(relations, chosen))
    paraphrases = [_paraphrase(relations, values, chosen, rng) for _ in range(n_paraphrases)]

    mem_input, gen_input, targets = [], [], []
    for k in picked:
        slot, templates = relations[k]
        mem = probe_prefix(templates[chosen[k]], slot, values)
        others = [p for j, t in enumerate(templates)
                  if j != chosen[k] and probe_ready(t, slot) and (p := probe_prefix(t, slot, values)) != mem]
        mem_input.append(mem)
        gen_input.append(rng.choice(others))
        targets.append(values[slot])

    if composed is None:
        composed = [(slot, rng.choice(prefixes)) for slot, prefixes in rng.sample(COMPOSITIONS[kind], PROBES_PER_KIND)]
    return {
        "train_context": context,
        "mem_input": mem_input,
        "mem_target": targets,
        "gen_input": gen_input,
        "gen_target": list(targets),
        "hard_gen_input": [prefix.format(**values) for _, prefix in composed],
        "hard_gen_target": [values[slot] for slot, _ in composed],
        "paraphrases": paraphrases,
        "name": values["name"],
        "kind": kind,
    }


def _paraphrase(relations, values: dict, chosen: list[int], rng: random.Random) -> str:
    """Every fact again, each with another template, the blocks after the introduction reordered."""
    picks = [rng.choice([j for j in range(len(t)) if j != c]) for (_, t), c in zip(relations, chosen)]
    head, *rest = blocks(relations)
    original = list(rest)
    while len(rest) > 1 and rest == original:
        rng.shuffle(rest)
    order = [k for block in [head, *rest] for k in block]
    return " ".join(relations[k][1][picks[k]].format(**values) for k in order)
