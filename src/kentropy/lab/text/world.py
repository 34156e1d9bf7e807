"""The generated world: a fictional encyclopedia (the lab's stand-in for Dolma's knowledge).

    world = build_world(n_entities=2000, seed=0)
    world.holds(person, "born_in", city)   # the fact table is the ground truth, never the text
    world.vocabulary()                      # names (and their words) the fictional knowledge must avoid

Entities of eleven kinds (people, cities, countries, rivers, languages, universities,
companies, books, musical instruments, dishes, species) with pronounceable syllable names,
linked by functional relations (each subject has at most one object per relation) whose
facts are mutually consistent: a company is founded after its founder turned 22, a book is
written in its author's language most of the time, a person studies at a university that
existed when they were 18, and so on. Every entity has a Zipf popularity (the share of
documents written about it, `popularity[e]` proportional to rank**-s with s = 1.1 by
default, ranks a random permutation), so that a few entities are met very often and most
rarely, as in web text. The text itself is rendered by `kentropy.lab.text.render`.
"""

from __future__ import annotations

import bisect
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Iterator

from kentropy.errors import KentropyError

Triple = tuple[str, str, str]  # (subject name, relation, object name or literal)

DEFAULT_ZIPF = 1.1  # word/entity frequencies on the web fall off with exponents around 1.0-1.2


@dataclass(frozen=True)
class Relation:
    """How one relation reads. `{s}` is the subject and `{o}` the object in every template.

    `vp` are predicates that follow a subject ("was born in {o}"); `vp[0]` ends with "{o}", so
    that cutting it there gives a task query. `full` are whole sentences naming the subject.
    """

    name: str
    subjects: tuple[str, ...]  # the kinds it starts from
    object: str | None  # the object's kind, or None for a literal (a year, a number, a word)
    vp: tuple[str, ...]
    full: tuple[str, ...]
    role: str | None = None  # "the {role} of {s}" names the object: founder, author, ...
    listing: str | None = None  # a heading for the subjects that share one object: "people born in {o}"


@dataclass(frozen=True)
class Schema:
    """What a domain's entities are called and how its relations read."""

    name: str
    nouns: dict[str, str]  # kind -> the noun that says what an entity is ("musical instrument")
    relations: dict[str, Relation]  # includes "is_a" (object: the kind's noun)
    connectives: tuple[str, ...]  # sentence openers ("Moreover")
    people: frozenset[str]  # kinds referred to with he/she and "who"

    def words(self) -> set[str]:
        """Every lower-cased word in the schema's templates (names must not be one of them)."""
        text = " ".join(
            [*self.nouns.values(), *self.connectives]
            + [t for r in self.relations.values() for t in (*r.vp, *r.full, r.role or "", r.listing or "")]
        )
        return set(re.findall(r"[a-z]+", text.replace("{s}", " ").replace("{o}", " ").lower()))


