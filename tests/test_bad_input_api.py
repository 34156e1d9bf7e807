"""The bad-input matrix of the Python API, and the CLI cases of load failures and structure (issue 33).

Classes:
- `str-for-list`: one str (or one dict) where a list is expected: an error naming the argument, never a
  str split into its characters;
- `argument`: a value the CLI would refuse (a number out of range, a float for an int, an unknown
  choice, a model and tokenizer swapped, entries or a plan that do not fit): one `KentropyError` naming
  the argument as the caller wrote it (`batch_size=0`), never a flag (`--batch-size`), raised before the
  model runs a single forward;
- `structure`: a model that has nothing to measure or probe (no layers, no language-model head);
- `load` (CLI): a config.json of the wrong type, a torn or incomplete shard index: the library's whole
  reason, naming the file;
- `series` (CLI): a checkpoint a command cannot take, found from its config before the first one is
  computed;
- `source` (CLI): the error of an empty document names its file.

Every Python case asserts: the type (a `KentropyError`), one line, the argument's name, no `--flag`, and
no forward pass. Every CLI case: exit 2, exactly one stderr line (`error:`, so no checkpoint started),
naming the file, and nothing written.
"""

from __future__ import annotations

import json
import re
import shutil

import pytest
import torch
import transformers as T
from conftest import family_config, run_cli, tiny_model

import kentropy
from kentropy.errors import ArgumentError, KentropyError

COUNTS: dict[str, dict[str, int]] = {}
CASES = []


def case(function: str, klass: str, name: str, call, says: str):
    """`call(env)` must raise a KentropyError whose message matches `says` (a regex)."""
    CASES.append(pytest.param(call, says, id=f"{function}-{klass}-{name}"))
    COUNTS.setdefault(function, {}).setdefault(klass, 0)
    COUNTS[function][klass] += 1


@pytest.fixture(scope="module")
def env(tokenizer, sample_texts):
    """A tiny llama loaded as transformers loads by default (sdpa attention), and good inputs for it."""
    torch.manual_seed(0)
    model = T.AutoModelForCausalLM.from_config(family_config("llama")).eval()
    assert model.config._attn_implementation != "eager"
    entries = kentropy.generate_knowledge(2, n_paraphrases=1, seed=0)
    forwards = []
    model.register_forward_pre_hook(lambda module, args: forwards.append(1))
    torch.manual_seed(0)
    zero = T.AutoModelForCausalLM.from_config(family_config("llama", num_hidden_layers=0)).eval()
    return {"model": model, "tok": tokenizer, "texts": sample_texts[:4], "entries": entries, "forwards": forwards,
            "plan": kentropy.make_plan(entries, paraphrase=1, once=1, rounds=2, interval=1), "zero": zero,
            "bert": tiny_model("bert"), "gpt2": tiny_model("gpt2")}


def measure(e, **kw):
    args = {"model": e["model"], "tokenizer": e["tok"], "texts": e["texts"]}
    args |= {k: kw.pop(k) for k in list(kw) if k in args}
    return lambda: kentropy.measure(args["model"], args["tokenizer"], args["texts"], seq_len=kw.pop("seq_len", 32),
                                    progress=False, **kw)


def probe(e, **kw):
    args = {"model": e["model"], "tokenizer": e["tok"], "entries": e["entries"]}
    args |= {k: kw.pop(k) for k in list(kw) if k in args}
    return lambda: kentropy.probe(args["model"], args["tokenizer"], args["entries"], **kw)


def monitor(e, texts=None, step=0, **kw):
    def call():
        kentropy.EntropyMonitor(e["tok"], e["texts"] if texts is None else texts, kw.pop("every", 1), seq_len=32, **kw)(e["model"], step)

    return call


def plan(e, entries=None, **kw):
    return lambda: kentropy.make_plan(e["entries"] if entries is None else entries, **({"paraphrase": 1, "once": 1, "rounds": 2} | kw))


def generate(**kw):
    return lambda: kentropy.generate_knowledge(kw.pop("n_entries", 2), **kw)


