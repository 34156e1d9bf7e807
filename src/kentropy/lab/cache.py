"""The stage engine: stages cached by the hash of their config and their code, so that an interrupted
lab resumes where it stopped, a rerun costs nothing, and a changed stage runs again.

A stage is a name, the JSON-able config it depends on (including the hashes of the stages
it reads from) and a function `fn(workdir) -> result`. The hash covers the config and the
source of the module that defines `fn` (plus any modules named in `code`). Its result is kept
in `LAB/stages/NAME-HASH/result.json`; the result file is written last (atomically), so a
stage without one is unfinished and runs again (a long stage may resume its own partial
work from `workdir`; temp files and directories of atomic writes that a kill interrupted
are removed first). Wall times go to `LAB/timings.json` (`lab/labdir.py` names every path).

The stages themselves are in `lab/stages/`; the recipes that call them in `lab/studies/`.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable


from kentropy.io import write_json
from kentropy.lab.labdir import LabDir


@dataclass
class Done:
    """A finished stage: its result, directory and hash (for the stages that depend on it)."""

    result: Any
    dir: Path
    hash: str


def config_hash(config: Any) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:12]


def code_hash(modules) -> str:
    """The hash of the source files of `modules` (module objects or names): a stage's code."""
    import importlib

    h = hashlib.sha256()
    for m in modules:
        mod = importlib.import_module(m) if isinstance(m, str) else m
        h.update(Path(inspect.getfile(mod)).read_bytes())
    return h.hexdigest()[:12]


# `kentropy.io`'s temp names: write_atomic's ".NAME.XXXXXXXX.tmp" files, write_dir_atomic's ".NAME.XXXXXXXX" dirs
_PARTIAL_FILE = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")
_PARTIAL_DIR = re.compile(r"^\..+\.[a-z0-9_]{8}$")


def clean_partial_writes(root: Path) -> list[Path]:
    """Remove what interrupted atomic writes left under `root` (their temp files and directories)."""
    gone = []
    for p in sorted(root.rglob(".*"), key=lambda p: len(p.parts)):
        if not p.exists():  # inside a temp dir removed just before
            continue
        if p.is_dir() and _PARTIAL_DIR.match(p.name):
            shutil.rmtree(p)
            gone.append(p)
        elif p.is_file() and _PARTIAL_FILE.match(p.name):
            p.unlink()
            gone.append(p)
    return gone


class Stages:
    """The stages of one lab directory. record_timings=False (a worker process's): wall times are kept in
    memory only, so that the parent's `timings.json` has one writer."""

    def __init__(self, root: Path, *, record_timings: bool = True) -> None:
        self.dir = LabDir(root)
        self.root = self.dir.root
        self.record_timings = record_timings
        path = self.dir.timings
        self.timings: dict[str, dict] = json.loads(path.read_text()) if record_timings and path.is_file() else {}

    @staticmethod
    def hash(config: Any, fn: Callable[[Path], Any], code=()) -> str:
        """A stage's hash: its config and the source of fn's module and of the modules in `code`."""
        return config_hash({"config": config, "code": code_hash([inspect.getmodule(fn), *code])})

    def run(self, name: str, config: Any, fn: Callable[[Path], Any], code=()) -> Done:
        """Run (or find cached) the stage `name`; `code`: modules beyond fn's own whose source the result depends on."""
        h = self.hash(config, fn, code)
        d = self.dir.stage(name, h)
        result_file = d / "result.json"
        if result_file.is_file():
            print(f"[lab] {name}: cached ({d.name})", file=sys.stderr)
            return Done(json.loads(result_file.read_text()), d, h)
        if d.is_dir():
            for p in clean_partial_writes(d):
                print(f"[lab] {name}: removed {p.relative_to(d)} (an interrupted write)", file=sys.stderr)
        d.mkdir(parents=True, exist_ok=True)
        write_json(d / "config.json", config)
        print(f"[lab] {name}: running", file=sys.stderr)
        t = time.perf_counter()
        result = fn(d)
        seconds = time.perf_counter() - t
        write_json(result_file, result)
        self.record(name, seconds, d.name)
        print(f"[lab] {name}: done in {seconds:.1f} s", file=sys.stderr)
        return Done(result, d, h)

    def record(self, name: str, seconds: float, what: str) -> None:
        """A wall time in `timings.json` (`what`: the stage directory, or what the time covers)."""
        self.timings[name] = {"seconds": round(seconds, 2), "stage": what}
        if self.record_timings:
            write_json(self.dir.timings, self.timings)
