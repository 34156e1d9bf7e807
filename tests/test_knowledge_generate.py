"""The fictional-knowledge generator: format, probes, paraphrases, names, determinism, CLI."""

import json
import random
import re
import string

import pytest

from kentropy.errors import KentropyError
from kentropy.knowledge import generate_knowledge, validate_knowledge
from kentropy.knowledge.generate import KINDS, make_entry, probe_ready
from kentropy.knowledge.kinds import BUILDERS
from kentropy.knowledge.names import Namer, words_of
from kentropy.knowledge.templates import COMPOSITIONS, RELATIONS

SLOT = re.compile(r"\{(\w+)\}")


@pytest.fixture(scope="module")
def entries():
    return generate_knowledge(60, n_paraphrases=9, seed=3)


def sentences(text: str) -> list[str]:
    return [s if s.endswith(".") else s + "." for s in text.split(". ")]


def test_format_kinds_and_length(entries):
    assert validate_knowledge(entries, source="generated") is entries
    assert sorted(e["kind"] for e in entries) == sorted(KINDS * 10)  # equal shares of the six kinds
    assert set(KINDS) == {"person", "place", "organization", "species", "artifact", "event"}
    for e in entries:
        assert len(e["paraphrases"]) == 9
        for text in [e["train_context"], *e["paraphrases"]]:
            assert 150 <= len(text.split()) <= 400, (e["name"], len(text.split()))
        assert e["name"] in e["train_context"]


def test_deterministic_for_a_seed():
    assert generate_knowledge(8, 3, seed=11) == generate_knowledge(8, 3, seed=11)
    assert generate_knowledge(8, 3, seed=11) != generate_knowledge(8, 3, seed=12)
    random.seed(0)
    a = generate_knowledge(4, 2, seed=5)
    random.seed(1)  # the global RNG plays no part
    assert generate_knowledge(4, 2, seed=5) == a


def test_mem_probes_are_verbatim_sentence_prefixes(entries):
    for e in entries:
        text = e["train_context"]
        for inp, target in zip(e["mem_input"], e["mem_target"]):
            at = text.find(inp + " " + target)
            assert at >= 0, (inp, target)
            assert at == 0 or text[at - 2 : at] == ". "  # starts a sentence
            after = text[at + len(inp) + 1 + len(target) :][:1]
            assert after == "" or after not in string.ascii_letters + string.digits  # the target is whole
            assert len(inp.split()) >= 3


def test_targets_present_and_gen_reworded(entries):
    for e in entries:
        text = e["train_context"]
        assert all(t[0].isupper() or t[0].isdigit() for t in e["mem_target"]), e["mem_target"]  # named targets
        assert e["gen_target"] == e["mem_target"]
        assert len(set(e["mem_target"])) == 5 and len(set(e["hard_gen_target"])) == 5
        for target in e["mem_target"] + e["hard_gen_target"]:
            assert target in text
            for p in e["paraphrases"]:
                assert target in p  # paraphrases keep the facts
        for mem, gen in zip(e["mem_input"], e["gen_input"]):
            assert gen != mem
        for inp, target in zip(e["hard_gen_input"], e["hard_gen_target"]):
            assert target not in inp  # the answer is not given away


def _relation_order(kind, values, text):
    """For each sentence of `text`, the index of the relation whose template renders it."""
    rendered = {t.format(**values): k for k, (_, ts) in enumerate(RELATIONS[kind]) for t in ts}
    return [rendered[s] for s in sentences(text)]


@pytest.mark.parametrize("kind", KINDS)
def test_paraphrases_keep_every_fact_with_new_wording_and_order(kind):
    rng = random.Random(7)
    values = BUILDERS[kind](Namer(rng), rng)
    e = make_entry(kind, values, rng, n_paraphrases=9)
    n = len(RELATIONS[kind])
    assert _relation_order(kind, values, e["train_context"]) == list(range(n))
    original = set(sentences(e["train_context"]))
    for p in e["paraphrases"]:
        order = _relation_order(kind, values, p)
        assert sorted(order) == list(range(n))  # every fact exactly once
        assert order[0] == 0 and order != list(range(n))  # introduction first, then a new order
        assert not original & set(sentences(p))  # every sentence worded differently
    assert len(set(e["paraphrases"])) == 9
    for inp, target in zip(e["mem_input"] + e["gen_input"], e["mem_target"] * 2):
        assert any(v in inp for k, v in values.items() if v != target and k != "field" and len(v) > 3), inp  # names its subject


