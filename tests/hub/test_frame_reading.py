"""Byte streams at the edge of the connection's own frame reading (`_read_messages`):
whatever a read holds, each frame counts exactly as websockets' parser would count
it, and nothing a closed connection reads is acted on."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import httpx
import jwt
import msgpack
import orjson
import pytest
from websockets.frames import Close, Opcode
from websockets.utils import apply_mask

from gifting_server.auth import Role, issue_token
from gifting_server.ledger.store import Store
from tests.conftest import SECRET
from tests.factories import fund, live_stream, token
from tests.hub.conftest import StartServer
from tests.hub.wsclient import JSON, MSGPACK, TIMEOUT_S, RawClient, WsClient
from tests.topology import single_only

# Run once, on one Redis: the cluster's run of the hub suite would read the same
# frames through the same code (the gifts' tests here run on both).
FRAMES_ALONE = single_only("frames alone, no gift: read alike over either Redis")


async def rate_limited_drops(base_url: str) -> float:
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
        text = (await http.get("/metrics")).text
    for line in text.splitlines():
        if line.startswith('gifting_ws_drops_total{reason="rate_limited"}'):
            return float(line.split()[1])
    return 0.0


async def test_pongs_behind_the_pong_that_closed_the_connection_are_not_read(
    start_server: StartServer,
) -> None:
    """Unsolicited pongs over the rate close the connection (4008) once. The pongs
    behind the one that closed it, in the same read, come to a closed connection:
    none of them is charged to the client or drops it again."""
    server = start_server(websocket={"rate_per_s": 1, "burst": 5, "abuse_close_after": 5})
    before = await rate_limited_drops(server.url)
    client = await RawClient(server.port, token("ann")).open()
    try:
        await client.send_frames(*[(Opcode.PONG, b"", True)] * 200)
        assert (await client.read_until_close()).code == 4008
        assert [m["code"] for m in client.messages] == ["rate_limited"] * 4
    finally:
        client.shutdown()
    assert await rate_limited_drops(server.url) == before + 1


async def closed_or_answered(client: RawClient) -> Close | None:
    """Read until the server's close frame (returned) or a `pong` message (None)."""

    async def read() -> Close | None:
        while True:
            for event in await client.read_frames():
                if event.opcode is Opcode.CLOSE:
                    return Close.parse(bytes(event.data))
                if event.opcode is Opcode.TEXT and orjson.loads(event.data)["type"] == "pong":
                    return None

    return await asyncio.wait_for(read(), TIMEOUT_S)


async def test_a_gift_behind_the_pong_that_closed_the_connection_moves_no_money(
    start_server: StartServer, store: Store
) -> None:
    """A pong over the rate that closes the connection (abuse_close_after 1), then a
    gift in the same read: the gift comes to a closed connection and is not sent,
    even though the rate (100,000 a second) has a token for it by then. Its id is
    still free: the same id with another count is acknowledged, not a conflict.
    The second pong is over the rate only if it comes within 10 µs of the first:
    an attempt where it did not is tried again."""
    await fund(store, "carol")
    await live_stream(store, "s1")
    server = start_server(websocket={"rate_per_s": 100_000, "burst": 1, "abuse_close_after": 1})
    closed = 0
    for attempt in range(5):
        gift = {"type": "gift", "id": f"behind-{attempt}", "stream_id": "s1", "gift_id": "rose"}
        client = await RawClient(server.port, token("carol")).open()
        try:
            await client.send_frames(
                (Opcode.PONG, b"", True),
                (Opcode.PONG, b"", True),
                (Opcode.TEXT, orjson.dumps(gift), True),
                (Opcode.TEXT, b'{"type": "ping"}', True),
            )
            close = await closed_or_answered(client)
        finally:
            client.shutdown()
        if close is None:
            continue  # the second pong was within the rate: nothing closed
        assert close.code == 4008
        closed += 1
        async with await WsClient.open(server.url, token("carol")) as again:
            answer = await again.gift("s1", count=2, id=gift["id"])
            assert answer["type"] == "ack", answer
    assert closed


def frame(opcode: int, payload: bytes, *, fin: bool = True, length: str = "") -> bytes:
    """A masked client frame, its length in the form asked for ("" the shortest,
    "16" or "64" the 16-bit or 64-bit form, minimal or not); `opcode` may be any
    4 bits, with reserved bits above them."""
    mask = bytes([0x5A, 0xC3, 0x01, 0xFE])
    first = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if length == "64" or (not length and n > 65535):
        head = first + bytes([0xFF]) + n.to_bytes(8, "big")
    elif length == "16" or (not length and n > 125):
        head = first + bytes([0xFE]) + n.to_bytes(2, "big")
    else:
        head = first + bytes([0x80 | n])
    return head + mask + apply_mask(payload, mask)


