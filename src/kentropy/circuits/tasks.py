"""Recall tasks for circuits: clean "{subject} {relation phrase}" prompts, corrupted ones, first target token.

A corrupted prompt puts ANOTHER subject into the same template, chosen so that under the
tokenizer the subject and the whole prompt have the clean ones' token lengths (positions
align, edges can be patched position by position). A task holds one relation type and one
knowledge split: "related" (known entities, new attributes) or "new" (new entities).

TASK.json (written by `write_tasks`, read by `read_tasks` and `kentropy circuits --task`):

    {"format": "kentropy-circuit-tasks", "version": 1,
     "tasks": [{"name": "capital/related", "relation": "capital", "split": "related",
                "examples": [{"subject": "France", "relation_phrase": "has its capital in",
                              "target": "Paris", "corrupted_subject": "Norway",
                              "corrupted_target": "Oslo"}, ...]}, ...]}

Prompts are `subject + " " + relation_phrase`; the target is read as the continuation
`" " + target`. `corrupted_target` (optional; the logit-difference metric needs it) is the
corrupting subject's answer to the same relation; when absent it is the target of the
task's example whose subject is the corrupting one. A TASK.json may instead hold `"triples": [{"subject", "relation_phrase",
"target", "relation_type", "known"}, ...]`: the tasks are then built with the checkpoint's
tokenizer (`tasks_from_triples`). Token lengths are checked again under each checkpoint's
tokenizer (`encode_task`).
"""

from __future__ import annotations

import random
import re
from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Iterable

import torch

from kentropy.errors import KentropyError
from kentropy.io import read_json, write_json

FORMAT = "kentropy-circuit-tasks"
SPLITS = ("related", "new")
BOS_MODES = ("auto", "always", "never")


@dataclass(frozen=True)
class Example:
    subject: str
    relation_phrase: str
    target: str
    corrupted_subject: str
    corrupted_target: str | None = None

    @property
    def prompt(self) -> str:
        return f"{self.subject} {self.relation_phrase}"

    @property
    def corrupted_prompt(self) -> str:
        return f"{self.corrupted_subject} {self.relation_phrase}"


@dataclass
class Task:
    name: str
    relation: str
    split: str
    examples: list[Example]


@dataclass(frozen=True)
class Triple:
    subject: str
    relation_phrase: str
    target: str
    relation_type: str
    known: bool


@dataclass
class Encoded:
    """A task under one tokenizer, right-padded: every row's clean and corrupted prompts align."""

    clean: torch.Tensor  # [N, T] token ids
    corrupted: torch.Tensor  # [N, T]
    mask: torch.Tensor  # [N, T] 1 on real tokens
    last: torch.Tensor  # [N] index of each prompt's last token
    target: torch.Tensor  # [N] first token of " " + target
    subject: torch.Tensor  # [N, T] bool, the subject's tokens
    relation: torch.Tensor  # [N, T] bool, the relation phrase's tokens
    corrupted_target: torch.Tensor | None = None  # [N] first token of the corrupting subject's target; None: unknown

    def __len__(self) -> int:
        return self.clean.shape[0]

    def _fields(self) -> tuple:
        return (self.clean, self.corrupted, self.mask, self.last, self.target, self.subject, self.relation,
                self.corrupted_target)

    def rows(self, start: int, stop: int) -> "Encoded":
        sl = slice(start, stop)
        return Encoded(*(None if t is None else t[sl] for t in self._fields()))

    def to(self, device) -> "Encoded":
        return Encoded(*(None if t is None else t.to(device) for t in self._fields()))


# ---- tokenization ----------------------------------------------------------------------------
def bos_token(tokenizer) -> int:
    """The token prepended by `--bos always`: the BOS token, else EOS (as TransformerLens does)."""
    tid = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if tid is None:
        raise KentropyError("--bos always: the tokenizer has neither a BOS nor an EOS token")
    return tid