@dataclass
class World:
    """Entities, their facts and their popularity. Entity ids index the lists.

    `facts[relation][subject_id]` is an entity id (int) for relations between entities and a
    string for literals; `facts["is_a"][e]` is the noun of e's kind.
    """

    schema: Schema = field(compare=False, repr=False)
    seed: int
    zipf_exponent: float
    names: list[str]
    kinds: list[str]
    pronouns: list[str]  # "he" / "she" for people, "it" otherwise
    popularity: list[float]  # share of documents about each entity; sums to 1
    facts: dict[str, dict[int, int | str]]
    index: dict[str, int] = field(init=False, repr=False, compare=False)
    rank: list[int] = field(init=False, repr=False, compare=False)  # 1 = most popular
    own: list[list[str]] = field(init=False, repr=False, compare=False)  # relations each entity has a fact for
    incoming: list[list[tuple[int, str]]] = field(init=False, repr=False, compare=False)  # (subject, relation) -> e
    by_kind: dict[str, list[int]] = field(init=False, repr=False, compare=False)
    values: dict[str, list[str]] = field(init=False, repr=False, compare=False)  # a literal relation's values
    object_counts: dict[str, Counter] = field(init=False, repr=False, compare=False)  # relation -> object -> subjects
    _cumulative: list[float] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        n = len(self.names)
        self.index = {name: e for e, name in enumerate(self.names)}
        order = sorted(range(n), key=lambda e: -self.popularity[e])
        self.rank = [0] * n
        for r, e in enumerate(order, 1):
            self.rank[e] = r
        self.own = [[] for _ in range(n)]
        self.incoming = [[] for _ in range(n)]
        self.values = {}
        self.object_counts = {rel: Counter(table.values()) for rel, table in self.facts.items()}
        for rel, table in self.facts.items():
            for s, o in table.items():
                self.own[s].append(rel)
                if isinstance(o, int):
                    self.incoming[o].append((s, rel))
            if self.schema.relations[rel].object is None:
                self.values[rel] = sorted({o for o in table.values()})  # type: ignore[misc]
        self.by_kind = {k: [] for k in self.schema.nouns}
        for e, k in enumerate(self.kinds):
            self.by_kind[k].append(e)
        self._cumulative = list(accumulate(self.popularity))

    def __len__(self) -> int:
        return len(self.names)

    def value(self, e: int, relation: str) -> int | str | None:
        """The object of `relation` for entity id `e` (an id or a literal), or None."""
        return self.facts.get(relation, {}).get(e)

    def text(self, obj: int | str) -> str:
        """An object as it is written: an entity's name or the literal itself."""
        return self.names[obj] if isinstance(obj, int) else obj

    def holds(self, subject: str, relation: str, obj: str) -> bool:
        """Whether (subject, relation, obj) is a fact of the world (names and literals as written)."""
        e = self.index.get(subject)
        o = None if e is None else self.value(e, relation)
        return o is not None and self.text(o) == obj

    def triples(self) -> Iterator[Triple]:
        """Every fact as (subject name, relation, object as written)."""
        for rel, table in self.facts.items():
            for s, o in table.items():
                yield self.names[s], rel, self.text(o)

    def vocabulary(self) -> set[str]:
        """Every entity name and every word used in names (fictional knowledge keeps out of these)."""
        words = set(self.names)
        for name in self.names:
            words.update(name.split())
        return words

    def sample(self, rng: random.Random) -> int:
        """An entity id drawn by popularity."""
        return min(bisect.bisect_right(self._cumulative, rng.random() * self._cumulative[-1]), len(self.names) - 1)

    def summary(self) -> dict:
        """Counts for a report: entities per kind, facts per relation, the popularity law."""
        return {
            "domain": self.schema.name, "seed": self.seed, "entities": len(self.names),
            "kinds": {k: len(v) for k, v in self.by_kind.items()},
            "facts": {r: len(t) for r, t in self.facts.items()},
            "zipf_exponent": self.zipf_exponent,
        }


# --- names -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sounds:
    """A syllable inventory: a name is onset-vowel syllables, a coda on the last one, then a suffix."""

    onsets: tuple[str, ...]
    vowels: tuple[str, ...]
    codas: tuple[str, ...]
    syllables: tuple[int, ...]  # choices for the number of syllables
    must_contain: str = ""  # a name needs one of these letters (keeps one domain's names out of another's)
    max_len: int = 12


WORLD_SOUNDS = Sounds(
    onsets=("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z") * 4 + ("br", "dr", "gr", "kr", "tr", "st"),
    vowels=("a", "e", "i", "o", "u"),
    codas=("", "", "", "n", "l", "r", "s"),
    syllables=(2, 2, 3),
)
_VOWELS = set("aeiouy")


def pronounceable(word: str, max_len: int = 12) -> bool:
    """Letters only, 3..max_len long, capitalized, no 3 consonants or 3 vowels in a row."""
    if not (word.isalpha() and word[:1].isupper() and 3 <= len(word) <= max_len):
        return False
    run, last = 0, None
    for ch in word.lower():
        v = ch in _VOWELS
        run = run + 1 if v == last else 1
        last = v
        if run >= 3:
            return False
    return True


