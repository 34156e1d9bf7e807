"""Stages cached by config hash: an interrupted lab resumes where it stopped, a rerun costs nothing.

A stage is a name, the JSON-able config it depends on (including the hashes of the stages
it reads from) and a function `fn(workdir) -> result`. Its result is kept in
`DIR/stages/NAME-HASH/result.json`; the result file is written last (atomically), so a
stage without one is unfinished and runs again (a long stage may resume its own partial
work from `workdir`). Wall times go to `DIR/timings.json`.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from kentropy.io import write_json


@dataclass
class Done:
    """A finished stage: its result, directory and hash (for the stages that depend on it)."""

    result: Any
    dir: Path
    hash: str


def config_hash(config: Any) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:12]


class Stages:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.timings_path = self.root / "timings.json"
        self.timings: dict[str, dict] = json.loads(self.timings_path.read_text()) if self.timings_path.is_file() else {}

    def run(self, name: str, config: Any, fn: Callable[[Path], Any]) -> Done:
        h = config_hash(config)
        d = self.root / "stages" / f"{name}-{h}"
        result_file = d / "result.json"
        if result_file.is_file():
            print(f"[lab] {name}: cached ({d.name})", file=sys.stderr)
            return Done(json.loads(result_file.read_text()), d, h)
        d.mkdir(parents=True, exist_ok=True)
        write_json(d / "config.json", config)
        print(f"[lab] {name}: running", file=sys.stderr)
        t = time.perf_counter()
        result = fn(d)
        seconds = time.perf_counter() - t
        write_json(result_file, result)
        self.timings[name] = {"seconds": round(seconds, 2), "stage": d.name}
        write_json(self.timings_path, self.timings)
        print(f"[lab] {name}: done in {seconds:.1f} s", file=sys.stderr)
        return Done(result, d, h)