def json_ping(size: int) -> bytes:
    """A JSON ping message of exactly `size` bytes."""
    message = b'{"type":"ping","pad":""}'
    return message[:-2] + b"x" * (size - len(message)) + b'"}'


PING_MSG = b'{"type": "ping"}'
BARRIER = b'{"type": "barrier"}'  # unknown: answered invalid_request, after all before it
TEXT, BINARY, CONT, CLOSE, PING_OP, PONG_OP = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA
LIMIT = 4096  # max_message_bytes, the default

# (encoding, the bytes of one read): answered alike whether the connection reads the
# frames itself or hands them to websockets' parser
STREAMS: dict[str, tuple[str, bytes]] = {
    "a message, a ping, a fragmented message, a pong, a message": (
        JSON,
        frame(TEXT, PING_MSG)
        + frame(PING_OP, b"between")
        + frame(TEXT, PING_MSG[:4], fin=False)
        + frame(PING_OP, b"inside")
        + frame(CONT, PING_MSG[4:])
        + frame(PONG_OP, b"unsolicited")
        + frame(TEXT, PING_MSG),
    ),
    "a close frame, then a message": (
        JSON,
        frame(CLOSE, (1000).to_bytes(2, "big") + b"bye") + frame(TEXT, PING_MSG),
    ),
    "a message, a close frame, a message": (
        JSON,
        frame(TEXT, PING_MSG) + frame(CLOSE, b"") + frame(TEXT, PING_MSG),
    ),
    "a 64-bit length over max_message_bytes": (
        JSON,
        frame(TEXT, PING_MSG) + frame(TEXT, json_ping(LIMIT + 1), length="64"),
    ),
    "a 64-bit length over 2**63": (
        JSON,
        frame(TEXT, PING_MSG) + b"\x81\xff" + b"\x80" + b"\x00" * 7 + b"\x00" * 4,
    ),
    "a 64-bit length for a short message": (JSON, frame(TEXT, PING_MSG, length="64")),
    "a 16-bit length for a short message": (JSON, frame(TEXT, PING_MSG, length="16")),
    "max_message_bytes exactly": (JSON, frame(TEXT, json_ping(LIMIT)) + frame(TEXT, PING_MSG)),
    "max_message_bytes and one": (JSON, frame(TEXT, PING_MSG) + frame(TEXT, json_ping(LIMIT + 1))),
    "an empty text frame": (JSON, frame(TEXT, b"") + frame(TEXT, PING_MSG)),
    "an empty binary frame": (JSON, frame(BINARY, b"") + frame(TEXT, PING_MSG)),
    "binary on a JSON connection": (JSON, frame(BINARY, PING_MSG) + frame(TEXT, b"[1]")),
    "text not UTF-8, then a message": (
        JSON,
        frame(TEXT, PING_MSG) + frame(TEXT, b'{"type": "\xff"}') + frame(TEXT, PING_MSG),
    ),
    "a surrogate encoded in UTF-8": (JSON, frame(TEXT, b'{"type": "\xed\xa0\x80"}')),
    "a UTF-8 overlong encoding": (JSON, frame(TEXT, b'{"type": "\xc0\xaf"}')),
    "not UTF-8 in a binary frame": (JSON, frame(BINARY, b'{"type": "\xff"}')),
    "a 125-byte pong, then a message": (
        JSON,
        frame(PONG_OP, b"p" * 125) + frame(TEXT, PING_MSG),
    ),
    "a 126-byte pong": (JSON, frame(TEXT, PING_MSG) + frame(PONG_OP, b"p" * 126)),
    "a short pong with a 16-bit length": (
        JSON,
        frame(TEXT, PING_MSG) + frame(PONG_OP, b"p", length="16"),
    ),
    "a pong not final": (JSON, frame(TEXT, PING_MSG) + frame(PONG_OP, b"p", fin=False)),
    "a pong with a reserved bit": (JSON, frame(TEXT, PING_MSG) + frame(0x40 | PONG_OP, b"")),
    "a 125-byte ping": (JSON, frame(PING_OP, b"q" * 125) + frame(TEXT, PING_MSG)),
    "a continuation with no message": (JSON, frame(TEXT, PING_MSG) + frame(CONT, PING_MSG)),
    "a message while another is in fragments": (
        JSON,
        frame(TEXT, PING_MSG[:3], fin=False) + frame(TEXT, PING_MSG),
    ),
    "text not final, zero bytes, then the rest": (
        JSON,
        frame(TEXT, b"", fin=False) + frame(CONT, PING_MSG),
    ),
    "unmasked, after a message": (JSON, frame(TEXT, PING_MSG) + b"\x81\x02{}"),
    "opcode 0xB": (JSON, frame(TEXT, PING_MSG) + frame(0xB, b"")),
    "msgpack: a binary message, a text message, a 16-bit one": (
        MSGPACK,
        frame(BINARY, msgpack.packb({"type": "ping"}))
        + frame(TEXT, PING_MSG)
        + frame(BINARY, msgpack.packb({"type": "ping", "pad": "y" * 300})),
    ),
    "msgpack: a text frame not UTF-8": (
        MSGPACK,
        frame(BINARY, msgpack.packb({"type": "ping"})) + frame(TEXT, b"\x81\xa4type"),
    ),
}