def make_names(rng: random.Random, sounds: Sounds, count: int, taken: set[str], suffixes: tuple[str, ...] = ("",)) -> list[str]:
    """`count` new pronounceable names, none lower-cased in `taken` (which grows with them)."""
    out = []
    tries = 0
    while len(out) < count:
        tries += 1
        if tries > 200 * count + 1000:
            raise KentropyError(f"cannot make {count} distinct names from this syllable inventory")
        k = rng.choice(sounds.syllables)
        parts = []
        for i in range(k):
            onset = "" if i == 0 and rng.random() < 0.2 else rng.choice(sounds.onsets)
            parts.append(onset + rng.choice(sounds.vowels) + (rng.choice(sounds.codas) if i == k - 1 else ""))
        name = ("".join(parts) + rng.choice(suffixes)).capitalize()
        key = name.lower()
        if key in taken or not pronounceable(name, sounds.max_len):
            continue
        if sounds.must_contain and not any(c in key for c in sounds.must_contain):
            continue
        taken.add(key)
        out.append(name)
    return out


def zipf_popularity(rng: random.Random, n: int, exponent: float) -> list[float]:
    """Share of documents per entity: rank**-exponent normalized, ranks a random permutation."""
    ranks = list(range(1, n + 1))
    rng.shuffle(ranks)
    w = [r ** -exponent for r in ranks]
    total = sum(w)
    return [x / total for x in w]


# --- the encyclopedia ------------------------------------------------------------------------

PERSON, CITY, COUNTRY, RIVER, LANGUAGE, UNIVERSITY = "person", "city", "country", "river", "language", "university"
COMPANY, BOOK, INSTRUMENT, DISH, SPECIES = "company", "book", "instrument", "dish", "species"

# share of entities per kind; people take what is left after rounding
SHARES = {CITY: 0.14, COUNTRY: 0.025, RIVER: 0.04, LANGUAGE: 0.02, UNIVERSITY: 0.05, COMPANY: 0.10,
          BOOK: 0.14, INSTRUMENT: 0.025, DISH: 0.06, SPECIES: 0.08}
MIN_PER_KIND = 4  # tasks need a gold answer and 3 distractors of one kind
MIN_ENTITIES = 100

PROFESSIONS = ("painter", "sculptor", "poet", "physician", "merchant", "banker", "composer", "chemist", "teacher",
               "soldier", "lawyer", "farmer", "sailor", "builder", "judge", "novelist", "surveyor", "jeweler",
               "weaver", "potter", "mathematician", "historian", "botanist", "navigator")
INDUSTRIES = ("shipping", "textiles", "mining", "banking", "brewing", "printing", "glassmaking", "timber",
              "insurance", "railways", "ceramics", "perfume", "clockmaking", "salt", "papermaking")
GENRES = ("mystery", "romance", "history", "philosophy", "adventure", "poetry", "satire", "tragedy", "comedy")
FAMILIES = ("string", "wind", "brass", "percussion", "keyboard")
FLAVOURS = ("sweet", "sour", "salty", "bitter", "spicy", "smoky", "mild", "tangy")
COLOURS = ("red", "blue", "green", "yellow", "brown", "grey", "white", "black", "purple", "silver", "golden")
CLASSES = ("bird", "fish", "beetle", "mammal", "lizard", "tree", "flower", "fungus", "snake", "moth")


def _r(name, subjects, obj, vp, full, role=None, listing=None) -> Relation:
    return Relation(name, tuple(subjects) if isinstance(subjects, tuple) else (subjects,), obj, tuple(vp), tuple(full), role, listing)


_NOUNS = {PERSON: "person", CITY: "city", COUNTRY: "country", RIVER: "river", LANGUAGE: "language",
          UNIVERSITY: "university", COMPANY: "company", BOOK: "book", INSTRUMENT: "musical instrument",
          DISH: "dish", SPECIES: "species"}  # all take "a": the typing task asks "X is a"

