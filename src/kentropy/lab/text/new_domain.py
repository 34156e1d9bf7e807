"""The new domain: a fictional biomedicine (the lab's stand-in for PubMed) for continual learning.

    domain = build_new_domain(n_entities=600, seed=0)

Its own kinds (compounds, proteins, genes, diseases, pathogens, tissues, clinical trials,
laboratories), relations and templates, rendered by the same machinery as the world. Every
name contains one of the letters x, q, y, h, c, j, w, which world names never use, so no
name is shared with the world; the templates use their own content words, so what the two
domains share is mostly function words (tests/test_world.py measures it).
"""

from __future__ import annotations

import random

from kentropy.lab.text.world import (
    DEFAULT_ZIPF, Relation, Schema, Sounds, World, check_world_args, kind_counts, make_names, zipf_popularity,
)

COMPOUND, PROTEIN, GENE, DISEASE = "compound", "protein", "gene", "disease"
PATHOGEN, TISSUE, TRIAL, LAB = "pathogen", "tissue", "trial", "laboratory"

SHARES = {PROTEIN: 0.2, GENE: 0.15, DISEASE: 0.12, PATHOGEN: 0.06, TISSUE: 0.04, TRIAL: 0.12, LAB: 0.06}  # rest: compounds

BIOMED_SOUNDS = Sounds(
    onsets=("x", "q", "y", "ph", "th", "ch", "z", "v", "m", "n", "l", "r", "d", "c", "k", "t"),
    vowels=("a", "e", "i", "o", "u", "y"),
    codas=("", "", "x", "n", "l", "r"),
    syllables=(2, 2, 3),
    must_contain="xqyhcjw",  # letters no world name has (see world.WORLD_SOUNDS)
    max_len=14,
)
SUFFIXES = {COMPOUND: ("ine", "ol", "ide", "yl", "amab"), PROTEIN: ("ase", "in", "ulin"), GENE: ("",),
            DISEASE: ("osis", "itis", "emia", "opathy"), PATHOGEN: ("ococcus", "ella", "yces", "ovirus"),
            TISSUE: ("", "um"), TRIAL: ("",), LAB: ("", "ar")}

MORPHOLOGIES = ("spiral", "spherical", "filamentous", "helical", "ovoid", "branched")
PHASES = ("I", "II", "III", "IV")


def _r(name, subjects, obj, vp, full, role=None, listing=None) -> Relation:
    return Relation(name, tuple(subjects) if isinstance(subjects, tuple) else (subjects,), obj, tuple(vp), tuple(full), role, listing)


_NOUNS = {COMPOUND: "compound", PROTEIN: "protein", GENE: "gene", DISEASE: "disease", PATHOGEN: "pathogen",
          TISSUE: "tissue", TRIAL: "clinical trial", LAB: "laboratory"}

