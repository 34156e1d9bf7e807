"""The package's import graph, counting imports inside functions: no cycle anywhere in `kentropy`, and the
lab's layers import downwards only (config and regime at the bottom, the command at the top)."""

import ast
from pathlib import Path

import kentropy

SRC = Path(kentropy.__file__).parent.parent


def modules() -> dict[str, Path]:
    out = {}
    for f in (SRC / "kentropy").rglob("*.py"):
        parts = list(f.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


def import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports, at any depth of its code (function-level imports included).
    `from a.b import c` counts as importing a.b.c where that is a module, else a.b; a package's own
    __init__ imported from inside it is left out (not a cycle of interest)."""
    mods = modules()

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph = {m: set() for m in mods}
    for m, f in mods.items():
        base = m.split(".") if f.name == "__init__.py" else m.split(".")[:-1]
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                mod = ".".join(base[: len(base) - (node.level - 1)] + ([node.module] if node.module else [])) if node.level \
                    else node.module or ""
                targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
            else:
                continue
            for t in targets:
                r = resolve(t)
                if r and r != m and not m.startswith(r + "."):
                    graph[m].add(r)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), iteratively."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def test_cycle_finder_finds_a_cycle_through_a_function_level_import():
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(g) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_in_kentropy():
    graph = import_graph()
    assert "kentropy.lab.pipeline" in graph and len(graph) > 50
    assert cycles(graph) == []


def test_the_lab_imports_downwards():
    """config imports no lab module but the pure regime arithmetic and the analysis plan (which import none); the building
    blocks (text, stages, judge, report) never import the recipes (studies) or the command (pipeline)."""
    graph = import_graph()
    lab = {m: {t for t in ts if t.startswith("kentropy.lab.")} for m, ts in graph.items() if m.startswith("kentropy.lab.")}
    assert lab["kentropy.lab.config"] <= {"kentropy.lab.regime", "kentropy.lab.judge.plan"}
    assert lab["kentropy.lab.regime"] == set() and lab["kentropy.lab.judge.plan"] == set()
    top = ("kentropy.lab.studies", "kentropy.lab.pipeline")
    for m, ts in lab.items():
        if m.startswith(("kentropy.lab.text", "kentropy.lab.stages", "kentropy.lab.judge", "kentropy.lab.report")):
            assert not {t for t in ts if t.startswith(top)}, m
        if m.startswith("kentropy.lab.text"):
            assert all(t.startswith("kentropy.lab.text") for t in ts), m
    outside = {m for m, ts in graph.items() if not m.startswith("kentropy.lab") and any(t.startswith("kentropy.lab") for t in ts)}
    assert outside == {"kentropy.cli.app"}  # the command line is the lab's only door


ROOMS = ["errors", "io", "runtime", "models", "measurement", "edits", "knowledge", "evaluation", "circuits", "training",
         "lab", "cli"]  # bottom to top: a room imports only its own and the rooms below it


def room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "kentropy"


def test_the_core_is_rooms():
    """No module of the core sits at the package's top level but the face, the exception type and the file layer."""
    top = {m for m in modules() if m.count(".") == 1}
    assert {m.split(".")[1] for m in top} == set(ROOMS) | {"__main__"}, top
    assert all((SRC / "kentropy" / r / "__init__.py").is_file() for r in ROOMS if r not in ("errors", "io"))


def test_rooms_import_downwards():
    graph = import_graph()
    up = [(m, t) for m, ts in graph.items() for t in ts
          if room(m) in ROOMS and room(t) in ROOMS and ROOMS.index(room(t)) > ROOMS.index(room(m))]
    assert up == []


def test_room_order_check_can_fail():
    assert ROOMS.index(room("kentropy.cli.app")) > ROOMS.index(room("kentropy.models.loading"))
    assert room("kentropy") == "kentropy" and room("kentropy.io") == "io"


def function_level_imports(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every `from kentropy...` import inside a function of `path`."""
    text = path.read_text()
    lines = text.splitlines()
    out = []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for n in ast.walk(node):
                if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("kentropy"):
                    out.append((n.lineno, lines[n.lineno - 1]))
    return out


def test_the_core_imports_kentropy_at_the_top():
    """A core module's kentropy imports sit at its top, so its header shows what it depends on; one inside a
    function says why on its line (a heavy optional dependency, e.g. matplotlib for plots)."""
    late = {m: [(i, l) for i, l in function_level_imports(f) if "#" not in l]
            for m, f in modules().items() if not m.startswith("kentropy.lab")}
    assert {m: v for m, v in late.items() if v} == {}


def test_function_level_import_finder_finds_one(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("from kentropy.io import write_json\n\ndef g():\n    from kentropy.errors import KentropyError\n    return 1\n")
    assert function_level_imports(f) == [(4, "    from kentropy.errors import KentropyError")]
