"""The bad-input matrix: every command x every class of bad input (issue 14).

Classes: `out` (an --out of the wrong kind: an existing directory for a JSON output, an existing
file for a directory output, a parent that is a file), `encoding` (non-UTF-8 bytes in an input
file), `weights` (a truncated or corrupt .safetensors), `number` (non-finite or out-of-range
flags), `state` (half-written inputs: a file cut short by a kill, a half-saved model directory;
another command's results), `fit` (a tokenizer and model that do not fit: ids beyond vocab_size,
inputs beyond the positions, --seq-len within the special tokens, no pad or eos), `weights` also
covers weights that do not match their config, `lock` (an output another command is writing),
`collide` (two outputs, or an output and an input, on one path), `symlink` (an output that is a
link), `resume` (an unfinished series: without --resume, of another config, torn), `report-to`,
`nest` (an input inside an output that --overwrite would delete, an output inside an input, typed
however: links, `..`, MODEL@rev), `partial` (a series' OUT.partial is one of its outputs: locked,
and apart from the others), `long-name` (a name that overflows the file system's limit once
`.partial` or a temp suffix is added), `mixed` (a --coefficients-out holding other files), `moved`
(train --resume with a path flag that names another input).
Each case asserts the exit code, exactly one `error:` line naming the thing, and that nothing
was written. Interrupts need a real process and signal: they are at the end.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import run_cli
from safetensors.torch import save_file

from kentropy.knowledge import generate_knowledge, make_plan

BAD_UTF8 = "good text here\n".encode() + b"caf\xe9 \xff\xfe not utf-8\n"


@pytest.fixture(scope="module")
def env(model_dir, tokenizer, sample_texts, tmp_path_factory):
    """Inputs shared by all cases (read-only): good ones and broken ones."""
    from kentropy.circuits import tasks_from_triples, write_tasks
    from kentropy.evaluation.downstream import write_task

    d = tmp_path_factory.mktemp("bad-input")
    e = {"model": model_dir("llama", 0)}
    (d / "docs.txt").write_text("\n".join(sample_texts[:8]) + "\n")
    (d / "bad.txt").write_bytes(BAD_UTF8)
    (d / "bad.jsonl").write_bytes(b'{"text": "fine"}\n{"text": "caf\xe9"}\n')
    entries = generate_knowledge(3, n_paraphrases=2, seed=0)
    for x in entries:  # passages cut to a few words, to fit train's 32-token rows
        x["train_context"] = " ".join(x["train_context"].split()[:6])
        x["paraphrases"] = [" ".join(p.split()[:6]) for p in x["paraphrases"]]
    (d / "fk.json").write_text(json.dumps(entries))
    (d / "fk-bad.json").write_bytes(json.dumps(entries).encode()[:-40] + b"\xff\xfe\"]}]")
    (d / "fk-torn.json").write_text(json.dumps(entries)[:500])  # a kill mid-write (without our atomic writes)
    plan = make_plan(entries, paraphrase=2, once=1, rounds=3, interval=4)
    (d / "plan.json").write_text(json.dumps(plan))
    (d / "plan-torn.json").write_text(json.dumps(plan)[:100])
    (d / "plan-bad.json").write_bytes(b'{"version": 1, "rounds": \xff}')
    (d / "avoid-bad.txt").write_bytes(BAD_UTF8)

    # weights: truncated (a kill mid-save), and a half-saved model directory (no config.json)
    trunc = d / "truncated-model"
    shutil.copytree(e["model"], trunc)
    w = trunc / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    half = d / "half-saved-model"
    shutil.copytree(e["model"], half)
    (half / "config.json").unlink()
    e.update(truncated=trunc, half=half)

    # tokenizers that do not fit their model: ids beyond vocab_size (300 < 320 tokens), special tokens
    # added to every document (bos + eos), no pad and no eos; a model of 128 positions (gpt2) and documents longer
    import transformers as T
    from conftest import family_config
    from tokenizers import processors

    small = d / "vocab-300-model"
    T.AutoModelForCausalLM.from_config(family_config("llama", vocab_size=300)).save_pretrained(small)
    tokenizer.save_pretrained(small)
    specials, nopad = d / "bos-eos-model", d / "no-pad-model"
    for m in (specials, nopad):
        shutil.copytree(e["model"], m)
    tok = copy.deepcopy(tokenizer)
    b, eos = tok.convert_tokens_to_ids(["<s>", "</s>"])
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", b), ("</s>", eos)])
    tok.save_pretrained(specials)
    tok = copy.deepcopy(tokenizer)
    tok.pad_token, tok.eos_token = None, None
    tok.save_pretrained(nopad)
    (d / "long.txt").write_text("\n".join(" ".join(sample_texts[i : i + 4]) for i in range(0, 16, 4)) + "\n")  # ~400 tokens each
    for name, layers in (("config-3-layers", 3), ("config-1-layer", 1)):  # weights of 2 layers: one missing, one extra
        m = d / name
        shutil.copytree(e["model"], m)
        cfg = json.loads((m / "config.json").read_text())
        (m / "config.json").write_text(json.dumps(cfg | {"num_hidden_layers": layers}))
        e[name] = m
    (d / "probe-result.json").write_text(json.dumps({"results": [{"model": "m", "revision": None, "mem": -1.0, "gen": -1.0,
                                                                    "hard_gen": -1.0, "overall": -1.0}]}))
    (d / "result-no-layers.json").write_text(json.dumps({"results": [{"model": "m", "knowledge_entropy": 1.0}]}))
    e["probe-result.json"], e["result-no-layers.json"] = d / "probe-result.json", d / "result-no-layers.json"
    e.update({"vocab-300": small, "bos-eos": specials, "no-pad": nopad, "gpt2": model_dir("gpt2", 0), "long.txt": d / "long.txt"})

    # coefficients (Cbar [2, 24] of the tiny llama): good, NaN, negative, all-zero, truncated, a layer missing
    good = {f"layers.{l}": torch.rand(24, dtype=torch.float64) + 0.1 for l in range(2)}
    for name, edit in {"nan": ("layers.1", 3, float("nan")), "neg": ("layers.1", 5, -0.5)}.items():
        t = {k: v.clone() for k, v in good.items()}
        t[edit[0]][edit[1]] = edit[2]
        save_file(t, str(d / f"coef-{name}.safetensors"))
    save_file({"layers.0": good["layers.0"], "layers.1": torch.zeros(24, dtype=torch.float64)}, str(d / "coef-zero.safetensors"))
    save_file({"layers.0": good["layers.0"], "layers.2": good["layers.1"]}, str(d / "coef-gap.safetensors"))
    save_file(good, str(d / "coef.safetensors"))
    raw = (d / "coef.safetensors").read_bytes()
    (d / "coef-torn.safetensors").write_bytes(raw[: len(raw) - 50])

    # a measure result for plot; circuits tasks; lm-eval task dirs (good, malformed YAML, non-UTF-8 YAML)
    (d / "result.json").write_text(json.dumps({"results": [{"model": "m", "revision": None, "knowledge_entropy": 1.0,
                                                             "knowledge_entropy_per_layer": [0.5, 0.5]}]}))
    (d / "result-bad.json").write_bytes(b'{"results": [{"model": "caf\xe9"}]}')
    (d / "result-torn.json").write_text('{"results": [{"model": "m", "knowl')
    facts = [(s, "was born in", t, "born", False) for s, t in zip(["Ostrel", "Sable", "Carran", "Emrik"], ["salt", "fish"] * 2)]
    write_tasks(d / "tasks.json", tasks_from_triples(facts, tokenizer))
    (d / "tasks-bad.json").write_bytes(b'{"tasks": [{"name": "caf\xe9"}]}')
    (d / "tasks-torn.json").write_text((d / "tasks.json").read_text()[:120])
    write_task(str(d / "lm"), "given", [{"query": "Q", "choices": ["a", "b"], "gold": 0}] * 2)
    (d / "yaml-bad").mkdir()
    (d / "yaml-bad" / "broken.yaml").write_text("task: broken\ndataset_path: json\n  output_type: [multiple_choice\n")
    (d / "yaml-utf8").mkdir()
    (d / "yaml-utf8" / "latin.yaml").write_bytes(b"task: caf\xe9\n")
    for k in ("docs.txt", "bad.txt", "bad.jsonl", "fk.json", "fk-bad.json", "fk-torn.json", "plan.json", "plan-torn.json",
              "plan-bad.json", "avoid-bad.txt", "coef.safetensors", "coef-nan.safetensors", "coef-neg.safetensors",
              "coef-zero.safetensors", "coef-gap.safetensors", "coef-torn.safetensors", "result.json", "result-bad.json",
              "result-torn.json", "tasks.json", "tasks-bad.json", "tasks-torn.json", "lm", "yaml-bad", "yaml-utf8"):
        e[k] = d / k
    return e


def NO_MODEL(w: Path) -> Path:
    """A model that is not there: an --out case must fail on --out, before any model is touched."""
    return w.parent / "no-such-model"


def _out_dir(w: Path, name: str = "out.json") -> Path:
    (w / name).mkdir()
    (w / name / "keep.txt").write_text("a user's file")
    return w / name


def _parent_file(w: Path) -> Path:
    (w / "afile").write_text("not a directory")
    return w / "afile" / "out.json"


def _file_at(w: Path, name: str = "outdir") -> Path:
    (w / name).write_text("a user's file")
    return w / name


# Each case: (command, class, id, build(env, work) -> (argv, the text the error must name)).
# `work` is an empty directory the case may write its --out into; afterwards it must be as it was.
def measure(e, out, *extra, data=None, model=None):
    return ["measure", model or e["model"], "--data", data or e["docs.txt"], "--seq-len", 32, "--out", out, *extra]


def resus(e, out, *extra, model=None, coef=None, data=None):
    src = ["--coefficients", coef or e["coef.safetensors"]] if data is None else ["--data", data]
    return ["resuscitate", model or e["model"], *src, "--ratio", 0.5, "--amplify", 1, "--out", out, *extra]


def probe(e, out, *extra, model=None, knowledge=None):
    return ["probe", model or e["model"], "--knowledge", knowledge or e["fk.json"], "--out", out, *extra]


def evaluate(e, out, *extra, model=None, task_dir=None):
    return ["evaluate", model or e["model"], "--tasks", "given", "--task-dir", task_dir or e["lm"], "--out", out, *extra]


def circuits(e, out, *extra, model=None, source=None):
    return ["circuits", model or e["model"], *(source or ["--task", e["tasks.json"]]), "--out", out, *extra]


def generate(e, out, *extra):
    return ["knowledge", "generate", "--entries", 3, "--paraphrases", 2, "--out", out, *extra]


def plan(e, out, *extra, knowledge=None):
    return ["knowledge", "plan", "--knowledge", knowledge or e["fk.json"], "--paraphrase", 2, "--once", 1, "--rounds", 3,
            "--interval", 4, "--out", out, *extra]


def plot(e, out, result=None):
    return ["plot", result or e["result.json"], "--out", out]


C = []


def case(command, klass, name, build):
    C.append(pytest.param(build, id=f"{command}-{klass}-{name}", marks=[]))
    COUNTS.setdefault(command, {}).setdefault(klass, 0)
    COUNTS[command][klass] += 1


COUNTS: dict[str, dict[str, int]] = {}
J = "out.json"

# ---- measure
case("measure", "out", "out-is-a-directory", lambda e, w: (measure(e, _out_dir(w), model=NO_MODEL(w)), "is a directory"))
case("measure", "out", "parent-is-a-file", lambda e, w: (measure(e, _parent_file(w), model=NO_MODEL(w)), "afile is a file"))
case("measure", "out", "coefficients-out-is-a-file",
     lambda e, w: (measure(e, w / J, "--coefficients-out", _file_at(w, "coef"), model=NO_MODEL(w)), "--coefficients-out"))
case("measure", "encoding", "txt", lambda e, w: (measure(e, w / J, data=e["bad.txt"]), "bad.txt: not UTF-8"))
case("measure", "encoding", "jsonl", lambda e, w: (measure(e, w / J, data=e["bad.jsonl"]), "bad.jsonl:2: not UTF-8"))
case("measure", "weights", "truncated", lambda e, w: (measure(e, w / J, model=e["truncated"]), "model.safetensors: truncated"))
case("measure", "state", "half-saved-model", lambda e, w: (measure(e, w / J, model=e["half"]), "no config.json"))
case("measure", "number", "seq-len-negative", lambda e, w: (measure(e, w / J, "--seq-len", -1), "--seq-len -1"))
case("measure", "number", "batch-size-0", lambda e, w: (measure(e, w / J, "--batch-size", 0), "--batch-size 0"))
case("measure", "number", "max-instances-0", lambda e, w: (measure(e, w / J, "--max-instances", 0), "--max-instances 0"))

# ---- plot
case("plot", "out", "out-is-a-directory", lambda e, w: (plot(e, _out_dir(w)), "is a directory"))
case("plot", "out", "parent-is-a-file", lambda e, w: (plot(e, _parent_file(w)), "afile is a file"))
case("plot", "encoding", "result", lambda e, w: (plot(e, w / "p.png", e["result-bad.json"]), "result-bad.json: not UTF-8"))
case("plot", "state", "torn-result", lambda e, w: (plot(e, w / "p.png", e["result-torn.json"]), "result-torn.json: not valid JSON"))

# ---- resuscitate (a directory output)
case("resuscitate", "out", "out-is-a-file", lambda e, w: (resus(e, _file_at(w), model=NO_MODEL(w)), "exists and is not a directory"))
case("resuscitate", "out", "parent-is-a-file", lambda e, w: (resus(e, _parent_file(w), model=NO_MODEL(w)), "afile is a file"))
case("resuscitate", "encoding", "data", lambda e, w: (resus(e, w / "o", data=e["bad.txt"]), "bad.txt: not UTF-8"))
case("resuscitate", "weights", "truncated-model", lambda e, w: (resus(e, w / "o", model=e["truncated"]), "model.safetensors: truncated"))
case("resuscitate", "weights", "truncated-coefficients",
     lambda e, w: (resus(e, w / "o", coef=e["coef-torn.safetensors"]), "coef-torn.safetensors: truncated"))
case("resuscitate", "number", "coefficients-nan", lambda e, w: (resus(e, w / "o", coef=e["coef-nan.safetensors"]),
                                                                  "coef-nan.safetensors: layers.1: holds NaN"))
case("resuscitate", "number", "coefficients-negative", lambda e, w: (resus(e, w / "o", coef=e["coef-neg.safetensors"]),
                                                                       "coef-neg.safetensors: layers.1: holds negative"))
case("resuscitate", "number", "coefficients-all-zero", lambda e, w: (resus(e, w / "o", coef=e["coef-zero.safetensors"]),
                                                                       "coef-zero.safetensors: layers.1: is all zero"))
case("resuscitate", "state", "coefficients-layer-missing", lambda e, w: (resus(e, w / "o", coef=e["coef-gap.safetensors"]),
                                                                           "coef-gap.safetensors: layers.1 is missing"))
case("resuscitate", "state", "half-saved-model", lambda e, w: (resus(e, w / "o", model=e["half"]), "no config.json"))
for flag, value, says in [("--amplify", "inf", "--amplify inf"), ("--amplify", "nan", "--amplify nan"), ("--amplify", "0", "--amplify 0"),
                          ("--ratio", "1.5", "--ratio 1.5"), ("--ratio", "nan", "--ratio nan"), ("--ratio", "-inf", "--ratio -inf")]:
    def build(e, w, flag=flag, value=value, says=says):
        argv = resus(e, w / "o")
        argv[argv.index(flag) + 1] = value
        return argv, says
    case("resuscitate", "number", f"{flag[2:]}-{value}", build)
case("resuscitate", "number", "seq-len-0", lambda e, w: (resus(e, w / "o", "--seq-len", 0), "--seq-len 0"))
case("resuscitate", "number", "batch-size-0", lambda e, w: (resus(e, w / "o", "--batch-size", 0), "--batch-size 0"))

# ---- knowledge generate / plan
case("knowledge generate", "out", "out-is-a-directory", lambda e, w: (generate(e, _out_dir(w)), "is a directory"))
case("knowledge generate", "out", "parent-is-a-file", lambda e, w: (generate(e, _parent_file(w)), "afile is a file"))
case("knowledge generate", "encoding", "avoid", lambda e, w: (generate(e, w / J, "--avoid", e["avoid-bad.txt"]), "avoid-bad.txt: not UTF-8"))
case("knowledge generate", "number", "entries-0", lambda e, w: (generate(e, w / J, "--entries", 0), "--entries 0"))
case("knowledge generate", "number", "paraphrases-negative", lambda e, w: (generate(e, w / J, "--paraphrases", -1), "--paraphrases -1"))
case("knowledge generate", "number", "seed-negative", lambda e, w: (generate(e, w / J, "--seed", -1), "--seed -1"))
case("knowledge plan", "out", "out-is-a-directory", lambda e, w: (plan(e, _out_dir(w)), "is a directory"))
case("knowledge plan", "encoding", "knowledge", lambda e, w: (plan(e, w / J, knowledge=e["fk-bad.json"]), "fk-bad.json: not UTF-8"))
case("knowledge plan", "state", "torn-knowledge", lambda e, w: (plan(e, w / J, knowledge=e["fk-torn.json"]), "fk-torn.json: not valid JSON"))
case("knowledge plan", "number", "rounds-0", lambda e, w: (plan(e, w / J, "--rounds", 0), "--rounds 0"))
case("knowledge plan", "number", "interval-0", lambda e, w: (plan(e, w / J, "--interval", 0), "--interval 0"))
case("knowledge plan", "number", "paraphrase-negative", lambda e, w: (plan(e, w / J, "--paraphrase", -1), "--paraphrase -1"))

# ---- probe
case("probe", "out", "out-is-a-directory", lambda e, w: (probe(e, _out_dir(w), model=NO_MODEL(w)), "is a directory"))
case("probe", "out", "parent-is-a-file", lambda e, w: (probe(e, _parent_file(w), model=NO_MODEL(w)), "afile is a file"))
case("probe", "encoding", "knowledge", lambda e, w: (probe(e, w / J, knowledge=e["fk-bad.json"]), "fk-bad.json: not UTF-8"))
case("probe", "encoding", "plan", lambda e, w: (probe(e, w / J, "--plan", e["plan-bad.json"]), "plan-bad.json: not UTF-8"))
case("probe", "weights", "truncated", lambda e, w: (probe(e, w / J, model=e["truncated"]), "model.safetensors: truncated"))
case("probe", "state", "torn-plan", lambda e, w: (probe(e, w / J, "--plan", e["plan-torn.json"]), "plan-torn.json: not valid JSON"))
case("probe", "state", "half-saved-model", lambda e, w: (probe(e, w / J, model=e["half"]), "no config.json"))
case("probe", "number", "batch-size-0", lambda e, w: (probe(e, w / J, "--batch-size", 0), "--batch-size 0"))

# ---- evaluate
case("evaluate", "out", "out-is-a-directory", lambda e, w: (evaluate(e, _out_dir(w), model=NO_MODEL(w)), "is a directory"))
case("evaluate", "out", "parent-is-a-file", lambda e, w: (evaluate(e, _parent_file(w), model=NO_MODEL(w)), "afile is a file"))
case("evaluate", "encoding", "task-yaml", lambda e, w: (evaluate(e, w / J, task_dir=e["yaml-utf8"]), "latin.yaml: not UTF-8"))
case("evaluate", "state", "malformed-task-yaml", lambda e, w: (evaluate(e, w / J, task_dir=e["yaml-bad"]), "broken.yaml: not valid YAML"))
case("evaluate", "weights", "truncated", lambda e, w: (evaluate(e, w / J, model=e["truncated"]), "model.safetensors: truncated"))
case("evaluate", "number", "seed-negative", lambda e, w: (evaluate(e, w / J, "--seed", -1), "--seed -1"))
case("evaluate", "number", "limit-0", lambda e, w: (evaluate(e, w / J, "--limit", 0), "--limit 0"))
case("evaluate", "number", "batch-size-0", lambda e, w: (evaluate(e, w / J, "--batch-size", 0), "--batch-size 0"))

# ---- circuits
case("circuits", "out", "out-is-a-directory", lambda e, w: (circuits(e, _out_dir(w), model=NO_MODEL(w)), "is a directory"))
case("circuits", "out", "plot-is-a-directory", lambda e, w: (circuits(e, w / J, "--plot", _out_dir(w, "c.png"), model=NO_MODEL(w)), "--plot"))
case("circuits", "encoding", "task", lambda e, w: (circuits(e, w / J, source=["--task", e["tasks-bad.json"]]), "tasks-bad.json: not UTF-8"))
case("circuits", "encoding", "knowledge", lambda e, w: (circuits(e, w / J, source=["--knowledge", e["fk-bad.json"]]), "fk-bad.json: not UTF-8"))
case("circuits", "weights", "truncated", lambda e, w: (circuits(e, w / J, model=e["truncated"]), "model.safetensors: truncated"))
case("circuits", "state", "torn-task", lambda e, w: (circuits(e, w / J, source=["--task", e["tasks-torn.json"]]), "tasks-torn.json: not valid JSON"))
case("circuits", "number", "top-n-0", lambda e, w: (circuits(e, w / J, "--top-n", 0), "--top-n 0"))
case("circuits", "number", "ig-steps-0", lambda e, w: (circuits(e, w / J, "--ig-steps", 0), "--ig-steps 0"))
case("circuits", "number", "seed-negative", lambda e, w: (circuits(e, w / J, "--seed", -1), "--seed -1"))


# ---- train (a run directory: a failure before step 0 leaves none)
def train(e, out, *extra, model=None, data=None, knowledge=None):
    return ["train", model or e["model"], "--data", data or e["docs.txt"], "--knowledge", knowledge or e["fk.json"],
            "--out", out, "--steps", 6, "--batch-size", 4, "--micro-batch", 2, "--seq-len", 32, "--rounds", 3, "--epochs", 20, *extra]


case("train", "out", "out-is-a-file", lambda e, w: (train(e, _file_at(w), model=NO_MODEL(w)), "exists and is not a directory"))
case("train", "out", "parent-is-a-file", lambda e, w: (train(e, _parent_file(w), model=NO_MODEL(w)), "afile is a file"))
case("train", "encoding", "data", lambda e, w: (train(e, w / "run", data=e["bad.txt"]), "bad.txt: not UTF-8"))
case("train", "encoding", "knowledge", lambda e, w: (train(e, w / "run", knowledge=e["fk-bad.json"]), "fk-bad.json: not UTF-8"))
case("train", "encoding", "plan", lambda e, w: (train(e, w / "run", "--plan", e["plan-bad.json"]), "plan-bad.json: not UTF-8"))
case("train", "weights", "truncated", lambda e, w: (train(e, w / "run", model=e["truncated"]), "model.safetensors: truncated"))
case("train", "state", "half-saved-model", lambda e, w: (train(e, w / "run", model=e["half"]), "no config.json"))
case("train", "state", "torn-knowledge", lambda e, w: (train(e, w / "run", knowledge=e["fk-torn.json"]), "fk-torn.json: not valid JSON"))
case("train", "state", "missing-data", lambda e, w: (train(e, w / "run", data=w.parent / "missing.txt"), "missing.txt"))
case("train", "state", "malformed-task-yaml", lambda e, w: (train(e, w / "run", "--tasks", "broken", "--task-dir", e["yaml-bad"]),
                                                            "broken.yaml: not valid YAML"))
for flag, value in [("--lr", "nan"), ("--lr", "-1"), ("--lr", "inf"), ("--lr", "0"), ("--save-every", "-1"), ("--eval-every", "-1"),
                    ("--beta1", "1"), ("--beta2", "nan"), ("--weight-decay", "-0.1"), ("--grad-clip", "nan"),
                    ("--warmup", "nan"), ("--min-lr-ratio", "inf"), ("--inject-interval", "0"), ("--eval-limit", "0"), ("--seed", "-1")]:
    case("train", "number", f"{flag[2:]}-{value}",
         lambda e, w, flag=flag, value=value: (train(e, w / "run", flag, value), f"{flag} {value}"))


# ---- fit: a tokenizer and a model that do not fit each other (ids, positions, special tokens)
VOCAB = "emits ids up to 319 (320 tokens) but the model's embedding has vocab_size 300"
NO_PAD = "has neither a pad nor an eos token"
for command, build in [("measure", lambda e, w, m: measure(e, w / J, model=m)), ("probe", lambda e, w, m: probe(e, w / J, model=m)),
                       ("evaluate", lambda e, w, m: evaluate(e, w / J, model=m)), ("circuits", lambda e, w, m: circuits(e, w / J, model=m)),
                       ("resuscitate", lambda e, w, m: resus(e, w / "o", model=m)), ("train", lambda e, w, m: train(e, w / "run", model=m))]:
    case(command, "fit", "ids-beyond-vocab", lambda e, w, build=build: (build(e, w, e["vocab-300"]), VOCAB))
    case(command, "fit", "no-pad-no-eos", lambda e, w, build=build: (build(e, w, e["no-pad"]), NO_PAD))
case("measure", "fit", "seq-len-within-special-tokens",
     lambda e, w: (measure(e, w / J, "--seq-len", 2, model=e["bos-eos"]), "--seq-len 2: tokenizer"))
case("resuscitate", "fit", "seq-len-within-special-tokens",
     lambda e, w: (resus(e, w / "o", "--seq-len", 1, model=e["bos-eos"], data=e["docs.txt"]), "--seq-len 1: tokenizer"))
case("measure", "fit", "documents-beyond-positions",
     lambda e, w: (measure(e, w / J, "--seq-len", 200, model=e["gpt2"], data=e["long.txt"]), "exceed the 128 positions"))
case("resuscitate", "fit", "documents-beyond-positions",
     lambda e, w: (resus(e, w / "o", "--seq-len", 200, model=e["gpt2"], data=e["long.txt"]), "128 positions"))
case("train", "fit", "seq-len-beyond-positions", lambda e, w: (train(e, w / "run", "--seq-len", 200, model=e["gpt2"]),
                                                              "--seq-len 200: inputs of 200 tokens"))


# ---- weights that do not match their config: a layer missing (randomly initialised) or extra (dropped)
MISSING, EXTRA = "missing weights would be randomly initialised: model.layers.2", "would be dropped: model.layers.1"
for command, build in [("measure", lambda e, w, m: measure(e, w / J, model=m)), ("probe", lambda e, w, m: probe(e, w / J, model=m)),
                       ("evaluate", lambda e, w, m: evaluate(e, w / J, model=m)), ("circuits", lambda e, w, m: circuits(e, w / J, model=m)),
                       ("resuscitate", lambda e, w, m: resus(e, w / "o", model=m)), ("train", lambda e, w, m: train(e, w / "run", model=m))]:
    case(command, "weights", "config-has-a-layer-more", lambda e, w, build=build: (build(e, w, e["config-3-layers"]), MISSING))
    case(command, "weights", "config-has-a-layer-less", lambda e, w, build=build: (build(e, w, e["config-1-layer"]), EXTRA))

# ---- lock: another command is writing the same output (held here for the case's duration)
HELD = contextlib.ExitStack()


def hold(path: Path) -> Path:
    from kentropy.runtime.locks import locked

    HELD.enter_context(locked([("--out", str(path))]))
    return path


BUSY = "another kentropy command (pid"
for command, build in [("measure", lambda e, w: measure(e, hold(w / J))), ("probe", lambda e, w: probe(e, hold(w / J))),
                       ("evaluate", lambda e, w: evaluate(e, hold(w / J))), ("circuits", lambda e, w: circuits(e, hold(w / J))),
                       ("resuscitate", lambda e, w: resus(e, hold(w / "o"))), ("train", lambda e, w: train(e, hold(w / "run"))),
                       ("plot", lambda e, w: plot(e, hold(w / "p.png"))), ("knowledge generate", lambda e, w: generate(e, hold(w / J))),
                       ("knowledge plan", lambda e, w: plan(e, hold(w / J)))]:
    case(command, "lock", "out-being-written", lambda e, w, build=build: (build(e, w), BUSY))
case("measure", "lock", "coefficients-out-being-written",
     lambda e, w: (measure(e, w / J, "--coefficients-out", hold(w / "cbar")), "--coefficients-out"))

# ---- outputs that collide with each other or with an input
case("measure", "collide", "coefficients-out-is-out", lambda e, w: (measure(e, w / J, "--coefficients-out", w / J), "the same path as --out"))
case("measure", "collide", "out-is-data", lambda e, w: (measure(e, e["docs.txt"]), "the same path as the input --data"))
case("circuits", "collide", "plot-is-out", lambda e, w: (circuits(e, w / "c.png", "--plot", w / "c.png"), "the same path as --out"))
case("circuits", "collide", "out-is-task", lambda e, w: (circuits(e, e["tasks.json"]), "the same path as the input --task"))
case("probe", "collide", "out-is-knowledge", lambda e, w: (probe(e, e["fk.json"]), "the same path as the input --knowledge"))
case("probe", "collide", "out-is-plan", lambda e, w: (probe(e, e["plan.json"], "--plan", e["plan.json"]), "the same path as the input --plan"))
case("knowledge plan", "collide", "out-is-knowledge", lambda e, w: (plan(e, e["fk.json"]), "the same path as the input --knowledge"))
case("resuscitate", "collide", "out-is-model", lambda e, w: (resus(e, e["model"], "--overwrite"), "the same path as the input --model"))
case("train", "collide", "out-is-model", lambda e, w: (train(e, e["model"], "--overwrite"), "the same path as the input --model"))

# ---- plot reads only measure results, and writes only the formats it names
case("plot", "state", "probe-result", lambda e, w: (plot(e, w / "p.png", e["probe-result.json"]), "this is the output of kentropy probe"))
case("plot", "state", "result-without-per-layer", lambda e, w: (plot(e, w / "p.png", e["result-no-layers.json"]),
                                                                "knowledge_entropy_per_layer: expected a list"))
case("plot", "out", "suffix-jpg", lambda e, w: (plot(e, w / "p.jpg"), "--out"))
case("plot", "out", "no-suffix", lambda e, w: (plot(e, w / "figure"), "choose a .png, .pdf or .svg file"))


# ---- a symbolic link as the output: refused (never followed, never replaced)
def _link(w: Path, name: str, directory: bool = False) -> Path:
    target = w / f"{name}-target"
    target.mkdir() if directory else target.write_text("a user's file")
    (w / name).symlink_to(target)
    return w / name


LINK = "is a symbolic link"
for command, build in [("measure", lambda e, w: measure(e, _link(w, J), model=NO_MODEL(w))),
                       ("probe", lambda e, w: probe(e, _link(w, J), model=NO_MODEL(w))),
                       ("evaluate", lambda e, w: evaluate(e, _link(w, J), model=NO_MODEL(w))),
                       ("circuits", lambda e, w: circuits(e, _link(w, J), model=NO_MODEL(w))),
                       ("resuscitate", lambda e, w: resus(e, _link(w, "o", True), model=NO_MODEL(w))),
                       ("train", lambda e, w: train(e, _link(w, "run", True), model=NO_MODEL(w))),
                       ("plot", lambda e, w: plot(e, _link(w, "p.png"))), ("knowledge generate", lambda e, w: generate(e, _link(w, J))),
                       ("knowledge plan", lambda e, w: plan(e, _link(w, J)))]:
    case(command, "symlink", "out-is-a-link", lambda e, w, build=build: (build(e, w), LINK))
case("measure", "symlink", "coefficients-out-is-a-link",
     lambda e, w: (measure(e, w / J, "--coefficients-out", _link(w, "cbar", True), model=NO_MODEL(w)), LINK))
case("circuits", "symlink", "plot-is-a-link", lambda e, w: (circuits(e, w / J, "--plot", _link(w, "c.png"), model=NO_MODEL(w)), LINK))


# ---- a series left unfinished (OUT.partial): refused without --resume, or with another config; a torn one
def _partial(w: Path, config: dict | None = None, torn: bool = False) -> Path:
    text = json.dumps({"config": config or {"batch_size": 999}, "checkpoints": [], "results": {}})
    (w / (J + ".partial")).write_text(text[:20] if torn else text)
    return w / J


for command, build in [("measure", measure), ("probe", probe), ("evaluate", evaluate), ("circuits", circuits)]:
    case(command, "resume", "unfinished-series-without-resume",
         lambda e, w, build=build: (build(e, _partial(w)), "continue it with --resume"))
    case(command, "resume", "unfinished-series-of-another-config",
         lambda e, w, build=build: (build(e, _partial(w), "--resume"), "--resume: config differs"))
    case(command, "resume", "torn-partial-file",
         lambda e, w, build=build: (build(e, _partial(w, torn=True), "--resume"), "out.json.partial: not valid JSON"))


# ---- where outputs and inputs lie: resolved, no input inside an output (--overwrite would delete it), no output
# inside an input, a series' OUT.partial an output like any other
def intervene(e, out, *extra, model=None, data=None):
    return ["intervene", model or e["model"], "--method", "shrink-perturb", "--shrink", 0.8, "--perturb", 0.1,
            *(["--data", data] if data else []), "--out", out, *extra]


def lab(e, out, *extra):
    return ["lab", "--preset", "smoke", "--device", "cpu", "--out", out, *extra]


def _inside(w: Path, src: Path, *names: str) -> Path:
    """A copy of the input `src` at w/NAMES (a folder the case then gives as an output, or writes into)."""
    dest = w.joinpath(*names)
    dest.parent.mkdir(parents=True, exist_ok=True)
    (shutil.copytree if src.is_dir() else shutil.copy)(src, dest)
    return dest


case("intervene", "out", "out-is-a-file", lambda e, w: (intervene(e, _file_at(w), model=NO_MODEL(w)), "exists and is not a directory"))
case("intervene", "number", "seed-negative", lambda e, w: (intervene(e, w / "o", "--seed", -1), "--seed -1"))
case("lab", "out", "out-is-a-file", lambda e, w: (lab(e, _file_at(w)), "exists and is not a directory"))
case("lab", "state", "out-is-not-a-lab", lambda e, w: (lab(e, _out_dir(w, "mine")), "not a lab directory"))

HOLDS, INSIDE = "holds the input", "inside the input"
case("resuscitate", "nest", "out-holds-model", lambda e, w: (resus(e, w / "mm", "--overwrite", model=_inside(w, e["model"], "mm", "llama")),
                                                             f"--out {w / 'mm'}: {HOLDS} --model"))
case("resuscitate", "nest", "out-holds-data", lambda e, w: (resus(e, w / "o", "--overwrite", data=_inside(w, e["docs.txt"], "o", "d", "docs.txt")),
                                                            f"{HOLDS} --data"))
case("resuscitate", "nest", "out-holds-coefficients",
     lambda e, w: (resus(e, w / "o", "--overwrite", coef=_inside(w, e["coef.safetensors"], "o", "coef.safetensors")), f"{HOLDS} --coefficients"))
case("resuscitate", "nest", "out-inside-model", lambda e, w: (resus(e, _inside(w, e["model"], "m") / "edited", model=w / "m"), f"{INSIDE} --model"))
case("resuscitate", "nest", "out-holds-model-through-a-link",  # the input typed through a link: resolved before comparing
     lambda e, w: (resus(e, _link(w, "alias", True).with_name("alias-target"), "--overwrite",
                         model=_inside(w, e["model"], "alias-target", "llama").parent.with_name("alias") / "llama"), f"{HOLDS} --model"))
case("resuscitate", "nest", "out-holds-model-typed-with-dots",
     lambda e, w: (resus(e, w / "x" / ".." / "mm", "--overwrite", model=_inside(w, e["model"], "mm", "llama")), f"{HOLDS} --model"))
case("intervene", "nest", "out-holds-model", lambda e, w: (intervene(e, w / "mm", "--overwrite", model=_inside(w, e["model"], "mm", "llama")),
                                                           f"{HOLDS} --model"))
case("intervene", "nest", "out-holds-data", lambda e, w: (intervene(e, w / "o", "--overwrite", data=_inside(w, e["docs.txt"], "o", "docs.txt")),
                                                          f"{HOLDS} --data"))
case("intervene", "nest", "out-inside-model", lambda e, w: (intervene(e, _inside(w, e["model"], "m") / "edited", model=w / "m"), f"{INSIDE} --model"))
case("train", "nest", "out-holds-model", lambda e, w: (train(e, w / "run", "--overwrite", model=_inside(w, e["model"], "run", "checkpoints", "x")),
                                                       f"{HOLDS} --model"))
case("train", "nest", "out-holds-data", lambda e, w: (train(e, w / "run", "--overwrite", data=_inside(w, e["docs.txt"], "run", "docs.txt")),
                                                      f"{HOLDS} --data"))
case("train", "nest", "out-holds-knowledge",
     lambda e, w: (train(e, w / "run", "--overwrite", knowledge=_inside(w, e["fk.json"], "run", "fk.json")), f"{HOLDS} --knowledge"))
case("train", "nest", "out-holds-plan",
     lambda e, w: (train(e, w / "run", "--overwrite", "--plan", _inside(w, e["plan.json"], "run", "plan.json")), f"{HOLDS} --plan"))
case("train", "nest", "out-holds-replay", lambda e, w: (train(e, w / "run", "--overwrite", "--replay", _inside(w, e["docs.txt"], "run", "r.txt"),
                                                              "--replay-fraction", 0.25), f"{HOLDS} --replay"))
case("train", "nest", "out-holds-task-dir", lambda e, w: (train(e, w / "run", "--overwrite", "--tasks", "given", "--task-dir",
                                                                _inside(w, e["lm"], "run", "lm")), f"{HOLDS} --task-dir"))
case("train", "nest", "out-inside-task-dir", lambda e, w: (train(e, _inside(w, e["lm"], "lm") / "run", "--tasks", "given", "--task-dir", w / "lm"),
                                                           f"{INSIDE} --task-dir"))
case("measure", "nest", "out-inside-model", lambda e, w: (measure(e, _inside(w, e["model"], "m") / J, model=w / "m"), f"{INSIDE} --models"))
case("measure", "nest", "coefficients-out-holds-data",
     lambda e, w: (measure(e, w / J, "--coefficients-out", w / "cbar", data=_inside(w, e["docs.txt"], "cbar", "docs.txt")), f"{HOLDS} --data"))
case("measure", "nest", "out-inside-coefficients-out", lambda e, w: (measure(e, w / "cbar" / J, "--coefficients-out", w / "cbar"),
                                                                     "inside --coefficients-out"))
case("measure", "nest", "revision-series-dir-holds-out",  # MODEL@rev names the directory MODEL
     lambda e, w: (measure(e, _inside(w, e["model"], "m") / J, model=f"{w / 'm'}@a,b"), f"{INSIDE} --models"))
case("probe", "nest", "out-inside-model", lambda e, w: (probe(e, _inside(w, e["model"], "m") / J, model=w / "m"), f"{INSIDE} --models"))
case("evaluate", "nest", "out-inside-task-dir", lambda e, w: (evaluate(e, _inside(w, e["lm"], "lm") / J, task_dir=w / "lm"), f"{INSIDE} --task-dir"))
case("circuits", "nest", "plot-inside-model", lambda e, w: (circuits(e, w / J, "--plot", _inside(w, e["model"], "m") / "c.png", model=w / "m"),
                                                            f"--plot {w / 'm' / 'c.png'}: {INSIDE} --models"))
case("lab", "nest", "out-holds-decay-lab", lambda e, w: (lab(e, w / "lab", "--decay-lab", _inside(w, e["lm"], "lab", "decay")), f"{HOLDS} --decay-lab"))
case("lab", "nest", "out-inside-decay-lab", lambda e, w: (lab(e, _inside(w, e["lm"], "decay") / "lab", "--decay-lab", w / "decay"),
                                                          f"{INSIDE} --decay-lab"))

# a series' partial file is its output: locked while the series runs, and apart from every other path
for command, build in [("measure", measure), ("probe", probe), ("evaluate", evaluate), ("circuits", circuits)]:
    case(command, "partial", "partial-being-written", lambda e, w, build=build: (hold(w / (J + ".partial")) and build(e, w / J),
                                                                                 f"--out {w / (J + '.partial')}: {BUSY}"))
case("measure", "partial", "coefficients-out-is-the-partial",
     lambda e, w: (measure(e, w / J, "--coefficients-out", w / (J + ".partial")), "the same path as --coefficients-out"))
case("measure", "partial", "data-is-the-partial", lambda e, w: (measure(e, w / J, data=_inside(w, e["docs.txt"], J + ".partial")),
                                                               ".partial: the same path as the input --data"))
case("circuits", "partial", "plot-is-the-partial", lambda e, w: (circuits(e, w / J, "--plot", w / (J + ".partial")),
                                                                 "the same path as --plot"))

# ---- names that overflow the file system's limit once a suffix is added: refused before any work
LONG = "n" * 240  # legal alone (<= 255 bytes); its temp name `.NAME.tmp-PID-XXXXXXXX.tmp` is not
SERIES_LONG = "s" * 224  # fits with its temp suffix, not as NAME.partial with one
TOO_LONG = "name too long"
for command, build in [("measure", lambda e, w, n: measure(e, w / n, model=NO_MODEL(w))),
                       ("probe", lambda e, w, n: probe(e, w / n, model=NO_MODEL(w))),
                       ("evaluate", lambda e, w, n: evaluate(e, w / n, model=NO_MODEL(w))),
                       ("circuits", lambda e, w, n: circuits(e, w / n, model=NO_MODEL(w)))]:
    case(command, "long-name", "out", lambda e, w, build=build: (build(e, w, LONG), f"{TOO_LONG}: is written through a temp file"))
    case(command, "long-name", "out-partial", lambda e, w, build=build: (build(e, w, SERIES_LONG), f"{TOO_LONG}: its partial file"))
for command, build in [("resuscitate", lambda e, w: resus(e, w / LONG, model=NO_MODEL(w))),
                       ("intervene", lambda e, w: intervene(e, w / LONG, model=NO_MODEL(w))),
                       ("train", lambda e, w: train(e, w / LONG, model=NO_MODEL(w))),
                       ("plot", lambda e, w: plot(e, w / (LONG + ".png"))),
                       ("knowledge generate", lambda e, w: generate(e, w / LONG)),
                       ("knowledge plan", lambda e, w: plan(e, w / LONG)),
                       ("lab", lambda e, w: lab(e, w / LONG)),
                       ("measure", lambda e, w: measure(e, w / J, "--coefficients-out", w / LONG, model=NO_MODEL(w))),
                       ("circuits", lambda e, w: circuits(e, w / J, "--plot", w / (LONG + ".png"), model=NO_MODEL(w)))]:
    case(command, "long-name", "out" if command not in ("measure", "circuits") else "second-output",
         lambda e, w, build=build: (build(e, w), TOO_LONG))
case("measure", "long-name", "directory-name", lambda e, w: (measure(e, w / ("d" * 256) / J, model=NO_MODEL(w)), "the directory name"))


# ---- a --coefficients-out that holds other files: refused, never mixed with this series' Cbar files
def _cbar_dir(w: Path, *names: str) -> Path:
    (w / "cbar").mkdir()
    for n in names:
        (w / "cbar" / n).write_bytes(b"another series")
    return w / "cbar"


MIXED = "that are not this series' Cbar files"
case("measure", "mixed", "another-series-cbar", lambda e, w: (measure(e, w / J, "--coefficients-out", _cbar_dir(w, "001_other.safetensors")),
                                                              f"1 file(s) {MIXED} (001_other.safetensors)"))
case("measure", "mixed", "other-data", lambda e, w: (measure(e, w / J, "--coefficients-out", _cbar_dir(w, "notes.txt", "a.csv")), MIXED))


# ---- train --resume: a path flag naming another file than the run started with (not the same file, not the same content,
# not moved along with the run) is refused; the same file typed otherwise is not (tests/test_paths.py)
def _finished_run(e, w: Path) -> Path:
    """A finished run at w/run (the case's own)."""
    p = subprocess.run([sys.executable, "-m", "kentropy", *map(str, train(e, w / "run", "--eval-every", 0))], env=ENV,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    return w / "run"


case("train", "moved", "resume-from-another-model",
     lambda e, w: (train(e, _finished_run(e, w), "--eval-every", 0, "--resume", model=_inside(w, e["model"], "elsewhere")),
                   "--resume: config differs from the run's in --model"))

# ---- train --report-to: an unknown tracker, a tracker whose extra is not installed
case("train", "report-to", "unknown-tracker", lambda e, w: (train(e, w / "run", "--report-to", "mlflow"), "--report-to mlflow: choose"))
if importlib.util.find_spec("wandb") is None:
    case("train", "report-to", "wandb-not-installed", lambda e, w: (train(e, w / "run", "--report-to", "wandb"), "kentropy[wandb]"))


@pytest.fixture(autouse=True)
def _release_locks():
    yield
    HELD.close()


def snapshot(root: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("build", C)
def test_bad_input(build, env, tmp_path, capsys):
    work = tmp_path / "work"
    work.mkdir()
    argv, names = build(env, work)
    before = snapshot(work)
    code, _, err = run_cli(capsys, *argv)
    assert code == 2, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    assert names in errors[0], errors[0]
    assert snapshot(work) == before  # nothing written, nothing removed (not even a temp)


def test_matrix_counts():
    """The matrix covers every command here with the out, number and state-or-encoding classes."""
    for command, classes in COUNTS.items():
        assert classes.get("out", 0) >= 1 and classes.get("number", 0) + classes.get("state", 0) >= 1, command


# ---- interrupts: a real process, a real signal -------------------------------------------
ENV = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).parents[1] / "src"))


