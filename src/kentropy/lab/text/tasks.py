"""Downstream tasks from a world: multiple-choice rows whose answers are facts of the world.

    tasks = make_tasks(world, n_per_task=200, seed=0)
    tasks["fact_recall"][0]   # {"query": "Velmora Tastik was born in", "choices": [...4 cities], "gold": 2}
    tasks.metadata["fact_recall"]["popularity_band"]
    tasks.metadata["fact_recall"]["row_ranks"]   # each row's subject's popularity rank (1 = most documents)

They measure what pretraining gave a model, so losing them in continual learning is
forgetting (the paper's F). Rows are lm-eval local multiple-choice rows: choices are
continuations without a leading space (lm-eval puts " " between query and choice). Each
task has 4 choices, the gold index balanced over positions. Subjects are the most popular
entities that give enough rows (a small model meets them often), and the metadata says
which popularity band that was. Wrong choices are drawn from the answer's prior: how often
each value is the object of the relation asked about, in the whole world (for entity
typing, how many entities each kind has). Gold and wrong answers then come from one
distribution, so a model that knows only which names are frequent, and no fact, scores
about 1/4 on fact recall and relation inference; `metadata[task]["prior_guess"]` is each
task's exact floor for such a guess (above 1/4 for typing, where "person" is most golds).
(Drawing wrong entities by their popularity instead makes them far more frequent than the
gold: a frequency-only guess then scores well below chance, and continual training that
forgets that bias looks like negative forgetting.)
"""

from __future__ import annotations

import math
import random
from collections import Counter

from kentropy.errors import KentropyError
from kentropy.lab.text.world import World

CHOICES = 4
TASKS = ("fact_recall", "attribute_recall", "relation_inference", "plausible_continuation", "entity_typing")
DESCRIPTIONS = {
    "fact_recall": "complete a fact of a popular entity: its object among 3 entities of the same kind",
    "attribute_recall": "complete a fact whose object is a word or a number (a profession, a year) among 3 other values",
    "relation_inference": "two hops: 'The founder of C was born in' -> the founder's birthplace among 3 others",
    "plausible_continuation": "a sentence of two true facts of an entity vs 3 copies with one fact made false",
    "entity_typing": "'X is a' -> the noun of X's kind among 3 other kinds' nouns",
}


# the metric D uses per task, as OLMo's evaluation does: acc_norm where choices are sentences of
# different lengths (like PIQA and HellaSwag), acc where they are names of one kind (like SciQ)
METRICS = {"fact_recall": "acc", "attribute_recall": "acc", "relation_inference": "acc", "plausible_continuation": "acc_norm",
           "entity_typing": "acc"}


class TaskSet(dict):
    """Task name -> rows `{"query", "choices", "gold"}` (a plain dict of lists, as JSON).

    `metadata[task]`: how its rows were made (choices, popularity band, relations used).
    `sources[task][i]`: the facts behind row i, for checking against the world:
    `{"subject": id, "path": [relations...], "values": [one per choice]}` (following `path`
    from the subject gives the gold value), or for plausible_continuation
    `{"subject": id, "facts": [[(relation, value), ...] per choice]}`.
    """

    def __init__(self, rows: dict[str, list[dict]], metadata: dict[str, dict], sources: dict[str, list[dict]]):
        super().__init__(rows)
        self.metadata = metadata
        self.sources = sources


