"""Reading a request: its body (bounded) as a JSON object, its query numbers.
The fields inside are read with `gifting_server/fields.py`."""

from __future__ import annotations

from typing import Any

from starlette.requests import ClientDisconnect, Request

from gifting_server.errors import ErrorCode, GiftingError
from gifting_server.fields import invalid, parse_object

MAX_BODY_BYTES = 16 * 1024


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


async def json_object(request: Request, *, allow_empty: bool = False) -> dict[str, Any]:
    return parse_object(await raw_body(request), allow_empty=allow_empty)


def query_int(request: Request, name: str, *, default: int, minimum: int, maximum: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 6 or not minimum <= int(raw) <= maximum:
        raise invalid(f"{name} must be an integer between {minimum} and {maximum}")
    return int(raw)
