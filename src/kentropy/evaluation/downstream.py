"""Downstream accuracy D through lm-evaluation-harness: zero-shot log-likelihood multiple choice.

    kentropy evaluate out/run/ckpt-1600 --tasks sciq,arc_easy --out eval.json
    kentropy evaluate lab/model --tasks lab_facts --task-dir lab/tasks --out eval.json

The paper's six tasks (`--tasks paper`) run by their lm-eval names wherever their data sets are
cached or the hub is reachable; the lab's own tasks are lm-eval YAML over local JSONL (`write_task`).
D (paper §4, F's input) is the mean over the tasks of each task's own metric, as OLMo reports
them: length-normalized accuracy `acc_norm` for PIQA, HellaSwag and OpenBookQA, accuracy `acc`
for WinoGrande, SciQ and ARC-Easy. Any other task declares its metric in its YAML
(`metadata: {d_metric: acc_norm}`); without one it is `acc`.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from kentropy.errors import KentropyError
from kentropy.io import check_out_file, read_text, write_atomic, write_jsonl
from kentropy.models.loading import gguf_fields, is_causal_lm, load_series, parse_checkpoints, pick_device, pick_dtype
from kentropy.models.parameters import nonfinite_forward
from kentropy.runtime import rng
from kentropy.runtime.options import device_option, dtype_option, models_option, option, require, series_resume_option, trust_remote_code_option
from kentropy.runtime.series import progress_line

# OLMo's downstream metric of each of the paper's tasks (`--tasks paper`)
PAPER_METRICS = {"piqa": "acc_norm", "hellaswag": "acc_norm", "openbookqa": "acc_norm",
                 "winogrande": "acc", "sciq": "acc", "arc_easy": "acc"}
PAPER_TASKS = tuple(PAPER_METRICS)
METRICS = ("acc", "acc_norm")

TASK_VERSION = 1  # the `metadata.version` of every task `write_task` declares; bump when its YAML changes

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def task_yaml(name: str, data_file: Path, metric: str = "acc") -> str:
    """The lm-eval YAML of a local multiple-choice task over the JSONL `data_file` (absolute path);
    `metric` (acc or acc_norm) is the one D uses for it."""
    return (
        f"task: {name}\n"
        "dataset_path: json\n"
        "dataset_kwargs:\n"
        "  data_files:\n"
        f"    test: {json.dumps(str(data_file))}\n"
        "output_type: multiple_choice\n"
        "test_split: test\n"
        "num_fewshot: 0\n"
        "doc_to_text: query\n"
        "doc_to_choice: choices\n"
        "doc_to_target: gold\n"
        'target_delimiter: " "\n'
        "metric_list:\n"
        "  - metric: acc\n"
        "    aggregation: mean\n"
        "    higher_is_better: true\n"
        "  - metric: acc_norm\n"
        "    aggregation: mean\n"
        "    higher_is_better: true\n"
        "metadata:\n"
        f"  version: {TASK_VERSION}\n"
        f"  d_metric: {metric}\n"
    )


def _check_rows(name: str, rows: list[dict]) -> list[dict]:
    if not rows:
        raise KentropyError(f"task {name}: no rows")
    out = []
    for i, row in enumerate(rows):
        where = f"task {name}: row {i}"
        if not isinstance(row, dict):
            raise KentropyError(f"{where}: expected an object with query, choices, gold")
        query, choices, gold = row.get("query"), row.get("choices"), row.get("gold")
        if not isinstance(query, str) or not query.strip():
            raise KentropyError(f"{where}: field 'query' must be a non-empty string")  # lm-eval needs a context
        if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) and c for c in choices):
            raise KentropyError(f"{where}: field 'choices' must be a list of at least 2 non-empty strings")
        if isinstance(gold, bool) or not isinstance(gold, int) or not 0 <= gold < len(choices):
            raise KentropyError(f"{where}: field 'gold' must be an index into choices (0..{len(choices) - 1})")
        out.append({"query": query, "choices": choices, "gold": gold})
    return out


def write_task(directory: str, name: str, rows: list[dict], metric: str = "acc") -> Path:
    """Declare a local zero-shot multiple-choice task: writes `DIR/name.jsonl` and `DIR/name.yaml`.

    rows: `{"query": str, "choices": [str, ...], "gold": int}` each. lm-eval scores choice k as
    the summed log-probability of `" " + choices[k]` after `query`. The YAML points at the JSONL
    by absolute path (lm-eval reads `data_files` relative to the working directory), so write the
    task where it will stay. Returns the YAML's path; evaluate it with `task_dir=directory`.
    """
    if not _NAME.match(name):
        raise KentropyError(f"task name {name!r}: use letters, digits, '_', '-', '.'")
    if metric not in METRICS:
        raise KentropyError(f"task {name}: metric {metric!r}: choose {' or '.join(METRICS)}")
    rows = _check_rows(name, rows)
    d = Path(directory).resolve()
    data = d / f"{name}.jsonl"
    write_jsonl(data, rows)
    yaml_path = d / f"{name}.yaml"
    write_atomic(yaml_path, lambda tmp: tmp.write_text(task_yaml(name, data, metric), encoding="utf-8"))
    return yaml_path


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


@contextlib.contextmanager
def _quiet():
    """lm-eval's info/warnings off, and anything it prints to stdout onto stderr."""
    loggers = [logging.getLogger(n) for n in ("lm_eval", "datasets")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


@contextlib.contextmanager
def _no_git_probe():
    """lm-eval records the git commit of the working directory by running `git describe`, which prints
    `fatal: not a git repository` outside one; the hash is not used here, so the probe is skipped."""
    import lm_eval.evaluator as ev  # lm-eval (heavy, seconds to import) loads only when something is evaluated

    saved = ev.get_git_commit_hash
    ev.get_git_commit_hash = lambda: None
    try:
        yield
    finally:
        ev.get_git_commit_hash = saved


def _import_lm_eval():
    # lazily: importing lm-eval takes seconds, and `kentropy train` without --tasks never needs it
    try:
        from lm_eval import simple_evaluate
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError as e:
        raise KentropyError(f"kentropy evaluate needs lm-eval with its HF extra (pip install 'lm-eval[hf]'): {_first_line(e)}") from None
    return simple_evaluate, HFLM, TaskManager


@functools.lru_cache(maxsize=1)
def _builtin_tasks():
    """lm-eval's own task index (some 15k names, seconds to build): built once per process."""
    _, _, TaskManager = _import_lm_eval()
    with _quiet():
        return TaskManager()


def check_task_yamls(task_dir: str) -> None:
    """Parse every YAML under `task_dir` (as lm-eval will): a malformed one is an error naming the file,
    not a task lm-eval silently skips and then calls unknown. lm-eval's `!function` tags are allowed."""

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    for f in sorted(p for p in Path(task_dir).rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file()):
        text = read_text(f, "--task-dir")
        try:
            data = yaml.load(text, Loader=Loader)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            problem = getattr(e, "problem", None) or _first_line(e)
            raise KentropyError(f"--task-dir {f}: not valid YAML ({problem}{where})") from None
        if not isinstance(data, dict):
            raise KentropyError(f"--task-dir {f}: expected a YAML mapping (task: NAME, ...), got {type(data).__name__}")


def expand_tasks(tasks: list[str]) -> list[str]:
    """Task names with `paper` replaced by the paper's six tasks, duplicates dropped."""
    out = [t for name in tasks for t in (PAPER_TASKS if name == "paper" else (name,))]
    return list(dict.fromkeys(out))


def d_metric(name: str, task) -> str:
    """The metric D uses for task `name`: OLMo's for the paper's tasks, else the YAML's `metadata.d_metric`, else acc."""
    if name in PAPER_METRICS:
        return PAPER_METRICS[name]
    metadata = getattr(task.config, "metadata", None) or {}
    metric = metadata.get("d_metric", "acc") if isinstance(metadata, dict) else "acc"
    if metric not in METRICS:
        raise KentropyError(f"--tasks {name}: metadata.d_metric {metric!r}: choose {' or '.join(METRICS)}")
    return metric


def load_tasks(tasks: list[str], task_dir: str | None = None) -> dict:
    """Build each named lm-eval task, its data loaded: {name: Task}, with a one-line error naming a bad one.

    A name is looked up in `task_dir` first (lm-eval YAML), then among lm-eval's own tasks; it
    must be a single task (not a group or tag) that reports `acc`.
    """
    _, _, TaskManager = _import_lm_eval()
    from lm_eval.api.task import Task  # lazily, as `_import_lm_eval`
    from lm_eval.tasks._index import Kind

    if task_dir is not None and not Path(task_dir).is_dir():
        raise KentropyError(f"--task-dir {task_dir}: not a directory")
    local = None
    if task_dir is not None:
        check_task_yamls(task_dir)
        with _quiet():
            local = TaskManager(include_path=task_dir, include_defaults=False)
    where = "lm-eval's tasks" + (f" or {task_dir}" if task_dir else "")
    managers = {}
    for name in tasks:  # names first: no data set is fetched for a list with a typo in it
        tm = local if local is not None and name in local.task_index else _builtin_tasks()
        entry = tm.task_index.get(name)
        if entry is None:
            raise KentropyError(f"--tasks {name}: unknown task (not in {where})")
        if entry.kind not in (Kind.TASK, Kind.PY_TASK):
            raise KentropyError(f"--tasks {name}: a {entry.kind.name.lower()} of several tasks; name the tasks instead")
        managers[name] = tm
    built = {}
    for name, tm in managers.items():
        try:
            with _quiet(), rng.kept():
                task = tm.load([name])["tasks"][name]
        except Exception as e:  # data sets fail in many ways: offline, not cached, bad files
            raise KentropyError(f"--tasks {name}: cannot load the data of task {name!r} "
                                f"(hub offline and not cached?): {_first_line(e)}") from None
        if not isinstance(task, Task) or "acc" not in task.aggregation():
            raise KentropyError(f"--tasks {name}: reports no 'acc' (not a multiple-choice task)")
        if d_metric(name, task) not in task.aggregation():
            raise KentropyError(f"--tasks {name}: reports no {d_metric(name, task)!r}, the metric D uses for it")
        built[name] = task
    return built


def _check_causal_lm(model) -> None:
    head = getattr(model, "get_output_embeddings", lambda: None)()
    if head is None or not is_causal_lm(model.config):
        raise KentropyError(f"evaluate needs a causal LM with its LM head; got {type(model).__name__} "
                            f"({model.config.model_type}), which has none")


def _number(x) -> float | None:
    return float(x) if isinstance(x, (int, float)) else None  # lm-eval writes "N/A" for a missing stderr


def document_values(samples: list[dict], metric: str) -> list[float]:
    """A task's `metric` per document, in doc_id order, from lm-eval's logged samples (`log_samples=True`:
    one record per document and filter, each with `doc_id` and the metric's value; D's metrics are the
    unfiltered ones, filter `none`)."""
    mine = sorted((s for s in samples if s["filter"] == "none"), key=lambda s: s["doc_id"])
    return [float(s[metric]) for s in mine]


def _check_sizes(batch_size: int, limit: int | None) -> None:
    if batch_size <= 0:
        raise KentropyError(f"--batch-size {batch_size}: must be positive")
    if limit is not None and limit <= 0:
        raise KentropyError(f"--limit {limit}: must be positive")


def evaluate(
    model,
    tokenizer,
    tasks: list[str],
    *,
    task_dir: str | None = None,
    batch_size: int = 16,
    limit: int | None = None,
    seed: int = 0,
    rows: bool = False,
) -> dict:
    """Zero-shot accuracy of a loaded causal LM on lm-eval tasks, and D = the mean of each task's metric.

    Returns `{"tasks": {name: {"acc", "acc_stderr", "acc_norm", "metric", "score", "n"}}, "D": float}`
    (JSON-ready; acc_stderr / acc_norm are None where the task has none; `score` is the value of
    `metric`, OLMo's for the paper's tasks, and D averages the scores). `paper` names the six tasks. `limit` takes the first N documents
    of each task. `rows`: each task also gets `"rows"`, its metric per document (0.0 or 1.0) in document
    order, whose mean is `score` (for statistics paired over the same documents). The model is left in the
    train/eval mode it came in, and the global random generators (python, numpy, torch) in the states they
    were in: safe to call mid-training. A forward pass with a NaN or infinite logit stops the evaluation
    before anything is scored (`evaluate_tasks`).
    """
    tasks = expand_tasks(tasks)
    if not tasks:
        raise KentropyError("--tasks: name at least one task")
    _check_sizes(batch_size, limit)
    _check_causal_lm(model)
    return evaluate_tasks(model, tokenizer, load_tasks(tasks, task_dir), batch_size=batch_size, limit=limit, seed=seed, rows=rows)


@contextlib.contextmanager
def _finite_logits(model, name: str):
    """Inside, every forward of `model` checks its logits: a NaN or infinite one raises (naming `name`, and the
    non-finite weights where there are some) before lm-eval turns it into a score."""

    def check(module, args, output):
        logits = output.logits if hasattr(output, "logits") else output[0]
        if not bool(torch.isfinite(logits).all()):
            raise nonfinite_forward(model, name, "the logits of a forward pass")

    handle = model.register_forward_hook(check)
    try:
        yield
    finally:
        handle.remove()


def evaluate_tasks(model, tokenizer, tasks: dict, *, batch_size: int = 16, limit: int | None = None, seed: int = 0,
                   rows: bool = False, name: str | None = None) -> dict:
    """`evaluate` on tasks already built by `load_tasks` (a checkpoint series or a training run loads them once).

    tasks: {name: lm-eval Task}; name: what the model is called in an error (a checkpoint; default its
    `name_or_path`). Every forward's logits are checked: a non-finite one is refused before it is scored.
    """
    _check_sizes(batch_size, limit)
    _check_causal_lm(model)
    simple_evaluate, HFLM, TaskManager = _import_lm_eval()
    label = name or getattr(model, "name_or_path", "") or type(model).__name__
    was_training = model.training
    try:
        with _quiet(), rng.kept(), _no_git_probe(), _finite_logits(model, label):
            # log-softmax in float32 even for a bf16 model: close log-likelihoods must not tie
            lm = HFLM(pretrained=model, tokenizer=tokenizer, backend="causal", batch_size=batch_size,
                      softmax_dtype=torch.float32)
            out = simple_evaluate(
                model=lm, tasks=list(tasks.values()), num_fewshot=0,
                task_manager=TaskManager(include_defaults=False),  # the tasks come built: no index needed
                batch_size=batch_size, limit=limit, log_samples=rows,
                random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed, fewshot_random_seed=seed,
            )
    finally:
        model.train(was_training)
    if out is None:
        raise KentropyError("evaluate: lm-eval returned no results on this process (call it on LOCAL_RANK 0 only)")

    per_task = {}
    for task_name, task in tasks.items():
        r = out["results"][task_name]
        metric = d_metric(task_name, task)
        per_task[task_name] = {
            "acc": float(r["acc,none"]),
            "acc_stderr": _number(r.get("acc_stderr,none")),
            "acc_norm": _number(r.get("acc_norm,none")),
            "metric": metric,
            "score": float(r[f"{metric},none"]),
            "n": int(out["n-samples"][task_name]["effective"]),
        }
        if rows:
            per_task[task_name]["rows"] = document_values(out["samples"][task_name], metric)
    return {"tasks": per_task, "D": sum(t["score"] for t in per_task.values()) / len(per_task)}


@dataclass
class EvaluateConfig:
    """Zero-shot downstream accuracy (lm-evaluation-harness) of one or more checkpoints; D = mean of each task's metric."""

    models: list[str] = models_option()
    tasks: str = option(help=f"Comma-separated lm-eval task names, or local tasks in --task-dir; 'paper' = the paper's "
                             f"{','.join(PAPER_TASKS)} (acc_norm for piqa, hellaswag, openbookqa; acc for the others).")
    out: str = option(help="Where to write the JSON results (atomically).")
    task_dir: str | None = option(None, "Directory of local task YAMLs (lm-eval format, e.g. written by kentropy.evaluation.downstream.write_task).")
    batch_size: int = option(16, "Requests per forward pass.")
    limit: int | None = option(None, "Evaluate only the first N documents of each task (for quick checks).")
    seed: int = option(0, "Seed for lm-eval's random, numpy and torch generators.")
    device: str = device_option()
    dtype: str = dtype_option()
    trust_remote_code: bool = trust_remote_code_option()
    resume: bool = series_resume_option()

    def __post_init__(self) -> None:
        if not self.task_list:
            raise KentropyError(f"--tasks {self.tasks!r}: name at least one task")
        if self.task_dir is not None and not Path(self.task_dir).is_dir():
            raise KentropyError(f"--task-dir {self.task_dir}: not a directory")
        if self.batch_size <= 0:
            raise KentropyError(f"--batch-size {self.batch_size}: must be positive")
        if self.limit is not None and self.limit <= 0:
            raise KentropyError(f"--limit {self.limit}: must be positive")
        require(self, "seed", low=0)  # numpy seeds must be non-negative
        check_out_file(self.out)

    @property
    def task_list(self) -> list[str]:
        return expand_tasks([t.strip() for t in self.tasks.split(",") if t.strip()])


def evaluate_series(cfg: EvaluateConfig, series=None) -> list[dict]:
    """Evaluate every checkpoint of `cfg.models` in order (one load at a time): one result each.

    `series` (a `kentropy.runtime.series.Partial`) keeps each result as it finishes and skips those it holds.
    """
    n = len(parse_checkpoints(cfg.models))  # a malformed MODEL fails before the tasks load
    device = pick_device(cfg.device)
    built = load_tasks(cfg.task_list, cfg.task_dir)  # once, and before any model loads
    results = []
    for item in load_series(cfg.models, skip=series.done if series else None, device=device,
                            dtype=pick_dtype(cfg.dtype, device), trust_remote_code=cfg.trust_remote_code):
        progress_line("evaluate", item.index, n, str(item.checkpoint))
        r = evaluate_tasks(item.model, item.tokenizer, built, batch_size=cfg.batch_size, limit=cfg.limit, seed=cfg.seed,
                           name=str(item.checkpoint))
        results.append({"model": item.checkpoint.name, "revision": item.checkpoint.revision, **gguf_fields(item.checkpoint), **r})
        if series is not None:
            series.add(item.index, results[-1])
    return series.ordered() if series is not None else results
