"""Script calls pipelined on one connection: how the ledger's scripts reach Redis.

Every script call made in the same pass of the event loop (the gifts of many
connections arriving together) goes out in one write, and the replies come back
in order on one socket. redis-py costs this server ~150 µs of CPU per awaited
command (pool, retry wrapper, packing in Python); this path costs a few, which
is most of a gift's server time. Reads and everything else keep using redis-py.

Failures surface as redis-py's exceptions, so `store.guarded` maps them as for
any other command: a connection Redis closed fails the calls in flight with
`ConnectionError` (the next call connects again), and a batch unanswered after
the timeout fails every call in flight with `TimeoutError` and drops the
connection, since later replies could no longer be matched to their calls.
A call that never left this process (no connection, or still queued when the
connection was lost) fails with `NotSent`, a `ConnectionError`: only such a
call is safe to send again (`cluster_pipeline.py` does, on a cluster).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

import hiredis
from redis import exceptions as redis_errors
from redis._parsers.base import BaseParser
from redis.asyncio import Redis

DEFAULT_TIMEOUT_S = 5.0


class NotSent(redis_errors.ConnectionError):
    """The call was never written to Redis, so it cannot have run."""


class ScriptPipeline:
    def __init__(self, client: Redis) -> None:
        """Reach the same Redis as `client`, with its timeout."""
        self.options = dict(client.connection_pool.connection_kwargs)
        self.timeout_s = float(self.options.get("socket_timeout") or DEFAULT_TIMEOUT_S)
        self._protocol: RedisProtocol | None = None
        self._connecting: asyncio.Future[RedisProtocol] | None = None

    async def evalsha(self, sha: str, keys: list[str], args: list[Any]) -> Any:
        return await self.call(keys[0] if keys else "", ("EVALSHA", sha, len(keys), *keys, *args))

    async def call(self, key: str, command: tuple[Any, ...]) -> Any:
        """Any command, pipelined like the scripts; `key` names its slot on a cluster."""
        protocol = self._protocol
        if protocol is None or protocol.lost:
            protocol = await self._connect()
        return await protocol.call(command)

    async def close(self) -> None:
        protocol, self._protocol = self._protocol, None
        if protocol is not None:
            protocol.close()
            await protocol.gone.wait()  # the socket is closed once the loop says so

    async def _connect(self) -> RedisProtocol:
        """One connection attempt shared by every call that finds none."""
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._open())
        connecting = self._connecting
        try:
            return await asyncio.shield(connecting)
        finally:
            if connecting.done() and self._connecting is connecting:
                self._connecting = None

    async def _open(self) -> RedisProtocol:
        self._protocol = await open_connection(self.options, self.timeout_s)
        return self._protocol


async def open_connection(options: dict[str, Any], timeout_s: float) -> RedisProtocol:
    """A connection to the Redis that redis-py's connection `options` name, logged in."""
    loop = asyncio.get_running_loop()
    try:
        if "path" in options:
            opening = loop.create_unix_connection(lambda: RedisProtocol(timeout_s), options["path"])
        else:
            opening = loop.create_connection(
                lambda: RedisProtocol(timeout_s),
                options.get("host", "localhost"),
                options.get("port", 6379),
            )
        _, protocol = await asyncio.wait_for(opening, timeout_s)
    except (TimeoutError, OSError) as e:
        raise NotSent(f"cannot connect to Redis: {e}") from None
    if options.get("password"):
        credentials = [options.get("username") or "default", options["password"]]
        await protocol.call(("AUTH", *credentials))
    if options.get("db"):
        await protocol.call(("SELECT", options["db"]))
    return protocol


class RedisProtocol(asyncio.Protocol):
    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.transport: asyncio.Transport | None = None
        self.reader = hiredis.Reader(encoding="utf-8", replyError=BaseParser.parse_error)
        self.waiting: deque[asyncio.Future[Any]] = deque()
        self.unsent: list[bytes] = []
        self.sent = 0  # calls written so far
        self.answered = 0  # replies read so far
        self.lost = False
        self.gone = asyncio.Event()

    def call(self, command: tuple[Any, ...]) -> asyncio.Future[Any]:
        if self.lost:
            raise NotSent("the Redis connection was lost")
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[Any] = loop.create_future()
        self.waiting.append(reply)
        if not self.unsent:
            loop.call_soon(self._flush)
        self.unsent.append(hiredis.pack_command(command))
        return reply

    def _flush(self) -> None:
        if self.lost or self.transport is None:
            return
        self.transport.write(b"".join(self.unsent))
        self.sent += len(self.unsent)
        self.unsent.clear()
        asyncio.get_running_loop().call_later(self.timeout_s, self._check_answered, self.sent)

    def _check_answered(self, sent: int) -> None:
        if self.answered < sent and not self.lost:
            self._fail(redis_errors.TimeoutError("Redis did not answer in time"))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        try:
            self._answer()
        except hiredis.ProtocolError as e:
            self._fail(redis_errors.ConnectionError(f"unreadable reply from Redis: {e}"))

    def _answer(self) -> None:
        while (reply := self.reader.gets()) is not False:
            self.answered += 1
            waiter = self.waiting.popleft()
            if waiter.done():  # its caller was cancelled
                continue
            if isinstance(reply, Exception):
                waiter.set_exception(reply)
            else:
                waiter.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(redis_errors.ConnectionError("Redis closed the connection"))
        self.gone.set()

    def close(self) -> None:
        self._fail(redis_errors.ConnectionError("the Redis connection was closed"))

    def _fail(self, error: Exception) -> None:
        self.lost = True
        written = len(self.waiting) - len(self.unsent)  # the queued calls come last
        while self.waiting:
            waiter = self.waiting.popleft()
            if not waiter.done():
                waiter.set_exception(error if written > 0 else NotSent(str(error)))
            written -= 1
        if self.transport is not None:
            self.transport.abort()
