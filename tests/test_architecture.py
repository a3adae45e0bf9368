"""The import rules of docs/architecture.md: which module may import which.

Read from the source with `ast`, so a rule breaks in the test run, not in review.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import gifting_server

PACKAGE = Path(gifting_server.__file__).parent
IO_LIBRARIES = ("asyncio", "socket", "redis", "starlette", "uvicorn", "websockets", "httpx")


def imports_of(path: Path) -> set[str]:
    """Every module a file imports, `from gifting_server import x` as `gifting_server.x`."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            if node.module == "gifting_server":
                names |= {f"gifting_server.{alias.name}" for alias in node.names}
    return names


def module_files(folder: str) -> list[Path]:
    return sorted((PACKAGE / folder).glob("*.py"))


def offending(path: Path, *prefixes: str) -> list[str]:
    return sorted(
        name
        for name in imports_of(path)
        if any(name == p or name.startswith(p + ".") for p in prefixes)
    )


HUB_CORE = ["hub.py", "connection.py", "broker.py", "history.py", "memory.py", "heartbeat.py"]


@pytest.mark.parametrize("name", HUB_CORE)
def test_the_hub_knows_nothing_of_money_redis_or_the_edges(name: str) -> None:
    path = PACKAGE / "hub" / name
    assert offending(path, "gifting_server.ledger", "gifting_server.api", "redis") == []


REDIS_SIDE_OF_THE_HUB = ("redis_broker.py", "cluster_broker.py", "redis_history.py")


@pytest.mark.parametrize("path", module_files("hub"), ids=lambda p: p.name)
def test_only_the_redis_broker_and_history_speak_redis_in_the_hub(path: Path) -> None:
    assert offending(path, "gifting_server.api") == []
    if path.name not in REDIS_SIDE_OF_THE_HUB:
        assert offending(path, "redis") == []
    # Key names come from the one module that builds them; nothing else of the ledger.
    ledger = offending(path, "gifting_server.ledger")
    assert set(ledger) <= {"gifting_server.ledger", "gifting_server.ledger.keys"}


@pytest.mark.parametrize("path", module_files("ledger"), ids=lambda p: p.name)
def test_the_ledger_imports_neither_the_hub_nor_the_edges(path: Path) -> None:
    assert offending(path, "gifting_server.hub", "gifting_server.api", "starlette", "uvicorn") == []


@pytest.mark.parametrize("path", module_files("webhooks"), ids=lambda p: p.name)
def test_webhooks_import_neither_the_hub_nor_the_edges(path: Path) -> None:
    # Deliveries run beside the hub, never through it; the edges call them.
    banned = ("gifting_server.hub", "gifting_server.api", "starlette", "uvicorn")
    assert offending(path, *banned) == []


@pytest.mark.parametrize("name", ["protocol.py", "events.py", "ids.py", "errors.py", "fields.py"])
def test_the_sans_io_modules_do_no_io(name: str) -> None:
    assert offending(PACKAGE / name, *IO_LIBRARIES) == []


def test_only_config_reads_the_environment() -> None:
    """cli.py may set variables for the worker processes it starts; reading them is
    config.py's alone."""
    reads = re.compile(r"os\.environ\.get|os\.getenv|os\.environ\[[^\]]+\](?!\s*=[^=])")
    readers = [
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if path.name != "config.py" and reads.search(path.read_text())
    ]
    assert readers == []


def test_the_rules_catch_a_forbidden_import(tmp_path: Path) -> None:
    planted = tmp_path / "hub.py"
    planted.write_text("from gifting_server.ledger import keys\nimport redis.asyncio\n")
    assert offending(planted, "gifting_server.ledger", "redis") == [
        "gifting_server.ledger",
        "redis.asyncio",
    ]
