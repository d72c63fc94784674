"""The engine's sub-packages import each other one way only (no cycle such as moco <-> frameworks or
train <-> eval), read from the source's import statements, function-level imports included."""

import ast
from pathlib import Path

import mocov3_core

ROOT = Path(mocov3_core.__file__).parent


def module_name(path: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    return ".".join(parts[:-1] if is_package else parts), is_package


def imported(path: Path) -> set[str]:
    """Absolute names of the mocov3_core modules `path` imports."""
    name, is_package = module_name(path)
    base = name.split(".") if is_package else name.split(".")[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            prefix = base[: len(base) - node.level + 1] if node.level else []
            out.add(".".join(prefix + ([node.module] if node.module else [])))
        elif isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
    return {m for m in out if m.startswith("mocov3_core.")}


def subpackage(module: str) -> str | None:
    """mocov3_core.<sub>.x -> <sub> for the sub-packages (top-level modules such as config are shared ground)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and (ROOT / parts[1]).is_dir() else None


def package_edges() -> dict[tuple[str, str], list[str]]:
    edges: dict[tuple[str, str], list[str]] = {}
    for path in ROOT.rglob("*.py"):
        source = subpackage(module_name(path)[0])
        for target in imported(path):
            dest = subpackage(target)
            if source and dest and source != dest:
                edges.setdefault((source, dest), []).append(f"{module_name(path)[0]} -> {target}")
    return edges


def test_the_reader_sees_imports_in_functions_and_relative_ones() -> None:
    edges = package_edges()
    assert ("train", "data") in edges and ("eval", "train") in edges  # eval loads checkpoints from train
    assert ("frameworks", "moco") in edges


def test_no_two_sub_packages_import_each_other() -> None:
    edges = package_edges()
    cycles = [f"{a} <-> {b}: {edges[(a, b)] + edges[(b, a)]}" for a, b in edges if (b, a) in edges and a < b]
    assert not cycles, cycles
