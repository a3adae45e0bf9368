"""The close codes: one enum, mirrored once in the browser code."""

from __future__ import annotations

import re
from pathlib import Path

import gifting_server
from gifting_server.errors import CloseCode

HUB_JS = Path(gifting_server.__file__).parent / "overlay" / "hub.js"
DOCS = Path(gifting_server.__file__).parent.parent / "docs" / "websocket.md"


def js_close_rules() -> dict[int, str]:
    block = re.search(r"const CLOSE_RULES = Object\.freeze\(\{(.*?)\}\);", HUB_JS.read_text(), re.S)
    assert block is not None, "overlay/hub.js has no CLOSE_RULES"
    entries = [e.strip() for e in block.group(1).split(",") if e.strip()]
    rules = {}
    for entry in entries:
        match = re.fullmatch(r'(\d+): "(since|new_token)"', entry)
        assert match is not None, f"unreadable CLOSE_RULES entry {entry!r}"
        rules[int(match.group(1))] = match.group(2)
    return rules


def test_the_browser_mirror_lists_every_close_code_with_its_rule() -> None:
    expected = {c.value: "new_token" if c.needs_new_token else "since" for c in CloseCode}
    assert js_close_rules() == expected


def test_docs_name_every_close_code() -> None:
    text = DOCS.read_text()
    for code in CloseCode:
        assert f"**{code.value}**" in text, code