# ---- class 6: one str where a list is expected --------------------------------------------------
LIST = "where a list of .* is expected: wrap it in a list"
case("measure", "str-for-list", "texts", lambda e: measure(e, texts="a single document"), f"^texts='a single document': one str {LIST}")
case("measure", "str-for-list", "metrics", lambda e: measure(e, metrics="knowledge"), f"^metrics='knowledge': one str {LIST}")
case("measure", "str-for-list", "texts-bytes", lambda e: measure(e, texts=b"a document"), f"^texts=b'a document': one bytes {LIST}")
case("EntropyMonitor", "str-for-list", "texts", lambda e: monitor(e, texts="a document"), f"^texts='a document': one str {LIST}")
case("EntropyMonitor", "str-for-list", "metrics", lambda e: monitor(e, metrics="attention"), f"^metrics='attention': one str {LIST}")
case("generate_knowledge", "str-for-list", "avoid", lambda e: generate(avoid="Zorb"), f"^avoid='Zorb': one str {LIST}")
case("probe", "str-for-list", "entries", lambda e: probe(e, entries="knowledge.json"), f"^entries='knowledge.json': one str {LIST}")
case("probe", "str-for-list", "one-entry", lambda e: probe(e, entries=e["entries"][0]), f"^entries=.*: one dict {LIST}")
case("make_plan", "str-for-list", "entries", lambda e: plan(e, entries="knowledge.json"), f"^entries='knowledge.json': one str {LIST}")
case("make_plan", "str-for-list", "one-entry", lambda e: plan(e, entries=e["entries"][0]), f"^entries=.*: one dict {LIST}")

# ---- class 7: the CLI's checks, in the caller's terms -------------------------------------------
case("measure", "argument", "texts-none", lambda e: measure(e, texts=None), r"^texts=None: expected a list of str, got NoneType$")
case("measure", "argument", "texts-not-str", lambda e: measure(e, texts=["fine", 3]), r"^texts\[1\]=3: expected a str, got int$")
case("measure", "argument", "texts-empty", lambda e: measure(e, texts=[]), r"^texts: no documents to measure$")
case("measure", "argument", "empty-document", lambda e: measure(e, texts=["fine", ""]), r"^texts: document 1: no tokens")
case("measure", "argument", "metric-unknown", lambda e: measure(e, metrics=("knowledge", "loss")),
     r"^metrics=\('knowledge', 'loss'\): choose from knowledge, attention, next-token$")
case("measure", "argument", "activation", lambda e: measure(e, activation="square"), r"^activation='square': choose abs or relu$")
case("measure", "argument", "batch-size-0", lambda e: measure(e, batch_size=0), r"^batch_size=0: must be >= 1$")
case("measure", "argument", "batch-size-float", lambda e: measure(e, batch_size=1.5), r"^batch_size=1.5: must be an integer$")
case("measure", "argument", "seq-len-str", lambda e: measure(e, seq_len="32"), r"^seq_len='32': must be an integer$")
case("measure", "argument", "seq-len-0", lambda e: measure(e, seq_len=0), r"^seq_len=0: must be >= 1$")
case("measure", "argument", "max-instances-0", lambda e: measure(e, max_instances=0), r"^max_instances=0: must be >= 1$")
case("measure", "argument", "max-instances-negative", lambda e: measure(e, max_instances=-1), r"^max_instances=-1: must be >= 1$")
case("measure", "argument", "longer-than-the-positions", lambda e: measure(e, model=e["gpt2"], texts=[" ".join(e["texts"] * 10)], seq_len=1024),
     r"^seq_len: documents of \d+ tokens exceed the model's 128 positions \(use at most 128\)$")
case("measure", "argument", "model-and-tokenizer-swapped", lambda e: measure(e, model=e["tok"], tokenizer=e["model"]),
     r"^model: expected a transformers model, got")
