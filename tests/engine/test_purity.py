"""The engine is pure: no IO, no clock, no randomness, no concurrency. Checked on the
source, so a stray import fails here rather than in a flaky simulation."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import coordinator.engine

ENGINE = Path(coordinator.engine.__file__).parent
MODULES = sorted(ENGINE.glob("*.py"))

# Top-level modules the engine may never import, with why.
FORBIDDEN = {
    "asyncio": "no event loop: the shell owns concurrency",
    "threading": "no threads",
    "multiprocessing": "no processes",
    "concurrent": "no executors",
    "socket": "no network",
    "ssl": "no network",
    "http": "no network",
    "urllib": "no network",
    "aiohttp": "no network",
    "aiomqtt": "no MQTT",
    "paho": "no MQTT",
    "psycopg": "no database",
    "psycopg_pool": "no database",
    "sqlite3": "no database",
    "redis": "no Redis",
    "subprocess": "no processes",
    "os": "no environment or files",
    "io": "no files",
    "pathlib": "no files",
    "shutil": "no files",
    "tempfile": "no files",
    "time": "no clock: time comes with every event",
    "datetime": "no clock: time comes with every event",
    "random": "no randomness: canary choice is a hash",
    "secrets": "no randomness",
    "uuid": "no randomness (uuid1/uuid4)",
    "logging": "no logging side channel: decisions are Record actions",
    "signal": "no process control",
    "coordinator.daemon": "the shell depends on the engine, never the reverse",
    "coordinator.cli": "the operator CLI depends on the engine, never the reverse",
    "coordinator.devfleet": "the development harness depends on the engine, never the reverse",
    "coordinator.store": "the shell depends on the engine, never the reverse",
    "shared.mqtt": "no MQTT",
    "shared.signing": "the shell signs",
}
FORBIDDEN_CALLS = {"open", "print", "input", "exec", "eval", "__import__", "breakpoint"}


def _imports(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def _violations(module: str) -> list[str]:
    reasons = []
    for forbidden, why in FORBIDDEN.items():
        if module == forbidden or module.startswith(forbidden + "."):
            reasons.append(why)
    return reasons


def test_every_engine_module_is_checked() -> None:
    names = {m.stem for m in MODULES}
    assert {"engine", "phases", "rules", "stats", "windows", "canary", "bluegreen"} <= names


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_module_imports_nothing_impure(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    problems = [
        f"{path.name}:{line}: imports {module}: {why}"
        for line, module in _imports(tree)
        for why in _violations(module)
    ]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_module_calls_nothing_impure(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    problems = [
        f"{path.name}:{node.lineno}: calls {node.func.id}()"
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in FORBIDDEN_CALLS
    ]
    assert not problems, "\n".join(problems)


def test_the_checker_catches_a_forbidden_import() -> None:
    tree = ast.parse("import time\nfrom asyncio import sleep\nfrom datetime import datetime\n")
    assert [m for _, m in _imports(tree) if _violations(m)] == ["time", "asyncio", "datetime"]
