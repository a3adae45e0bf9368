"""Bad input on /v1/ws: every bad frame gets its error frame or close code, no
traceback text ever reaches a client, and the stream keeps working for others."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import msgpack
import orjson
import pytest
from websockets.exceptions import InvalidStatus
from websockets.frames import Opcode
from websockets.utils import apply_mask

from gifting_server.auth import Role, issue_token
from gifting_server.ledger import streams
from gifting_server.ledger.store import Store
from tests.conftest import SECRET, ServerThread
from tests.factories import fund, live_stream, token
from tests.hub.conftest import StartServer
from tests.hub.wsclient import JSON, MSGPACK, Event, RawClient, WsClient, message_id


@dataclass
class Stream:
    """A live stream s1 on a running server, a subscribed witness and a funded sender."""

    server: ServerThread
    witness: WsClient
    sender: WsClient

    async def still_works(self) -> None:
        ack = await self.sender.gift("s1", id=message_id("later"))
        assert ack["type"] == "ack", ack
        await self.witness.events_until(lambda e: e["event_id"] == ack["event_id"])
        self.witness.assert_no_traceback()


@pytest.fixture
async def stream(start_server: StartServer, store: Store) -> AsyncIterator[Stream]:
    await fund(store, "carol")
    await fund(store, "poor", "coins_100")
    await live_stream(store, "s1")
    await live_stream(store, "ended", "streamer2")
    server = start_server()
    async with (
        await WsClient.open(server.url, token("bob")) as witness,
        await WsClient.open(server.url, token("carol")) as sender,
    ):
        await witness.subscribe("s1")
        yield Stream(server, witness, sender)


def reached(event_id: int) -> Callable[[Event], bool]:
    return lambda event: bool(event["event_id"] >= event_id)


def packed(message: Any) -> bytes:
    data: bytes = msgpack.packb(message, use_bin_type=True)
    return data


# (encoding of the connection, the frame as sent: str → text frame, bytes → binary)
UNREADABLE: dict[str, tuple[str, bytes | str]] = {
    "invalid json": (JSON, '{"type": "ping"'),
    "json array": (JSON, "[1, 2]"),
    "json string": (JSON, '"ping"'),
    "empty text": (JSON, ""),
    "binary garbage on json": (JSON, bytes(range(256))),
    "invalid msgpack": (MSGPACK, b"\xc1\xc1\xc1"),
    "truncated msgpack": (MSGPACK, b"\x82\xa4type"),
    "msgpack with trailing bytes": (MSGPACK, packed({"type": "ping"}) + b"\x00"),
    "msgpack integer keys": (MSGPACK, packed({1: "ping"})),
    "msgpack list": (MSGPACK, packed(["ping"])),
    "text json on msgpack": (MSGPACK, '{"type": "ping"}'),
    "binary garbage on msgpack": (MSGPACK, bytes(range(255, -1, -1))),
    "unknown type": (JSON, '{"type": "dance"}'),
    "msgpack unknown type": (MSGPACK, packed({"type": "dance", "stream_id": "s1"})),
    "no type": (JSON, '{"stream_id": "s1"}'),
    "type not a string": (JSON, '{"type": ["ping"]}'),
    "subscribe without stream_id": (JSON, '{"type": "subscribe"}'),
    "subscribe with a bad stream_id": (JSON, '{"type": "subscribe", "stream_id": "../s1"}'),
    "subscribe with since -1": (JSON, '{"type": "subscribe", "stream_id": "s1", "since": -1}'),
    "subscribe with since a string": (
        JSON,
        '{"type": "subscribe", "stream_id": "s1", "since": "3"}',
    ),
    "subscribe with since true": (JSON, '{"type": "subscribe", "stream_id": "s1", "since": true}'),
    "subscribe with a huge since": (
        JSON,
        '{"type": "subscribe", "stream_id": "s1", "since": 99999999999999999999999}',
    ),
    "unsubscribe without stream_id": (MSGPACK, packed({"type": "unsubscribe"})),
    "gift without id": (JSON, '{"type": "gift", "stream_id": "s1", "gift_id": "rose"}'),
    "gift with a bad id": (
        JSON,
        '{"type": "gift", "id": "a b", "stream_id": "s1", "gift_id": "rose"}',
    ),
}


async def test_unreadable_messages_get_invalid_request_and_the_connection_lives_on(
    stream: Stream, subtests: pytest.Subtests
) -> None:
    for case, (encoding, frame) in UNREADABLE.items():
        with subtests.test(case):
            async with await WsClient.open(
                stream.server.url, token("ann"), encoding=encoding
            ) as client:
                await client.subscribe("s1")
                await client.send_raw(frame)
                error = await client.next_of("error")
                assert error["code"] == "invalid_request"
                assert isinstance(error["message"], str) and error["message"]
                assert "id" not in error
                await client.barrier()  # still open and answering
                later = (await stream.sender.gift("s1"))["event_id"]
                await client.events_until(reached(later))
                client.assert_no_traceback()
            await stream.still_works()


def nested(depth: int, encoding: str, container: str) -> bytes | str:
    """`{"type": [[[...]]]}` (or `{"a": {"a": ...}}`) with the type `depth` levels deep."""
    if encoding == JSON:
        opening, closing = ("[", "]") if container == "list" else ('{"a":', "}")
        return '{"type":' + opening * depth + "1" + closing * depth + "}"
    level = b"\x91" if container == "list" else b"\x81\xa1a"  # a 1-list, a 1-map
    return b"\x81\xa4type" + level * depth + b"\x01"


async def test_a_deeply_nested_type_gets_invalid_request_and_logs_no_error(
    start_server: StartServer, subtests: pytest.Subtests, caplog: pytest.LogCaptureFixture
) -> None:
    server = start_server(websocket={"max_message_bytes": 16384})  # room for 1,100 levels
    with caplog.at_level(logging.WARNING):
        for encoding in (JSON, MSGPACK):
            async with await WsClient.open(server.url, token("ann"), encoding=encoding) as client:
                for depth in (990, 1020, 1100):
                    for container in ("list", "map"):
                        with subtests.test(f"{encoding} {container} {depth} deep"):
                            await client.send_raw(nested(depth, encoding, container))
                            error = await client.next_of("error")
                            assert error["code"] == "invalid_request"
                            assert len(error["message"]) <= 200
                            await client.barrier()
                client.assert_no_traceback()
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, errors[:3]


PING = b'{"type": "ping", "pad": "\xc3\xa9"}'  # "é": two bytes in UTF-8
T, B, C = Opcode.TEXT, Opcode.BINARY, Opcode.CONT
Frames = list[tuple[Opcode, bytes, bool]]

# (encoding, frames as sent) of one message each, reassembled as RFC 6455 section 5.4 says
FRAGMENTED: dict[str, tuple[str, Frames]] = {
    "two fragments": (JSON, [(T, PING[:10], False), (C, PING[10:], True)]),
    "a character split across fragments": (
        JSON,
        [(T, PING[:-3], False), (C, PING[-3:-2], False), (C, PING[-2:], True)],
    ),
    "a ping between fragments": (
        JSON,
        [(T, PING[:5], False), (Opcode.PING, b"between", True), (C, PING[5:], True)],
    ),
    "one byte per fragment": (
        JSON,
        [
            (T, PING[:1], False),
            *[(C, PING[i : i + 1], False) for i in range(1, len(PING))],
            (C, b"", True),
        ],
    ),
    "an empty first fragment": (JSON, [(T, b"", False), (C, PING, True)]),
    "msgpack in fragments": (
        MSGPACK,
        [(B, packed({"type": "ping"})[:3], False), (C, packed({"type": "ping"})[3:], True)],
    ),
}


async def test_fragmented_messages_are_reassembled(
    start_server: StartServer, subtests: pytest.Subtests
) -> None:
    server = start_server()
    for case, (encoding, frames) in FRAGMENTED.items():
        with subtests.test(case):
            client = await RawClient(server.port, token("ann"), encoding=encoding).open()
            try:
                await client.send_frames(*frames)
                assert await client.next_message() == {"type": "pong"}
                pinged = [data for opcode, data, _ in frames if opcode is Opcode.PING]
                assert client.pongs == pinged  # a control frame between fragments: answered
            finally:
                client.shutdown()


def masked(client: RawClient, *messages: bytes) -> list[bytes]:
    """Each message as the client's protocol frames it: one final text frame, masked
    with a key of its own."""
    frames = []
    for message in messages:
        client.protocol.send_text(message)
        frames.append(b"".join(client.protocol.data_to_send()))
    return frames


@pytest.mark.slow
async def test_messages_in_one_write_or_cut_anywhere_are_each_answered_in_order(
    start_server: StartServer,
) -> None:
    """The connection reads whole one-frame messages itself and leaves the rest to the
    protocol's parser: messages many to a read, or cut at any byte (in the header, the
    mask, the payload), are each answered once, in order."""
    server = start_server()
    client = await RawClient(server.port, token("ann")).open()
    try:
        long_ping = orjson.dumps({"type": "ping", "pad": "x" * 300})  # a 16-bit length
        first, second, third = masked(client, PING, long_ping, PING)
        await client.loop.sock_sendall(client.sock, first + second + third)
        assert [await client.next_message() for _ in range(3)] == [{"type": "pong"}] * 3
        for message in (PING, long_ping):
            before, cut, after = masked(client, PING, message, PING)
            for at in range(1, len(cut)):
                await client.loop.sock_sendall(client.sock, before + cut[:at])
                assert await client.next_message() == {"type": "pong"}  # `before` was read
                await client.loop.sock_sendall(client.sock, cut[at:] + after)
                assert [await client.next_message() for _ in range(2)] == [{"type": "pong"}] * 2
    finally:
        client.shutdown()


async def test_a_frame_whose_header_came_alone_is_read_as_its_header_says(
    start_server: StartServer,
) -> None:
    """A read that ends right after a frame's two header bytes leaves the protocol's
    parser inside that frame with nothing in its buffer. The next read is the frame's
    mask and payload, not a new frame, even when they look like one: here the mask
    spells the header of a text frame that would swallow the rest."""
    server = start_server()
    client = await RawClient(server.port, token("ann")).open()
    try:
        looks_like_a_frame = bytes([0x81, 0x80 | (len(PING) - 2), 0x00, 0x00])
        header = bytes([0x81, 0x80 | len(PING)])
        rest = looks_like_a_frame + apply_mask(PING, looks_like_a_frame)
        await client.loop.sock_sendall(client.sock, b"".join(masked(client, PING)) + header)
        assert await client.next_message() == {"type": "pong"}  # the header was read too
        await client.loop.sock_sendall(client.sock, rest)
        assert await client.next_message() == {"type": "pong"}
    finally:
        client.shutdown()


async def test_a_bad_frame_after_whole_messages_in_the_same_read_closes_after_their_answers(
    start_server: StartServer, subtests: pytest.Subtests
) -> None:
    server = start_server()
    for case, bad in {
        "unmasked": b"\x81" + bytes([len(PING)]) + PING,
        "a reserved bit": b"\xc1" + bytes([0x80 | len(PING)]) + b"\x00" * 4 + PING,
        "an unknown opcode": b"\x83" + bytes([0x80 | len(PING)]) + b"\x00" * 4 + PING,
    }.items():
        with subtests.test(case):
            client = await RawClient(server.port, token("ann")).open()
            try:
                await client.loop.sock_sendall(client.sock, b"".join(masked(client, PING)) + bad)
                assert (await client.read_until_close()).code == 1002
                assert client.messages == [{"type": "pong"}]
            finally:
                client.shutdown()


FRAGMENTED_AND_REFUSED: dict[str, tuple[Frames, int]] = {
    "bigger than max_message_bytes in all": (
        [(T, b" " * 3000, False), (C, b" " * 3000, False), (C, PING, True)],
        1009,
    ),
    "not UTF-8 as a whole": ([(T, PING[:-3], False), (C, b"\xff" + PING[-2:], True)], 1007),
    "a character cut short at the end": ([(T, PING[:-4], False), (C, PING[-4:-3], True)], 1007),
}


async def test_fragmented_messages_too_big_or_not_utf8_are_closed(
    start_server: StartServer, subtests: pytest.Subtests
) -> None:
    server = start_server()
    for case, (frames, code) in FRAGMENTED_AND_REFUSED.items():
        with subtests.test(case):
            client = await RawClient(server.port, token("ann")).open()
            try:
                await client.send_frames(*frames)
                assert (await client.read_until_close()).code == code
                assert client.messages == []
            finally:
                client.shutdown()


FLOODS: dict[str, Frames] = {
    # never a whole message, never a byte nearer max_message_bytes
    "empty continuation frames": [(T, b"", False), *[(C, b"", False)] * 2000],
    "unsolicited pongs": [(Opcode.PONG, b"", True)] * 2000,
    "125-byte pings": [(Opcode.PING, b"p" * 125, True)] * 2000,
}


async def test_floods_of_control_frames_or_fragments_are_rate_limited_then_closed(
    start_server: StartServer, subtests: pytest.Subtests
) -> None:
    server = start_server(websocket={"rate_per_s": 1, "burst": 5, "abuse_close_after": 5})
    for case, frames in FLOODS.items():
        with subtests.test(case):
            client = await RawClient(server.port, token("ann")).open()
            try:
                await client.send_frames(*frames)
                assert (await client.read_until_close()).code == 4008
                assert {m["code"] for m in client.messages} == {"rate_limited"}
            finally:
                client.shutdown()


async def test_a_message_whose_fragment_was_over_the_rate_is_dropped_whole(
    start_server: StartServer,
) -> None:
    server = start_server(websocket={"rate_per_s": 20, "burst": 3, "abuse_close_after": 100})
    client = await RawClient(server.port, token("ann")).open()
    leave = orjson.dumps({"type": "unsubscribe", "stream_id": "s9"})
    try:
        # 3 tokens: three continuation frames pass, the fourth and the last are
        # refused, and the message is not read, whole or with a hole in it
        await client.send_frames(
            (T, leave[:2], False),
            *[(C, leave[i : i + 2], False) for i in range(2, 10, 2)],
            (C, leave[10:], True),
        )
        answers = [await client.next_message(), await client.next_message()]
        assert [m["code"] for m in answers] == ["rate_limited", "rate_limited"]
        for _ in range(20):  # a whole message once a token is back (one per 50 ms)
            await asyncio.sleep(0.05)
            await client.send({"type": "ping"})
            answer = await client.next_message()
            if answer["type"] == "pong":
                break
            assert answer["code"] == "rate_limited", answer
        assert [m["type"] for m in client.messages if m["type"] != "error"] == ["pong"]
    finally:
        client.shutdown()


GIFT_REFUSALS: dict[str, tuple[dict[str, Any], str]] = {
    "no gift_id": ({"stream_id": "s1"}, "invalid_request"),
    "no stream_id": ({"gift_id": "rose"}, "invalid_request"),
    "count zero": ({"stream_id": "s1", "gift_id": "rose", "count": 0}, "invalid_request"),
    "count a string": ({"stream_id": "s1", "gift_id": "rose", "count": "2"}, "invalid_request"),
    "count a float": ({"stream_id": "s1", "gift_id": "rose", "count": 1.5}, "invalid_request"),
    "count true": ({"stream_id": "s1", "gift_id": "rose", "count": True}, "invalid_request"),
    "count above the max": (
        {"stream_id": "s1", "gift_id": "rose", "count": 100},
        "invalid_request",
    ),
    "unknown gift": ({"stream_id": "s1", "gift_id": "unicorn"}, "unknown_gift"),
    "unknown stream": ({"stream_id": "nowhere", "gift_id": "rose"}, "unknown_stream"),
}


async def test_refused_gifts_answer_error_with_their_id(
    stream: Stream, subtests: pytest.Subtests
) -> None:
    async with await WsClient.open(stream.server.url, token("carol")) as client:
        for case, (fields, code) in GIFT_REFUSALS.items():
            with subtests.test(case):
                gift_id = message_id("refused")
                await client.send({"type": "gift", "id": gift_id, **fields})
                answer = await client.answer_to(gift_id)
                assert answer["type"] == "error"
                assert (answer["code"], answer["id"]) == (code, gift_id)
        await client.barrier()
        client.assert_no_traceback()
    await stream.still_works()


async def test_gift_business_refusals_over_ws(stream: Stream, store: Store) -> None:
    async with (
        await WsClient.open(stream.server.url, token("nobody")) as broke,
        await WsClient.open(stream.server.url, token("poor")) as poor,
        await WsClient.open(stream.server.url, token("minor", adult=False)) as minor,
        await WsClient.open(stream.server.url, token("streamer2")) as self_gifter,
    ):
        assert (await broke.gift("s1"))["code"] == "insufficient_funds"
        assert (await poor.gift("s1", "universe"))["code"] == "insufficient_funds"
        assert (await minor.gift("s1"))["code"] == "age_verification_required"
        assert (await self_gifter.gift("ended"))["code"] == "self_gift"
        await streams.end_stream(store, "streamer2", "ended")
        assert (await poor.gift("ended"))["code"] == "stream_not_live"
        for client in (broke, poor, minor, self_gifter):
            client.assert_no_traceback()
    await stream.still_works()


async def test_gift_with_a_token_that_is_not_a_viewer_is_forbidden(
    stream: Stream, subtests: pytest.Subtests
) -> None:
    for role in (Role.OVERLAY, Role.STREAMER, Role.ADMIN):
        with subtests.test(role.value):
            who = token("streamer1", role, stream_id="s1" if role is Role.OVERLAY else None)
            async with await WsClient.open(stream.server.url, who) as client:
                answer = await client.gift("s1", id="forbidden-1")
                assert (answer["type"], answer["code"], answer["id"]) == (
                    "error",
                    "forbidden",
                    "forbidden-1",
                )
                client.assert_no_traceback()
            await stream.still_works()


async def test_oversized_message_closes_with_1009(
    stream: Stream, subtests: pytest.Subtests
) -> None:
    for encoding in (JSON, MSGPACK):
        with subtests.test(encoding):
            async with await WsClient.open(
                stream.server.url, token("ann"), encoding=encoding
            ) as client:
                await client.subscribe("s1")
                await client.send({"type": "subscribe", "stream_id": "s1", "pad": "x" * 5000})
                code, _ = await client.closed()
                assert code == 1009
                client.assert_no_traceback()
            await stream.still_works()


async def test_message_just_under_the_limit_is_read(stream: Stream) -> None:
    async with await WsClient.open(stream.server.url, token("ann")) as client:
        message = '{"type": "ping", "pad": "' + "x" * 4000 + '"}'
        assert len(message) <= 4096
        await client.send_raw(message)
        assert await client.next_of("pong") == {"type": "pong"}


def expired_token() -> str:
    return issue_token(SECRET, "ann", Role.VIEWER, adult=True, ttl_s=60, now=time.time() - 3600)


BAD_TOKENS: dict[str, Callable[[], str]] = {
    "expired": expired_token,
    "garbage": lambda: "not-a-token",
    "empty": lambda: "",
    "signed with another secret": lambda: issue_token(
        "another-secret-0123456789abcdef0123456789", "ann", Role.VIEWER
    ),
    "tampered": lambda: token("ann")[:-4] + "AAAA",
}


async def test_bad_token_closes_with_4001(stream: Stream, subtests: pytest.Subtests) -> None:
    for case, make_token in BAD_TOKENS.items():
        with subtests.test(case):
            async with await WsClient.open(stream.server.url, make_token()) as client:
                code, reason = await client.closed()
                assert code == 4001
                assert reason
                assert client.received == []
                client.assert_no_traceback()
            await stream.still_works()


async def test_no_token_closes_with_4001(stream: Stream) -> None:
    async with await WsClient.open(stream.server.url) as client:
        assert (await client.closed())[0] == 4001
    async with await WsClient.open(
        stream.server.url, headers={"Authorization": "Basic YW5uOnB3"}
    ) as client:
        assert (await client.closed())[0] == 4001
    await stream.still_works()


async def test_foreign_origin_is_refused_with_403(stream: Stream) -> None:
    with pytest.raises(InvalidStatus) as refused:
        await WsClient.open(stream.server.url, token("ann"), origin="https://evil.example")
    assert refused.value.response.status_code == 403
    assert b"Traceback" not in refused.value.response.body
    # the server's own origin is fine
    own = f"http://127.0.0.1:{stream.server.port}"
    async with await WsClient.open(stream.server.url, token("ann"), origin=own) as client:
        await client.barrier()
    await stream.still_works()


async def test_configured_origin_is_allowed(start_server: StartServer, store: Store) -> None:
    server = start_server(websocket={"allowed_origins": ("https://overlay.example",)})
    async with await WsClient.open(
        server.url, token("ann"), origin="https://overlay.example"
    ) as client:
        await client.barrier()
    with pytest.raises(InvalidStatus) as refused:
        await WsClient.open(server.url, token("ann"), origin="https://other.example")
    assert refused.value.response.status_code == 403


async def test_too_many_subscriptions_on_one_connection(
    start_server: StartServer, store: Store
) -> None:
    server = start_server(websocket={"max_subscriptions": 2})
    async with await WsClient.open(server.url, token("ann")) as client:
        await client.subscribe("a")
        await client.subscribe("b")
        await client.subscribe("a")  # a resubscription is no new subscription
        await client.send({"type": "subscribe", "stream_id": "c"})
        assert (await client.next_of("error"))["code"] == "invalid_request"
        await client.send({"type": "unsubscribe", "stream_id": "a"})
        await client.next_of("unsubscribed")
        await client.subscribe("c")


async def test_flooding_gets_rate_limited_then_closed_with_4008(
    start_server: StartServer, store: Store
) -> None:
    await fund(store, "carol")
    await live_stream(store)
    server = start_server(websocket={"rate_per_s": 1, "burst": 5, "abuse_close_after": 5})
    async with (
        await WsClient.open(server.url, token("bob")) as witness,
        await WsClient.open(server.url, token("carol")) as sender,
        await WsClient.open(server.url, token("flooder")) as flooder,
    ):
        await witness.subscribe("s1")
        for _ in range(5):
            await flooder.send({"type": "ping"})
        for i in range(30):
            await flooder.send(
                {"type": "gift", "id": f"flood-{i}", "stream_id": "s1", "gift_id": "rose"}
            )
        code, _ = await flooder.closed()
        assert code == 4008
        kinds = [m["type"] for m in flooder.received]
        assert kinds.count("pong") >= 5
        errors = [m for m in flooder.received if m["type"] == "error"]
        assert len(errors) >= 1
        assert all(e["code"] == "rate_limited" for e in errors)
        assert all(e["id"].startswith("flood-") for e in errors)
        assert len(errors) <= 5 - 1 + 2  # closed after abuse_close_after refusals in a row
        flooder.assert_no_traceback()
        # the sender's and witness's connections have their own buckets
        ack = await sender.gift("s1")
        await witness.events_until(lambda e: e["event_id"] == ack["event_id"])


async def test_flooding_unreadable_messages_is_rate_limited_too(
    start_server: StartServer, store: Store
) -> None:
    server = start_server(websocket={"rate_per_s": 1, "burst": 5, "abuse_close_after": 5})
    async with await WsClient.open(server.url, token("flooder")) as flooder:
        for _ in range(50):
            await flooder.send_raw('{"type": ')
        code, _ = await flooder.closed()
        assert code == 4008
        codes = [m["code"] for m in flooder.received]
        assert codes[:5] == ["invalid_request"] * 5  # within the burst: answered as such
        assert set(codes[5:]) == {"rate_limited"}
        assert len(codes) < 50
        flooder.assert_no_traceback()