case("measure", "argument", "tokenizer-not-one", lambda e: measure(e, tokenizer=e["model"]), r"^tokenizer: expected a transformers tokenizer")
case("EntropyMonitor", "argument", "every-0", lambda e: monitor(e, every=0), r"^every=0: must be >= 1$")
case("EntropyMonitor", "argument", "every-float", lambda e: monitor(e, every=0.5), r"^every=0.5: must be an integer$")
case("EntropyMonitor", "argument", "batch-size-0", lambda e: monitor(e, batch_size=0), r"^batch_size=0: must be >= 1$")
case("EntropyMonitor", "argument", "activation", lambda e: monitor(e, activation="square"), r"^activation='square': choose abs or relu$")
case("EntropyMonitor", "argument", "metric-unknown", lambda e: monitor(e, metrics=("loss",)), r"^metrics=\('loss',\): choose from")
case("EntropyMonitor", "argument", "step-float", lambda e: monitor(e, step=1.5), r"^step=1.5: must be an integer$")
case("generate_knowledge", "argument", "entries-0", lambda e: generate(n_entries=0), r"^n_entries=0: must be >= 1$")
case("generate_knowledge", "argument", "entries-float", lambda e: generate(n_entries=2.5), r"^n_entries=2.5: must be an integer$")
case("generate_knowledge", "argument", "entries-str", lambda e: generate(n_entries="2"), r"^n_entries='2': must be an integer$")
case("generate_knowledge", "argument", "paraphrases-negative", lambda e: generate(n_paraphrases=-1), r"^n_paraphrases=-1: must be >= 0$")
case("generate_knowledge", "argument", "seed-negative", lambda e: generate(seed=-1), r"^seed=-1: must be >= 0$")
case("generate_knowledge", "argument", "facts-3", lambda e: generate(facts=3), r"^facts=3: must be at least 6")
case("generate_knowledge", "argument", "avoid-not-str", lambda e: generate(avoid=["Zorb", 7]), r"^avoid\[1\]=7: expected a str, got int$")
case("probe", "argument", "entry-missing-field", lambda e: probe(e, entries=[{k: v for k, v in e["entries"][0].items() if k != "mem_input"}]),
     r"^entries: entry 0: missing field 'mem_input'")
case("probe", "argument", "entry-not-a-dict", lambda e: probe(e, entries=[e["entries"][0], "x"]), r"^entries\[1\]: expected an entry dict, got str$")
case("probe", "argument", "plan-malformed", lambda e: probe(e, plan={"rounds": 2}), r"^plan: field 'version' is missing$")
case("probe", "argument", "plan-beyond-entries", lambda e: probe(e, entries=e["entries"][:1], plan=e["plan"]),
     r"^plan: field 'schedule\[0\]\.items\[1\]\.entry' is 1, but there are 1 entries$")
case("probe", "argument", "plan-empty-groups", lambda e: probe(e, plan=e["plan"] | {"groups": {"paraphrase": [], "once": []},
                                                                          "schedule": [{**r, "items": []} for r in e["plan"]["schedule"]]}),
     r"^plan: both groups are empty")
case("probe", "argument", "batch-size-0", lambda e: probe(e, batch_size=0), r"^batch_size=0: must be >= 1$")
case("probe", "argument", "model-and-tokenizer-swapped", lambda e: probe(e, model=e["tok"], tokenizer=e["model"]),
     r"^model: expected a transformers model, got")
case("make_plan", "argument", "rounds-0", lambda e: plan(e, rounds=0), r"^rounds=0: must be >= 1$")
case("make_plan", "argument", "rounds-float", lambda e: plan(e, rounds=2.5), r"^rounds=2.5: must be an integer$")
case("make_plan", "argument", "interval-0", lambda e: plan(e, interval=0), r"^interval=0: must be >= 1$")
case("make_plan", "argument", "paraphrase-str", lambda e: plan(e, paraphrase="1"), r"^paraphrase='1': must be an integer$")
case("make_plan", "argument", "both-groups-0", lambda e: plan(e, paraphrase=0, once=0), r"^once=0: no entry would be injected")
case("make_plan", "argument", "paraphrases-not-a-list", lambda e: plan(e, entries=[{"paraphrases": "one"}], paraphrase=1, once=0),
     r"^knowledge: entry 0: field 'paraphrases' must be a list of strings$")

# ---- class 9: structure -------------------------------------------------------------------------
case("measure", "structure", "no-layers", lambda e: measure(e, model=e["zero"]), r"^model: num_hidden_layers is 0: a model without layers")
case("probe", "structure", "no-layers", lambda e: probe(e, model=e["zero"]), r"^model: num_hidden_layers is 0: a model without layers")
case("probe", "structure", "no-lm-head", lambda e: probe(e, model=e["bert"]), r"^model: probing needs a causal LM")


@pytest.mark.parametrize("call, says", CASES)
def test_api_bad_input(call, says, env):
    env["forwards"].clear()
    with pytest.raises(KentropyError) as info:
        call(env)()
    message = str(info.value)
    assert re.search(says, message), message
    assert "\n" not in message and not re.search(r"--[a-z]", message), message  # one line, no CLI flag
    assert env["forwards"] == []  # refused before any work


def test_matrix_counts():
    """Every public function of the matrix has its str-for-list and argument cases."""
    for function, classes in COUNTS.items():
        if not function.endswith("(CLI)"):
            assert classes.get("str-for-list", 0) >= 1 and classes.get("argument", 0) >= 1, function
    assert set(COUNTS) >= {"measure", "EntropyMonitor", "probe", "generate_knowledge", "make_plan"}


