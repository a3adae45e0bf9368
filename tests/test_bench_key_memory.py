"""load/bench/cluster.py `key_memory`: the bytes of a stream's history are divided by
the events it holds, not by its entries: a batched call's events to a stream after its
first are one entry (gifting_server/events.py), on one Redis and on a cluster alike."""

from __future__ import annotations

import redis

from gifting_server.ledger import keys
from load.bench.cluster import key_memory, memory_usage
from tests.redis_process import RedisProcess


def event(event_id: int) -> bytes:
    return b'{"event_id":%d,"kind":"gift","ts":1,"count":1}' % event_id


def test_history_bytes_are_counted_per_event_of_a_grouped_entry(
    redis_server: RedisProcess,
) -> None:
    """The single Redis's figure (`single`), whichever topology the tests run on."""
    client = redis.Redis.from_url(redis_server.url)
    try:
        client.flushall()
        history = keys.stream_history("spread0")
        client.xadd(history, {"e": event(1)}, id="1-0")
        client.xadd(history, {"e": b"\n".join(event(i) for i in (2, 3, 4, 5))}, id="5-0")
        client.xadd(keys.journal("spread_streamer0"), {"g": "x"})
        figures = key_memory(client, streams=1, viewers=1)
        assert figures["history_bytes_per_event"] == memory_usage(client, history) // 5
    finally:
        client.close()
