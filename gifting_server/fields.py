"""Strict reading of JSON fields, sans I/O: wrong types, floats, bools, huge numbers
and malformed ids are refused with `invalid_request` and a message naming the field.

For request bodies (`api/validation.py`) and for the signed events a payment
provider sends (`ledger/payments.py`)."""

from __future__ import annotations

from typing import Any

import orjson

from gifting_server.config import MAX_INT as MAX_INT  # exact in Lua and in JavaScript
from gifting_server.errors import ErrorCode, GiftingError
from gifting_server.ids import ID_RULE, KEY_RULE, is_id, is_key


def invalid(message: str) -> GiftingError:
    return GiftingError(ErrorCode.INVALID_REQUEST, message)


def parse_object(body: bytes, *, allow_empty: bool = False) -> dict[str, Any]:
    if allow_empty and not body.strip():
        return {}
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise invalid("the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise invalid("the body must be a JSON object")
    return data


def integer(
    data: dict[str, Any],
    name: str,
    *,
    minimum: int,
    maximum: int = MAX_INT,
    default: int | None = None,
) -> int:
    value = data.get(name, default)
    if value is None:
        raise invalid(f"{name} is required")
    if type(value) is not int:
        raise invalid(f"{name} must be an integer")
    if not minimum <= value <= maximum:
        raise invalid(f"{name} must be between {minimum} and {maximum}")
    return value


def optional_integer(data: dict[str, Any], name: str, *, minimum: int, maximum: int) -> int | None:
    if name not in data:
        raise invalid(f"{name} is required (null to remove)")
    if data[name] is None:
        return None
    return integer(data, name, minimum=minimum, maximum=maximum)


def identifier(data: dict[str, Any], name: str, *, key: bool = False) -> str:
    """A required id field (gifting_server/ids.py), or a key field with `key=True`."""
    value = data.get(name)
    if value is None:
        raise invalid(f"{name} is required")
    return checked_key(value, name) if key else checked_id(value, name)


def checked_id(value: Any, name: str) -> str:
    if not is_id(value):
        raise invalid(f"{name} must be {ID_RULE}")
    return value


def checked_key(value: Any, name: str) -> str:
    if not is_key(value):
        raise invalid(f"{name} must be {KEY_RULE}")
    return value
