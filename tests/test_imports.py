"""The import graph of ``src/cgaps``: no cycles between modules, none between the package's parts,
and the runner that spreads work (``cgaps.scaleout``) chosen on the command line only.

Every module is parsed with :mod:`ast` (nothing is imported), and every import statement counts,
wherever it stands: at the top, inside a function (where a cycle hides from Python's import
machinery until the function runs) and under ``if TYPE_CHECKING:``. Type-only imports count
because a module that needs another's types to be read depends on it as much as one that calls
it: a cycle kept alive by annotations is still two modules that cannot be understood, tested or
replaced one without the other, and a runtime import added later would turn it into a crash.

What an import statement depends on: ``import a.b`` and ``from a import b`` (``b`` a module) depend
on the module ``a.b``; ``from a.b import name`` (``name`` not a module) depends on ``a.b`` itself,
that is on the package's ``__init__`` when ``a.b`` is a package. So a module that takes a name from
its own package's ``__init__``, which imports that module back, is a cycle; a module that
imports a sibling module through the package path is not (Python runs the parent's ``__init__``
first either way, but needs nothing from it).

The parts of the package are its subpackages and top-level modules (``cgaps.extract``,
``cgaps.labels``, ``cgaps.rundir``, ``cgaps.config``...). Data flows one way between them (items ->
evaluate -> extract -> scoring -> labels / robustness -> report), so the graph of parts is
acyclic too: ``cgaps.extract`` and ``cgaps.labels`` may not depend on each other, even through a
third part. One exception to "a module belongs to its subpackage": a stage's ``config.py``
declares that stage's section of the one config object, which :mod:`cgaps.config` gathers, so it
is a part of its own, and a leaf: it imports nothing but the field helpers
(:mod:`cgaps.config_fields`) and :mod:`cgaps.errors` (checked below).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"


def modules(root: Path, package: str = "cgaps") -> dict[str, Path]:
    """Every module of ``package`` under ``root``: dotted name -> file (a package is its ``__init__``)."""
    out: dict[str, Path] = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    """The module ``name`` is, or the deepest known module it lies in (None: not ours)."""
    while name not in known:
        if "." not in name:
            return None
        name = name.rsplit(".", 1)[0]
    return name


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(name: str, known: dict[str, Path]) -> dict[str, str]:
    """The modules of ``known`` that module ``name`` imports, each with how (``line N``, plus
    ``in a function`` / ``type-only`` where it applies), from every import statement of its file."""
    path = known[name]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    out: dict[str, str] = {}

    def visit(node: ast.AST, where: str) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            where = "in a function"
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                visit(child, "type-only")
            for child in node.orelse:
                visit(child, where)
            return
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's own package, one level up per extra dot
                anchor = package[: len(package) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            # `from a import b`: the module a.b when there is one, else a name of a itself
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names
            ]
        for target in targets:
            resolved = _resolve(target, known)
            if resolved is not None and resolved != name:
                how = f"line {node.lineno}" + (f", {where}" if where else "")
                out.setdefault(resolved, how)
        for child in ast.iter_child_nodes(node):
            visit(child, where)

    visit(tree, "")
    return out


def graph(known: dict[str, Path]) -> dict[str, dict[str, str]]:
    return {name: imports_of(name, known) for name in known}


def find_cycle(edges: dict[str, set[str]] | dict[str, dict[str, str]]) -> list[str] | None:
    """One cycle of the directed graph ``edges`` as ``[a, b, ..., a]`` (None: acyclic); the first
    found by a depth-first search in sorted order, so the same graph always names the same cycle."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def dfs(v: str) -> list[str] | None:
        state[v] = 1
        path.append(v)
        for w in sorted(edges.get(v, ())):
            if state.get(w) == 1:
                return [*path[path.index(w) :], w]
            if w not in state:
                found = dfs(w)
                if found:
                    return found
        path.pop()
        state[v] = 2
        return None

    for v in sorted(edges):
        if v not in state:
            found = dfs(v)
            if found:
                return found
    return None


def part(module: str) -> str:
    """The part of the package a module belongs to: ``cgaps.extract.stage`` -> ``cgaps.extract``;
    a stage's options module is its own (module docstring)."""
    return module if is_stage_config(module) else ".".join(module.split(".")[:2])


