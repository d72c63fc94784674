"""Who may import whom, read from the source with `ast` (nothing is imported): the engine stays free of the
service, the server of torch, the wire format of either side's runtime.

"Reaches" follows the imports that run when a module is imported (module level, not under TYPE_CHECKING, not
inside a function), through the repository's own modules and the packages that hold them, to the third-party
modules they name.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = ("mocov3_core", "server", "worker", "mocolab")
TORCH = {"torch", "timm", "torchvision"}
WIRE = ("mocov3_core.events", "worker.protocol", "worker.gang")
# the worker modules the server may run: the contract (keys, messages, the gang's Redis scripts), no runtime
CONTRACT = {"worker", "worker.protocol", "worker.gang"}
DOMAINS = ("runs", "workers", "studies", "auth", "datasets")


def modules(package: str) -> list[str]:
    out = []
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        out.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return out


def source(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _walk(nodes: list[ast.stmt], everywhere: bool) -> Iterator[ast.Import | ast.ImportFrom]:
    for node in nodes:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If) and _type_checking(node):
            yield from _walk(node.orelse, everywhere)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and not everywhere:
            continue
        else:
            for field in ("body", "orelse", "finalbody", "handlers"):
                yield from _walk([n for n in getattr(node, field, []) if isinstance(n, ast.stmt | ast.excepthandler)],
                                 everywhere)


@cache
def imports(module: str, everywhere: bool = False) -> frozenset[str]:
    """The modules `module` imports: at module level, or (everywhere) also inside its functions. For
    `from a import b`, both `a` and, when it is one of ours, the module `a.b`."""
    path = source(module)
    if path is None:
        return frozenset()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in _walk(ast.parse(path.read_text()).body, everywhere):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
            continue
        base = node.module or ""
        if node.level:
            anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
            base = ".".join([*anchor, base] if base else anchor)
        found.add(base)
        found.update(f"{base}.{alias.name}" for alias in node.names if source(f"{base}.{alias.name}"))
    found.discard("__future__")
    return frozenset(found)


def with_packages(module: str) -> list[str]:
    """Importing a.b.c runs a/__init__ and a/b/__init__ first."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def reaches(module: str) -> set[str]:
    """Every module importing `module` runs: ours (by name) and third-party ones (by top-level name)."""
    seen: set[str] = set()
    todo = with_packages(module)
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        if current.split(".")[0] in OURS:
            for name in imports(current):
                todo += with_packages(name) if name.split(".")[0] in OURS else [name.split(".")[0]]
    return seen


def test_the_engine_imports_nothing_of_the_service() -> None:
    bad = {(m, i) for m in modules("mocov3_core") for i in imports(m, everywhere=True)
           if i.split(".")[0] in ("server", "worker", "mocolab")}
    assert not bad, bad


@pytest.mark.parametrize("module", modules("server"))
def test_the_server_runs_without_torch(module: str) -> None:
    direct = {i for i in imports(module, everywhere=True) if i.split(".")[0] in TORCH}
    assert not direct, f"{module} imports {direct}"
    engine = {i for i in imports(module, everywhere=True) if i.split(".")[0] == "mocov3_core"}
    assert engine <= {"mocov3_core", "mocov3_core.config", "mocov3_core.events", "mocov3_core.presets"}, engine
    reached = reaches(module)
    assert not reached & TORCH, f"{module} reaches {reached & TORCH}"
    workers = {m for m in reached if m.startswith("worker")}
    assert workers <= CONTRACT, f"{module} runs the worker's runtime: {workers}"


@pytest.mark.parametrize("module", WIRE)
def test_the_wire_format_pulls_neither_side(module: str) -> None:
    reached = reaches(module)
    assert not {m for m in reached if m.split(".")[0] in ("server", "mocolab")}, reached
    assert {m for m in reached if m.startswith("worker")} <= CONTRACT, reached
    assert not reached & (TORCH | {"celery", "fastapi", "sqlalchemy", "sqlmodel"}), reached


@pytest.mark.parametrize("module", ["server.events.ingest", "server.events.bus", "server.events.projection"])
def test_events_are_infrastructure_that_knows_no_domain(module: str) -> None:
    """The domains project events into their tables; the ingest only hands the events over (no events ->
    runs -> events cycle). `server.projections` assembles them."""
    domains = {m for m in reaches(module) if m.split(".")[:2] in (["server", d] for d in DOMAINS)}
    assert not domains, f"{module} reaches {domains}"


def test_the_status_machine_is_standard_library_only() -> None:
    """The CLI reads TERMINAL from it without the server's runtime."""
    outside = {i for i in imports("server.runs.lifecycle") if i.split(".")[0] not in sys.stdlib_module_names}
    assert not outside, outside
    reached = {m for m in reaches("mocolab.cli") if m.split(".")[0] == "server"}
    assert reached == {"server", "server.runs", "server.runs.lifecycle"}, reached


def test_the_checks_see_what_they_are_about() -> None:
    """Guard against a check that cannot fail: the walk finds imports where they are."""
    assert "torch" in reaches("mocov3_core.train.loop")
    assert "worker.sink" in reaches("worker.runner") and "server.core.db" in reaches("server.runs.service")
    assert "server.runs.lifecycle" in reaches("server.projections")
    assert "mocov3_core.events" in reaches("server.events.ingest")