def make_tasks(world: World, n_per_task: int, seed: int) -> TaskSet:
    """`n_per_task` rows of each task in TASKS, or every row the world gives where that is fewer (entity typing
    has one per entity): `metadata[task]["rows"]` says how many. The same for the same arguments."""
    if not isinstance(n_per_task, int) or n_per_task < 1:
        raise KentropyError(f"n_per_task must be a positive integer, got {n_per_task!r}")
    rng = random.Random(f"tasks/{seed}")
    rows, metadata, sources = {}, {}, {}
    for task, make in _MAKERS.items():
        items, band = _popular_items(world, _CANDIDATES[task](world, rng), n_per_task, task, rng)
        golds = [i % CHOICES for i in range(len(items))]
        rng.shuffle(golds)
        made = [make(world, rng, item, gold) for item, gold in zip(items, golds)]
        rows[task] = [row for row, _ in made]
        sources[task] = [src for _, src in made]
        metadata[task] = {
            "description": DESCRIPTIONS[task], "choices": CHOICES, "rows": len(items),
            "all_the_world_gives": len(items) < n_per_task,
            "popularity_band": band, "relations": dict(Counter("/".join(_path(s)) for s in sources[task])),
            "prior_guess": round(prior_guess(world, rows[task], sources[task]), 4),
            "row_ranks": [world.rank[src["subject"]] for src in sources[task]],
            "row_prior_guess": row_prior_guess(world, rows[task], sources[task]),
        }
    return TaskSet(rows, metadata, sources)


def row_prior_guess(world: World, rows: list[dict], sources: list[dict]) -> list[float]:
    """Per row, the expected score of a guess that knows no fact, only the answer priors (`World.object_counts`): it
    picks the choice whose values are likeliest, sum of log prior over the choice's facts, ties split evenly
    (1 / ties where the gold is among them, else 0)."""
    out = []
    for row, src in zip(rows, sources):
        if "facts" in src:
            scores = [sum(_log_prior(world, r, v) for r, v in facts) for facts in src["facts"]]
        else:
            scores = [_log_prior(world, src["path"][-1], v) for v in src["values"]]
        ties = [i for i, x in enumerate(scores) if x == max(scores)]
        out.append((row["gold"] in ties) / len(ties))
    return out


def prior_guess(world: World, rows: list[dict], sources: list[dict]) -> float:
    """The expected accuracy of that guess over a task's rows (`row_prior_guess`): the floor a model's score is read
    against (it is 1/4 where gold and wrong values are exchangeable; above where one value is most of the golds,
    like the noun "person" in entity typing)."""
    return sum(row_prior_guess(world, rows, sources)) / len(rows)


def downstream_floor(metadata: dict) -> dict:
    """From `TaskSet.metadata` (as the world stage stores it): `rows_per_task` (entity typing cannot give more
    than one per entity) and `prior_guess_D`, the D of a guess that knows the answer priors and no fact (the
    mean of each task's `prior_guess`): the floor a model's D is read against."""
    return {"rows_per_task": {t: m["rows"] for t, m in metadata.items()},
            "prior_guess_D": sum(m["prior_guess"] for m in metadata.values()) / len(metadata)}


def _log_prior(world: World, relation: str, text: str) -> float:
    value = world.index[text] if world.schema.relations[relation].object else text
    return math.log(world.object_counts[relation][value])


def _path(source: dict) -> list[str]:
    return source.get("path") or [r for r, _ in source["facts"][0]]


def _popular_items(world: World, candidates: dict[int, list], n: int, task: str, rng: random.Random):
    """n items of the most popular subjects that give at least n (all of them where the world gives fewer), and
    the popularity band they come from."""
    pool: list = []
    band: list[int] = []
    for e in sorted(candidates, key=lambda e: world.rank[e]):
        pool += candidates[e]
        band.append(e)
        if len(pool) >= n:
            break
    if not pool:
        raise KentropyError(f"the world gives no {task} rows")
    return rng.sample(pool, min(n, len(pool))), {
        "ranks": [1, world.rank[band[-1]]], "of_entities": len(world), "subjects": len(band),
        "document_share": round(sum(world.popularity[e] for e in band), 4),
        "note": "subjects are the most popular entities (rank 1 = most documents) that give enough rows",
    }


