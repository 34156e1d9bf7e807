"""kentropy.evaluation.downstream: local lm-eval tasks, acc against a log-likelihood reference, errors, the CLI."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
import yaml

from conftest import tiny_model, run_cli
from kentropy.errors import KentropyError
from kentropy.evaluation.downstream import PAPER_TASKS, evaluate, write_task
from kentropy.models.loading import ModelRef, load_model

QUERIES = [
    "The river that runs through the old town is called",
    "Every morning the baker sells",
    "In the story the knight finally found",
    "The small green frog jumped onto",
    "When the rain stopped the children",
    "The letter from the queen said that",
    "Nobody in the village knew why the",
    "At the top of the mountain there was",
]
CHOICES = [
    ["the Blue", "a long name", "water", "the river of stones"],
    ["bread", "fresh cakes and pies", "nothing"],
    ["a sword", "the lost dragon", "his way home", "gold"],
    ["a leaf", "the big stone in the pond"],
    ["ran outside", "slept", "played in the mud", "sang"],
    ["the war was over", "gold", "everyone must leave the city"],
    ["bells", "old man left", "river turned red"],
    ["snow", "a castle of glass", "nothing at all"],
]
GOLD = [1, 0, 2, 1, 0, 2, 1, 0]


def continuation_logprob(model, tokenizer, query: str, choice: str) -> float:
    """lm-eval's convention: score " " + choice after query, split where the query's own tokens end."""
    context = tokenizer(query)["input_ids"]
    whole = tokenizer(query + " " + choice)["input_ids"]
    assert whole[: len(context)] == context
    cont = whole[len(context):]
    with torch.no_grad():
        logp = model(torch.tensor([whole])).logits[0].double().log_softmax(-1)  # [T, V]
    return sum(float(logp[len(context) - 1 + j, t]) for j, t in enumerate(cont))


def reference(model, tokenizer):
    """Per row: the argmax of summed log-probs (acc) and of log-prob per character of the choice (acc_norm)."""
    preds, preds_norm = [], []
    for query, choices in zip(QUERIES, CHOICES):
        lls = [continuation_logprob(model, tokenizer, query, c) for c in choices]
        preds.append(max(range(len(lls)), key=lambda k: (lls[k], -k)))  # first of equal maxima, as np.argmax
        norm = [ll / len(c) for ll, c in zip(lls, choices)]
        preds_norm.append(max(range(len(norm)), key=lambda k: (norm[k], -k)))
    return preds, preds_norm


def rows(gold):
    return [{"query": q, "choices": c, "gold": g} for q, c, g in zip(QUERIES, CHOICES, gold)]


@pytest.fixture(scope="module")
def llama(model_dir):
    return load_model(ModelRef(str(model_dir("llama"))))


def test_write_task_declares_lm_eval_yaml(tmp_path):
    path = write_task(str(tmp_path / "tasks"), "facts", rows(GOLD))
    data = tmp_path / "tasks" / "facts.jsonl"
    assert path == (tmp_path / "tasks" / "facts.yaml").resolve()
    cfg = yaml.safe_load(path.read_text())
    assert cfg == {
        "task": "facts",
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data.resolve())}},
        "output_type": "multiple_choice",
        "test_split": "test",
        "num_fewshot": 0,
        "doc_to_text": "query",
        "doc_to_choice": "choices",
        "doc_to_target": "gold",
        "target_delimiter": " ",
        "metric_list": [
            {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
            {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True},
        ],
        "metadata": {"version": 1, "d_metric": "acc"},
    }
    assert [json.loads(line) for line in data.read_text().splitlines()] == rows(GOLD)


@pytest.mark.parametrize(
    "row, message",
    [
        ({"query": " ", "choices": ["a", "b"], "gold": 0}, "row 1: field 'query'"),
        ({"query": "q", "choices": ["a"], "gold": 0}, "row 1: field 'choices'"),
        ({"query": "q", "choices": ["a", ""], "gold": 0}, "row 1: field 'choices'"),
        ({"query": "q", "choices": ["a", "b"], "gold": 2}, "row 1: field 'gold'"),
        ({"query": "q", "choices": ["a", "b"], "gold": True}, "row 1: field 'gold'"),
    ],
)
def test_write_task_rejects_bad_rows(tmp_path, row, message):
    good = {"query": "q", "choices": ["a", "b"], "gold": 1}
    with pytest.raises(KentropyError, match=message):
        write_task(str(tmp_path), "bad", [good, row])
    assert not list(tmp_path.iterdir())  # nothing written


def test_acc_is_argmax_of_summed_logprobs(llama, tokenizer, tmp_path):
    """lm-eval's acc / acc_norm equal the reference; gold at the argmax gives 1, elsewhere 0; D is the mean."""
    preds, preds_norm = reference(llama, tokenizer)
    ref_acc = sum(p == g for p, g in zip(preds, GOLD)) / len(GOLD)
    ref_norm = sum(p == g for p, g in zip(preds_norm, GOLD)) / len(GOLD)
    assert 0 < ref_acc < 1  # the given gold tells a right scorer from a wrong one
    write_task(str(tmp_path), "given", rows(GOLD))
    write_task(str(tmp_path), "argmax", rows(preds))
    write_task(str(tmp_path), "other", rows([(p + 1) % len(c) for p, c in zip(preds, CHOICES)]))

    llama.train()
    out = evaluate(llama, tokenizer, ["given", "argmax", "other"], task_dir=str(tmp_path), batch_size=3)
    assert llama.training  # left as it came
    llama.eval()

    t = out["tasks"]
    assert list(t) == ["given", "argmax", "other"]
    assert t["given"]["acc"] == ref_acc
    assert t["given"]["acc_norm"] == ref_norm
    assert t["argmax"]["acc"] == 1.0
    assert t["other"]["acc"] == 0.0
    assert all(x["n"] == len(GOLD) for x in t.values())
    p = ref_acc
    assert t["given"]["acc_stderr"] == pytest.approx((p * (1 - p) * len(GOLD) / (len(GOLD) - 1)) ** 0.5 / len(GOLD) ** 0.5)
    assert out["D"] == pytest.approx((ref_acc + 1.0 + 0.0) / 3)
    json.dumps(out)  # JSON-ready


