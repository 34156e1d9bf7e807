"""The layout of a lab directory: one place for every path in it (as `RunDir` is for a run).

    LAB/lab_config.json        the resolved config and preset (a rerun must match it)
    LAB/results.json           every finding, with the config (sections in docs/definitions.md)
    LAB/report.md              the report, every number from this lab's stages
    LAB/figures/NAME.png       the report's figures
    LAB/timings.json           wall time per stage that ran (cached stages keep their first time)
    LAB/stages/NAME-HASH/      one stage: config.json, result.json (written last), and its files;
                               HASH covers the stage's config and code
"""

from __future__ import annotations

from pathlib import Path


class LabDir:
    """Paths of one lab directory (nothing is created here)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.config = self.root / "lab_config.json"
        self.results = self.root / "results.json"
        self.report = self.root / "report.md"
        self.figures = self.root / "figures"
        self.timings = self.root / "timings.json"
        self.stages = self.root / "stages"

    def stage(self, name: str, h: str) -> Path:
        """The directory of stage `name` with hash `h`."""
        return self.stages / f"{name}-{h}"


def slug(name: str) -> str:
    """A name (an arm's, say) as it appears in stage names: alphanumerics, the rest as '-', lower case."""
    return "".join(ch if ch.isalnum() else "-" for ch in name).strip("-").lower()
