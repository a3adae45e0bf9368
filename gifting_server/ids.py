"""The one rule for ids and keys, used by every edge: HTTP, WebSocket, tokens, config.

An id (user, stream, gift, package, payer) is 1-64 ASCII letters, digits, '_' or
'-'. A key (idempotency key, WebSocket message id, payment event id) is 1-128 of
those or '.' and ':'. The whole string must match: "demo\\n" is not "demo".
"""

from __future__ import annotations

import re
from typing import TypeGuard

ID_MAX = 64
KEY_MAX = 128
ID_PATTERN = rf"[A-Za-z0-9_-]{{1,{ID_MAX}}}"
KEY_PATTERN = rf"[A-Za-z0-9_.:-]{{1,{KEY_MAX}}}"
ID_RULE = f"1-{ID_MAX} ASCII letters, digits, '_' or '-'"
KEY_RULE = f"1-{KEY_MAX} ASCII letters, digits, '_', '.', ':' or '-'"

# Only ever used with fullmatch: `re.match` with `$` would let a trailing newline through.
_ID = re.compile(ID_PATTERN)
_KEY = re.compile(KEY_PATTERN)


def is_id(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and _ID.fullmatch(value) is not None


def is_key(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and _KEY.fullmatch(value) is not None


def schema_pattern(pattern: str) -> str:
    """The pattern for JSON Schema (ECMA-262), where `$` is the end of the input."""
    return f"^{pattern}$"