def part_graph(edges: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    """The parts' dependencies, each with one import that makes it (``module (line N)``)."""
    out: dict[str, dict[str, str]] = {}
    for module, targets in sorted(edges.items()):
        for target, how in sorted(targets.items()):
            a, b = part(module), part(target)
            if a != b:
                out.setdefault(a, {}).setdefault(b, f"{module} -> {target} ({how})")
    return out


def describe(cycle: list[str], edges: dict[str, dict[str, str]]) -> str:
    """A cycle as one readable line per step, naming the import of each."""
    return "; ".join(f"{a} -> {b} ({edges[a][b]})" for a, b in zip(cycle, cycle[1:], strict=False))


# ---------------------------------------------------------------- the package


@pytest.fixture(scope="module")
def cgaps_graph() -> dict[str, dict[str, str]]:
    known = modules(SRC)
    assert len(known) > 50 and "cgaps.extract.stage" in known  # the whole package was read
    return graph(known)


def test_no_import_cycle_between_modules(cgaps_graph):
    cycle = find_cycle(cgaps_graph)
    assert cycle is None, f"import cycle: {describe(cycle, cgaps_graph)}"


def test_no_cycle_between_the_parts_of_the_package(cgaps_graph):
    parts = part_graph(cgaps_graph)
    assert "cgaps.extract" in parts["cgaps.labels"]  # the labels read what extraction wrote: one way
    cycle = find_cycle(parts)
    assert cycle is None, f"the parts of cgaps depend on each other: {describe(cycle, parts)}"


def is_stage_config(module: str) -> bool:
    """``cgaps.STAGE.config``: a stage's config section (``cgaps.config`` itself is not one)."""
    return module.count(".") == 2 and module.endswith(".config")


def test_config_modules_are_leaves(cgaps_graph):
    """What lets cgaps.config gather every stage's options without depending on the stages."""
    options = {m: t for m, t in cgaps_graph.items() if is_stage_config(m)}
    assert "cgaps.labels.config" in options and "cgaps.labels.config" in cgaps_graph["cgaps.config"]
    allowed = {"cgaps.config_fields", "cgaps.errors"}
    assert {m: sorted(set(t) - allowed) for m, t in options.items() if set(t) - allowed} == {}


def test_only_the_command_line_picks_the_ray_runner(cgaps_graph):
    """The stages (and the pipeline) take a runner as an argument and never import scale-out."""
    users = {
        f"{m} -> {target}": how
        for m, targets in cgaps_graph.items()
        for target, how in targets.items()
        if target.startswith("cgaps.scaleout") and not m.startswith("cgaps.scaleout")
    }
    assert "cgaps.cli.run -> cgaps.scaleout" in users  # the rule is not vacuous
    assert {k: how for k, how in users.items() if not k.startswith("cgaps.cli.")} == {}


# ---------------------------------------------------------------- the checker on known cycles


def _package(root: Path, files: dict[str, str]) -> dict[str, Path]:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return modules(root, "pkg")


def test_the_checker_finds_cycles_through_functions_and_type_only_imports(tmp_path):
    known = _package(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "def f():\n    from pkg.b import g\n    return g\n",
            "pkg/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.a import f\n",
            "pkg/c.py": "import pkg.a\n",
        },
    )
    edges = graph(known)
    assert edges["pkg.a"] == {"pkg.b": "line 2, in a function"}
    assert edges["pkg.b"] == {"pkg.a": "line 3, type-only"}
    assert find_cycle(edges) == ["pkg.a", "pkg.b", "pkg.a"]
    assert describe(["pkg.a", "pkg.b", "pkg.a"], edges) == (
        "pkg.a -> pkg.b (line 2, in a function); pkg.b -> pkg.a (line 3, type-only)"
    )
    (tmp_path / "pkg" / "b.py").write_text("from pkg import c\n")  # b -> c -> a -> b
    assert find_cycle(graph(modules(tmp_path, "pkg"))) == ["pkg.a", "pkg.b", "pkg.c", "pkg.a"]


def test_the_checker_counts_a_name_taken_from_the_own_package_init(tmp_path):
    known = _package(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/sub/__init__.py": "from pkg.sub.m import f\nfrom pkg.sub.n import g\n",
            # a sibling module through the package path, and a relative one: no cycle
            "pkg/sub/m.py": "from pkg.sub import n\nfrom .n import g\ndef f(): return g\n",
            "pkg/sub/n.py": "def g(): pass\n",
        },
    )
    assert graph(known)["pkg.sub.m"] == {"pkg.sub.n": "line 1"}
    assert find_cycle(graph(known)) is None
    # a name of the package itself (its __init__, which imports this module back): a cycle
    (tmp_path / "pkg" / "sub" / "n.py").write_text("def g():\n    from pkg.sub import f\n    return f\n")
    assert find_cycle(graph(modules(tmp_path, "pkg"))) == ["pkg.sub", "pkg.sub.m", "pkg.sub.n", "pkg.sub"]


def test_the_parts_rule_catches_stages_that_depend_on_each_other(tmp_path):
    known = _package(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/extract/__init__.py": "",
            "pkg/extract/stage.py": "from pkg.shared import x\n",
            "pkg/shared.py": "def x():\n    from pkg.labels.contexts import y\n",
            "pkg/labels/__init__.py": "",
            "pkg/labels/contexts.py": "y = 1\n",
            "pkg/labels/stage.py": "from pkg.extract.stage import x\n",
        },
    )
    edges = graph(known)
    assert find_cycle(edges) is None  # no module cycle...
    parts = part_graph(edges)
    assert find_cycle(parts) == ["pkg.extract", "pkg.shared", "pkg.labels", "pkg.extract"]  # ...but the parts