Outcome = list[tuple[str, Any]]
BARRIER_ERROR = {
    "type": "error",
    "code": "invalid_request",
    "message": "unknown message type 'barrier'",
}


async def outcome(
    port: int, encoding: str, reads: list[bytes], *, parser_first: bool = False
) -> Outcome:
    """What a fresh connection answers to `reads`: every message, the pong frames
    (with their payloads) and the close code. Each read but the last comes behind a
    barrier (a message answered invalid_request) and is sent once the barrier was
    answered, so that the server read it; the last comes before one, and the answers
    are read up to it or to the close. `parser_first`: the connection handed a ping
    to websockets' parser before (from then on the parser reads every frame)."""
    client = await RawClient(port, token("ann"), encoding=encoding).open()
    opcode = TEXT if encoding == JSON else BINARY
    barrier = frame(opcode, BARRIER if encoding == JSON else msgpack.packb({"type": "barrier"}))
    got: Outcome = []

    async def until_barrier_or_close(barriers: int) -> None:
        while not (
            got.count(("message", BARRIER_ERROR)) == barriers or (got and got[-1][0] == "close")
        ):
            for event in await client.read_frames():
                if event.opcode is Opcode.PING:
                    continue  # the heartbeat
                if event.opcode is Opcode.PONG:
                    got.append(("pong", bytes(event.data)))
                elif event.opcode is Opcode.CLOSE:
                    got.append(("close", Close.parse(bytes(event.data)).code))
                elif event.opcode is Opcode.TEXT:
                    got.append(("message", orjson.loads(event.data)))
                else:
                    got.append(("message", msgpack.unpackb(event.data)))

    try:
        if parser_first:
            await client.loop.sock_sendall(client.sock, frame(PING_OP, b"first") + barrier)
            await asyncio.wait_for(until_barrier_or_close(1), TIMEOUT_S)
            assert got == [("pong", b"first"), ("message", BARRIER_ERROR)]
            got.clear()
        for data in reads[:-1]:
            await client.loop.sock_sendall(client.sock, barrier + data)
            await asyncio.wait_for(until_barrier_or_close(len(got) + 1), TIMEOUT_S)
        await client.loop.sock_sendall(client.sock, reads[-1] + barrier)
        await asyncio.wait_for(
            until_barrier_or_close(got.count(("message", BARRIER_ERROR)) + 1), TIMEOUT_S
        )
    finally:
        client.shutdown()
    return [item for item in got if item != ("message", BARRIER_ERROR)]


@FRAMES_ALONE
async def test_each_stream_is_answered_as_websockets_parser_answers_it(
    start_server: StartServer, subtests: pytest.Subtests
) -> None:
    server = start_server()
    for case, (encoding, data) in STREAMS.items():
        with subtests.test(case):
            read_here = await outcome(server.port, encoding, [data])
            parsed = await outcome(server.port, encoding, [data], parser_first=True)
            assert read_here == parsed


def zero_masked(opcode: int, payload: bytes) -> bytes:
    """A final frame masked with a zero key: its payload as sent."""
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + b"\x00" * 4 + payload


# whole messages the connection reads itself (short, 16-bit, zero-masked, pongs),
# then frames only the parser reads
CUT = (
    frame(TEXT, PING_MSG)
    + frame(PONG_OP, b"")
    + frame(TEXT, json_ping(300))
    + zero_masked(TEXT, PING_MSG)
    + frame(BINARY, PING_MSG, length="16")
    + frame(PONG_OP, b"late")
    + frame(TEXT, b'{"type": "unsubscribe", "stream_id": "s9"}')
    + frame(PING_OP, b"ping")
    + frame(TEXT, PING_MSG[:5], fin=False)
    + frame(CONT, PING_MSG[5:])
    + frame(TEXT, PING_MSG)
)


@FRAMES_ALONE
@pytest.mark.slow
async def test_a_stream_cut_at_any_byte_is_answered_as_when_whole(
    start_server: StartServer,
) -> None:
    server = start_server()
    whole = await outcome(server.port, JSON, [CUT])
    assert [kind for kind, _ in whole] == ["message"] * 5 + ["pong", "message", "message"]
    for at in range(1, len(CUT)):
        assert await outcome(server.port, JSON, [CUT[:at], CUT[at:]]) == whole, at