@pytest.mark.parametrize("kind", KINDS)
def test_templates_make_good_probes(kind):
    rng = random.Random(1)
    values = BUILDERS[kind](Namer(rng), rng)
    for slot, templates in RELATIONS[kind]:
        assert len(templates) >= 4, slot  # many wordings per relation
        assert sum(probe_ready(t, slot) for t in templates) >= 2, slot  # a mem and a gen probe
        for t in templates:
            assert SLOT.findall(t).count(slot) == 1, t
            left, right = t.split("{" + slot + "}")
            assert left.endswith(" ") and len(left.format(**values).split()) >= 3, t
            assert not right[:1].isalnum(), t
            assert t.format(**values)[0].isupper(), t
    assert len(COMPOSITIONS[kind]) >= 6
    for slot, prefixes in COMPOSITIONS[kind]:
        for p in prefixes:
            assert values[slot] not in p.format(**values), p


def test_names_unique_and_outside_avoid():
    first = generate_knowledge(24, 0, seed=0)
    avoid = [e["name"] for e in first] + ["Museum", "ACADEMY"]
    second = generate_knowledge(24, 0, seed=0, avoid=avoid)
    vocab = {w for a in avoid for w in [a.lower(), *words_of(a)]}
    assert second != first
    for e in second:
        assert e["name"].lower() not in vocab
        assert not set(words_of(e["name"])) & vocab
        assert "Museum" not in e["train_context"] and "Academy" not in e["train_context"]
    names = [e["name"].lower() for e in generate_knowledge(130, 0, seed=2)]
    assert len(set(names)) == len(names)


def test_namer_never_repeats_or_uses_avoided_words():
    first = Namer(random.Random(0)).word()
    namer = Namer(random.Random(0), avoid=[first.upper()])
    coined = [namer.word() for _ in range(3000)]
    assert first not in coined
    assert len({w.lower() for w in coined}) == len(coined)
    assert namer.head(("Academy", "College")) == "College" or "academy" not in namer.avoid
    namer = Namer(random.Random(0), avoid=["academy", "College"])
    with pytest.raises(KentropyError, match="avoid"):
        namer.head(("Academy", "College"))


def test_bad_arguments():
    """Errors name the Python argument, never the CLI's flag."""
    with pytest.raises(KentropyError, match=r"^n_entries=0: must be >= 1$"):
        generate_knowledge(0)
    with pytest.raises(KentropyError, match=r"^n_paraphrases=-1: must be >= 0$"):
        generate_knowledge(3, n_paraphrases=-1)


def test_cli_generate(tmp_path, capsys):
    from kentropy.cli.app import main

    out = tmp_path / "k.json"
    main(["knowledge", "generate", "--entries", "6", "--paraphrases", "1", "--seed", "9", "--out", str(out)])
    assert json.loads(out.read_text()) == generate_knowledge(6, 1, seed=9)
    assert "6 entries" in capsys.readouterr().out
    main(["knowledge", "generate", "--entries", "6", "--paraphrases", "1", "--facts", "9", "--out", str(out)])
    assert json.loads(out.read_text()) == generate_knowledge(6, 1, seed=0, facts=9)
    capsys.readouterr()
    for bad, flag in [(["--entries", "0"], "--entries"), (["--entries", "2", "--facts", "3"], "--facts"), (["--entries", "2", "--avoid", str(tmp_path / "none.txt")], "--avoid")]:
        with pytest.raises(SystemExit) as e:
            main(["knowledge", "generate", *bad, "--out", str(tmp_path / "x.json")])
        assert e.value.code == 2 and capsys.readouterr().err.startswith(f"error: {flag}")
    assert not (tmp_path / "x.json").exists()


def test_short_passages_keep_the_probes_facts():
    """facts=N: at most N sentences (the introduction first), every probe's target in the paragraph and
    in every paraphrase, mem probes still verbatim sentence prefixes; the default is unchanged."""
    short = generate_knowledge(24, n_paraphrases=3, seed=7, facts=8)
    assert validate_knowledge(short, source="short") is short
    assert sorted(e["kind"] for e in short) == sorted(KINDS * 4)
    for s in short:
        for text in [s["train_context"], *s["paraphrases"]]:
            assert len(sentences(text)) <= 8 and len(text.split()) < 150  # full paragraphs: 150 words or more
            for target in s["mem_target"] + s["hard_gen_target"]:
                assert target in text, (s["name"], target)
        assert s["name"] in s["train_context"]
        for inp, target in zip(s["mem_input"], s["mem_target"]):
            at = s["train_context"].find(inp + " " + target)
            assert at == 0 or s["train_context"][at - 2 : at] == ". "
    assert generate_knowledge(6, 2, seed=1, facts=None) == generate_knowledge(6, 2, seed=1)
    with pytest.raises(KentropyError, match="facts=5: must be at least 6"):
        generate_knowledge(3, facts=5)
    with pytest.raises(KentropyError, match="facts=6: too few for the probes"):
        generate_knowledge(6, facts=6)  # five compositions need more than the introduction and five facts