def _distractors(world: World, rng: random.Random, relation: str, avoid: set, k: int = CHOICES - 1) -> list:
    """k distinct values, none in `avoid`, drawn by the answer prior of `relation` (`World.object_counts`)."""
    prior = world.object_counts[relation]
    pool = sorted(v for v in prior if v not in avoid)
    if len(pool) < k:
        raise KentropyError(f"world has too few objects of relation {relation!r} for {k} wrong choices")
    weights = [prior[v] for v in pool]
    out: list = []
    while len(out) < k:
        v = rng.choices(pool, weights)[0]
        if v not in out:
            out.append(v)
    return out


def _place(gold_value: str, others: list[str], gold: int) -> list[str]:
    return others[:gold] + [gold_value] + others[gold:]


def _stem(template: str) -> str:
    """A predicate cut before its object: "was born in {o}" -> "was born in"."""
    if not template.endswith(" {o}"):
        raise ValueError(f"template {template!r} does not end with its object")
    return template[: -len(" {o}")]


def _entity_relations(world: World) -> list[str]:
    """Relations between entities with enough distinct objects for the wrong choices (the subject excluded)."""
    return [r.name for r in world.schema.relations.values()
            if r.object is not None and len(world.object_counts[r.name]) > CHOICES]


# --- fact recall -------------------------------------------------------------------------------


def _recall_candidates(world: World, rng: random.Random) -> dict[int, list]:
    rels = _entity_relations(world)
    out: dict[int, list] = {}
    for r in rels:
        for s in world.facts[r]:
            out.setdefault(s, []).append((s, [r]))
    return out


def _recall(world: World, rng: random.Random, item, gold: int):
    s, path = item
    rel = world.schema.relations[path[0]]
    o = world.facts[path[0]][s]
    others = _distractors(world, rng, path[0], {o, s})
    values = _place(world.names[o], [world.names[x] for x in others], gold)  # type: ignore[index]
    row = {"query": f"{world.names[s]} {_stem(rel.vp[0])}", "choices": values, "gold": gold}
    return row, {"subject": s, "path": path, "values": values}


# --- attribute recall ---------------------------------------------------------------------------


def _attribute_templates(world: World) -> dict[str, str]:
    """Literal relations (but "is_a", typing's) with enough values for the wrong choices -> the first template that
    ends with its object and whose stem fact recall does not ask ("was born in the year", not "was born in")."""
    asked = {_stem(world.schema.relations[r].vp[0]) for r in _entity_relations(world)}
    out = {}
    for r in world.schema.relations.values():
        if r.object is None and r.name != "is_a" and len(world.object_counts[r.name]) >= CHOICES:
            vp = next((v for v in r.vp if v.endswith(" {o}") and _stem(v) not in asked), None)
            if vp is not None:
                out[r.name] = vp
    return out


def _attribute_candidates(world: World, rng: random.Random) -> dict[int, list]:
    """(subject, [relation], the question's stem) per literal fact of `_attribute_templates`' relations."""
    out: dict[int, list] = {}
    for r, vp in _attribute_templates(world).items():
        for s in world.facts[r]:
            out.setdefault(s, []).append((s, [r], _stem(vp)))
    return out


def _attribute(world: World, rng: random.Random, item, gold: int):
    s, path, stem = item
    value = world.facts[path[0]][s]
    values = _place(value, _distractors(world, rng, path[0], {value}), gold)  # type: ignore[arg-type]
    row = {"query": f"{world.names[s]} {stem}", "choices": values, "gold": gold}
    return row, {"subject": s, "path": path, "values": values}


# --- relation inference (two hops) --------------------------------------------------------------


def _two_hop_paths(world: World) -> list[tuple[str, str]]:
    """(r1, r2): r1 names its object by a role ("the founder of"), r2 continues from that object."""
    rels = world.schema.relations
    ends = set(_entity_relations(world))
    return [(a.name, b) for a in rels.values() if a.role and a.object for b in sorted(ends)
            if a.object in rels[b].subjects and b != a.name]


