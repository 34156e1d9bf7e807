"""Text from a world: an endless stream of fresh documents, and the two continual-learning corpora.

    docs = stream_documents(world, seed=1)                 # encyclopedia articles, endless
    c4 = stream_documents(world, seed=2, kind="near")      # news, reviews, forum posts, lists (C4 stand-in)
    pubmed = new_domain_documents(seed=3, n_docs=500, domain_seed=0)  # a biomedical world of its own

A document is about one entity drawn by popularity and states some of its facts, then facts
of its neighbours (breadth first through the relations), each through one of many
templates (several predicates and whole-sentence shapes per relation, coordination,
relative clauses, pronouns, connectives). Documents are one line each, 80-300 words. The
same seed gives the same stream; another seed gives other sentences about the same facts,
so pretraining can be single-pass: facts repeat, sentences do not. `stream_rendered` also
returns, for each document, the (subject, relation, object) triples its text states.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass
from itertools import islice
from typing import Iterable, Iterator

from kentropy.errors import KentropyError
from kentropy.lab.text.new_domain import build_new_domain
from kentropy.lab.text.world import Triple, World

MIN_WORDS, MAX_WORDS = 80, 300
KINDS = ("world", "near")  # encyclopedia articles; web genres close to them
GENRES = ("news", "review", "forum", "list")
NEIGHBOURS = 8  # neighbours visited per entity: enough for 300 words, few enough to stay on topic


@dataclass
class Document:
    """A rendered document and what it states."""

    text: str
    entity: int  # the id of the entity it is about (drawn by popularity)
    genre: str  # "article" or one of GENRES
    facts: list[Triple]  # every fact the text states


def stream_rendered(world: World, seed: int, *, kind: str = "world") -> Iterator[Document]:
    """Endless `Document`s about entities drawn by popularity. kind: "world" (articles) or "near" (web genres)."""
    if kind not in KINDS:
        raise KentropyError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    return _stream(world, random.Random(f"{world.schema.name}/{kind}/{seed}"), kind)


def _stream(world: World, rng: random.Random, kind: str) -> Iterator[Document]:
    while True:
        e = world.sample(rng)
        target = rng.randint(MIN_WORDS, MAX_WORDS)
        if kind == "world":
            yield _article(world, rng, e, target)
        else:
            yield _GENRE_WRITERS[rng.choice(GENRES)](world, rng, e, target)


def stream_documents(world: World, seed: int, *, kind: str = "world") -> Iterator[str]:
    """Endless document texts (one line each); see `stream_rendered`."""
    return (d.text for d in stream_rendered(world, seed, kind=kind))


def new_domain_documents(seed: int, n_docs: int, *, domain_seed: int, n_entities: int = 600) -> list[str]:
    """The PubMed stand-in: `n_docs` articles of a biomedical world (`build_new_domain(n_entities, domain_seed)`)."""
    _check_count(n_docs)
    return list(islice(stream_documents(build_new_domain(n_entities, domain_seed), seed), n_docs))


def _check_count(n_docs: int) -> None:
    if not isinstance(n_docs, int) or n_docs < 1:
        raise KentropyError(f"n_docs must be a positive integer, got {n_docs!r}")


# --- sentences --------------------------------------------------------------------------------


def _subject(world: World, e: int, ref: str) -> str:
    if ref == "pronoun":
        return world.pronouns[e]
    if ref == "noun":
        return "the " + world.schema.nouns[world.kinds[e]]
    return world.names[e]


def _predicate(world: World, rng: random.Random, e: int, rel: str) -> str:
    return rng.choice(world.schema.relations[rel].vp).format(o=world.text(world.facts[rel][e]))


def _capital(text: str) -> str:
    return text[0].upper() + text[1:]


def _say(world: World, rng: random.Random, e: int, rels: list[str], ref: str) -> tuple[str, list[Triple]]:
    """One sentence stating the facts `rels` (one or two) of entity `e`, referred to as `ref`."""
    name = world.names[e]
    triples = [(name, r, world.text(world.facts[r][e])) for r in rels]
    subject = _subject(world, e, ref)
    if len(rels) == 1:
        relation = world.schema.relations[rels[0]]
        if ref == "name" and rng.random() < 0.35:
            return rng.choice(relation.full).format(s=name, o=triples[0][2]), triples
        body = f"{subject} {_predicate(world, rng, e, rels[0])}"
    elif ref != "pronoun" and rng.random() < 0.5:
        who = "who" if world.kinds[e] in world.schema.people else "which"
        body = f"{subject}, {who} {_predicate(world, rng, e, rels[0])}, {_predicate(world, rng, e, rels[1])}"
    else:
        body = f"{subject} {_predicate(world, rng, e, rels[0])} and {_predicate(world, rng, e, rels[1])}"
    if rng.random() < 0.2:
        opener = rng.choice(world.schema.connectives)
        return f"{opener}{'' if opener.endswith('that') else ','} {body}.", triples
    return _capital(body) + ".", triples


def _groups(rng: random.Random, rels: list[str]) -> Iterator[list[str]]:
    """Split facts into sentences of one or two."""
    i = 0
    while i < len(rels):
        k = 2 if i + 1 < len(rels) and rng.random() < 0.45 else 1
        yield rels[i:i + k]
        i += k


def _neighbours(world: World, rng: random.Random, e: int, seen: set[int]) -> list[tuple[int, int, str, int]]:
    """Up to NEIGHBOURS (neighbour, subject, relation, e) links of e to unseen entities, in random order."""
    links = [(o, e, r, e) for r in world.own[e] if isinstance(o := world.facts[r][e], int) and o not in seen]
    links += [(s, s, r, e) for s, r in world.incoming[e] if s not in seen]
    return rng.sample(links, min(NEIGHBOURS, len(links)))


def _sentences(world: World, rng: random.Random, e: int) -> Iterator[tuple[str, list[Triple]]]:
    """Sentences about e (what it is first), then about its neighbours, breadth first, no fact twice.

    Should the neighbourhood run dry (a small world, an entity few others point to), the
    tour goes on from another entity drawn by popularity, like a "see also" section.
    """
    said: set[tuple[int, str]] = set()
    seen: set[int] = set()
    last = -1  # the subject of the previous sentence: a pronoun may refer to it

    def about(x: int, rels: list[str], mentioned: bool):
        nonlocal last
        for group in _groups(rng, rels):
            ref = "name"
            if mentioned and last == x:
                u = rng.random()
                if u < 0.4:
                    ref = "pronoun"
                elif u < 0.6 and world.kinds[x] not in world.schema.people and "is_a" not in group:
                    ref = "noun"  # "the city" (never "the city is a city")
            said.update((x, r) for r in group)
            last = x
            mentioned = True
            yield _say(world, rng, x, group, ref)

    def tour(root: int):
        nonlocal last
        seen.add(root)
        rels = [r for r in world.own[root] if r != "is_a"]
        rng.shuffle(rels)
        yield from about(root, ["is_a"] + rels, False)
        queue = deque(_neighbours(world, rng, root, seen))
        while queue:
            n, s, rel, via = queue.popleft()
            if n in seen:
                continue
            seen.add(n)
            rest = [r for r in world.own[n] if (n, r) not in said and not (s == n and r == rel)]
            rng.shuffle(rest)
            rest = rest[:rng.randint(1, 3)]
            role = world.schema.relations[rel].role
            if s == n:  # n --rel--> via: the link is n's first fact
                if (n, rel) not in said:
                    rest = [rel] + rest[:2]
                yield from about(n, rest, False)
            elif role and rest and rng.random() < 0.7:  # via --rel--> n: "The founder of C, P, was born in X."
                said.update({(via, rel), (n, rest[0])})
                last = n
                obj = world.text(world.facts[rest[0]][n])
                text = f"The {role} of {world.names[via]}, {world.names[n]}, {_predicate(world, rng, n, rest[0])}."
                yield text, [(world.names[via], rel, world.names[n]), (world.names[n], rest[0], obj)]
                yield from about(n, rest[1:], True)
            else:
                if (via, rel) not in said:
                    yield from about(via, [rel], True)
                yield from about(n, rest, False)
            queue.extend(_neighbours(world, rng, n, seen))

    yield from tour(e)
    for _ in range(len(world)):
        x = world.sample(rng)
        if x not in seen:
            yield from tour(x)


class _Page:
    """Sentences gathered up to a word target, never past MAX_WORDS."""

    def __init__(self, target: int):
        self.parts: list[str] = []
        self.facts: list[Triple] = []
        self.words = 0
        self.target = target

    def fits(self, text: str) -> bool:
        return self.words + text.count(" ") + 1 <= MAX_WORDS

    def add(self, text: str, facts: Iterable[Triple] = ()) -> None:
        self.parts.append(text)
        self.facts.extend(facts)
        self.words += text.count(" ") + 1

    @property
    def full(self) -> bool:
        return self.words >= self.target

    def document(self, e: int, genre: str) -> Document:
        return Document(" ".join(self.parts), e, genre, self.facts)


def _article(world: World, rng: random.Random, e: int, target: int) -> Document:
    page = _Page(target)
    for text, facts in _sentences(world, rng, e):
        if not page.fits(text):
            break
        page.add(text, facts)
        if page.full:
            break
    return page.document(e, "article")


# --- web genres (the near domain) ---------------------------------------------------------------
# Fillers state no fact and name no entity but the document's own ({s}), so every fact a
# document states is among its triples.

_NEWS = (
    ("Local news: {s} in the spotlight.", "This week, {s} made headlines again.",
     "Update on {s}, as reported by our correspondents.", "Our weekly feature looks at {s}."),
    ('"We are proud of this history," a spokesperson said.', "Residents say interest has grown over the past month.",
     "Officials declined to comment further.", "Our reporter spent a weekend finding out more.",
     "More details are expected later this week.", "Readers have written in with questions about {s}."),
    ("Stay with us for further updates.", "This story will be updated.", "Send us your tips and photos."),
)
_REVIEW = (
    ("Review: {s}.", "My honest review of {s}.", "I finally got to know {s}, and here is my review.",
     "Everyone keeps asking me about {s}, so here goes."),
    ("I would recommend it to anyone.", "Honestly, it exceeded my expectations.",
     "Not everything was perfect, but I enjoyed it.", "My friends disagree with me on this one.",
     "I went in with low expectations.", "Worth every minute, in my opinion."),
    ("Rating: {k} out of 5.", "My score: {k} out of 5.", "Final verdict: {k} stars out of 5."),
)
_FORUM = (
    ("Thread: what do you all know about {s}?", "Question for the forum: can anyone tell me about {s}?",
     "New member here. I keep hearing about {s}. Any facts?", "Quick question about {s}, sorry if this is a repost."),
    ("Reply: good question.", "Thanks, that helps a lot.", "Correct, I checked this myself.",
     "Great thread, bookmarked.", "Same question here.", "Source: an old encyclopedia on my shelf."),
    ("Thanks everyone, thread closed.", "Marking this as answered.", "Thanks all!"),
)


def _genre(fillers: tuple, genre: str, reply: str = ""):
    openers, middles, closers = fillers

    def write(world: World, rng: random.Random, e: int, target: int) -> Document:
        name = world.names[e]
        page = _Page(target)
        page.add(rng.choice(openers).format(s=name))
        for text, facts in _sentences(world, rng, e):
            if reply and rng.random() < 0.5:
                text = f"{reply} {text}"
            if not page.fits(text):
                break
            page.add(text, facts)
            if page.full:
                break
            if rng.random() < 0.3:
                filler = rng.choice(middles).format(s=name)
                if page.fits(filler):
                    page.add(filler)
        closer = rng.choice(closers).format(k=rng.randint(1, 5))
        if page.fits(closer):
            page.add(closer)
        return page.document(e, genre)

    return write


def _listing(world: World, rng: random.Random, e: int, target: int) -> Document:
    """A list: the entities sharing e as object ("Cities in X: A, B and C."), then numbered facts."""
    page = _Page(target)
    by_rel: dict[str, list[int]] = {}
    for s, r in world.incoming[e]:
        if world.schema.relations[r].listing:
            by_rel.setdefault(r, []).append(s)
    listable = sorted(r for r, ss in by_rel.items() if len(ss) >= 2)
    if listable:
        rel = rng.choice(listable)
        items = rng.sample(by_rel[rel], min(6, len(by_rel[rel])))
        names = [world.names[s] for s in items]
        heading = world.schema.relations[rel].listing.format(o=world.names[e])  # type: ignore[union-attr]
        page.add(f"{_capital(heading)}: {', '.join(names[:-1])} and {names[-1]}.",
                 [(n, rel, world.names[e]) for n in names])
    else:
        page.add(f"Things to know about {world.names[e]}.")
    for i, (text, facts) in enumerate(_sentences(world, rng, e), 1):
        text = f"{i}. {text}"
        if not page.fits(text):
            break
        page.add(text, facts)
        if page.full:
            break
    return page.document(e, "list")


_GENRE_WRITERS = {
    "news": _genre(_NEWS, "news"),
    "review": _genre(_REVIEW, "review"),
    "forum": _genre(_FORUM, "forum", reply="Reply:"),
    "list": _listing,
}