def test_limit_takes_the_first_documents_and_rng_is_kept(llama, tokenizer, tmp_path):
    preds, _ = reference(llama, tokenizer)
    gold = preds[:3] + [(p + 1) % len(c) for p, c in zip(preds[3:], CHOICES[3:])]
    write_task(str(tmp_path), "head", rows(gold))
    torch_state, py_state, np_state = torch.get_rng_state(), random.getstate(), np.random.get_state()
    out = evaluate(llama, tokenizer, ["head"], task_dir=str(tmp_path), limit=3)
    assert out["tasks"]["head"]["acc"] == 1.0 and out["tasks"]["head"]["n"] == 3
    # lm-eval seeds the global generators; the caller's (a training loop's) states come back
    assert torch.equal(torch.get_rng_state(), torch_state) and random.getstate() == py_state
    assert np.array_equal(np.random.get_state()[1], np_state[1])



def test_rows_are_each_documents_metric_in_order(llama, tokenizer, tmp_path):
    """rows=True: each task's metric per document in document order (the reference's hits), whose mean is the
    task's score; `limit` keeps the first documents' rows; without it no rows."""
    preds, preds_norm = reference(llama, tokenizer)
    hits = [float(p == g) for p, g in zip(preds, GOLD)]
    hits_norm = [float(p == g) for p, g in zip(preds_norm, GOLD)]
    assert hits != hits_norm and all(0 < sum(h) < len(GOLD) for h in (hits, hits_norm))  # the metric and the order show
    write_task(str(tmp_path), "plain", rows(GOLD))
    write_task(str(tmp_path), "normed", rows(GOLD), metric="acc_norm")
    out = evaluate(llama, tokenizer, ["plain", "normed"], task_dir=str(tmp_path), batch_size=3, rows=True)
    t = out["tasks"]
    assert t["plain"]["rows"] == hits and t["normed"]["rows"] == hits_norm
    assert all(sum(x["rows"]) / len(x["rows"]) == pytest.approx(x["score"]) and len(x["rows"]) == x["n"] for x in t.values())
    json.dumps(out)  # JSON-ready
    assert evaluate(llama, tokenizer, ["plain"], task_dir=str(tmp_path), limit=3, rows=True)["tasks"]["plain"]["rows"] == hits[:3]
    assert "rows" not in evaluate(llama, tokenizer, ["plain"], task_dir=str(tmp_path), limit=3)["tasks"]["plain"]