def split_tokens(tokenizer, subject: str, relation_phrase: str, bos: str = "auto") -> tuple[list[int], int, int]:
    """Prompt ids and the [start, end) token span of the subject.

    `bos`: "auto" encodes with the tokenizer's defaults (a BOS only where the tokenizer adds
    one); "always" encodes without special tokens and prepends exactly one BOS (`bos_token`),
    so a tokenizer that adds its own gets no second one; "never" encodes without special
    tokens. A token belongs to the subject when it starts inside the subject's characters;
    special tokens (BOS) belong to neither.
    """
    if bos not in BOS_MODES:
        raise KentropyError(f"--bos {bos}: choose from {', '.join(BOS_MODES)}")
    prompt = f"{subject} {relation_phrase}"
    enc = tokenizer(prompt, return_offsets_mapping=True, add_special_tokens=bos == "auto")
    ids, offsets = list(enc["input_ids"]), list(enc["offset_mapping"])
    if bos == "always":
        ids, offsets = [bos_token(tokenizer)] + ids, [(0, 0)] + offsets
    special = set(tokenizer.all_special_ids)
    inside = [i for i, ((a, b), t) in enumerate(zip(offsets, ids)) if t not in special and b > a and a < len(subject)]
    if not inside:
        raise KentropyError(f"subject {subject!r}: no tokens")
    return ids, inside[0], inside[-1] + 1


def target_token(tokenizer, prompt: str, target: str) -> int:
    """The first token of the target as the model reads it after the prompt (" " + target)."""
    p = tokenizer(prompt)["input_ids"]
    full = tokenizer(f"{prompt} {target}")["input_ids"]
    special = set(tokenizer.all_special_ids)
    if full[: len(p)] == p and len(full) > len(p) and full[len(p)] not in special:
        return full[len(p)]
    rest = [t for t in tokenizer(f" {target}", add_special_tokens=False)["input_ids"] if t not in special]
    if not rest:
        raise KentropyError(f"target {target!r}: no tokens")
    return rest[0]


def _shape(tokenizer, subject: str, relation_phrase: str) -> tuple[int, int, int]:
    ids, s0, s1 = split_tokens(tokenizer, subject, relation_phrase)
    return len(ids), s0, s1


def corrupted_targets(task: Task) -> list[str | None]:
    """Per example: its `corrupted_target`, else the target of the task's example whose subject is the
    corrupting one (the first such, same relation phrase preferred), else None."""
    by_subject: dict[str, str] = {}
    by_pair: dict[tuple[str, str], str] = {}
    for ex in task.examples:
        by_subject.setdefault(ex.subject, ex.target)
        by_pair.setdefault((ex.subject, ex.relation_phrase), ex.target)
    return [ex.corrupted_target if ex.corrupted_target is not None
            else by_pair.get((ex.corrupted_subject, ex.relation_phrase), by_subject.get(ex.corrupted_subject))
            for ex in task.examples]


def check_corrupted_targets(task: Task, where: str = "task") -> None:
    """The logit-difference metric needs every example's corrupted target: an error naming the first without one."""
    for i, (ex, t) in enumerate(zip(task.examples, corrupted_targets(task))):
        if t is None:
            raise KentropyError(
                f"{where} {task.name!r}: example {i}: no corrupted target for {ex.corrupted_subject!r} (the logit-difference "
                "metric needs one: give the example a 'corrupted_target', or add an example with that subject to the task)")