_RELATIONS = [
    _r("is_a", tuple(_NOUNS), None, ["is a {o}", "is the name of a {o}"], ["{s} is a {o}.", "{s} is the name of a {o}."]),
    _r("born_in", PERSON, CITY,
       ["was born in {o}", "was born in the city of {o}", "came from {o}", "was a native of {o}"],
       ["{o} is the birthplace of {s}.", "The birthplace of {s} was {o}.", "In {o}, {s} was born."],
       role="birthplace", listing="people born in {o}"),
    _r("birth_year", PERSON, None,
       ["was born in {o}", "was born in the year {o}", "came into the world in {o}"],
       ["The year {o} saw the birth of {s}.", "{s} was born in the year {o}."]),
    _r("profession", PERSON, None,
       ["worked as a {o}", "was a {o} by profession", "made a living as a {o}", "was a {o}"],
       ["By profession, {s} was a {o}.", "{s} earned a living as a {o}."]),
    _r("studied_at", PERSON, UNIVERSITY,
       ["studied at {o}", "was educated at {o}", "attended {o}", "was a student at {o}"],
       ["Among the students of {o} was {s}.", "At {o}, {s} was a student."],
       role="alma mater", listing="people who studied at {o}"),
    _r("works_for", PERSON, COMPANY,
       ["worked for {o}", "was employed by {o}", "held a position at {o}", "spent years working at {o}"],
       ["{o} employed {s}.", "Among the employees of {o} was {s}."],
       role="employer", listing="people who worked for {o}"),
    _r("married_to", PERSON, PERSON,
       ["was married to {o}", "married {o}", "was the spouse of {o}", "was wed to {o}"],
       ["{s} and {o} were married.", "The spouse of {s} was {o}."], role="spouse"),
    _r("plays", PERSON, INSTRUMENT,
       ["played the {o}", "was a player of the {o}", "performed on the {o}", "was known for playing the {o}"],
       ["The {o} was the instrument of {s}.", "{s} was a skilled player of the {o}."],
       listing="people who played the {o}"),
    _r("located_in", CITY, COUNTRY,
       ["is located in {o}", "lies in {o}", "is situated in {o}", "belongs to {o}"],
       ["{s} is one of the cities of {o}.", "In {o} lies the city of {s}."], listing="cities in {o}"),
    _r("population", CITY, None,
       ["has a population of {o}", "is home to {o} people", "has {o} inhabitants", "counts {o} residents"],
       ["{o} people live in {s}.", "The population of {s} is {o}."]),
    _r("founded_year", (CITY, UNIVERSITY, COMPANY), None,
       ["was founded in {o}", "was established in {o}", "dates back to {o}", "has existed since {o}"],
       ["The founding of {s} took place in {o}.", "{s} was first established in {o}."]),
    _r("capital", COUNTRY, CITY,
       ["has its capital at {o}", "is governed from its capital, {o}", "has {o} as its capital",
        "has its seat of government in {o}"],
       ["The capital of {s} is {o}.", "{o} is the capital of {s}."], role="capital"),
    _r("official_language", COUNTRY, LANGUAGE,
       ["has the official language {o}", "has {o} as its official language", "uses {o} as its official language",
        "speaks {o}", "conducts its affairs in {o}"],
       ["The official language of {s} is {o}.", "{o} is the official language of {s}."],
       role="official language", listing="countries where {o} is official"),
    _r("speakers", LANGUAGE, None,
       ["is spoken by {o} million people", "has {o} million speakers", "counts {o} million speakers",
        "is the mother tongue of {o} million people"],
       ["{o} million people speak {s}.", "The number of speakers of {s} is {o} million."]),
    _r("flows_through", RIVER, COUNTRY,
       ["flows through {o}", "runs through {o}", "crosses {o}", "winds its way through {o}"],
       ["{s} is a river of {o}.", "The waters of {s} flow through {o}."], listing="rivers of {o}"),
    _r("length_km", RIVER, None,
       ["is {o} kilometres long", "has a length of {o} kilometres", "stretches for {o} kilometres",
        "runs for {o} kilometres"],
       ["The length of {s} is {o} kilometres.", "{s} measures {o} kilometres from source to mouth."]),
    _r("university_in", UNIVERSITY, CITY,
       ["is located in {o}", "stands in {o}", "has its campus in {o}", "is based in {o}"],
       ["{s} has its main campus in {o}.", "The campus of {s} is in {o}."], listing="universities in {o}"),
    _r("students", UNIVERSITY, None,
       ["has {o} students", "enrols {o} students", "teaches {o} students", "counts {o} students"],
       ["{o} students study at {s}.", "The student body of {s} numbers {o}."]),
    _r("founded_by", COMPANY, PERSON,
       ["was founded by {o}", "was started by {o}", "was established by {o}", "owes its founding to {o}"],
       ["{o} founded {s}.", "The founder of {s} was {o}."], role="founder", listing="companies founded by {o}"),
    _r("headquartered_in", COMPANY, CITY,
       ["is headquartered in {o}", "has its headquarters in {o}", "is based in {o}", "runs its business from {o}"],
       ["The headquarters of {s} are in {o}.", "{o} is home to the headquarters of {s}."],
       listing="companies based in {o}"),
    _r("industry", COMPANY, None,
       ["works in the {o} industry", "is active in {o}", "does business in {o}", "operates in the {o} sector"],
       ["The business of {s} is {o}.", "{s} is known for its work in {o}."]),
    _r("written_by", BOOK, PERSON,
       ["was written by {o}", "is a work by {o}", "was authored by {o}", "came from the pen of {o}"],
       ["{o} wrote {s}.", "The author of {s} is {o}."], role="author", listing="books by {o}"),
    _r("written_in", BOOK, LANGUAGE,
       ["is written in {o}", "was composed in {o}", "uses the {o} language", "was originally written in {o}"],
       ["The language of {s} is {o}.", "{s} was first written down in {o}."], listing="books written in {o}"),
    _r("published_year", BOOK, None,
       ["was published in {o}", "first appeared in {o}", "was released in {o}", "came out in {o}"],
       ["The first edition of {s} appeared in {o}.", "{s} was published in the year {o}."]),
    _r("genre", BOOK, None,
       ["is a work of {o}", "belongs to the {o} genre", "is classed as {o}", "is counted among works of {o}"],
       ["The genre of {s} is {o}.", "Critics file {s} under {o}."]),
    _r("invented_by", INSTRUMENT, PERSON,
       ["was invented by {o}", "was first built by {o}", "was devised by {o}", "was created by {o}"],
       ["{o} invented {s}.", "The inventor of {s} was {o}."], role="inventor", listing="instruments invented by {o}"),
    _r("instrument_family", INSTRUMENT, None,
       ["belongs to the {o} family", "is a {o} instrument", "is classed among {o} instruments",
        "is counted with the {o} instruments"],
       ["The {o} family includes {s}.", "{s} is played as a {o} instrument."]),
    _r("originates_from", DISH, COUNTRY,
       ["comes from {o}", "originates from {o}", "is a traditional dish of {o}", "was first cooked in {o}"],
       ["The dish {s} comes from {o}.", "{o} is the home of {s}."], listing="dishes from {o}"),
    _r("made_with", DISH, SPECIES,
       ["is made with {o}", "is prepared with {o}", "uses {o} as its main ingredient", "is cooked with {o}"],
       ["The main ingredient of {s} is {o}.", "{o} is the main ingredient of {s}."],
       role="main ingredient", listing="dishes made with {o}"),
    _r("flavour", DISH, None,
       ["tastes {o}", "has a {o} flavour", "is known for its {o} taste", "is {o} to the taste"],
       ["The taste of {s} is {o}.", "Most people find {s} {o}."]),
    _r("native_to", SPECIES, COUNTRY,
       ["is native to {o}", "lives in the wild in {o}", "is found in {o}", "occurs naturally in {o}"],
       ["The native range of {s} is {o}.", "{o} is home to {s}."], listing="species native to {o}"),
    _r("colour", SPECIES, None,
       ["is {o} in colour", "has a {o} colour", "is mostly {o}", "displays a {o} colouring"],
       ["The colour of {s} is {o}.", "Observers describe {s} as {o}."]),
    _r("species_class", SPECIES, None,
       ["is a kind of {o}", "is classified as a {o}", "is a type of {o}", "is counted as a {o}"],
       ["{s} is a kind of {o}.", "Naturalists classify {s} as a {o}."]),
]

