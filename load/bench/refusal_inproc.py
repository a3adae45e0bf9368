"""What a refused WebSocket gift costs the worker's Python, without the loop and the
kernel: one connection's `HubConnection.data_received` fed a masked gift frame while
admission refuses every gift (one gift held in flight, `max_in_flight = 1`), and the
session's `on_message` fed its payload. The connection's transport, the hub and the
store are stand-ins holding only what the refusal path reads (the frames written
are kept in a list); the session, the protocol, the admission and the metrics are
the worker's own. The least mean of `--repeat` runs of `--number` refusals each.

    python -m load.bench.refusal_inproc
    PYTHONPATH=OTHER_TREE python -m load.bench.refusal_inproc   # another tree's code

For the whole cost over real sockets (the loop and the kernel too), see
`load/bench/refusal.py`. Timing: run it under `flock /tmp/bench.lock`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import tempfile
import timeit
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson

import gifting_server
from gifting_server.api.ws import ClientSession
from gifting_server.auth import Role, issue_token
from gifting_server.config import load_settings
from gifting_server.hub.connection import HubConnection
from gifting_server.ledger.gift_admission import GiftAdmission
from load.bench.server import SECRET, WEBHOOK_SECRET

CONFIG = """
[websocket]
rate_per_s = 1000000
burst = 1000000
[overload]
max_in_flight_per_user = 1000000
min_in_flight = 1
max_in_flight = 1
"""
MASK = b"\x12\x34\x56\x78"


def masked(payload: bytes) -> bytes:
    """A final, masked text frame under 126 bytes, as a browser sends it."""
    assert len(payload) < 126
    key = MASK * (len(payload) // 4 + 1)
    unmasked = bytes(a ^ b for a, b in zip(payload, key[: len(payload)], strict=True))
    return bytes([0x81, 0x80 | len(payload)]) + MASK + unmasked


async def measure(number: int, repeat: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as data_dir:
        (Path(data_dir) / "bench.toml").write_text(CONFIG)
        settings = load_settings(
            {"GIFTING_SECRET": SECRET, "GIFTING_WEBHOOK_SECRET": WEBHOOK_SECRET,
             "GIFTING_DATA_DIR": data_dir, "GIFTING_CONFIG": f"{data_dir}/bench.toml"}
        )  # fmt: skip
    admission = GiftAdmission(settings.overload)
    assert admission.only is not None
    admission.only.enter()  # one gift in flight: every next one is refused ("in_flight")
    store = SimpleNamespace(admission=admission, settings=settings)
    hub = SimpleNamespace(settings=settings, connections=set())
    written: list[bytes] = []
    transport = SimpleNamespace(
        write=written.append, get_extra_info=lambda name: None, abort=lambda: None,
        set_write_buffer_limits=lambda high: None, is_closing=lambda: False,
    )  # fmt: skip
    app_state = {"hub": hub, "open_session": lambda c, i: ClientSession(c, i, hub, store)}  # type: ignore[arg-type]
    connection = HubConnection(None, SimpleNamespace(connections=set()), app_state)
    connection.connection_made(transport)  # type: ignore[arg-type]
    token = issue_token(SECRET, "u1", Role.VIEWER, name="U1", adult=True, ttl_s=3600)
    key = base64.b64encode(os.urandom(16)).decode()
    connection.data_received(
        f"GET /v1/ws?token={token} HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Protocol: gifting.v1.json\r\n\r\n".encode()
    )
    assert written and written[0].startswith(b"HTTP/1.1 101"), written
    payload = orjson.dumps(
        {"type": "gift", "id": "abcd1234-12345", "stream_id": "spread7", "gift_id": "rose"}
    )
    frame = masked(payload)
    connection.data_received(frame)
    answer = orjson.loads(written[-1][4:])
    assert answer["code"] == "service_unavailable" and answer["id"] == "abcd1234-12345", answer
    session = connection.session
    assert session is not None

    def least(work: Any) -> float:
        best = min(timeit.repeat(work, number=number, repeat=repeat)) / number * 1e6
        written.clear()
        return round(best, 2)

    frame_us = least(lambda: connection.data_received(frame))
    session_us = least(lambda: session.on_message(payload))
    assert not connection.closed
    return {
        "tree": str(Path(gifting_server.__file__).parents[1]),
        "data_received_us": frame_us,
        "on_message_us": session_us,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="A refused WebSocket gift's Python cost.")
    parser.add_argument("--number", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=15)
    options = parser.parse_args()
    print(orjson.dumps(asyncio.run(measure(options.number, options.repeat))).decode())


if __name__ == "__main__":
    main()
