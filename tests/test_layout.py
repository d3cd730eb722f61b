"""The house rules the tree keeps: layered rooms, no import cycle, short functions, one top-level package."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "cpcdrl_deploy"
MAX_LINES = 80


def _module_graph() -> dict[str, set[str]]:
    """Every module of the package -> the package's modules it imports (at the top or inside functions)."""
    graph: dict[str, set[str]] = {}
    for f in PACKAGE.rglob("*.py"):
        parts = f.relative_to(REPO).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        deps: set[str] = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cpcdrl_deploy"):
                deps.add(node.module)
                deps.update(f"{node.module}.{a.name}" for a in node.names)  # "from pkg import module"
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name.startswith("cpcdrl_deploy"))
        graph[name] = deps
    return {m: {d for d in deps if d in graph and d != m} for m, deps in graph.items()}


def test_no_import_cycle() -> None:
    graph = _module_graph()
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in sorted(graph[m]):
            if d == "cpcdrl_deploy":  # the root package holds only __version__
                continue
            if state.get(d) == 1:
                pytest.fail("import cycle: " + " -> ".join([*path[path.index(d) :], d]))
            if d not in state:
                visit(d, [*path, d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


def test_rooms_import_only_rooms_below_them() -> None:
    # the same contract lint-imports checks in CI, here so a local pytest run catches an upward import too
    layers = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"][0]["layers"]
    rank = {name.removeprefix("cpcdrl_deploy."): i for i, name in enumerate(layers)}  # 0 is the top

    def room(module: str) -> str | None:
        parts = module.split(".")
        return parts[1] if len(parts) > 1 and parts[1] in rank else None

    upward = []
    for m, deps in _module_graph().items():
        for d in deps:
            rm, rd = room(m), room(d)
            if rm is not None and rd is not None and rank[rd] < rank[rm]:
                upward.append(f"{m} imports {d}")
    assert not upward, upward


def test_no_function_or_class_over_80_lines() -> None:
    long = []
    for f in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                n = (node.end_lineno or node.lineno) - node.lineno + 1
                if n > MAX_LINES:
                    long.append(f"{f.relative_to(REPO)}:{node.lineno} {node.name} ({n} lines)")
    assert not long, long


def test_the_wheel_installs_one_top_level_package() -> None:
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())
    setuptools = cfg["tool"]["setuptools"]
    assert "py-modules" not in setuptools and setuptools["packages"]["find"]["include"] == [
        "cpcdrl_deploy",
        "cpcdrl_deploy.*",
    ]
    assert cfg["project"]["scripts"] == {"cpcdrl": "cpcdrl_deploy.cli:main"}
    # the device-side files and the shipped profile travel inside it
    assert (PACKAGE / "ondevice" / "runner.py").is_file() and (PACKAGE / "ondevice" / "timer.py").is_file()
    assert (PACKAGE / "assets" / "profiles" / "paper.json").is_file()