def _inference_candidates(world: World, rng: random.Random) -> dict[int, list]:
    out: dict[int, list] = {}
    for r1, r2 in _two_hop_paths(world):
        for s, mid in world.facts[r1].items():
            end = world.facts[r2].get(mid)  # type: ignore[arg-type]
            if end is not None and end != s:  # "the capital of X is located in X" says nothing
                out.setdefault(s, []).append((s, [r1, r2]))
    return out


def _inference(world: World, rng: random.Random, item, gold: int):
    s, (r1, r2) = item
    end = world.facts[r2][world.facts[r1][s]]  # type: ignore[index]
    second = world.schema.relations[r2]
    others = _distractors(world, rng, r2, {end, s})
    values = _place(world.names[end], [world.names[x] for x in others], gold)  # type: ignore[index]
    query = f"The {world.schema.relations[r1].role} of {world.names[s]} {_stem(second.vp[0])}"
    return {"query": query, "choices": values, "gold": gold}, {"subject": s, "path": [r1, r2], "values": values}


# --- plausible continuation ---------------------------------------------------------------------


def _corruptible(world: World, rel: str) -> bool:
    """A fact that can be made false with another object of its relation (one that is not the subject)."""
    return rel != "is_a" and len(world.object_counts[rel]) >= 3


def _continuation_candidates(world: World, rng: random.Random) -> dict[int, list]:
    """Per subject, its corruptible relations shuffled and paired: no fact in two rows of a subject."""
    out: dict[int, list] = {}
    for s in range(len(world)):
        rels = sorted(r for r in world.own[s] if _corruptible(world, r))
        rng.shuffle(rels)
        if len(rels) >= 2:
            out[s] = [(s, rels[i:i + 2]) for i in range(0, len(rels) - 1, 2)]
    return out


def _wrong_value(world: World, rng: random.Random, s: int, rel: str) -> int | str:
    """Another object of `rel` than the true one, drawn by the relation's answer prior."""
    return _distractors(world, rng, rel, {world.facts[rel][s], s}, k=1)[0]


def _continuation(world: World, rng: random.Random, item, gold: int):
    s, rels = item
    vps = [rng.choice(world.schema.relations[r].vp) for r in rels]

    def sentence(values) -> str:
        return " and ".join(vp.format(o=world.text(v)) for vp, v in zip(vps, values)) + "."

    true = [world.facts[r][s] for r in rels]
    choices, facts = [sentence(true)], [list(zip(rels, true))]
    while len(choices) < CHOICES:
        values = list(true)
        i = rng.randrange(len(rels))
        values[i] = _wrong_value(world, rng, s, rels[i])
        text = sentence(values)
        if text not in choices:
            choices.append(text)
            facts.append(list(zip(rels, values)))
    order = _place(0, list(range(1, CHOICES)), gold)  # type: ignore[arg-type]
    row = {"query": world.names[s], "choices": [choices[i] for i in order], "gold": gold}
    return row, {"subject": s, "facts": [[(r, world.text(v)) for r, v in facts[i]] for i in order]}


# --- entity typing ------------------------------------------------------------------------------


def _typing_candidates(world: World, rng: random.Random) -> dict[int, list]:
    return {e: [(e, ["is_a"])] for e in range(len(world))}


def _typing(world: World, rng: random.Random, item, gold: int):
    s, path = item
    noun = world.facts["is_a"][s]
    values = _place(noun, _distractors(world, rng, "is_a", {noun}), gold)  # type: ignore[arg-type]
    return {"query": f"{world.names[s]} is a", "choices": values, "gold": gold}, {"subject": s, "path": path, "values": values}


_CANDIDATES = {"fact_recall": _recall_candidates, "attribute_recall": _attribute_candidates,
               "relation_inference": _inference_candidates, "plausible_continuation": _continuation_candidates,
               "entity_typing": _typing_candidates}
_MAKERS = {"fact_recall": _recall, "attribute_recall": _attribute, "relation_inference": _inference,
           "plausible_continuation": _continuation, "entity_typing": _typing}
