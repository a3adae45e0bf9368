"""Strict parsing of request bodies: wrong types, floats, bools, huge numbers and
unknown ids are refused with `invalid_request` and a message naming the field."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request

from gifting_server.config import MAX_INT as MAX_INT  # exact in Lua and in JavaScript
from gifting_server.errors import ErrorCode, GiftingError
from gifting_server.ids import ID_RULE, KEY_RULE, is_id, is_key

MAX_BODY_BYTES = 16 * 1024


def invalid(message: str) -> GiftingError:
    return GiftingError(ErrorCode.INVALID_REQUEST, message)


async def raw_body(request: Request) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise GiftingError(ErrorCode.PAYLOAD_TOO_LARGE, f"body over {MAX_BODY_BYTES} bytes")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise GiftingError(ErrorCode.PAYLOAD_TOO_LARGE, f"body over {MAX_BODY_BYTES} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        raise GiftingError(
            ErrorCode.CLIENT_CLOSED_REQUEST, "the client closed the connection mid-request"
        ) from None
    return b"".join(chunks)


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


async def json_object(request: Request, *, allow_empty: bool = False) -> dict[str, Any]:
    return parse_object(await raw_body(request), allow_empty=allow_empty)


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


def query_int(request: Request, name: str, *, default: int, minimum: int, maximum: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 6 or not minimum <= int(raw) <= maximum:
        raise invalid(f"{name} must be an integer between {minimum} and {maximum}")
    return int(raw)