def test_argument_error_in_each_callers_terms():
    """One error, two renderings: the Python argument for a caller, the flag for a CLI user."""
    import dataclasses

    from kentropy.runtime.options import as_flag, option

    @dataclasses.dataclass
    class Cfg:
        models: list[str] = option(help="", argument=True)
        batch_size: int = option(8, "")
        metrics: str = option("knowledge", "")
        data: str = option("d.jsonl", "")

    e = ArgumentError("batch_size", "must be >= 1", 0)
    assert isinstance(e, KentropyError) and str(e) == "batch_size=0: must be >= 1"
    given = {"models": ["m"], "batch_size": 0, "metrics": "knowledge,loss", "data": "docs.jsonl"}
    assert str(as_flag(e, Cfg, given)) == "--batch-size 0: must be >= 1"
    metrics = ArgumentError("metrics", "choose from knowledge, attention, next-token", ("knowledge", "loss"))
    assert str(as_flag(metrics, Cfg, given)) == "--metrics knowledge,loss: choose from knowledge, attention, next-token"
    doc = ArgumentError("data", "document 1: no tokens")  # no value: the CLI shows the one typed
    assert str(doc) == "data: document 1: no tokens"
    assert str(as_flag(doc, Cfg, given)) == "--data docs.jsonl: document 1: no tokens"
    assert str(as_flag(ArgumentError("models", "no layers"), Cfg, given)) == "MODELS m: no layers"
    other = ArgumentError("texts", "no documents")  # set by the command itself, not by a flag: left as it is
    assert as_flag(other, Cfg, given) is other


def test_attention_on_a_default_loaded_model(env):
    """The README's `metrics=("knowledge", "attention")` on a model loaded with sdpa attention: measured with
    eager attention inside (the same numbers as an eager-loaded model), the model's own implementation after."""
    model, tok, texts = env["model"], env["tok"], env["texts"]
    before = model.config._attn_implementation
    got = kentropy.measure(model, tok, texts, seq_len=32, metrics=("knowledge", "attention"), progress=False)
    assert model.config._attn_implementation == before
    eager = T.AutoModelForCausalLM.from_config(family_config("llama"), attn_implementation="eager").eval()
    eager.load_state_dict(model.state_dict())
    want = kentropy.measure(eager, tok, texts, seq_len=32, metrics=("knowledge", "attention"), progress=False)
    assert got.attention_entropy_per_layer == want.attention_entropy_per_layer
    assert got.knowledge_entropy == want.knowledge_entropy


# ---- CLI: load failures, structure found up front, the file of an empty document ----------------
@pytest.fixture(scope="module")
def broken(model_dir, tmp_path_factory):
    """Model directories whose files show the problem: config.json of the wrong type, no layers, a torn
    or incomplete shard index; and a BERT (no language-model head)."""
    d = tmp_path_factory.mktemp("broken")
    good = model_dir("llama", 0)
    out = {"good": good, "bert": model_dir("bert", 0)}
    wrong = d / "wrong-type"
    shutil.copytree(good, wrong)
    cfg = json.loads((wrong / "config.json").read_text())
    (wrong / "config.json").write_text(json.dumps(cfg | {"num_hidden_layers": "two"}))
    zero = d / "no-layers"
    T.AutoModelForCausalLM.from_config(family_config("llama", num_hidden_layers=0)).save_pretrained(zero)
    for f in good.glob("tokenizer*"):
        shutil.copy(f, zero)
    model = T.AutoModelForCausalLM.from_pretrained(good)
    for name in ("index-torn", "index-shard-missing"):
        model.save_pretrained(d / name, max_shard_size="20KB")
        for f in good.glob("tokenizer*"):
            shutil.copy(f, d / name)
    index = d / "index-torn" / "model.safetensors.index.json"
    index.write_text(index.read_text()[:60])
    shards = sorted((d / "index-shard-missing").glob("model-*.safetensors"))
    assert len(shards) > 1
    shards[-1].unlink()
    (d / "docs.txt").write_text("a first document\nand a second one\n")
    (d / "empty-doc.jsonl").write_text('{"text": "fine"}\n{"text": ""}\n')
    (d / "k.json").write_text(json.dumps(kentropy.generate_knowledge(2, n_paraphrases=1, seed=0)))
    return out | {"wrong-type": wrong, "no-layers": zero, "index-torn": d / "index-torn", "missing": shards[-1],
                  "index-shard-missing": d / "index-shard-missing", "docs": d / "docs.txt", "empty-doc": d / "empty-doc.jsonl",
                  "k": d / "k.json"}


