"""Usage errors, for every command: an unknown or misspelt flag, a missing option or argument, a
non-integer where an integer is expected, an unknown command, a bare group. Each is exit 2 and one
`error:` line, with no traceback, whatever click (or typer's vendored copy of it) raised.

The cases are built from the registered commands, so a new command is covered when it is added.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_cli

from kentropy.cli.app import app

SRC = str(Path(__file__).parents[1] / "src")
ENV = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONPATH=SRC)


def _leaves():
    """(path, click command) for every runnable command, e.g. (["knowledge", "plan"], cmd)."""
    import typer

    root = typer.main.get_command(app)
    out = []

    def walk(cmd, path):
        subs = getattr(cmd, "commands", None)
        if subs:
            for name, sub in sorted(subs.items()):
                walk(sub, path + [name])
        else:
            out.append((path, cmd))

    walk(root, [])
    return out


def _int_option(cmd) -> str | None:
    """The first option annotated `int` (from the command's signature: the config's field types)."""
    import inspect

    for name, p in inspect.signature(cmd.callback).parameters.items():
        if p.annotation in (int, "int") and p.default.__class__.__name__ == "OptionInfo":
            return "--" + name.replace("_", "-")
    return None


def _required(cmd) -> bool:
    """Whether the command has a required parameter (else a bare call would run it, not fail)."""
    import inspect

    return any(getattr(p.default, "default", None) is ... for p in inspect.signature(cmd.callback).parameters.values())


def _misspelt(cmd) -> str:
    opt = next(p.opts[0] for p in cmd.params if getattr(p, "param_type_name", "") == "option" and p.opts[0] != "--help")
    return opt[:-1] if len(opt) > 4 else opt + "x"  # a dropped last letter: --seq-le


CASES = []
for path, cmd in _leaves():
    name = "-".join(path)
    CASES.append(pytest.param(path + ["--no-such-flag", "1"], "--no-such-flag", id=f"{name}-unknown-flag"))
    CASES.append(pytest.param(path + [_misspelt(cmd), "1"], _misspelt(cmd), id=f"{name}-misspelt-flag"))
    if _required(cmd):
        CASES.append(pytest.param(path, "Missing", id=f"{name}-missing"))
    if _int_option(cmd):
        CASES.append(pytest.param(path + ["x", _int_option(cmd), "many"], _int_option(cmd), id=f"{name}-not-an-integer"))
CASES += [pytest.param(["mesure", "m"], "No such command", id="unknown-command"),
          pytest.param([], "missing command", id="bare"),
          pytest.param(["knowledge"], "missing command", id="bare-group"),
          pytest.param(["knowledge", "generat"], "No such command", id="unknown-subcommand")]


def _one_error(err: str, names: str) -> None:
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    assert names in errors[0], errors[0]


@pytest.mark.parametrize("argv,names", CASES)
def test_usage_error(argv, names, capsys):
    code, _, err = run_cli(capsys, *argv)
    assert code == 2, err
    _one_error(err, names)


def test_every_command_has_cases():
    leaves = dict((" ".join(p), c) for p, c in _leaves())
    assert len(leaves) >= 10 and all(_int_option(leaves[n]) and _required(leaves[n]) for n in ("measure", "train", "probe"))


@pytest.mark.parametrize("argv,names", [(["measure", "m", "--data", "d", "--out", "o", "--seq-len", "ten"], "--seq-len"),
                                        (["train", "--bogus"], "--bogus"), (["lab"], "Missing"), (["nope"], "No such command"),
                                        ([], "missing command")], ids=["not-an-integer", "unknown-flag", "missing", "unknown-command", "bare"])
def test_usage_error_real_process(argv, names):
    """`python -m kentropy`, a real process: what a user's shell sees."""
    p = subprocess.run([sys.executable, "-m", "kentropy", *argv], env=ENV, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr
    _one_error(p.stderr, names)


def test_console_script_entry_point():
    """The installed `kentropy` entry point (its function, with this checkout's code on PYTHONPATH)."""
    code = ("import sys; from importlib.metadata import entry_points; "
            "ep = [e for e in entry_points(group='console_scripts') if e.name == 'kentropy'][0]; "
            "sys.argv = ['kentropy', 'measure', '--no-such-flag']; sys.exit(ep.load()())")
    p = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr
    _one_error(p.stderr, "--no-such-flag")
