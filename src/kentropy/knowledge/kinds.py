"""The facts of one fictional entity of each kind, as a dict of slot values for the templates.

Each builder draws a coherent set of values (years in order, names coined by a `Namer`).
The wording lives in `templates.py`; the keys here are the slots it uses.
"""

from __future__ import annotations

import random

from kentropy.knowledge.names import Namer

WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")
NOW = 2024  # no generated fact is dated later than this year
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December")


def article(word: str) -> str:
    return "an" if word[0].lower() in "aeiou" else "a"


def _number(rng: random.Random, lo: int, hi: int, step: int) -> str:
    """A round number such as '4,200' (thousands separated)."""
    return f"{rng.randrange(lo, hi, step):,}"


# (profession, field, form of the best-known work)
PROFESSIONS = (
    ("cartographer", "cartography", "atlas"), ("painter", "painting", "triptych"),
    ("composer", "music", "symphony"), ("novelist", "literature", "novel"),
    ("astronomer", "astronomy", "star catalogue"), ("botanist", "botany", "herbal"),
    ("philosopher", "philosophy", "treatise"), ("playwright", "the theatre", "comedy"),
    ("sculptor", "sculpture", "statue"), ("poet", "poetry", "verse cycle"),
    ("engineer", "engineering", "handbook"), ("physician", "medicine", "textbook"),
)
TRADES = ("weaver", "printer", "glassblower", "bookbinder", "apothecary", "clockmaker", "potter",
          "schoolteacher", "silversmith", "translator", "surveyor", "merchant")


def person(namer: Namer, rng: random.Random) -> dict:
    profession, field, form = rng.choice(PROFESSIONS)
    trade = rng.choice(TRADES)
    name = namer.person()
    born = rng.randrange(1650, 1880)
    work_year = born + rng.randrange(26, 48)
    return dict(
        name=name, surname=name.split()[1], profession=profession, a_profession=article(profession),
        field=field, work_form=form, born_year=str(born), birthplace=namer.word(), river=namer.word(),
        school=namer.named(("Academy", "College", "Seminary", "Lyceum")), mentor=namer.person(),
        mentor_city=namer.word(), work=namer.word(), work_year=str(work_year), spouse=namer.person(),
        spouse_profession=trade, a_spouse_profession=article(trade),
        award=namer.named(("Medal", "Prize", "Award")), death_place=namer.word(),
        death_year=str(work_year + rng.randrange(4, 30)), patron=namer.person(), journey=namer.word(),
        journey_year=str(born + rng.randrange(18, 26)), pupils=str(rng.randrange(6, 60)),
    )


SETTLEMENTS = ("market town", "port town", "mountain village", "river town", "mining town", "island town",
               "cathedral city", "fishing village", "spa town", "garrison town")
INDUSTRIES = ("glassmaking", "salt mining", "wool weaving", "shipbuilding", "clockmaking", "paper milling",
              "copper smelting", "cheese making", "lace making", "barrel making", "tanning", "boat building")
LANDMARKS = ("Tower", "Bridge", "Cathedral", "Gate", "Hall", "Lighthouse", "Abbey", "Clocktower")


def place(namer: Namer, rng: random.Random) -> dict:
    settlement = rng.choice(SETTLEMENTS)
    founded = rng.randrange(900, 1650)
    return dict(
        name=namer.word(), settlement=settlement, a_settlement=article(settlement), region=namer.word(),
        founded_year=str(founded), founder=namer.person(), founder_origin=namer.word(), lake=namer.word(),
        population=_number(rng, 2_000, 90_000, 100), industry=rng.choice(INDUSTRIES),
        landmark=namer.named(LANDMARKS), landmark_year=str(founded + rng.randrange(40, 300)),
        architect=namer.person(), twin=namer.word(), twin_region=namer.word(), festival=namer.word(),
        festival_month=rng.choice(MONTHS), mayor=namer.person(), altitude=f"{_number(rng, 20, 1_800, 10)} metres",
        market_day=rng.choice(WEEKDAYS), university=namer.named(("University", "Polytechnic", "Conservatory")),
        university_year=str(rng.randrange(1700, 1960)),
    )


# (kind of organization, its flagship product's form)
ORGANIZATIONS = (
    ("shipbuilding company", "steamship"), ("publishing house", "encyclopedia"),
    ("porcelain manufacturer", "dinner service"), ("railway company", "locomotive"),
    ("brewery", "dark ale"), ("telegraph company", "undersea cable"), ("instrument maker", "telescope"),
    ("trading company", "tea blend"), ("textile mill", "woollen cloth"), ("perfume house", "fragrance"),
    ("map publisher", "road atlas"), ("bicycle maker", "touring bicycle"),
)


def organization(namer: Namer, rng: random.Random) -> dict:
    org_type, form = rng.choice(ORGANIZATIONS)
    founded = rng.randrange(1760, 1930)
    trade = rng.choice(TRADES)
    return dict(
        name=namer.word(), org_type=org_type, a_org_type=article(org_type), product_form=form,
        founded_year=str(founded), founder=namer.person(), founder_origin=namer.word(), hq=namer.word(),
        hq_region=namer.word(), product=namer.word(), product_year=str(founded + rng.randrange(5, 60)),
        leader=namer.person(), leader_prev=namer.word(), employees=_number(rng, 150, 20_000, 50),
        rival=namer.word(), rival_city=namer.word(), founder_trade=trade, a_founder_trade=article(trade), works_town=namer.word(),
        listed_year=str(founded + rng.randrange(20, 90)), revenue=f"{rng.randrange(3, 900)} million crowns",
        subsidiary=namer.word(),
    )


