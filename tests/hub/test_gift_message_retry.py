"""A retried gift with a message whose stream's settings changed since answers from
its key's record. When that record expires between the server's look at it and the
gift's script, the retry is a new gift: it must still carry no blocked word."""

from __future__ import annotations

import asyncio

import httpx

from gifting_server.ledger import keys
from gifting_server.ledger.store import Store
from tests.api.test_http_flow import ALICE, STREAMER
from tests.factories import fund, live_stream
from tests.hub.conftest import StartServer
from tests.hub.redis_proxy import RedisProxy


async def test_a_retry_whose_record_expires_meanwhile_still_masks_a_newly_blocked_word(
    start_proxied_server: StartServer, redis_proxy: RedisProxy, store: Store
) -> None:
    await fund(store, "alice")
    await live_stream(store)
    server = start_proxied_server()
    record = keys.idempotency("alice", "k1")
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        body = {"gift_id": "rose", "idempotency_key": "k1", "message": "darn it"}
        first = await http.post("/v1/streams/s1/gifts", json=body, headers=ALICE)
        assert first.status_code == 200, first.text
        # The streamer blocks the word, and makes the message too long, through the same
        # worker (it applies at once): a retry now takes the path of a refused message.
        blocked = {"messages": {"blocked_words": ["darn"], "max_length": 3}}
        changed = await http.put("/v1/streams/s1/settings", json=blocked, headers=STREAMER)
        assert changed.status_code == 200, changed.text

        looked_up = redis_proxy.hold_reply(
            lambda data: b"EXISTS" in data and record.encode() in data
        )
        retry = asyncio.create_task(http.post("/v1/streams/s1/gifts", json=body, headers=ALICE))
        await looked_up.wait_held()
        await store.redis.delete(record)  # its TTL ran out just now
        looked_up.release()
        answer = await retry
    # 200 (a new gift: the record was gone) or a refusal; never the word itself.
    assert answer.status_code in (200, 422), answer.text
    rows = await store.redis.xrange(keys.stream_history("s1"))
    stored = "".join(str(value) for _, fields in rows for value in fields.values()).lower()
    assert stored.count("darn") == 1, stored  # the first gift's, sent before the block