_RELATIONS = [
    _r("is_a", tuple(_NOUNS), None, ["is a {o}", "denotes a {o}"], ["{s} is a {o}.", "{s} denotes a {o}."]),
    _r("inhibits", COMPOUND, PROTEIN,
       ["inhibits {o}", "selectively blocks {o}", "binds and inhibits {o}", "suppresses activity of {o}"],
       ["{o} is inhibited by {s}.", "Inhibition of {o} by {s} was observed."],
       role="molecular target", listing="inhibitors of {o}"),
    _r("treats", COMPOUND, DISEASE,
       ["treats {o}", "is indicated for {o}", "relieves symptoms of {o}", "shows efficacy against {o}"],
       ["{s} is prescribed against {o}.", "Patients with {o} respond to {s}."],
       role="indication", listing="therapies for {o}"),
    _r("developed_at", COMPOUND, LAB,
       ["was synthesized at {o}", "was developed at {o}", "originated at {o}", "was isolated at {o}"],
       ["{o} synthesized {s}.", "Chemists at {o} developed {s}."], listing="compounds developed at {o}"),
    _r("molecular_weight", COMPOUND, None,
       ["has a molecular weight of {o} daltons", "weighs {o} daltons", "has a mass of {o} daltons",
        "registers {o} daltons"],
       ["The molecular weight of {s} is {o} daltons.", "Mass spectrometry gives {s} {o} daltons."]),
    _r("half_life", COMPOUND, None,
       ["has a plasma half-life of {o} hours", "is cleared with a half-life of {o} hours",
        "shows a half-life of {o} hours", "persists with a half-life of {o} hours"],
       ["The half-life of {s} is {o} hours.", "Plasma levels of {s} halve every {o} hours."]),
    _r("encoded_by", PROTEIN, GENE,
       ["is encoded by {o}", "is expressed from {o}", "is the product of {o}", "is transcribed from {o}"],
       ["{o} encodes {s}.", "The gene {o} encodes {s}."], role="encoding gene", listing="proteins encoded by {o}"),
    _r("expressed_in", PROTEIN, TISSUE,
       ["is expressed in {o}", "is abundant in {o}", "localizes to {o}", "accumulates in {o}"],
       ["Expression of {s} peaks in {o}.", "Cells of {o} express {s}."], listing="proteins expressed in {o}"),
    _r("residues", PROTEIN, None,
       ["consists of {o} residues", "comprises {o} amino acids", "spans {o} residues", "contains {o} amino acids"],
       ["{s} contains {o} amino acids.", "Sequencing shows {o} residues in {s}."]),
    _r("chromosome", GENE, None,
       ["maps to chromosome {o}", "is positioned on chromosome {o}", "resides on chromosome {o}", "sits on chromosome {o}"],
       ["Chromosome {o} carries {s}.", "Mapping places {s} on chromosome {o}."]),
    _r("linked_to", DISEASE, GENE,
       ["is linked to mutations in {o}", "is associated with {o}", "involves variants of {o}",
        "correlates with defects in {o}"],
       ["Mutations in {o} cause {s}.", "Variants of {o} predispose to {s}."],
       role="susceptibility gene", listing="disorders linked to {o}"),
    _r("affects", DISEASE, TISSUE,
       ["affects {o}", "damages {o}", "targets {o}", "primarily involves {o}"],
       ["{s} primarily damages {o}.", "Lesions of {o} characterize {s}."], listing="disorders of {o}"),
    _r("caused_by", DISEASE, PATHOGEN,
       ["is caused by {o}", "results from infection with {o}", "is transmitted by {o}", "follows infection by {o}"],
       ["{o} causes {s}.", "Infection with {o} produces {s}."],
       role="causative agent", listing="infections caused by {o}"),
    _r("prevalence", DISEASE, None,
       ["has a prevalence of {o} percent", "afflicts {o} percent of adults", "is diagnosed in {o} percent of adults",
        "affects {o} percent of adults"],
       ["Prevalence of {s} is {o} percent.", "Surveys estimate {s} at {o} percent."]),
    _r("infects", PATHOGEN, TISSUE,
       ["infects {o}", "colonizes {o}", "invades {o}", "replicates within {o}"],
       ["{o} is colonized by {s}.", "Cultures reveal {s} thriving within {o}."], listing="pathogens of {o}"),
    _r("morphology", PATHOGEN, None,
       ["has a {o} morphology", "shows {o} cells", "appears {o} microscopically", "forms {o} colonies"],
       ["Microscopy reveals {s} as {o}.", "Cells of {s} look {o}."]),
    _r("tests", TRIAL, COMPOUND,
       ["tests {o}", "evaluates {o}", "assesses {o}", "investigates {o}"],
       ["{s} evaluated {o}.", "Efficacy of {o} was assessed by {s}."], role="investigational compound",
       listing="trials of {o}"),
    _r("targets", TRIAL, DISEASE,
       ["enrolls patients with {o}", "focuses on {o}", "addresses {o}", "recruits individuals with {o}"],
       ["{s} enrolled patients with {o}.", "Patients with {o} joined {s}."], listing="trials for {o}"),
    _r("conducted_at", TRIAL, LAB,
       ["is conducted at {o}", "is managed by {o}", "is coordinated by {o}", "is sponsored by {o}"],
       ["{o} oversees {s}.", "{o} coordinates {s}."], listing="trials run by {o}"),
    _r("phase", TRIAL, None,
       ["is in phase {o}", "has reached phase {o}", "is a phase {o} protocol", "progressed to phase {o}"],
       ["{s} is currently in phase {o}.", "Regulators approved phase {o} of {s}."]),
    _r("enrolled", TRIAL, None,
       ["enrolls {o} participants", "recruited {o} volunteers", "admitted {o} patients", "randomized {o} subjects"],
       ["{o} participants joined {s}.", "Enrollment in {s} reached {o}."]),
    _r("staff", LAB, None,
       ["employs {o} researchers", "has {o} scientists", "houses {o} investigators", "retains {o} staff"],
       ["{o} researchers staff {s}.", "Headcount at {s} totals {o}."]),
]