@pytest.mark.parametrize(
    "tasks, message",
    [
        (["given", "no_such_task"], "--tasks no_such_task: unknown task"),
        (["ai2_arc"], "--tasks ai2_arc: a tag of several tasks"),
        (["sciq"], "--tasks sciq: cannot load the data of task 'sciq'"),  # HF_HUB_OFFLINE=1, nothing cached
    ],
)
def test_task_errors_name_the_task(llama, tokenizer, tmp_path, tasks, message):
    write_task(str(tmp_path), "given", rows(GOLD))
    with pytest.raises(KentropyError, match=message) as e:
        evaluate(llama, tokenizer, tasks, task_dir=str(tmp_path))
    assert "\n" not in str(e.value)


def test_paper_tasks_are_lm_eval_tasks():
    from kentropy.evaluation.downstream import _builtin_tasks

    index = _builtin_tasks().task_index
    assert set(PAPER_TASKS) == {"sciq", "winogrande", "piqa", "openbookqa", "hellaswag", "arc_easy"}
    assert all(t in index for t in PAPER_TASKS)


def test_d_uses_olmos_metric_per_task(llama, tokenizer, tmp_path):
    """OLMo's metrics: acc_norm for PIQA, HellaSwag, OBQA; acc for WinoGrande, SciQ, ARC-Easy; local tasks declare theirs."""
    from kentropy.evaluation.downstream import d_metric, expand_tasks

    olmo = {"piqa": "acc_norm", "hellaswag": "acc_norm", "openbookqa": "acc_norm",
            "winogrande": "acc", "sciq": "acc", "arc_easy": "acc"}
    assert {t: d_metric(t, None) for t in olmo} == olmo
    assert expand_tasks(["sciq", "paper", "mine"]) == ["sciq", *[t for t in PAPER_TASKS if t != "sciq"], "mine"]
    preds, preds_norm = reference(llama, tokenizer)
    gold = preds_norm  # acc_norm is 1; acc counts the rows where the unnormalized argmax agrees
    ref_acc, ref_norm = sum(p == g for p, g in zip(preds, gold)) / len(gold), 1.0
    assert ref_acc < 1  # the two metrics differ on these rows, so the choice shows in D
    write_task(str(tmp_path), "normed", rows(gold), metric="acc_norm")
    write_task(str(tmp_path), "plain", rows(gold))
    out = evaluate(llama, tokenizer, ["normed", "plain"], task_dir=str(tmp_path), batch_size=4)
    assert out["tasks"]["normed"]["metric"] == "acc_norm" and out["tasks"]["normed"]["score"] == ref_norm
    assert out["tasks"]["plain"]["metric"] == "acc" and out["tasks"]["plain"]["score"] == ref_acc
    assert out["D"] == pytest.approx((ref_norm + ref_acc) / 2)
    with pytest.raises(KentropyError, match="metric 'f1'"):
        write_task(str(tmp_path), "bad", rows(GOLD), metric="f1")


