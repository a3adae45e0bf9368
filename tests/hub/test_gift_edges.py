"""The gift use case behind both edges: a gift refused over HTTP is refused over
the WebSocket with the same code, whatever is wrong with it (the token's role, the
gift, the count, the key, the stream), and neither edge answers with a traceback."""

from __future__ import annotations

from itertools import count as numbered
from typing import Any

import httpx
import pytest

from gifting_server.auth import Role
from gifting_server.ledger import streams
from gifting_server.ledger.store import Store
from gifting_server.protocol import MAX_EVENT_ID
from tests.factories import auth, fund, live_stream, token
from tests.hub.conftest import StartServer
from tests.hub.wsclient import WsClient, assert_no_traceback

ROLES = {
    "viewer": ("carol", Role.VIEWER, {}),
    "streamer": ("streamer2", Role.STREAMER, {}),
    "overlay": ("o1", Role.OVERLAY, {"stream_id": "s1"}),
}
GIFTS = ["rose", "unicorn"]
COUNTS: list[Any] = [1, 0, -1, 100, MAX_EVENT_ID, -MAX_EVENT_ID, MAX_EVENT_ID + 1, 1.5, True]
STREAMS = ["s1", "nowhere", "ended"]


async def _over_http(
    http: httpx.AsyncClient, who: dict[str, str], stream_id: str, body: dict[str, Any]
) -> str:
    answer = await http.post(f"/v1/streams/{stream_id}/gifts", json=body, headers=who)
    assert_no_traceback(answer.content)
    assert answer.status_code != 500, answer.text
    return "ok" if answer.status_code == 200 else str(answer.json()["error"]["code"])


async def _over_ws(client: WsClient, stream_id: str, body: dict[str, Any], key: str) -> str:
    await client.send({"type": "gift", "id": key, "stream_id": stream_id, **body})
    answer = await client.answer_to(key)
    return "ok" if answer["type"] == "ack" else str(answer["code"])


@pytest.mark.parametrize("role", ROLES)
async def test_every_refusal_is_the_same_over_http_and_websocket(
    start_server: StartServer, store: Store, role: str
) -> None:
    await fund(store, "carol", times=3)
    await live_stream(store)
    await live_stream(store, "ended", streamer="streamer3")
    await streams.end_stream(store, "streamer3", "ended")
    server = start_server()
    user, user_role, claims = ROLES[role]
    keys = numbered()
    different: list[tuple[Any, ...]] = []
    async with (
        httpx.AsyncClient(base_url=server.url, timeout=10) as http,
        await WsClient.open(server.url, token(user, user_role, **claims)) as client,
    ):
        who = auth(user, user_role, **claims)
        for stream_id in STREAMS:
            for gift_id in GIFTS:
                for count in COUNTS:
                    body = {"gift_id": gift_id, "count": count}
                    http_key, ws_key = f"h{next(keys)}", f"w{next(keys)}"
                    by_http = await _over_http(
                        http, who, stream_id, {**body, "idempotency_key": http_key}
                    )
                    by_ws = await _over_ws(client, stream_id, body, ws_key)
                    if by_http != by_ws:
                        different.append((stream_id, gift_id, count, by_http, by_ws))
        await client.barrier()
        client.assert_no_traceback()
    assert not different, different
