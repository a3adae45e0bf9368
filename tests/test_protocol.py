"""The sans-I/O message layer: decoding client frames, encoding server frames."""

from __future__ import annotations

import msgpack
import orjson
import pytest

from gifting_server.errors import ErrorCode
from gifting_server.protocol import (
    Encoding,
    Ping,
    ProtocolError,
    SendGift,
    Subscribe,
    Unsubscribe,
    decode_client_message,
    encode,
    error_message,
    events_payload,
    refusal_frame,
    websocket_frame,
)


@pytest.mark.parametrize("encoding", list(Encoding))
def test_each_client_message_decodes_in_both_encodings(encoding: Encoding) -> None:
    def raw(message: dict[str, object]) -> bytes:
        return orjson.dumps(message) if encoding is Encoding.JSON else msgpack.packb(message)

    assert decode_client_message(raw({"type": "ping"}), encoding) == Ping()
    assert decode_client_message(
        raw({"type": "subscribe", "stream_id": "s1", "since": 7}), encoding
    ) == Subscribe("s1", 7)
    assert decode_client_message(raw({"type": "subscribe", "stream_id": "s1"}), encoding) == (
        Subscribe("s1", None)
    )
    assert decode_client_message(raw({"type": "unsubscribe", "stream_id": "s1"}), encoding) == (
        Unsubscribe("s1")
    )
    gift = {"type": "gift", "id": "m-1", "stream_id": "s1", "gift_id": "rose", "count": 3}
    assert decode_client_message(raw(gift), encoding) == SendGift("m-1", "s1", "rose", 3)


@pytest.mark.parametrize(
    ("data", "mentions"),
    [
        (b"{nope", "not a valid JSON"),
        (b"[1, 2]", "object"),
        (b'{"type": "dance"}', "unknown message type"),
        (b'{"type": "subscribe"}', "stream_id"),
        (b'{"type": "subscribe", "stream_id": "a:b"}', "stream_id"),
        (b'{"type": "subscribe", "stream_id": "demo\\n"}', "stream_id"),
        (b'{"type": "unsubscribe", "stream_id": "demo\\n"}', "stream_id"),
        (b'{"type": "subscribe", "stream_id": "s", "since": -1}', "since"),
        (b'{"type": "subscribe", "stream_id": "s", "since": 1.5}', "since"),
        (b'{"type": "subscribe", "stream_id": "s", "since": true}', "since"),
        (b'{"type": "gift", "stream_id": "s", "gift_id": "rose"}', "id"),
        (
            b'{"type": "gift", "id": "x", "stream_id": "s", "gift_id": "rose", "count": 0.5}',
            "count",
        ),
        (
            b'{"type": "gift", "id": "x", "stream_id": "s", "gift_id": "rose", "count": "2"}',
            "count",
        ),
        (b'{"type": "gift", "id": "x", "stream_id": "s", "count": 1}', "gift_id"),
        (b'{"type": "gift", "id": "k\\n", "stream_id": "s", "gift_id": "rose"}', "id"),
        (b'{"type": "gift", "id": "k", "stream_id": "s\\n", "gift_id": "rose"}', "stream_id"),
        (b'{"type": "gift", "id": "k", "stream_id": "s", "gift_id": "rose\\n"}', "gift_id"),
    ],
)
def test_bad_json_messages_are_refused_with_invalid_request(data: bytes, mentions: str) -> None:
    with pytest.raises(ProtocolError) as refused:
        decode_client_message(data, Encoding.JSON)
    assert refused.value.code is ErrorCode.INVALID_REQUEST
    assert mentions in refused.value.message


def test_a_refused_gift_keeps_its_message_id_for_the_error_frame() -> None:
    data = orjson.dumps(
        {"type": "gift", "id": "m-9", "stream_id": "s", "gift_id": "rose", "count": "0"}
    )
    with pytest.raises(ProtocolError) as refused:
        decode_client_message(data, Encoding.JSON)
    assert refused.value.message_id == "m-9"


def test_binary_garbage_is_refused_in_msgpack() -> None:
    with pytest.raises(ProtocolError):
        decode_client_message(b"\xc1\xc1\xc1", Encoding.MSGPACK)
    with pytest.raises(ProtocolError):
        decode_client_message(msgpack.packb([1, 2]), Encoding.MSGPACK)


def test_events_payload_is_the_same_message_in_both_encodings() -> None:
    stored = [b'{"event_id":1,"kind":"viewers","count":2}', b'{"event_id":2,"kind":"stream_ended"}']
    as_json = orjson.loads(events_payload("s1", stored, Encoding.JSON))
    as_msgpack = msgpack.unpackb(events_payload("s1", stored, Encoding.MSGPACK))
    assert (
        as_json
        == as_msgpack
        == {
            "type": "events",
            "stream_id": "s1",
            "events": [orjson.loads(e) for e in stored],
        }
    )


def refusal_text(code: ErrorCode, retry_after_ms: int) -> str:
    return f"{code.code} for {retry_after_ms} ms"


@pytest.mark.parametrize("encoding", list(Encoding))
def test_a_refusal_frame_is_the_error_message_whatever_the_id(encoding: Encoding) -> None:
    """refusal_frame splices the id between parts encoded once: the frame must still
    carry exactly what error_message says, for every id (quotes and non-ASCII included)
    and for every (code, retry_after_ms) its cache holds."""
    load = orjson.loads if encoding is Encoding.JSON else msgpack.unpackb
    for code, retry_after_ms in [
        (ErrorCode.SERVICE_UNAVAILABLE, 250),
        (ErrorCode.RATE_LIMITED, 250),
        (ErrorCode.SERVICE_UNAVAILABLE, 1_000),
        # each width msgpack gives an integer: fixint, 8, 16, 32 and 64 bits
        *[(ErrorCode.RATE_LIMITED, n) for n in (0, 127, 128, 255, 256, 65_535, 65_536)],
        *[(ErrorCode.SERVICE_UNAVAILABLE, n) for n in (2**32 - 1, 2**32, 2**64 - 1)],
    ]:
        for message_id in ["g1", 'a"b\\c', "ünï", ""]:
            frame = refusal_frame(message_id, code, retry_after_ms, refusal_text, encoding)
            payload = frame[2:] if frame[1] < 126 else frame[4:]  # unmasked, under 64 KiB
            assert frame == websocket_frame(payload, encoding)
            wanted = error_message(
                code, refusal_text(code, retry_after_ms), message_id, retry_after_ms
            )
            assert load(payload) == wanted
            if encoding is Encoding.MSGPACK:  # spliced into its place: encode's own bytes
                assert payload == encode(wanted, encoding)


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 70000])
def test_websocket_frame_header_encodes_every_length_form(size: int) -> None:
    payload = b"x" * size
    frame = websocket_frame(payload, Encoding.MSGPACK)
    assert frame[0] == 0x82  # FIN + binary
    assert frame.endswith(payload)
    assert frame[1] & 0x80 == 0  # server frames are never masked
    length = frame[1] & 0x7F
    if size < 126:
        assert length == size and len(frame) == 2 + size
    elif size < 65536:
        assert length == 126 and int.from_bytes(frame[2:4], "big") == size
    else:
        assert length == 127 and int.from_bytes(frame[2:10], "big") == size