def test_paper_task_runs_where_its_data_is(llama, tokenizer, tmp_path, monkeypatch):
    """lm-eval's own sciq task on a local copy of its data set (`datasets` reads ./allenai/sciq first)."""
    docs, hits = [], 0
    for i, (q, choices) in enumerate(zip(QUERIES, CHOICES)):
        four = (choices + ["a red door", "the moon", "a cat"])[:4]
        context = f"A short story.\nQuestion: {q}\nAnswer:"  # sciq: support.lstrip(), question, "Answer:"
        lls = [continuation_logprob(llama, tokenizer, context, c) for c in four]
        best = max(range(4), key=lambda k: (lls[k], -k))
        # sciq's gold is the last choice (correct_answer): put the argmax there on even rows only
        correct = four[best] if i % 2 == 0 else four[(best + 1) % 4]
        d1, d2, d3 = [c for c in four if c != correct]
        hits += correct == four[best]
        docs.append({"question": q, "distractor1": d1, "distractor2": d2, "distractor3": d3,
                     "correct_answer": correct, "support": " A short story."})
    data = tmp_path / "allenai" / "sciq"
    data.mkdir(parents=True)
    for split in ("train", "validation", "test"):
        (data / f"{split}.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    monkeypatch.chdir(tmp_path)
    out = evaluate(llama, tokenizer, ["sciq"])
    assert out["tasks"]["sciq"]["n"] == len(docs)
    assert out["tasks"]["sciq"]["acc"] == hits / len(docs) == 0.5


def test_bare_encoder_is_refused(tokenizer, tmp_path):
    write_task(str(tmp_path), "given", rows(GOLD))
    with pytest.raises(KentropyError, match="causal LM"):
        evaluate(tiny_model("bert"), tokenizer, ["given"], task_dir=str(tmp_path))


def test_cli_writes_one_result_per_checkpoint(model_dir, tokenizer, tmp_path, capsys):
    a, b = str(model_dir("llama", seed=1)), str(model_dir("gpt2", seed=2))
    write_task(str(tmp_path / "tasks"), "given", rows(GOLD))
    out = tmp_path / "eval.json"
    code, stdout, _ = run_cli(capsys, "evaluate", a, b, "--tasks", "given", "--task-dir", str(tmp_path / "tasks"),
                               "--batch-size", "4", "--out", str(out))
    assert code == 0
    data = json.loads(out.read_text())
    assert [r["model"] for r in data["results"]] == [a, b]
    for r, path in zip(data["results"], [a, b]):
        assert r["revision"] is None
        assert set(r["tasks"]["given"]) == {"acc", "acc_stderr", "acc_norm", "metric", "score", "n"}
        assert r["D"] == r["tasks"]["given"]["acc"]
        expected = evaluate(load_model(ModelRef(path)), tokenizer, ["given"], task_dir=str(tmp_path / "tasks"))
        assert r["tasks"] == expected["tasks"]  # tasks built once for the series give per-model results
    assert data["config"]["tasks"] == "given" and data["config"]["batch_size"] == 4
    assert "D" in stdout.splitlines()[0] and str(out) in stdout


def test_cli_bad_task_dir_exits_2_without_output(model_dir, tmp_path, capsys):
    out = tmp_path / "eval.json"
    code, _, err = run_cli(capsys, "evaluate", str(model_dir("llama")), "--tasks", "given", "--task-dir", str(tmp_path / "missing"),
                            "--out", str(out))
    assert code == 2
    assert err.strip().splitlines() == [f"error: --task-dir {tmp_path / 'missing'}: not a directory"]
    assert not out.exists()


# ---- non-finite models ------------------------------------------------------------------------------
def poisoned(family: str, where: str, value: float):
    """A tiny model with `value` written into the parameter `where` (all of it)."""
    model = tiny_model(family, seed=5)
    with torch.no_grad():
        dict(model.named_parameters())[where].fill_(value)
    return model


def test_nan_weights_are_refused_before_anything_is_scored(tokenizer, tmp_path):
    """NaN logits would tie every choice and lm-eval would still report an accuracy: the evaluation stops at the
    first forward instead, naming the model and the tensor that holds the NaN."""
    write_task(str(tmp_path), "given", [{"query": q, "choices": c[:2], "gold": i % 2} for i, (q, c) in enumerate(zip(QUERIES, CHOICES))])
    model = poisoned("llama", "model.layers.1.mlp.down_proj.weight", float("nan")).train()
    with pytest.raises(KentropyError) as e:
        evaluate(model, tokenizer, ["given"], task_dir=str(tmp_path))
    msg = str(e.value)
    assert "the logits of a forward pass came out NaN or infinite" in msg and "\n" not in msg
    assert "its weights hold non-finite values (in 1 tensor: model.layers.1.mlp.down_proj.weight)" in msg
    assert model.training  # handed back in its mode
    assert not model._forward_hooks  # the check's hook is removed


def test_overflowing_forward_with_finite_weights_says_so(tokenizer, tmp_path):
    write_task(str(tmp_path), "given", rows(GOLD))
    model = poisoned("llama", "lm_head.weight", 3e38)  # finite, but h @ W overflows float32
    with pytest.raises(KentropyError, match=r"its weights are all finite \(the forward overflows in torch.float32\)"):
        evaluate(model, tokenizer, ["given"], task_dir=str(tmp_path))


def test_cli_refuses_a_nan_checkpoint_naming_it(tokenizer, tmp_path, capsys):
    write_task(str(tmp_path / "tasks"), "given", rows(GOLD))
    bad = tmp_path / "nan-model"
    poisoned("gpt2", "transformer.h.0.mlp.c_fc.weight", float("nan")).save_pretrained(bad)
    tokenizer.save_pretrained(bad)
    out = tmp_path / "eval.json"
    code, stdout, err = run_cli(capsys, "evaluate", str(bad), "--tasks", "given", "--task-dir", str(tmp_path / "tasks"), "--out", str(out))
    assert code == 2 and not out.exists() and "D" not in stdout
    last = err.strip().splitlines()[-1]
    assert err.count("error:") == 1 and last.startswith(f"error: {bad}: the logits of a forward pass came out NaN or infinite"), err
    assert "transformer.h.0.mlp.c_fc.weight" in last
