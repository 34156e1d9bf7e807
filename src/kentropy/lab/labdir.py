"""The layout of a lab directory: one place for every path in it (as `RunDir` is for a run).

    LAB/lab_config.json        the resolved config and preset (a rerun must match it)
    LAB/results.json           every finding, with the config (sections in docs/definitions.md)
    LAB/report.md              the report, every number from this lab's stages
    LAB/figures/NAME.png       the report's figures
    LAB/timings.json           wall time per stage that ran (cached stages keep their first time)
    LAB/stages/NAME-HASH/      one stage: config.json, result.json (written last), and its files;
                               HASH covers the stage's config and code

Paths inside the lab are stored relative to it (`stages/NAME-HASH/...`, `stored`) in every file the lab
writes (a stage's config and result, results.json), and hashed that way: a lab moved or copied elsewhere
resumes there, finds its stages cached, and reads only its own files. In memory they are paths from
where the lab is now (`live`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

STAGES = "stages"


class LabDir:
    """Paths of one lab directory (nothing is created here); `root` is made absolute."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(os.path.abspath(root))
        self.config = self.root / "lab_config.json"
        self.results = self.root / "results.json"
        self.report = self.root / "report.md"
        self.figures = self.root / "figures"
        self.timings = self.root / "timings.json"
        self.stages = self.root / STAGES

    def stage(self, name: str, h: str) -> Path:
        """The directory of stage `name` with hash `h`."""
        return self.stages / f"{name}-{h}"

    def stored(self, obj: Any) -> Any:
        """`obj` (JSON-like) with every path inside the lab, as a string, made relative to the lab."""
        prefixes = {str(self.root) + os.sep, os.path.realpath(self.root) + os.sep}

        def rel(x: Any) -> Any:
            if isinstance(x, str):
                return next((x[len(p):] for p in prefixes if x.startswith(p)), x)
            if isinstance(x, dict):
                return {k: rel(v) for k, v in x.items()}
            if isinstance(x, (list, tuple)):
                return [rel(v) for v in x]
            return x

        return rel(obj)

    def live(self, obj: Any) -> Any:
        """`obj` as `stored` wrote it, with every stored stage path (`stages/...`) a path from the lab's place now."""
        head = STAGES + "/"

        def here(x: Any) -> Any:
            if isinstance(x, str):
                return str(self.root / x) if x.startswith(head) else x
            if isinstance(x, dict):
                return {k: here(v) for k, v in x.items()}
            if isinstance(x, list):
                return [here(v) for v in x]
            return x

        return here(obj)


def slug(name: str) -> str:
    """A name (an arm's, say) as it appears in stage names: alphanumerics, the rest as '-', lower case."""
    return "".join(ch if ch.isalnum() else "-" for ch in name).strip("-").lower()
