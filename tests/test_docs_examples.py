"""The docs' Python examples run as written, and the modules and files the docs name exist.

The convention for a ```python block of README.md or docs/*.md:
- it runs as written, in a namespace of its own, top to bottom, on CPU and offline;
- the names it uses without defining them are the reader's own objects, and the test stands in for them
  (`stand_ins`): `model` (a tiny llama, sdpa attention as transformers loads one by default, with a few dormant neurons),
  `tokenizer`, `texts` and `probe_texts` (a few documents), `step` (a training step). Any other name an
  example reads without defining it is a fault of the example;
- `AutoModelForCausalLM`, `AutoModel` and `AutoTokenizer.from_pretrained` of a hub id (a name that is no
  local path) load a tiny local llama in its place, so an example may start from a real model id.

Outside the blocks, every dotted `kentropy.a.b` between backticks must name a module or an object
(`kentropy.evaluation.downstream.evaluate`, not a function shadowing its module), and every
`kentropy/...` path a file or a glob that matches one.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest
import torch
import transformers as T
from conftest import tiny_model

ROOT = Path(__file__).parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def examples() -> list:
    """(file name, line of the block's first code line, code) of every ```python block, in file order."""
    out = []
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        for m in BLOCK.finditer(text):
            out.append(pytest.param(path, text[: m.start(1)].count("\n") + 1, m.group(1), id=f"{path.name}:{text[: m.start()].count(chr(10)) + 1}"))
    return out


@pytest.fixture
def stand_ins(tokenizer, sample_texts, model_dir, monkeypatch):
    """The reader's objects, fresh for each example; hub ids redirected to a tiny local llama."""
    local = str(model_dir("llama", 0))
    for cls in (T.AutoModelForCausalLM, T.AutoModel, T.AutoTokenizer):
        original = cls.from_pretrained.__func__

        def from_pretrained(klass, name, *args, _original=original, **kwargs):
            return _original(klass, name if Path(str(name)).exists() else local, *args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", classmethod(from_pretrained))
    model = tiny_model("llama", eager=False)
    with torch.no_grad():  # dormant neurons, as a trained model has (ReDo's example, tau 0.1, finds them)
        for layer in model.model.layers:
            layer.mlp.up_proj.weight[:3] *= 0.01
    return {"model": model, "tokenizer": tokenizer, "texts": sample_texts[:6], "probe_texts": sample_texts[6:10], "step": 0}


def run_example(path: Path, line: int, code: str, names: dict) -> dict:
    """Execute `code` (from `path`, starting at `line`) with `names` as its undefined names; its namespace after."""
    namespace = dict(names)
    exec(compile("\n" * (line - 1) + code, str(path), "exec"), namespace)  # tracebacks point into the doc
    return namespace


def test_the_docs_have_examples():
    assert len(examples()) >= 1


@pytest.mark.parametrize("path, line, code", examples())
def test_example_runs(path, line, code, stand_ins):
    run_example(path, line, code, stand_ins)


def test_hub_ids_stand_for_a_tiny_model(stand_ins, tmp_path):
    """The convention itself: an example may name a hub model; the test loads the tiny local one instead."""
    code = ("from transformers import AutoModelForCausalLM, AutoTokenizer\n"
            "import kentropy\n"
            "model = AutoModelForCausalLM.from_pretrained('EleutherAI/pythia-160m')\n"
            "tokenizer = AutoTokenizer.from_pretrained('EleutherAI/pythia-160m')\n"
            "m = kentropy.measure(model, tokenizer, texts, seq_len=32, progress=False)\n")
    ns = run_example(tmp_path / "example.md", 1, code, {"texts": stand_ins["texts"]})
    assert ns["model"].config.model_type == "llama" and ns["m"].layers == 2


def _dotted_names() -> list[str]:
    found = set()
    for path in DOCS:
        for quoted in re.findall(r"`([^`\n]+)`", path.read_text(encoding="utf-8")):
            found.update(re.findall(r"\bkentropy(?:\.[A-Za-z_]\w*)+", quoted))
    return sorted(found)


@pytest.mark.parametrize("dotted", _dotted_names())
def test_named_objects_exist(dotted):
    parts = dotted.split(".")
    for k in range(len(parts), 0, -1):  # the longest importable prefix, then attributes
        try:
            obj = importlib.import_module(".".join(parts[:k]))
        except ModuleNotFoundError:
            continue
        for attr in parts[k:]:
            assert hasattr(obj, attr), f"{dotted}: {'.'.join(parts[:k])} has no {attr}"
            obj = getattr(obj, attr)
        return
    pytest.fail(f"{dotted}: no such module")


def _paths() -> list[str]:
    found = set()
    for path in DOCS:
        found.update(re.findall(r"(?:src/)?kentropy/[\w/*.-]*\w", path.read_text(encoding="utf-8")))
    return sorted(found)


@pytest.mark.parametrize("named", _paths())
def test_named_paths_exist(named):
    rel = named if named.startswith("src/") else "src/" + named
    assert list(ROOT.glob(rel)), f"{named}: no such file or directory in the repository"