def encode_task(task: Task, tokenizer, where: str = "task", *, bos: str = "auto") -> Encoded:
    """Token ids of a task; an example whose corrupted prompt does not align is an error naming it.

    `corrupted_target` is filled when every example has one (`corrupted_targets`), else None.
    """
    if not task.examples:
        raise KentropyError(f"{where} {task.name!r}: no examples")
    rows = []
    for i, ex in enumerate(task.examples):
        ids, s0, s1 = split_tokens(tokenizer, ex.subject, ex.relation_phrase, bos)
        cids, c0, c1 = split_tokens(tokenizer, ex.corrupted_subject, ex.relation_phrase, bos)
        if len(cids) != len(ids) or (c0, c1) != (s0, s1):
            raise KentropyError(
                f"{where} {task.name!r}: example {i}: corrupted prompt {ex.corrupted_prompt!r} has {len(cids)} tokens "
                f"(subject {c1 - c0}), clean {ex.prompt!r} has {len(ids)} (subject {s1 - s0}) under this tokenizer")
        rows.append((ids, cids, s0, s1, target_token(tokenizer, ex.prompt, ex.target)))
    N, T = len(rows), max(len(r[0]) for r in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    clean = torch.full((N, T), pad, dtype=torch.long)
    corrupted = clean.clone()
    mask = torch.zeros((N, T), dtype=torch.long)
    subject = torch.zeros((N, T), dtype=torch.bool)
    relation = torch.zeros((N, T), dtype=torch.bool)
    special = set(tokenizer.all_special_ids)
    for b, (ids, cids, s0, s1, _) in enumerate(rows):
        n = len(ids)
        clean[b, :n] = torch.tensor(ids)
        corrupted[b, :n] = torch.tensor(cids)
        mask[b, :n] = 1
        subject[b, s0:s1] = True
        relation[b, s1:n] = torch.tensor([t not in special for t in ids[s1:]])
    last = mask.sum(1) - 1
    target = torch.tensor([r[4] for r in rows])
    others = corrupted_targets(task)
    corrupted_target = None
    if all(t is not None for t in others):
        corrupted_target = torch.tensor([target_token(tokenizer, ex.corrupted_prompt, t) for ex, t in zip(task.examples, others)])
    return Encoded(clean, corrupted, mask, last, target, subject, relation, corrupted_target)


# ---- building tasks --------------------------------------------------------------------------
def _triple(t, i: int) -> Triple:
    if isinstance(t, Triple):
        return t
    if isinstance(t, dict):
        missing = [k for k in ("subject", "relation_phrase", "target", "relation_type", "known") if k not in t]
        if missing:
            raise KentropyError(f"triple {i}: missing field {missing[0]!r}")
        t = (t["subject"], t["relation_phrase"], t["target"], t["relation_type"], t["known"])
    if not isinstance(t, (tuple, list)) or len(t) != 5:
        raise KentropyError(f"triple {i}: expected (subject, relation_phrase, target, relation_type, known)")
    s, r, tg, rt, known = t
    if not all(isinstance(x, str) and x.strip() for x in (s, r, tg, rt)):
        raise KentropyError(f"triple {i}: subject, relation_phrase, target and relation_type must be non-empty strings")
    if not isinstance(known, bool):
        raise KentropyError(f"triple {i}: field 'known' must be true or false")
    return Triple(s.strip(), r.strip(), tg.strip(), rt.strip(), known)


def _corrupt(triples: list[Triple], tokenizer, seed: int) -> list[tuple[Triple, str]]:
    """Pair each triple with another subject whose prompt aligns; triples without one are dropped.

    Preferred: a subject of the same relation type whose target starts with another token;
    else a subject with no fact of this relation type; else any aligned subject. Seeded choice.
    """
    rng = random.Random(seed)
    subjects = sorted({t.subject for t in triples})
    by_rel: dict[str, dict[str, str]] = defaultdict(dict)
    for t in triples:
        by_rel[t.relation_type].setdefault(t.subject, t.target)
    first: dict[tuple[str, str], int] = {}
    shapes: dict[tuple[str, str], tuple[int, int, int]] = {}

    def shape_of(subject: str, phrase: str) -> tuple[int, int, int]:
        if (subject, phrase) not in shapes:
            shapes[(subject, phrase)] = _shape(tokenizer, subject, phrase)
        return shapes[(subject, phrase)]

    def first_token(prompt: str, target: str) -> int:
        key = (prompt, target)
        if key not in first:
            first[key] = target_token(tokenizer, prompt, target)
        return first[key]

    out = []
    for t in triples:
        shape = shape_of(t.subject, t.relation_phrase)
        mine = first_token(t.subject + " " + t.relation_phrase, t.target)
        differ, unknown, aligned = [], [], []
        for s in subjects:
            if s == t.subject or shape_of(s, t.relation_phrase) != shape:
                continue
            aligned.append(s)
            theirs = by_rel[t.relation_type].get(s)
            if theirs is None:
                unknown.append(s)
            elif first_token(s + " " + t.relation_phrase, theirs) != mine:
                differ.append(s)
        pool = differ or unknown or aligned
        if pool:
            out.append((t, rng.choice(pool)))
    return out


def tasks_from_triples(triples: Iterable, tokenizer, *, seed: int = 0) -> list[Task]:
    """Tasks from (subject, relation_phrase, target, relation_type, known) facts, one per relation type and split.

    `known=True` facts go to the "related" split (known entities, new attributes), the rest
    to "new". Facts with no aligned corrupting subject are dropped; tasks are sorted by name.
    An example's `corrupted_target` is the corrupting subject's target for the same relation
    phrase, else for the same relation type, when there is such a fact.
    """
    ts = [_triple(t, i) for i, t in enumerate(triples)]
    if not ts:
        raise KentropyError("no triples to build tasks from")
    facts: dict[tuple, str] = {}
    for t in ts:
        facts.setdefault((t.relation_type, t.subject, t.relation_phrase), t.target)
        facts.setdefault((t.relation_type, t.subject), t.target)
    groups: dict[tuple[str, str], list[Example]] = defaultdict(list)
    for t, other in _corrupt(ts, tokenizer, seed):
        split = "related" if t.known else "new"
        theirs = facts.get((t.relation_type, other, t.relation_phrase), facts.get((t.relation_type, other)))
        groups[(t.relation_type, split)].append(Example(t.subject, t.relation_phrase, t.target, other, theirs))
    return [Task(f"{rel}/{split}", rel, split, ex) for (rel, split), ex in sorted(groups.items())]


_KINDS = ("mem", "gen", "hard_gen")
_CAPITALIZED = re.compile(r"[A-Z][\w'-]*(?:\s+(?:(?:of|the|de|von|and)\s+)*[A-Z][\w'-]*)*")


def knowledge_subject(entry: dict) -> str | None:
    """The entity an entry is about: its `subject` (or `name`) field, else the first capitalized
    name in the first sentence of `train_context` (a leading "The" dropped) that a probe mentions."""
    for key in ("subject", "name"):
        if isinstance(entry.get(key), str) and entry[key].strip():
            return entry[key].strip()
    context = entry.get("train_context", "")
    first = re.split(r"(?<=[.!?])\s", context, maxsplit=1)[0]
    probes = " ".join(x for k in _KINDS for x in entry.get(f"{k}_input", []) if isinstance(x, str))
    for m in _CAPITALIZED.finditer(first):
        name = re.sub(r"^The\s+", "", m.group(0))
        if name != "The" and name in probes:
            return name
    return None


def _check_entry(e, i: int, kinds: tuple[str, ...], where: str) -> None:
    if not isinstance(e, dict):
        raise KentropyError(f"{where}: entry {i}: expected an object")
    for k in kinds:
        for f in (f"{k}_input", f"{k}_target"):
            v = e.get(f)
            if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                raise KentropyError(f"{where}: entry {i}: field {f!r} must be a list of strings")
        if len(e[f"{k}_input"]) != len(e[f"{k}_target"]):
            raise KentropyError(f"{where}: entry {i}: {k}_input and {k}_target differ in length")


def tasks_from_knowledge(entries: list[dict], tokenizer, *, kinds: tuple[str, ...] = ("mem",), seed: int = 0,
                         where: str = "knowledge") -> list[Task]:
    """Tasks from a Fictional Knowledge file (Chang et al. 2024 format, docs/definitions.md).

    Each probe (`{kind}_input`, `{kind}_target`) whose input mentions the entry's subject
    (`knowledge_subject`; for a multi-word name, else its last word) becomes a fact: the
    prompt is the input from the last mention on, i.e. "{subject} {relation phrase}", the
    target is the probe's target. The
    relation phrases of fictional entries are all different, so there is one relation type
    per probe kind ("knowledge-mem", ...). An entry with `"known": true` (a known entity
    with new attributes) goes to the "related" split, the rest (the paper's fictional
    entities) to "new". Corrupting subjects come from the other entries, as in
    `tasks_from_triples`.
    """
    if not isinstance(entries, list) or not entries:
        raise KentropyError(f"{where}: expected a non-empty list of entries")
    bad = [k for k in kinds if k not in _KINDS]
    if bad or not kinds:
        raise KentropyError(f"{where}: probe kinds must be among {', '.join(_KINDS)}")
    triples = []
    for i, e in enumerate(entries):
        _check_entry(e, i, kinds, where)
        subject = knowledge_subject(e)
        if subject is None:
            continue
        known = bool(e.get("known", False))
        # texts name a person by surname after the first mention: try the last word too
        mentions = [subject] + ([subject.split()[-1]] if len(subject.split()) > 1 else [])
        for k in kinds:
            for inp, target in zip(e[f"{k}_input"], e[f"{k}_target"]):
                for mention in mentions:
                    at = inp.rfind(mention)
                    phrase = inp[at + len(mention):].strip() if at >= 0 else ""
                    if phrase and target.strip():
                        triples.append(Triple(mention, phrase, target.strip(), f"knowledge-{k}", known))
                        break
    if not triples:
        raise KentropyError(f"{where}: no probe input mentions its entry's subject (give entries a 'subject' field)")
    return tasks_from_triples(triples, tokenizer, seed=seed)


# ---- files -----------------------------------------------------------------------------------
def write_tasks(path, tasks: list[Task]) -> None:
    """Write TASK.json (format in the module docstring), atomically."""
    write_json(path, {"format": FORMAT, "version": 1,
                      "tasks": [{"name": t.name, "relation": t.relation, "split": t.split,
                                 "examples": [{k: v for k, v in asdict(e).items() if v is not None} for e in t.examples]}
                                for t in tasks]})


def read_tasks(path, tokenizer=None, *, seed: int = 0) -> list[Task]:
    """Read TASK.json; a file of `triples` needs the tokenizer to build its tasks."""
    data = read_json(path, "--task")
    where = str(path)
    if isinstance(data, dict) and "triples" in data and "tasks" not in data:
        if tokenizer is None:
            raise KentropyError(f"{where}: a file of triples needs a tokenizer to build tasks")
        if not isinstance(data["triples"], list):
            raise KentropyError(f"{where}: field 'triples' must be a list")
        return tasks_from_triples(data["triples"], tokenizer, seed=seed)
    if not isinstance(data, dict) or not isinstance(data.get("tasks"), list):
        raise KentropyError(f"{where}: expected an object with a 'tasks' (or 'triples') list")
    tasks = []
    for i, t in enumerate(data["tasks"]):
        if not isinstance(t, dict) or not all(isinstance(t.get(k), str) for k in ("name", "relation", "split")):
            raise KentropyError(f"{where}: task {i}: fields 'name', 'relation', 'split' must be strings")
        if not isinstance(t.get("examples"), list) or not t["examples"]:
            raise KentropyError(f"{where}: task {i}: field 'examples' must be a non-empty list")
        examples = []
        for j, e in enumerate(t["examples"]):
            fields = ("subject", "relation_phrase", "target", "corrupted_subject")
            if not isinstance(e, dict) or not all(isinstance(e.get(k), str) and e[k].strip() for k in fields):
                raise KentropyError(f"{where}: task {i}: example {j}: fields {', '.join(fields)} must be non-empty strings")
            ct = e.get("corrupted_target")
            if ct is not None and not (isinstance(ct, str) and ct.strip()):
                raise KentropyError(f"{where}: task {i}: example {j}: field corrupted_target must be a non-empty string")
            examples.append(Example(*(e[k] for k in fields), ct))
        tasks.append(Task(t["name"], t["relation"], t["split"], examples))
    if not tasks:
        raise KentropyError(f"{where}: no tasks")
    return tasks
