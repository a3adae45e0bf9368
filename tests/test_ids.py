"""The one id and key rule (gifting_server/ids.py), and that it has no second copy."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gifting_server.ids import ID_PATTERN, KEY_PATTERN, is_id, is_key, schema_pattern

PACKAGE = Path(__file__).resolve().parent.parent / "gifting_server"


@pytest.mark.parametrize("value", ["a", "A-z_09", "s" * 64])
def test_ids(value: str) -> None:
    assert is_id(value) and is_key(value)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "s" * 65,
        "demo\n",
        "s" * 64 + "\n",
        "\ndemo",
        "de\nmo",
        "rosé",
        "ro se",
        "a.b",
        "a:b",
        5,
        None,
    ],
)
def test_not_ids(value: object) -> None:
    assert not is_id(value)


@pytest.mark.parametrize("value", ["k", "k.1:2-3_4", "k" * 128])
def test_keys(value: str) -> None:
    assert is_key(value)


@pytest.mark.parametrize("value", ["", "k" * 129, "k\n", "k" * 128 + "\n", "k|1", "k 1", "ké", 7])
def test_not_keys(value: object) -> None:
    assert not is_key(value)


def test_the_json_schema_pattern_is_anchored() -> None:
    assert schema_pattern(ID_PATTERN) == "^[A-Za-z0-9_-]{1,64}$"
    assert schema_pattern(KEY_PATTERN) == "^[A-Za-z0-9_.:-]{1,128}$"


def test_no_module_keeps_its_own_copy_of_the_rule() -> None:
    """A rule written twice drifts: only ids.py may spell out the id characters."""
    copies = re.compile(r"A-Za-z0-9|a-zA-Z0-9|isalnum|\\w\{1,")
    found = [
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*")
        if path.suffix in (".py", ".lua", ".js") and path.name != "ids.py"
        if copies.search(path.read_text())
    ]
    assert found == []
