"""A gift refused for load is answered with a frame spliced from parts encoded once
(protocol.refusal_frame): on the wire, in both encodings and for ids of every
allowed character and of the longest allowed length, it is the `error` message
CONTRACT.md gives, byte for byte what `encode` makes of it in msgpack."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from gifting_server.errors import ErrorCode
from gifting_server.ids import KEY_MAX
from gifting_server.ledger.gift_admission import refusal_message
from gifting_server.protocol import Encoding, encode, error_message
from tests.factories import token
from tests.faults import buy, go_live
from tests.faults.conftest import Serve
from tests.faults.test_overload import gift_until_refused
from tests.hub.wsclient import JSON, MSGPACK, WsClient
from tests.topology import RedisUnderFault

# (overload settings, the refusal's code): the worker's bound, or the user's
RULES: dict[str, tuple[dict[str, Any], ErrorCode]] = {
    "worker": ({"max_in_flight": 1}, ErrorCode.SERVICE_UNAVAILABLE),
    "user": ({"max_in_flight_per_user": 1}, ErrorCode.RATE_LIMITED),
}
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:-"
IDS = [
    "k",
    "a.b:c-d_e",
    (ALPHABET * 2)[:KEY_MAX],  # a payload over 125 bytes: a 16-bit length
    ("9" * KEY_MAX),
]


@pytest.mark.parametrize("rule", RULES)
async def test_refusal_frames_are_the_contracts_error_in_both_encodings(
    rule: str, own_redis: RedisUnderFault, serve: Serve
) -> None:
    overload, code = RULES[rule]
    server = serve(own_redis.url, limits={"request_timeout_s": 60.0}, overload=overload)
    async with (
        httpx.AsyncClient(base_url=server.url, timeout=90) as http,
        await WsClient.open(server.url, token("alice")) as first,
        await WsClient.open(server.url, token("alice"), encoding=MSGPACK) as packed,
    ):
        await go_live(http, "s1")
        await buy(http, "alice", "coins_1000")
        own_redis.suspend()
        try:
            held, _ = await gift_until_refused(first)  # the gifts Redis holds
            for client in (first, packed):
                for message_id in IDS:
                    refusal = await client.gift("s1", id=message_id)
                    assert set(refusal) == {"type", "code", "message", "id", "retry_after_ms"}
                    retry_after_ms = refusal["retry_after_ms"]
                    assert type(retry_after_ms) is int and retry_after_ms > 0
                    wanted = error_message(
                        code, refusal_message(code, retry_after_ms), message_id, retry_after_ms
                    )
                    assert refusal == wanted
                    payload = client.payloads[client.received.index(refusal)]
                    if client.encoding == JSON:
                        assert isinstance(payload, str)
                        assert orjson.loads(payload) == wanted
                    else:
                        assert payload == encode(wanted, Encoding.MSGPACK)
        finally:
            own_redis.resume()
        for message_id in held:
            assert (await first.answer_to(message_id, timeout=30))["type"] == "ack"
