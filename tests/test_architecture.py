"""The package's layers, read from the source: what may import what, no cycles, files that fit in a head.

Layers, lowest first: ``core`` (the algorithm) and ``io`` (files and bundles), then ``engines``
(Ray, Spark, MLflow) and ``research``, then ``ops`` (nightly, batch, datasets), then ``cli``.
A module may import its own layer and those below; ``jobs/`` import ``xmc``, never the reverse.
Every import counts, also one inside a function or under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "xmc"

# the subpackages each layer may import (besides the top-level modules: errors, params, log, _version)
ALLOWED: dict[str, set[str]] = {
    "core": {"core", "io"},
    "io": {"io", "core"},
    "engines": {"engines", "core", "io"},
    "research": {"research", "core", "io"},
    "ops": {"ops", "engines", "research", "core", "io"},
    "cli": {"cli", "ops", "engines", "research", "core", "io"},
}
MAX_LINES = 400
MAX_TOP_LEVEL_MODULES = 6


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PKG.rglob("*.py")}


def imports_of(path: Path, known: set[str], name: str | None = None) -> set[str]:
    """Every xmc/jobs module ``path`` imports, at any depth of the file."""
    name = name or module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            # `from xmc.core import tree` imports the module xmc.core.tree
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        found.update(t for t in targets if t.split(".")[0] in ("xmc", "jobs"))
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {m: {t for t in imports_of(p, known) if t != m} for m, p in mods.items()}


def layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in ALLOWED) else None


def test_each_layer_imports_only_the_layers_below_it() -> None:
    bad = []
    for mod, targets in graph().items():
        own = layer(mod)
        for t in targets:
            if t.startswith("jobs"):
                bad.append(f"{mod} imports {t}: xmc never imports jobs/")
            elif own is not None and layer(t) is not None and layer(t) not in ALLOWED[own]:
                bad.append(f"{mod} ({own}) imports {t} ({layer(t)})")
    assert not bad, "\n".join(bad)


def find_cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Import cycles of a module graph, by depth-first search (each as a -> ... -> a)."""
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(g.get(m, ())):
            if state.get(t) == 1:
                cycles.append([*stack[stack.index(t):], t])
            elif t in g and t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m)
    return cycles


def test_no_import_cycle_among_xmc_modules() -> None:
    cycles = find_cycles(graph())
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_the_checker_sees_function_level_imports_and_cycles(tmp_path: Path) -> None:
    f = tmp_path / "x.py"
    f.write_text("def f():\n    from xmc.core import model\n    import jobs.train\n\n"
                 "if True:\n    from ..io import files\n")
    found = imports_of(f, {"xmc.core.model", "xmc.io.files"}, name="xmc.core.x")
    assert found == {"xmc.core.model", "jobs.train", "xmc.io.files"}
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_files_fit_in_a_head_and_the_top_level_stays_small() -> None:
    long = [f"{p.relative_to(REPO)}: {n} lines" for p in [*PKG.rglob("*.py"), *(REPO / "jobs").glob("*.py")]
            if (n := len(p.read_text().splitlines())) > MAX_LINES]
    assert not long, "\n".join(long)
    top = sorted(p.name for p in PKG.glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL_MODULES, top


def test_jobs_are_thin_entry_points_into_the_cli() -> None:
    for job in (REPO / "jobs").glob("*.py"):
        tree = ast.parse(job.read_text())
        defs = [n for n in tree.body if isinstance(n, ast.FunctionDef | ast.ClassDef)]
        assert not defs, f"{job.name} defines {[d.name for d in defs]}: logic belongs in xmc.cli"
        assert f"from xmc.cli.{job.stem} import main" in job.read_text(), job.name
