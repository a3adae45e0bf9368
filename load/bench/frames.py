"""The client side of WebSocket the benchmark clients need, and nothing more:
the upgrade request, client frames, and where the next server frame lies."""

from __future__ import annotations

import base64
import os
import struct

# RFC 6455 only asks that a client send a masking key; the zero key leaves the
# payload as it is, so a frame costs no per-byte work to build.
ZERO_MASK = b"\x00\x00\x00\x00"
TEXT, PING, PONG = 0x1, 0x9, 0xA


def upgrade_request(path: str, host: str) -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n"
        "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: gifting.v1.json\r\n\r\n"
    ).encode()


def client_frame(payload: bytes, opcode: int = TEXT) -> bytes:
    """A final, masked client frame."""
    size = len(payload)
    if size < 126:
        return bytes([0x80 | opcode, 0x80 | size]) + ZERO_MASK + payload
    return bytes([0x80 | opcode, 0x80 | 126]) + struct.pack("!H", size) + ZERO_MASK + payload


def next_frame(data: bytes, offset: int) -> tuple[int, int, int] | None:
    """(opcode, payload start, payload end) of the server frame at `offset`, or None
    when `data` does not hold all of it yet."""
    available = len(data) - offset
    if available < 2:
        return None
    opcode, size, start = data[offset] & 0x0F, data[offset + 1] & 0x7F, offset + 2
    if size == 126:
        if available < 4:
            return None
        size, start = struct.unpack_from("!H", data, offset + 2)[0], offset + 4
    elif size == 127:
        if available < 10:
            return None
        size, start = struct.unpack_from("!Q", data, offset + 2)[0], offset + 10
    if start + size > len(data):
        return None
    return opcode, start, start + size