ENCYCLOPEDIA = Schema(
    name="encyclopedia",
    nouns=_NOUNS,
    relations={r.name: r for r in _RELATIONS},
    connectives=("Moreover", "In addition", "Also", "Notably", "As records show", "It is worth noting that"),
    people=frozenset({PERSON}),
)


def kind_counts(n_entities: int, shares: dict[str, float], rest: str) -> dict[str, int]:
    """Entities per kind: each kind its share (at least MIN_PER_KIND), `rest` takes the remainder."""
    counts = {k: max(MIN_PER_KIND, round(s * n_entities)) for k, s in shares.items()}
    counts[rest] = n_entities - sum(counts.values())
    if counts[rest] < MIN_PER_KIND:
        raise KentropyError(f"n_entities {n_entities}: too few for every kind")
    return counts


def check_world_args(n_entities: int, zipf_exponent: float) -> None:
    if not isinstance(n_entities, int) or n_entities < MIN_ENTITIES:
        raise KentropyError(f"n_entities must be an integer >= {MIN_ENTITIES}, got {n_entities!r}")
    if not 0.5 <= zipf_exponent <= 3.0:
        raise KentropyError(f"zipf_exponent must be in [0.5, 3], got {zipf_exponent}")


def build_world(n_entities: int = 2000, seed: int = 0, zipf_exponent: float = DEFAULT_ZIPF) -> World:
    """A fictional encyclopedia of `n_entities` entities, the same for the same arguments."""
    check_world_args(n_entities, zipf_exponent)
    rng = random.Random(seed)
    counts = kind_counts(n_entities, SHARES, PERSON)
    taken = set(ENCYCLOPEDIA.words())
    names: list[str] = []
    kinds: list[str] = []
    for kind in _NOUNS:  # a fixed kind order keeps ids stable
        if kind == PERSON:
            given = make_names(rng, WORLD_SOUNDS, max(20, counts[PERSON] // 4), taken)
            family = make_names(rng, WORLD_SOUNDS, max(20, counts[PERSON] // 2), taken)
            full: set[str] = set()
            while len(full) < counts[PERSON]:
                full.add(f"{rng.choice(given)} {rng.choice(family)}")
            new = sorted(full)
            rng.shuffle(new)
        else:
            new = make_names(rng, WORLD_SOUNDS, counts[kind], taken)
        names += new
        kinds += [kind] * len(new)
    ids: dict[str, list[int]] = {k: [] for k in _NOUNS}
    for e, k in enumerate(kinds):
        ids[k].append(e)
    facts, pronouns = _encyclopedia_facts(rng, ids, len(names))
    popularity = zipf_popularity(rng, len(names), zipf_exponent)
    return World(ENCYCLOPEDIA, seed, zipf_exponent, names, kinds, pronouns, popularity, facts)


def _encyclopedia_facts(rng: random.Random, ids: dict[str, list[int]], n: int):
    """Consistent facts for every entity: places first, then people, then what people made."""
    F: dict[str, dict[int, int | str]] = {r.name: {} for r in _RELATIONS}
    for k, es in ids.items():
        for e in es:
            F["is_a"][e] = _NOUNS[k]
    countries, cities, languages = ids[COUNTRY], ids[CITY], ids[LANGUAGE]
    shuffled = countries[:]
    rng.shuffle(shuffled)
    for i, c in enumerate(shuffled):  # every language is official somewhere while there are countries enough
        F["official_language"][c] = languages[i] if i < len(languages) else rng.choice(languages)
    in_country: dict[int, list[int]] = {c: [] for c in countries}
    for i, city in enumerate(cities):  # every country gets a city first
        country = countries[i] if i < len(countries) else rng.choice(countries)
        F["located_in"][city] = country
        in_country[country].append(city)
        F["population"][city] = str(max(500, int(round(rng.lognormvariate(10.5, 1.2), -2))))
        F["founded_year"][city] = str(rng.randint(600, 1850))
    for c in countries:
        F["capital"][c] = rng.choice(in_country[c])
    for lang in languages:
        F["speakers"][lang] = str(rng.randint(1, 90))
    for r in ids[RIVER]:
        F["flows_through"][r] = rng.choice(countries)
        F["length_km"][r] = str(rng.randint(40, 3500))
    unis_in_country: dict[int, list[int]] = {c: [] for c in countries}
    for u in ids[UNIVERSITY]:
        city = rng.choice(cities)
        F["university_in"][u] = city
        F["founded_year"][u] = str(rng.randint(1100, 1950))
        F["students"][u] = str(rng.randint(5, 600) * 100)
        unis_in_country[F["located_in"][city]].append(u)  # type: ignore[index]
    for s in ids[SPECIES]:
        F["native_to"][s] = rng.choice(countries)
        F["colour"][s] = rng.choice(COLOURS)
        F["species_class"][s] = rng.choice(CLASSES)

    people = ids[PERSON]
    pronouns = ["it"] * n
    born: dict[int, int] = {}
    for p in people:
        pronouns[p] = rng.choice(("he", "she"))
        born[p] = rng.randint(1700, 1990)
        F["born_in"][p] = rng.choice(cities)
        F["birth_year"][p] = str(born[p])
        F["profession"][p] = rng.choice(PROFESSIONS)
        if rng.random() < 0.8:  # a university that existed when they were 18, at home if there is one
            home = unis_in_country[F["located_in"][F["born_in"][p]]]  # type: ignore[index]
            pool = home if home and rng.random() < 0.7 else ids[UNIVERSITY]
            open_ = [u for u in pool if int(F["founded_year"][u]) <= born[p] + 18]  # type: ignore[arg-type]
            if open_:
                F["studied_at"][p] = rng.choice(open_)
    by_age = sorted(people, key=lambda p: (born[p], p))
    i = 0
    while i + 1 < len(by_age):  # couples are born within a few years of each other
        if rng.random() < 0.6:
            a, b = by_age[i], by_age[i + 1]
            F["married_to"][a], F["married_to"][b] = b, a
            i += 2
        else:
            i += 1
    for ins in ids[INSTRUMENT]:
        F["invented_by"][ins] = rng.choice([p for p in people if born[p] < 1900] or people)
        F["instrument_family"][ins] = rng.choice(FAMILIES)
    founders = [p for p in people if born[p] <= 1975]
    for co in ids[COMPANY]:
        f = rng.choice(founders)
        F["founded_by"][co] = f
        F["founded_year"][co] = str(born[f] + rng.randint(22, min(60, 2020 - born[f])))
        F["headquartered_in"][co] = F["born_in"][f] if rng.random() < 0.5 else rng.choice(cities)
        F["industry"][co] = rng.choice(INDUSTRIES)
    for p in people:
        if rng.random() < 0.3:  # play an instrument invented before they were born
            pool = [i for i in ids[INSTRUMENT] if born[F["invented_by"][i]] <= born[p]]  # type: ignore[index]
            if pool:
                F["plays"][p] = rng.choice(pool)
        if rng.random() < 0.4:  # work for a company that existed before they turned 65
            pool = [c for c in ids[COMPANY] if int(F["founded_year"][c]) <= born[p] + 65]  # type: ignore[arg-type]
            if pool:
                F["works_for"][p] = rng.choice(pool)
    for b in ids[BOOK]:
        a = rng.choice(people)
        F["written_by"][b] = a
        F["published_year"][b] = str(born[a] + rng.randint(20, min(70, 2023 - born[a])))
        home_language = F["official_language"][F["located_in"][F["born_in"][a]]]  # type: ignore[index]
        F["written_in"][b] = home_language if rng.random() < 0.8 else rng.choice(languages)
        F["genre"][b] = rng.choice(GENRES)
    natives: dict[int, list[int]] = {c: [] for c in countries}
    for s in ids[SPECIES]:
        natives[F["native_to"][s]].append(s)  # type: ignore[index]
    for d in ids[DISH]:
        c = rng.choice(countries)
        F["originates_from"][d] = c
        F["made_with"][d] = rng.choice(natives[c]) if natives[c] and rng.random() < 0.7 else rng.choice(ids[SPECIES])
        F["flavour"][d] = rng.choice(FLAVOURS)
    return F, pronouns
