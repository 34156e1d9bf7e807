"""A quiet console: the libraries' bars and logs (lm-eval, datasets, transformers) stay off stderr inside
kentropy's commands unless --verbose; kentropy's own progress lines stay."""

from __future__ import annotations

import pytest
from conftest import run_cli

LIBRARY_LINES = ("Running loglikelihood requests", "Tokenizing inputs", "Building contexts", "Generating test split", "Loading weights")


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory):
    from kentropy.evaluation.downstream import write_task

    d = tmp_path_factory.mktemp("console") / "lm"
    write_task(str(d), "given", [{"query": "Q", "choices": ["a", "b"], "gold": 0}] * 2)
    return d


def test_library_bars_only_with_verbose(model_dir, task_dir, tmp_path, capsys):
    model = model_dir("llama", 0)
    argv = ["evaluate", model, "--tasks", "given", "--task-dir", task_dir, "--device", "cpu"]
    code, _, err = run_cli(capsys, *argv, "--out", tmp_path / "a.json")
    assert code == 0, err
    assert not [x for x in LIBRARY_LINES if x in err], err
    assert f"evaluate {model} (1/1)" in err  # kentropy's own line stays
    code, _, err = run_cli(capsys, *argv, "--out", tmp_path / "b.json", "--verbose")
    assert code == 0, err
    assert "Running loglikelihood requests" in err  # the same command, verbose: lm-eval's bar is back


def test_quiet_keeps_kentropy_bars_and_restores_tqdm():
    import io

    import tqdm.std as tqdm_std
    from tqdm.auto import tqdm

    from kentropy.runtime.console import quiet

    raw = tqdm_std.tqdm.__dict__["__init__"]
    with quiet():
        assert tqdm(range(3), file=io.StringIO()).disable  # made here, outside kentropy (as a library's): off
        made_by_kentropy = {"__name__": "kentropy.somewhere", "tqdm": tqdm, "io": io}
        exec("bar = tqdm(range(3), file=io.StringIO())", made_by_kentropy)
        assert not made_by_kentropy["bar"].disable
    assert tqdm_std.tqdm.__dict__["__init__"] is raw
    assert not tqdm(range(3), file=io.StringIO()).disable