def hold(held: threading.Event, go_on: threading.Event) -> None:
    """Run on the server's loop: hold it (not the test) until told to go on."""
    held.set()
    go_on.wait()


async def test_a_gift_read_after_the_token_expired_while_the_loop_was_late_is_not_sent(
    start_server: StartServer, store: Store, subtests: pytest.Subtests
) -> None:
    """The expiry's timer runs late on a busy loop, and a loop reads the socket before
    it runs the timers that came due meanwhile: a gift that was read only after the
    expiry (the loop held past it here) closes the connection with 4001 and is not
    sent, whether the connection reads its frames itself or through the parser."""
    await fund(store, "carol")
    await live_stream(store, "s1")
    server = start_server()
    loop = server.server.servers[0].get_loop()
    for parser_first in (False, True):
        with subtests.test(parser_first=parser_first):
            gift_id = f"late-{parser_first}"
            short = issue_token(SECRET, "carol", Role.VIEWER, adult=True, ttl_s=2)
            expires_at = jwt.decode(short, options={"verify_signature": False})["exp"]
            client = await RawClient(server.port, short).open()
            try:
                if parser_first:
                    await client.send_frames((Opcode.PING, b"first", True))
                    await client.send({"type": "ping"})
                    assert await client.next_message() == {"type": "pong"}
                held, go_on = threading.Event(), threading.Event()

                loop.call_soon_threadsafe(hold, held, go_on)
                await asyncio.to_thread(held.wait)
                gift = {"type": "gift", "id": gift_id, "stream_id": "s1", "gift_id": "rose"}
                await client.send(gift)
                while time.time() <= expires_at:
                    await asyncio.sleep(expires_at - time.time() + 0.01)
                go_on.set()
                close = await client.read_until_close()
                assert (close.code, close.reason) == (4001, "token_expired")
                assert client.messages == ([{"type": "pong"}] if parser_first else [])
            finally:
                go_on.set()
                client.shutdown()
            async with await WsClient.open(server.url, token("carol")) as again:
                answer = await again.gift("s1", count=2, id=gift_id)
                assert answer["type"] == "ack", answer


async def next_heartbeat(client: RawClient) -> bytes:
    """The payload of the server's next ping; the connection must stay open till then."""

    async def read() -> bytes:
        while True:
            for event in await client.read_frames():
                assert event.opcode is not Opcode.CLOSE, Close.parse(bytes(event.data))
                if event.opcode is Opcode.PING:
                    return bytes(event.data)

    return await asyncio.wait_for(read(), TIMEOUT_S)


# A token back at one a second, with room for either side's loop running late on a busy
# machine: the server's clock between two paid messages may run shorter than the client's.
TOKEN_BACK_S = 1.5


async def heartbeat_after(client: RawClient, at: float) -> bytes:
    """The first heartbeat to come after `at` (the client's loop time); each one before
    it answered, which costs no token."""
    while True:
        heartbeat = await next_heartbeat(client)
        if client.loop.time() > at:
            return heartbeat
        await client.loop.sock_sendall(client.sock, frame(PONG_OP, heartbeat))


@FRAMES_ALONE
async def test_the_heartbeats_pong_costs_no_token_on_either_path(
    start_server: StartServer, subtests: pytest.Subtests
) -> None:
    """With one token a second and one refusal enough to close, a client answers a
    heartbeat and sends an unsolicited pong behind the answer, in the same read: the
    answer is free, so the unsolicited pong has its token and nothing is refused, twice
    over, whether the connection reads the pongs itself or through the parser. Each
    paid message waits for a heartbeat that comes once its token is back by the clock,
    not the next one, which late timers can bring too soon."""
    server = start_server(
        websocket={"ping_interval_s": 1, "rate_per_s": 1, "burst": 1, "abuse_close_after": 1}
    )
    for parser_first in (False, True):
        with subtests.test(parser_first=parser_first):
            client = await RawClient(server.port, token("ann")).open()
            try:
                paid_at = float("-inf")  # the bucket starts full
                if parser_first:
                    paid_at = client.loop.time()
                    await client.loop.sock_sendall(client.sock, frame(PING_OP, b"first"))
                for _ in range(2):
                    heartbeat = await heartbeat_after(client, paid_at + TOKEN_BACK_S)
                    await client.loop.sock_sendall(
                        client.sock, frame(PONG_OP, heartbeat) + frame(PONG_OP, b"unsolicited")
                    )
                    paid_at = client.loop.time()
                await next_heartbeat(client)  # still open: nothing was refused
            finally:
                client.shutdown()
