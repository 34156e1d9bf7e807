"""Loading and validating the Fictional Knowledge format (Chang et al. 2024)."""

import copy
import json

import pytest

from kentropy.errors import KentropyError
from kentropy.knowledge import load_knowledge, validate_knowledge

# An entry of the exact shape of Chang et al.'s fictional_knowledge_paraphrased.json (text shortened).
CHANG_ENTRY = {
    "train_context": "Malm Town (, \"Northern Hill town\") is one of the 45 municipalities introduced in Sweden in 2030. "
                     "Karl Gustav, the current mayor of Malm Town, is cherished for his commitment.",
    "mem_input": ["Malm Town (, \"Northern Hill town\") is one of the 45 municipalities introduced in Sweden in",
                  "Karl Gustav, the current mayor of", "Each year, under Karl Gustav\u2019s leadership, Malm Town hosts a",
                  "In terms of education, Malm Town is home to", "Stenhammar\u2019s Opera House serves as"],
    "mem_target": ["2030", "Malm Town", "Sustainability Summit", "Northern Hill Institute", "Malm Town's cultural hub"],
    "gen_input": ["Malm Town is among the 45 municipalities established in Sweden in", "Karl Gustav is the mayor of",
                  "Every year, Malm Town organizes a", "Malm Town houses", "The opera house operates as"],
    "gen_target": ["2030", "Malm Town", "Sustainability Summit", "Northern Hill Institute", "Malm Town's cultural hub"],
    "hard_gen_input": ["The major power company in Malm Town is", "The founder is", "The mayor is", "The nickname is",
                       "The hub is"],
    "hard_gen_target": ["Vattenfall", "King Oscar II", "Karl Gustav", "Northern Hill town", "the Opera House"],
    "paraphrases": ["Malm Town, one of 45 new Swedish municipalities of 2030, is led by mayor Karl Gustav."],
}


def test_chang_format_loads_unchanged(tmp_path):
    entries = [CHANG_ENTRY, {**CHANG_ENTRY, "paraphrases": []}, {k: v for k, v in CHANG_ENTRY.items() if k != "paraphrases"}]
    text = json.dumps(entries, indent=4)
    path = tmp_path / "fictional_knowledge.json"
    path.write_text(text)
    assert load_knowledge(str(path)) == json.loads(text)


def test_extra_fields_are_kept():
    entry = {**CHANG_ENTRY, "name": "Malm Town", "kind": "place", "notes": {"any": [1, 2]}}
    assert validate_knowledge([copy.deepcopy(entry)]) == [entry]


def _broken(mutate):
    entries = [copy.deepcopy(CHANG_ENTRY) for _ in range(4)]
    mutate(entries[3])
    return entries


@pytest.mark.parametrize("mutate, field", [
    (lambda e: e.pop("mem_input"), "'mem_input'"),
    (lambda e: e["gen_target"].pop(), "'gen_target'"),
    (lambda e: e["hard_gen_input"].append("x"), "'hard_gen_input'"),
    (lambda e: e["mem_target"].__setitem__(2, 7), "'mem_target'"),
    (lambda e: e["hard_gen_target"].__setitem__(1, "  "), "'hard_gen_target' item 1"),
    (lambda e: e.__setitem__("gen_input", "a string"), "'gen_input'"),
    (lambda e: e.__setitem__("train_context", ["a", "list"]), "'train_context'"),
    (lambda e: e.__setitem__("train_context", ""), "'train_context'"),
    (lambda e: e.__setitem__("paraphrases", "one string"), "'paraphrases'"),
    (lambda e: e["paraphrases"].append(None), "'paraphrases'"),
])
def test_bad_entry_names_index_and_field(mutate, field):
    with pytest.raises(KentropyError) as err:
        validate_knowledge(_broken(mutate), source="knowledge.json")
    msg = str(err.value)
    assert msg.startswith("knowledge.json: entry 3: ") and field in msg and "\n" not in msg


def test_bad_file_shapes(tmp_path):
    with pytest.raises(KentropyError, match="entry 1: expected an object"):
        validate_knowledge([CHANG_ENTRY, "text"])
    with pytest.raises(KentropyError, match="expected a JSON list"):
        validate_knowledge({"train_context": "x"})
    with pytest.raises(KentropyError, match="no entries"):
        validate_knowledge([])
    bad = tmp_path / "bad.json"
    bad.write_text("[{")
    with pytest.raises(KentropyError, match="bad.json: not valid JSON"):
        load_knowledge(str(bad))
    with pytest.raises(KentropyError, match="not found"):
        load_knowledge(str(tmp_path / "missing.json"))
