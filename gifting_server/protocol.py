"""The WebSocket message protocol, sans I/O: decode and validate client frames,
encode server frames, build WebSocket frames once for many connections.

Two encodings share one message shape: `gifting.v1.json` (text frames) and
`gifting.v1.msgpack` (binary frames). Every message is an object with a `type`.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

import msgpack
import orjson

from gifting_server.errors import ErrorCode
from gifting_server.ids import ID_RULE, KEY_RULE, is_id, is_key

MAX_EVENT_ID = 2**53 - 1
INVALID = ErrorCode.INVALID_REQUEST


class Encoding(Enum):
    JSON = "gifting.v1.json"
    MSGPACK = "gifting.v1.msgpack"

    @property
    def opcode(self) -> int:
        return 0x1 if self is Encoding.JSON else 0x2


SUBPROTOCOLS = tuple(e.value for e in Encoding)


class ProtocolError(Exception):
    """A client message we refuse; answered with an `error` frame, never a traceback."""

    def __init__(self, code: ErrorCode, message: str, message_id: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.message_id = message_id


@dataclass(frozen=True)
class Subscribe:
    stream_id: str
    since: int | None


@dataclass(frozen=True)
class Unsubscribe:
    stream_id: str


# Not frozen: a frozen dataclass sets each field through object.__setattr__, and
# every gift a worker reads (most of them refused, past its ceiling) builds one.
@dataclass(slots=True)
class SendGift:
    id: str
    stream_id: str
    gift_id: str
    count: int
    message: str | None = None  # as typed; the gift use case checks and moderates it


@dataclass(frozen=True)
class Ping:
    pass


ClientMessage = Subscribe | Unsubscribe | SendGift | Ping


def decode_client_message(data: bytes | str, encoding: Encoding) -> ClientMessage:
    try:
        if encoding is Encoding.JSON:
            raw = orjson.loads(data)
        else:
            raw = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except (
        orjson.JSONDecodeError,
        ValueError,
        TypeError,
        RecursionError,
        msgpack.UnpackException,
    ):
        raise ProtocolError(INVALID, f"not a valid {encoding.name} message") from None
    if not isinstance(raw, dict):
        raise ProtocolError(INVALID, "a message must be an object with a type")
    kind = raw.get("type")
    if kind == "gift":
        message_id = raw.get("id")
        if not is_key(message_id):
            raise ProtocolError(ErrorCode.INVALID_REQUEST, f"gift needs an id: {KEY_RULE}")
        return SendGift(  # id, stream_id, gift_id, count, message: by position, cheaper
            message_id,
            _id(raw, "stream_id", message_id),
            _id(raw, "gift_id", message_id),
            _count(raw, message_id),
            _message(raw, message_id),
        )
    if kind == "subscribe":
        since = raw.get("since")
        if since is not None and (type(since) is not int or not 0 <= since <= MAX_EVENT_ID):
            raise ProtocolError(
                ErrorCode.INVALID_REQUEST, "since must be an event_id (integer >= 0)"
            )
        return Subscribe(_id(raw, "stream_id"), since)
    if kind == "unsubscribe":
        return Unsubscribe(_id(raw, "stream_id"))
    if kind == "ping":
        return Ping()
    if not isinstance(kind, str):
        # Never format the value: a type nested ~1000 deep would overflow repr().
        raise ProtocolError(INVALID, "a message needs a type, a string")
    raise ProtocolError(INVALID, f"unknown message type {kind[:64]!r}")


def _id(raw: dict[str, Any], name: str, message_id: str | None = None) -> str:
    value = raw.get(name)
    if not is_id(value):
        raise ProtocolError(ErrorCode.INVALID_REQUEST, f"{name} must be {ID_RULE}", message_id)
    return value


def _count(raw: dict[str, Any], message_id: str) -> int:
    # Any integer here, like the HTTP edge: the count's range is the gift use
    # case's rule (ledger/gifts.py), checked after the token's role and the gift.
    value = raw.get("count", 1)
    if type(value) is not int or not -MAX_EVENT_ID <= value <= MAX_EVENT_ID:
        raise ProtocolError(INVALID, "count must be an integer", message_id)
    return value


def _message(raw: dict[str, Any], message_id: str) -> str | None:
    value = raw.get("message")
    if value is not None and not isinstance(value, str):
        raise ProtocolError(INVALID, "message must be a string", message_id)
    return value


def encode(message: dict[str, Any], encoding: Encoding) -> bytes:
    if encoding is Encoding.JSON:
        return orjson.dumps(message)
    packed: bytes = msgpack.packb(message, use_bin_type=True)
    return packed


def error_message(
    code: ErrorCode,
    message: str,
    message_id: str | None = None,
    retry_after_ms: int | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"type": "error", "code": code.code, "message": message}
    if message_id is not None:
        body["id"] = message_id
    if retry_after_ms is not None:
        body["retry_after_ms"] = retry_after_ms
    return body


# (code, retry_after_ms, JSON or not, text) → a refusal frame's payload before its id
# and after. Keyed by the code's string: an Enum member hashes in Python.
RefusalText = Callable[[ErrorCode, int], str]
_REFUSAL_PARTS: dict[tuple[str, int, bool, RefusalText], tuple[bytes, bytes]] = {}
_REFUSAL_PARTS_KEPT = 1024
# One packer for the ids spliced in: msgpack.packb builds a Packer per call.
_PACK = msgpack.Packer(use_bin_type=True).pack


def refusal_frame(
    message_id: str,
    code: ErrorCode,
    retry_after_ms: int,
    text: RefusalText,
    encoding: Encoding,
) -> bytes:
    """The WebSocket frame of a gift refused for load: `error_message` with its
    `retry_after_ms`, `text` its message. All but the id is encoded once per
    (code, retry_after_ms, encoding): past its ceiling a worker answers thousands of
    these a second, and each one's CPU is taken from the gifts it acknowledges.
    `text` is part of the key: the parts hold what it said."""
    json = encoding is Encoding.JSON
    key = (code.code, retry_after_ms, json, text)
    parts = _REFUSAL_PARTS.get(key)
    if parts is None:
        if len(_REFUSAL_PARTS) >= _REFUSAL_PARTS_KEPT:
            _REFUSAL_PARTS.clear()
        parts = _REFUSAL_PARTS[key] = _refusal_parts(
            code, retry_after_ms, text(code, retry_after_ms), encoding
        )
    head, tail = parts
    payload = head + (orjson.dumps(message_id) if json else _PACK(message_id)) + tail
    if len(payload) < 126:
        return bytes((0x81 if json else 0x82, len(payload))) + payload
    return websocket_frame(payload, encoding)


def _refusal_parts(
    code: ErrorCode, retry_after_ms: int, text: str, encoding: Encoding
) -> tuple[bytes, bytes]:
    """A refusal's payload around its id. In JSON the id comes first; in msgpack
    where `error_message` puts it (so the bytes are `encode`'s), between the message
    and retry_after_ms, with the map's header (5 entries) in front."""
    if encoding is Encoding.JSON:
        rest = orjson.dumps({"code": code.code, "message": text, "retry_after_ms": retry_after_ms})
        return b'{"type":"error","id":', b"," + rest[1:]
    pack = _PACK
    head = b"\x85" + b"".join(
        pack(item) for item in ("type", "error", "code", code.code, "message", text, "id")
    )
    return head, pack("retry_after_ms") + pack(retry_after_ms)


def events_payload(stream_id: str, raw_events: list[bytes], encoding: Encoding) -> bytes:
    """One `events` message from events stored as JSON. For JSON the stored bytes
    are spliced in as they are: no decode, no re-encode."""
    if encoding is Encoding.JSON:
        head = b'{"type":"events","stream_id":' + orjson.dumps(stream_id) + b',"events":['
        return head + b",".join(raw_events) + b"]}"
    events = [orjson.loads(e) for e in raw_events]
    return encode({"type": "events", "stream_id": stream_id, "events": events}, encoding)


def websocket_frame(payload: bytes, encoding: Encoding) -> bytes:
    """A complete, unmasked server→client frame (FIN set), built once and written
    to every connection that speaks `encoding`."""
    first = 0x81 if encoding is Encoding.JSON else 0x82  # FIN and the opcode
    length = len(payload)
    if length < 126:
        return bytes((first, length)) + payload
    if length < 65536:
        header = struct.pack("!BBH", first, 126, length)
    else:
        header = struct.pack("!BBQ", first, 127, length)
    return header + payload
