"""HTTP API tests over real sockets: helpers shared by the modules of this package."""

from __future__ import annotations

from typing import Any

import httpx
from redis.asyncio import Redis

from gifting_server.errors import retry_after_header


async def snapshot(redis: Redis) -> dict[str, tuple[str, Any]]:
    """Every key of the database with its type and full content, to prove nothing changed."""
    state: dict[str, tuple[str, Any]] = {}
    async for key in redis.scan_iter(count=1000):
        kind = str(await redis.type(key))
        if kind == "string":
            value: Any = await redis.get(key)
        elif kind == "hash":
            value = await redis.hgetall(key)
        elif kind == "zset":
            value = await redis.zrange(key, 0, -1, withscores=True)
        elif kind == "stream":
            value = await redis.xrange(key)
        elif kind == "list":
            value = await redis.lrange(key, 0, -1)
        elif kind == "set":
            value = sorted(await redis.smembers(key))
        else:
            value = None
        state[str(key)] = (kind, value)
    return state


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    """The response is `status` with the contract's error body carrying `code`."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    # an overloaded worker, or one holding too many of a user's gifts, says when to
    # retry (ledger/gift_admission.py)
    extra = {"retry_after_ms"} if code in ("service_unavailable", "rate_limited") else set()
    assert isinstance(error, dict) and {"code", "message"} <= set(error), body
    assert set(error) <= {"code", "message"} | extra, body
    if "retry_after_ms" in error:
        assert response.headers["retry-after"] == retry_after_header(error["retry_after_ms"])
    assert error["code"] == code, body
    assert isinstance(error["message"], str) and error["message"], body
