"""Generate fictional knowledge in the Fictional Knowledge format of Chang et al. (2024).

    kentropy knowledge generate --entries 130 --paraphrases 9 --seed 0 --out knowledge.json

Each entry is one coined entity (person, place, organization, species, artifact or event)
described by a paragraph of one sentence per fact, with `n_paraphrases` rewordings that
keep every fact but change the templates and the order of the sentences. Probes: `mem`
copies the start of a paragraph sentence up to a named target (a name, number or date);
`gen` words the same fact with another template; `hard_gen` asks for a target that takes
two facts of the paragraph combined.
"""

from __future__ import annotations

import random
import re
from typing import Iterable

from kentropy.errors import KentropyError
from kentropy.knowledge.kinds import BUILDERS
from kentropy.knowledge.names import Namer
from kentropy.knowledge.schema import PROBES_PER_KIND
from kentropy.knowledge.templates import COMPOSITIONS, DESCRIPTORS, RELATIONS, UNNAMED

KINDS = tuple(BUILDERS)  # person, place, organization, species, artifact, event


def generate_knowledge(n_entries: int, n_paraphrases: int = 9, seed: int = 0, avoid: Iterable[str] = ()) -> list[dict]:
    """`n_entries` entries (kinds in equal shares, shuffled), deterministic for `seed`.

    `avoid`: names and words that no coined name, nor any word of one, may equal (case-insensitive).
    Besides the format's fields each entry carries `name` (the entity) and `kind`.
    """
    if n_entries < 1:
        raise KentropyError(f"--entries {n_entries}: must be at least 1")
    if n_paraphrases < 0:
        raise KentropyError(f"--paraphrases {n_paraphrases}: must be non-negative")
    rng = random.Random(seed)
    namer = Namer(rng, avoid)
    kinds = [KINDS[i % len(KINDS)] for i in range(n_entries)]
    rng.shuffle(kinds)
    return [make_entry(kind, BUILDERS[kind](namer, rng), rng, n_paraphrases) for kind in kinds]


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


def make_entry(kind: str, values: dict, rng: random.Random, n_paraphrases: int) -> dict:
    """One entry from the facts `values` of a `kind` entity (see `kinds.py`)."""
    relations = RELATIONS[kind]
    probeable = [k for k, (slot, ts) in enumerate(relations)
                 if slot not in UNNAMED and sum(probe_ready(t, slot) for t in ts) >= 2]
    picked = rng.sample(probeable, PROBES_PER_KIND)  # the facts that get mem and gen probes
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

    composed = rng.sample(COMPOSITIONS[kind], PROBES_PER_KIND)
    return {
        "train_context": context,
        "mem_input": mem_input,
        "mem_target": targets,
        "gen_input": gen_input,
        "gen_target": list(targets),
        "hard_gen_input": [rng.choice(prefixes).format(**values) for _, prefixes in composed],
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
