"""Recall tasks: aligned corrupted prompts, splits and relation types, knowledge files, TASK.json."""

import json

import pytest
import torch

from kentropy.circuits.tasks import (Example, Task, encode_task, knowledge_subject, read_tasks, split_tokens,
                                     target_token, tasks_from_knowledge, tasks_from_triples, write_tasks)
from kentropy.errors import KentropyError

# names from the shipped sample text; under the test tokenizer most take 3 or 4 tokens
NAMES = ["Ostrel", "Sable", "Carran", "Emrik", "Holt", "Vethan", "Alda", "Voss", "Quint", "Marrow",
         "Port", "Hills", "Isle", "Ivo", "Jora", "Linde", "Bay", "Ames", "Goran", "Hilde", "Faela Quint"]
TARGETS = ["salt", "fish", "timber", "music"]


def triples():
    out = [(n, "was born in", TARGETS[i % 4], "born", i % 2 == 0) for i, n in enumerate(NAMES)]
    out += [(n, "taught", TARGETS[(i + 1) % 4], "taught", True) for i, n in enumerate(NAMES[:8])]
    return out


def n_tokens(tok, text):
    return len(tok(text)["input_ids"])


def test_corrupted_prompts_have_the_clean_token_length(tokenizer):
    tasks = tasks_from_triples(triples(), tokenizer)
    assert sum(len(t.examples) for t in tasks) > 20
    for t in tasks:
        for ex in t.examples:
            assert ex.corrupted_subject != ex.subject
            assert n_tokens(tokenizer, ex.corrupted_prompt) == n_tokens(tokenizer, ex.prompt)
            assert n_tokens(tokenizer, ex.corrupted_subject) == n_tokens(tokenizer, ex.subject)
        enc = encode_task(t, tokenizer)
        assert enc.clean.shape == enc.corrupted.shape
        assert torch.equal(enc.clean != enc.corrupted, (enc.clean != enc.corrupted) & enc.subject)  # only the subject differs


def test_tasks_keep_relations_and_splits_apart(tokenizer):
    tasks = tasks_from_triples(triples(), tokenizer)
    assert [t.name for t in tasks] == ["born/new", "born/related", "taught/related"]
    facts = {(n, r): (tg, k) for n, ph, tg, r, k in triples()}
    for t in tasks:
        for ex in t.examples:
            target, known = facts[(ex.subject, t.relation)]
            assert ex.target == target and t.split == ("related" if known else "new")


def test_a_fact_without_an_aligned_subject_is_dropped(tokenizer):
    # "Faela Quint" is the only subject of its token length: no corrupted prompt can align
    assert n_tokens(tokenizer, "Faela Quint") not in {n_tokens(tokenizer, n) for n in NAMES[:-1]}
    subjects = {ex.subject for t in tasks_from_triples(triples(), tokenizer) for ex in t.examples}
    assert "Faela Quint" not in subjects and "Ostrel" in subjects


def test_corrupting_subject_prefers_another_target(tokenizer):
    # four aligned subjects: two share Ostrel's target, one has another
    same_len = [n for n in NAMES if n_tokens(tokenizer, n) == n_tokens(tokenizer, "Ostrel")][:4]
    assert same_len[0] == "Ostrel" and len(same_len) == 4
    facts = [(same_len[0], "was born in", "salt", "r", True), (same_len[1], "was born in", "salt", "r", True),
             (same_len[2], "was born in", "salt", "r", True), (same_len[3], "was born in", "fish", "r", True)]
    for seed in range(5):
        ex = tasks_from_triples(facts, tokenizer, seed=seed)[0].examples[0]
        assert ex.subject == same_len[0] and ex.corrupted_subject == same_len[3]


def test_encoding_masks_and_target(tokenizer):
    task = Task("t", "r", "new", [Example("Ostrel", "was born in", "salt", "Sable")])
    enc = encode_task(task, tokenizer)
    ids = tokenizer("Ostrel was born in")["input_ids"]
    n_subj = n_tokens(tokenizer, "Ostrel")
    assert enc.clean[0].tolist() == ids and enc.corrupted[0].tolist() == tokenizer("Sable was born in")["input_ids"]
    assert enc.subject[0].tolist() == [True] * n_subj + [False] * (len(ids) - n_subj)
    assert enc.relation[0].tolist() == [False] * n_subj + [True] * (len(ids) - n_subj)
    assert int(enc.last[0]) == len(ids) - 1
    full = tokenizer("Ostrel was born in salt")["input_ids"]
    assert int(enc.target[0]) == full[len(ids)] == target_token(tokenizer, "Ostrel was born in", "salt")
    assert split_tokens(tokenizer, "Ostrel", "was born in") == (ids, 0, n_subj)