BIOMEDICAL = Schema(
    name="biomedical",
    nouns=_NOUNS,
    relations={r.name: r for r in _RELATIONS},
    connectives=("Furthermore", "Additionally", "Importantly", "Consistently", "Mechanistically", "Clinically"),
    people=frozenset(),
)


def build_new_domain(n_entities: int = 600, seed: int = 0, zipf_exponent: float = DEFAULT_ZIPF) -> World:
    """A fictional biomedical world of `n_entities` entities, the same for the same arguments."""
    check_world_args(n_entities, zipf_exponent)
    rng = random.Random(seed)
    counts = kind_counts(n_entities, SHARES, COMPOUND)
    taken = set(BIOMEDICAL.words())
    names: list[str] = []
    kinds: list[str] = []
    for kind in _NOUNS:
        new = make_names(rng, BIOMED_SOUNDS, counts[kind], taken, SUFFIXES[kind])
        names += new
        kinds += [kind] * len(new)
    ids: dict[str, list[int]] = {k: [] for k in _NOUNS}
    for e, k in enumerate(kinds):
        ids[k].append(e)
    facts = _facts(rng, ids)
    popularity = zipf_popularity(rng, len(names), zipf_exponent)
    return World(BIOMEDICAL, seed, zipf_exponent, names, kinds, ["it"] * len(names), popularity, facts)


def _facts(rng: random.Random, ids: dict[str, list[int]]) -> dict[str, dict[int, int | str]]:
    """Consistent facts: a compound mostly inhibits a protein of the tissue its disease affects,
    and a trial enrolls patients with the disease its compound treats."""
    F: dict[str, dict[int, int | str]] = {r.name: {} for r in _RELATIONS}
    for k, es in ids.items():
        for e in es:
            F["is_a"][e] = _NOUNS[k]
    tissues = ids[TISSUE]
    for g in ids[GENE]:
        F["chromosome"][g] = str(rng.randint(1, 23))
    in_tissue: dict[int, list[int]] = {t: [] for t in tissues}
    for p in ids[PROTEIN]:
        F["encoded_by"][p] = rng.choice(ids[GENE])
        t = rng.choice(tissues)
        F["expressed_in"][p] = t
        in_tissue[t].append(p)
        F["residues"][p] = str(rng.randint(80, 2400))
    for pa in ids[PATHOGEN]:
        F["infects"][pa] = rng.choice(tissues)
        F["morphology"][pa] = rng.choice(MORPHOLOGIES)
    for d in ids[DISEASE]:
        F["linked_to"][d] = rng.choice(ids[GENE])
        F["affects"][d] = rng.choice(tissues)
        if rng.random() < 0.5:
            F["caused_by"][d] = rng.choice(ids[PATHOGEN])
        F["prevalence"][d] = f"{rng.uniform(0.01, 9):.2f}"
    for lab in ids[LAB]:
        F["staff"][lab] = str(rng.randint(8, 900))
    for c in ids[COMPOUND]:
        d = rng.choice(ids[DISEASE])
        F["treats"][c] = d
        local = in_tissue[F["affects"][d]]  # type: ignore[index]
        F["inhibits"][c] = rng.choice(local) if local and rng.random() < 0.7 else rng.choice(ids[PROTEIN])
        F["developed_at"][c] = rng.choice(ids[LAB])
        F["molecular_weight"][c] = f"{rng.uniform(120, 1500):.1f}"
        F["half_life"][c] = f"{rng.uniform(0.5, 96):.1f}"
    for t in ids[TRIAL]:
        c = rng.choice(ids[COMPOUND])
        F["tests"][t] = c
        F["targets"][t] = F["treats"][c]
        F["conducted_at"][t] = rng.choice(ids[LAB])
        F["phase"][t] = rng.choice(PHASES)
        F["enrolled"][t] = str(rng.randint(12, 4000))
    return F