def interrupt(argv: list, sig: int, ready: str, timeout: float = 120) -> tuple[int, str]:
    """Start `kentropy ARGV`, wait until stderr shows `ready` (work under way), send `sig`; (exit code, stderr)."""
    proc = subprocess.Popen([sys.executable, "-m", "kentropy", *map(str, argv)], env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    os.set_blocking(proc.stderr.fileno(), False)
    err, deadline = b"", time.time() + timeout
    while ready.encode() not in err and time.time() < deadline and proc.poll() is None:
        err += proc.stderr.read() or b""
        time.sleep(0.05)
    assert proc.poll() is None, f"finished before the signal: {err.decode()[-500:]}"
    proc.send_signal(sig)
    proc.wait(timeout=60)
    os.set_blocking(proc.stderr.fileno(), True)
    err += proc.stderr.read()
    return proc.returncode, err.decode()


@pytest.fixture(scope="module")
def long_corpus(sample_texts, tmp_path_factory):
    path = tmp_path_factory.mktemp("long") / "long.txt"
    path.write_text("\n".join(sample_texts * 400) + "\n")  # minutes of measuring: the signal lands mid-run
    return path


@pytest.mark.parametrize("sig,code,word", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")])
def test_signal_mid_measure(sig, code, word, env, long_corpus, tmp_path):
    out = tmp_path / "r.json"
    rc, err = interrupt(["measure", env["model"], "--data", long_corpus, "--seq-len", 32, "--batch-size", 2, "--out", out],
                        sig, ready="measure")
    assert rc == code, err[-2000:]
    lines = [x.strip() for x in err.replace("\r", "\n").splitlines() if x.strip()]
    assert lines[-1] == word and "Traceback" not in err and "--resume" not in err
    assert sorted(tmp_path.iterdir()) == []  # no result, no temp
