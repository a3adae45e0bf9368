"""hub/connection.py speaks WebSocket and nothing else: the session it serves a
client with comes from the app (`app_state["open_session"]`)."""

from __future__ import annotations

import ast
from pathlib import Path

from gifting_server.hub import connection


def test_the_connection_imports_nothing_from_the_edges_or_the_ledger() -> None:
    tree = ast.parse(Path(connection.__file__).read_text())
    modules = {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    modules |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    layers = ("gifting_server.api", "gifting_server.ledger")
    assert sorted(m for m in modules if m.startswith(layers)) == []