def test_padding_is_right_and_masked(tokenizer):
    task = Task("t", "r", "new", [Example("Ostrel", "was born in", "salt", "Sable"), Example("Ivo", "taught", "music", "Bay")])
    enc = encode_task(task, tokenizer)
    n1 = n_tokens(tokenizer, "Ivo taught")
    assert enc.mask[1].tolist() == [1] * n1 + [0] * (enc.clean.shape[1] - n1)
    assert int(enc.last[1]) == n1 - 1 and not enc.relation[1, n1:].any()


def test_misaligned_example_is_an_error_naming_it(tokenizer):
    task = Task("born/new", "born", "new", [Example("Ostrel", "was born in", "salt", "Sable"),
                                             Example("Ostrel", "was born in", "salt", "Faela Quint")])
    with pytest.raises(KentropyError, match=r"'born/new': example 1: corrupted prompt 'Faela Quint was born in'"):
        encode_task(task, tokenizer)


def test_bad_triples_are_errors(tokenizer):
    with pytest.raises(KentropyError, match="triple 0: field 'known'"):
        tasks_from_triples([("A", "is", "b", "r", "yes")], tokenizer)
    with pytest.raises(KentropyError, match="triple 1: missing field 'target'"):
        tasks_from_triples([("A", "is", "b", "r", True), {"subject": "B", "relation_phrase": "is",
                                                            "relation_type": "r", "known": True}], tokenizer)


def entry(name, context, mem_input, mem_target, **extra):
    e = {"train_context": context, "mem_input": mem_input, "mem_target": mem_target,
         "gen_input": mem_input, "gen_target": mem_target, "hard_gen_input": mem_input, "hard_gen_target": mem_target}
    if name:
        e["name"] = name
    return {**e, **extra}


def test_knowledge_subject_from_name_or_context():
    assert knowledge_subject(entry("Ostrel", "x", [], [])) == "Ostrel"
    e = entry(None, "The Umber Hills lie near Ostrel. Later it rained.", ["In spring the Umber Hills are"], ["green"])
    assert knowledge_subject(e) == "Umber Hills"
    assert knowledge_subject(entry(None, "nothing capitalized here", ["x"], ["y"])) is None


def test_tasks_from_knowledge(tokenizer):
    names = [n for n in NAMES if n_tokens(tokenizer, n) == n_tokens(tokenizer, "Ostrel")][:4]
    entries = [entry(n, f"{n} is a town.", [f"Long ago {n} was famous for", f"{n} traded", "no subject here"],
                     [TARGETS[i], TARGETS[i - 1], "x"], known=(i == 0)) for i, n in enumerate(names)]
    tasks = tasks_from_knowledge(entries, tokenizer)
    assert [t.name for t in tasks] == ["knowledge-mem/new", "knowledge-mem/related"]
    new = tasks[0]
    assert {(ex.subject, ex.relation_phrase, ex.target) for ex in new.examples} == (
        {(n, "was famous for", TARGETS[i]) for i, n in enumerate(names) if i} | {(n, "traded", TARGETS[i - 1]) for i, n in enumerate(names) if i})
    assert all(ex.corrupted_subject in names and ex.corrupted_subject != ex.subject for ex in new.examples)
    assert {ex.subject for ex in tasks[1].examples} == {names[0]}
    with pytest.raises(KentropyError, match="knowledge: entry 0: field 'mem_input' must be a list of strings"):
        tasks_from_knowledge([{"mem_input": "x", "mem_target": []}], tokenizer)


def test_task_file_roundtrip_and_triples_file(tokenizer, tmp_path):
    tasks = tasks_from_triples(triples(), tokenizer)
    write_tasks(tmp_path / "tasks.json", tasks)
    assert json.loads((tmp_path / "tasks.json").read_text())["format"] == "kentropy-circuit-tasks"
    assert read_tasks(tmp_path / "tasks.json") == tasks
    rows = [dict(zip(("subject", "relation_phrase", "target", "relation_type", "known"), t)) for t in triples()]
    (tmp_path / "triples.json").write_text(json.dumps({"triples": rows}))
    assert read_tasks(tmp_path / "triples.json", tokenizer) == tasks
    with pytest.raises(KentropyError, match="needs a tokenizer"):
        read_tasks(tmp_path / "triples.json")
    (tmp_path / "bad.json").write_text(json.dumps({"tasks": [{"name": "a", "relation": "r", "split": "new",
                                                                "examples": [{"subject": "A"}]}]}))
    with pytest.raises(KentropyError, match=r"bad.json: task 0: example 0: fields subject"):
        read_tasks(tmp_path / "bad.json")


def test_knowledge_probes_may_name_a_person_by_surname(tokenizer):
    entries = [entry("Faela Quint", "Faela Quint was a sailor.", ["Later Quint was born in"], ["salt"]),
               entry("Ostrel", "Ostrel is a town.", ["Long ago Ostrel was born in"], ["fish"])]
    (task,) = tasks_from_knowledge(entries, tokenizer)
    assert {(ex.subject, ex.relation_phrase, ex.corrupted_subject) for ex in task.examples} == {
        ("Quint", "was born in", "Ostrel"), ("Ostrel", "was born in", "Quint")}