def _measure(b, out, *models, data=None):
    return ["measure", *[b[m] for m in models], "--data", b[data or "docs"], "--seq-len", 16, "--out", out]


def _probe(b, out, *models):
    return ["probe", *[b[m] for m in models], "--knowledge", b["k"], "--out", out]


CLI = []


def cli(command: str, klass: str, name: str, build):
    CLI.append(pytest.param(build, id=f"{command}-{klass}-{name}"))
    COUNTS.setdefault(command + " (CLI)", {}).setdefault(klass, 0)
    COUNTS[command + " (CLI)"][klass] += 1


WHOLE_REASON = "Validation error for field 'num_hidden_layers': TypeError: Field 'num_hidden_layers' expected int, got str"
cli("measure", "load", "config-wrong-type", lambda b, o: (_measure(b, o, "wrong-type"), f"wrong-type/config.json: {WHOLE_REASON}"))
cli("probe", "load", "config-wrong-type", lambda b, o: (_probe(b, o, "wrong-type"), f"wrong-type/config.json: {WHOLE_REASON}"))
cli("resuscitate", "load", "config-wrong-type",
    lambda b, o: (["resuscitate", b["wrong-type"], "--data", b["docs"], "--ratio", 0.5, "--amplify", 2, "--out", o],
                  f"wrong-type/config.json: {WHOLE_REASON}"))
cli("measure", "load", "index-torn", lambda b, o: (_measure(b, o, "index-torn"), "index-torn/model.safetensors.index.json: not valid JSON"))
cli("measure", "load", "index-shard-missing",
    lambda b, o: (_measure(b, o, "index-shard-missing"), f"model.safetensors.index.json: its weight_map names {b['missing'].name}, "
                                                         "which is not in"))
cli("probe", "load", "index-torn", lambda b, o: (_probe(b, o, "index-torn"), "index-torn/model.safetensors.index.json: not valid JSON"))
cli("measure", "structure", "no-layers", lambda b, o: (_measure(b, o, "no-layers"), "no-layers/config.json: num_hidden_layers is 0"))
cli("probe", "structure", "no-layers", lambda b, o: (_probe(b, o, "no-layers"), "no-layers/config.json: num_hidden_layers is 0"))
cli("measure", "series", "second-has-no-layers", lambda b, o: (_measure(b, o, "good", "no-layers"), "no-layers/config.json: num_hidden_layers is 0"))
cli("measure", "series", "second-config-wrong-type", lambda b, o: (_measure(b, o, "good", "wrong-type"), "wrong-type/config.json"))
cli("measure", "series", "second-index-torn", lambda b, o: (_measure(b, o, "good", "index-torn"), "model.safetensors.index.json: not valid JSON"))
cli("probe", "series", "second-has-no-lm-head", lambda b, o: (_probe(b, o, "good", "bert"), "probing needs a causal LM"))
cli("probe", "series", "second-has-no-layers", lambda b, o: (_probe(b, o, "good", "no-layers"), "num_hidden_layers is 0"))
cli("measure", "source", "empty-document", lambda b, o: (_measure(b, o, "good", data="empty-doc"), "empty-doc.jsonl: document 1: no tokens"))
cli("measure", "flag", "batch-size-0", lambda b, o: (_measure(b, o, "good") + ["--batch-size", 0], "--batch-size 0: must be > 0"))
cli("measure", "flag", "metrics-unknown", lambda b, o: (_measure(b, o, "good") + ["--metrics", "knowledge,loss"],
                                                        "--metrics knowledge,loss: choose from knowledge, attention, next-token"))
cli("knowledge generate", "flag", "facts-too-few", lambda b, o: (["knowledge", "generate", "--entries", 2, "--facts", 6, "--out", o],
                                                                 "--facts 6: too few for the probes"))


@pytest.mark.parametrize("build", CLI)
def test_cli_bad_input(build, broken, tmp_path, capsys):
    out = tmp_path / "out.json"
    argv, names = build(broken, out)
    code, _, err = run_cli(capsys, *argv)
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err  # one line: no checkpoint was started
    assert names in lines[0], lines[0]
    assert not re.search(r"\b[a-z]+_[a-z_]+=", lines[0]), lines[0]  # a flag, never a Python argument
    assert list(tmp_path.iterdir()) == []
