"""The two histories answer alike: the Redis one (against real Redis, in chunks)
and the in-memory one the hub's own tests use."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import orjson
import pytest

from gifting_server.config import Settings
from gifting_server.hub.history import History, Replay
from gifting_server.hub.memory import MemoryHistory
from gifting_server.hub.redis_history import REPLAY_CHUNK, RedisHistory
from gifting_server.ledger import keys
from gifting_server.ledger.store import connect


@dataclass
class Filled:
    history: History
    raws: list[bytes]  # every event ever appended, event i + 1 at index i


Fill = Callable[..., Awaitable[Filled]]  # (count, keep, viewers=0)


@pytest.fixture(params=["redis", "memory"])
async def fill(request: pytest.FixtureRequest, settings: Settings) -> AsyncIterator[Fill]:
    """Append `count` events to stream "s", keep the newest `keep` of them, and
    publish a viewer count."""
    assert settings.redis_url
    redis = await connect(settings.redis_url, 5.0, decode_responses=False)

    async def fill_redis(count: int, keep: int, viewers: int = 0) -> Filled:
        raws = [orjson.dumps({"event_id": i, "kind": "gift", "ts": 1}) for i in range(1, count + 1)]
        async with redis.pipeline(transaction=False) as pipe:
            for event_id, raw in enumerate(raws, 1):
                if event_id > count - keep:
                    pipe.xadd(keys.stream_history("s"), {"e": raw}, id=f"{event_id}-0")
            meta = {"seq": count, "last_viewers": f'"count":{viewers}'}
            pipe.hset(keys.stream("s"), mapping=meta)
            await pipe.execute()
        return Filled(RedisHistory(redis), raws)

    async def fill_memory(count: int, keep: int, viewers: int = 0) -> Filled:
        history = MemoryHistory(max_events=keep)
        raws = [history.append("s", {"kind": "gift", "ts": 1}) for _ in range(count)]
        history.viewers["s"] = viewers
        return Filled(history, raws)

    yield fill_redis if request.param == "redis" else fill_memory
    await redis.aclose()


async def test_head_is_the_newest_id_and_the_last_viewer_count(fill: Fill) -> None:
    filled = await fill(7, 7, viewers=3)
    assert (await filled.history.head("s"))[:2] == (7, 3)
    assert (await filled.history.head("other"))[:2] == (0, 0)


async def test_replay_answers_every_case_alike(fill: Fill) -> None:
    count = 2 * REPLAY_CHUNK + 100  # more than two of the Redis history's chunks
    keep = count - 50
    filled = await fill(count, keep)
    history, raws = filled.history, filled.raws
    assert await history.replay("s", count) == Replay(True, [], count)
    assert await history.replay("s", count + 5) == Replay(False, [], count)  # not its id
    assert await history.replay("s", count - 3) == Replay(True, raws[-3:], count)
    kept_from = count - keep  # the oldest event still kept is kept_from + 1
    assert await history.replay("s", kept_from) == Replay(True, raws[kept_from:], count)
    assert await history.replay("s", kept_from - 1) == Replay(False, [], count)  # trimmed
    assert await history.replay("other", 0) == Replay(True, [], 0)