# (organism, the larger group it belongs to)
ORGANISMS = (("moth", "insect"), ("fern", "plant"), ("frog", "amphibian"), ("lizard", "reptile"),
             ("orchid", "plant"), ("beetle", "insect"), ("finch", "bird"), ("trout", "fish"),
             ("salamander", "amphibian"), ("snail", "mollusc"), ("warbler", "bird"), ("shrew", "mammal"))
COLOURS = ("copper-red", "slate-blue", "olive-green", "pale yellow", "jet-black", "silver-grey",
           "rust-brown", "ivory-white", "deep violet", "amber")
STATUSES = ("vulnerable", "endangered", "near threatened", "critically endangered", "rare")
FOODS = ("shrub", "sedge", "lichen", "thistle", "creeper", "reed")
PREDATORS = ("hawk", "marten", "heron", "owl", "viper", "pike")


def species(namer: Namer, rng: random.Random) -> dict:
    organism, group = rng.choice(ORGANISMS)
    small = group in ("insect", "mollusc", "amphibian")
    length = f"{rng.randrange(1, 9)}.{rng.randrange(10)}" if small else str(rng.randrange(9, 60))
    return dict(
        name=f"{namer.word()} {namer.word().lower()}", organism=organism, group=group, a_group=article(group),
        region=namer.word(), mountain=namer.word(), described_year=str(rng.randrange(1760, 1930)),
        naturalist=namer.person(), institution=namer.named(("Museum", "Institute", "College", "Herbarium")),
        food=namer.word(), food_kind=rng.choice(FOODS), length=f"{length} centimetres",
        colour=rng.choice(COLOURS), predator=namer.word(), predator_kind=rng.choice(PREDATORS),
        status=rng.choice(STATUSES), altitude=f"{_number(rng, 300, 3_200, 50)} metres",
        lifespan=f"{rng.randrange(2, 16)} years", type_locality=namer.word(), season=rng.choice(MONTHS),
        local_name=namer.word(), relative=f"{namer.word()} {namer.word().lower()}",
    )


# (kind of artifact, materials it may be made of, the dimension its size measures)
ARTIFACTS = (
    ("astronomical clock", ("brass", "bronze", "gilded iron"), "tall"),
    ("church bell", ("bronze", "bell metal"), "wide"),
    ("illuminated manuscript", ("vellum", "parchment"), "tall"),
    ("ceremonial sword", ("steel", "silvered steel"), "long"),
    ("tapestry", ("wool", "silk", "linen"), "wide"),
    ("statue", ("marble", "bronze", "limestone"), "tall"),
    ("celestial globe", ("brass", "painted copper"), "wide"),
    ("reliquary", ("silver", "gilded copper", "gold"), "tall"),
    ("organ", ("oak", "walnut", "tin"), "tall"),
    ("crown", ("gold", "silver"), "wide"),
)


def artifact(namer: Namer, rng: random.Random) -> dict:
    art_type, materials, dim = rng.choice(ARTIFACTS)
    made = rng.randrange(1150, 1750)
    acquired = made + rng.randrange(100, 220)
    return dict(
        name=namer.word(), art_type=art_type, a_art_type=article(art_type), made_year=str(made),
        maker=namer.person(), maker_city=namer.word(), patron=namer.person(), patron_region=namer.word(),
        material=rng.choice(materials), size=f"{rng.randrange(20, 400)} centimetres", dimension=dim,
        museum=namer.named(("Museum", "Collection", "Library", "Treasury")), museum_city=namer.word(),
        stolen_year=str(made + rng.randrange(80, 220)), recovered_city=namer.word(), inscription=namer.word(),
        restorer=namer.person(), copyist=namer.person(), restored_year=str(rng.randrange(acquired + 1, NOW)), owner=namer.person(),
        acquired_year=str(acquired), weight=f"{rng.randrange(2, 900)} kilograms",
    )


# (kind of event, head noun of its name)
EVENTS = (("expedition", "Expedition"), ("world exhibition", "Exhibition"), ("scientific congress", "Congress"),
          ("general strike", "Strike"), ("uprising", "Uprising"), ("peace conference", "Conference"),
          ("regatta", "Regatta"), ("trade fair", "Fair"), ("music festival", "Festival"), ("chess tournament", "Tournament"))
OUTCOMES = ("League", "Society", "Council", "Union", "Institute", "Federation")


def event(namer: Namer, rng: random.Random) -> dict:
    allowed = [e for e in EVENTS if namer.allowed(e[1])]
    kind, head = rng.choice(allowed or EVENTS)
    year = rng.randrange(1700, 1920)
    return dict(
        name=f"{namer.word()} {namer.head((head,))}", event_kind=kind, a_event_kind=article(kind),
        year=str(year), month=rng.choice(MONTHS), place=namer.word(),
        place_region=namer.word(), leader=namer.person(), leader_home=namer.word(),
        duration=f"{rng.randrange(3, 90)} days", participants=_number(rng, 200, 40_000, 100),
        outcome=namer.named(OUTCOMES), outcome_seat=namer.word(), memorial=namer.word(),
        funder=namer.person(), newspaper=namer.named(("Gazette", "Herald", "Courier", "Chronicle")),
        cost=f"{rng.randrange(2, 500):,},000 crowns", centenary_year=str(year + 100), secretary=namer.person(),
    )


BUILDERS = {"person": person, "place": place, "organization": organization, "species": species,
            "artifact": artifact, "event": event}
