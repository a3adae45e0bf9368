"""Is the Redis at a URL a single server or a node of a Redis Cluster?

`INFO cluster` answers on both: `cluster_enabled:1` on a cluster node, `:0` on a
single Redis. Any node of a cluster will do; the cluster client finds the rest.
"""

from __future__ import annotations

import enum
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
import redis.asyncio as aioredis


class Topology(enum.Enum):
    SINGLE = "single"
    CLUSTER = "cluster"


class RedisUnreachable(RuntimeError):
    pass


def redacted(url: str) -> str:
    """The URL without its password, fit for an error message or a log line."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = f"{parts.username}:***@" if parts.username else ":***@"
    netloc = user + parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=netloc))


def topology_of(info: dict[str, Any]) -> Topology:
    return Topology.CLUSTER if int(info.get("cluster_enabled", 0)) == 1 else Topology.SINGLE


def unreachable(url: str, error: Exception) -> RedisUnreachable:
    return RedisUnreachable(
        f"Redis at {redacted(url)} is unreachable ({type(error).__name__}: {error}); "
        "start it or fix GIFTING_REDIS_URL"
    )


def detect(url: str, timeout_s: float = 2.0) -> Topology:
    client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    try:
        return topology_of(client.info("cluster"))
    except (redis.ConnectionError, redis.TimeoutError, OSError) as e:
        raise unreachable(url, e) from None
    finally:
        client.close()


async def detect_async(url: str, timeout_s: float = 2.0) -> Topology:
    client = aioredis.Redis.from_url(
        url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
    )
    try:
        return topology_of(await client.info("cluster"))
    except (redis.ConnectionError, redis.TimeoutError, OSError) as e:
        raise unreachable(url, e) from None
    finally:
        await client.aclose()
