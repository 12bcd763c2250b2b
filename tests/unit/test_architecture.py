"""The package's shape, checked from its source: a folder per pipeline stage, few modules at the
root, and no import cycle between the package's own modules — counting imports made inside
functions too (a lazy import hides a cycle from Python, not from the reader)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "pytest_pgrestore"
NAME = PACKAGE.name


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imports(module: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that ``module`` imports, at any depth of its code."""
    is_package = path.name == "__init__.py"
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                absolute = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.split(".")[0] == NAME:
                absolute = node.module
            else:
                continue
            for alias in node.names:  # from . import measure: the name may be a module itself
                sub = f"{absolute}.{alias.name}"
                targets.add(sub if sub in known else absolute)
        elif isinstance(node, ast.Import):
            targets |= {a.name for a in node.names if a.name.split(".")[0] == NAME}
    if isinstance(node, ast.AST) and module.endswith("__init__"):
        pass
    return {t for t in targets if t in known and t != module}


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, path, known) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_between_the_packages_modules():
    graph = import_graph()
    assert len(graph) > 40, "premise: the package was read"
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    """Its twin: a loop through a lazy import is found."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_a_folder_per_stage_and_few_modules_at_the_root():
    root_modules = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(root_modules) <= 6, root_modules
    for stage in ("settings", "store", "formats", "restore", "runtimes", "checks", "evidence",
                  "pytest_plugin", "cli", "demo"):
        assert (PACKAGE / stage / "__init__.py").is_file(), stage


def test_only_the_plugin_imports_pytest():
    """Nothing left of the fixtures imports pytest: the Restorer serves the CLI and scripts too."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if "pytest_plugin" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            if any(n == "pytest" or n.startswith("pytest.") or n.startswith("_pytest") for n in names):
                offenders.append(str(path.relative_to(PACKAGE)))
    assert offenders == []


def test_formats_never_ask_what_kind_of_store_they_read():
    """One store interface: no getattr/isinstance probes of a store in the formats."""
    probes = []
    for path in (PACKAGE / "formats").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id in ("getattr", "isinstance", "hasattr") and node.args
                    and "store" in ast.unparse(node.args[0])):
                probes.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
    assert probes == []


def test_a_store_with_a_write_method_is_refused():
    import pytest

    from pytest_pgrestore.store._base import ObjectStore
    from pytest_pgrestore.store._local import LocalStore
    from pytest_pgrestore.store._s3 import S3Store

    with pytest.raises(TypeError, match="put_object: a backup store is read-only"):
        class Writable(LocalStore):  # noqa: F841
            def put_object(self, key, data):
                pass
    for store in (LocalStore, S3Store):
        assert issubclass(store, ObjectStore) and not getattr(store, "__abstractmethods__", None)


def test_every_tar_format_materializes_through_one_step():
    """basebackup, barman and WAL-G fetch and extract their tars through tar_materialize."""
    for module in ("_basebackup.py", "_barman.py", "_walg_fetch.py"):
        text = (PACKAGE / "formats" / module).read_text()
        assert "extract_tars(" in text, module
        assert "run_jobs(" not in text, module  # (catalog reads of small files may use a pool of their own)


def test_what_is_internal_is_named_so():
    """Inside the stage folders every module starts with _, but the drills' assertion helpers;
    the public API is what the package exports."""
    import pytest_pgrestore

    public = {"assertions.py", "__init__.py", "__main__.py"}
    named = sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.glob("*/*.py")
                   if p.name not in public and not p.name.startswith("_"))
    assert named == []
    for name in pytest_pgrestore.__all__:
        assert getattr(pytest_pgrestore, name) is not None, name


def test_test_modules_have_unique_basenames():
    """pytest (rootdir conftest, no packages) imports test modules by basename: two files of one
    name in different folders fail the whole run's collection ('import file mismatch')."""
    from collections import Counter

    tests = Path(__file__).resolve().parents[1]
    names = Counter(p.name for p in tests.rglob("test_*.py"))
    assert [n for n, c in names.items() if c > 1] == []
