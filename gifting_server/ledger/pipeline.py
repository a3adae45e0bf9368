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

With `[redis] replicas_acked = N` (`ReplicaAck`), a write that holds acked calls
ends with one `WAIT N timeout_ms`, which covers every call before it on the
connection. Their replies are held until the WAIT answers; if fewer than N
replicas have the writes by then, each of them fails with `ReplicasNotAcked`
(the scripts did run on the master: the client retries with the same
idempotency key and is answered from its record). With N = 0 no WAIT is sent.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import hiredis
from redis import exceptions as redis_errors
from redis._parsers.base import BaseParser
from redis.asyncio import Redis

DEFAULT_TIMEOUT_S = 5.0

# A plain command and the cluster slot of its keys (`calls`; ignored on one Redis).
SlotCommand = tuple[int, tuple[Any, ...]]


class NotSent(redis_errors.ConnectionError):
    """The call was never written to Redis, so it cannot have run."""


class ReplicasNotAcked(redis_errors.RedisError):
    """The call ran on the master, but fewer replicas than asked confirmed its write
    within the timeout. Nothing is undone: the same call again (same idempotency
    key) is answered from its record, and waits for the replicas once more."""

    def __init__(self, wanted: int, acked: int | Exception) -> None:
        self.wanted = wanted
        how = f"{acked} acknowledged" if isinstance(acked, int) else f"WAIT failed: {acked}"
        super().__init__(f"the write is not yet on {wanted} replica(s) ({how})")


@dataclass(frozen=True)
class ReplicaAck:
    """Acked calls are answered only once `replicas` replicas have their writes, each
    write waiting at most `timeout_ms` for them. `replicas` 0: no WAIT, no waiting."""

    replicas: int = 0
    timeout_ms: int = 1000

    @property
    def timeout_s(self) -> float:
        """How much longer a write may take to be answered because of its WAIT."""
        return self.timeout_ms / 1000 if self.replicas else 0.0


NO_REPLICA_ACK = ReplicaAck()


class ScriptPipeline:
    def __init__(self, client: Redis, replica_ack: ReplicaAck = NO_REPLICA_ACK) -> None:
        """Reach the same Redis as `client`, with its timeout."""
        self.options = dict(client.connection_pool.connection_kwargs)
        self.timeout_s = float(self.options.get("socket_timeout") or DEFAULT_TIMEOUT_S)
        self.replica_ack = replica_ack
        self._protocol: RedisProtocol | None = None
        self._connecting: asyncio.Future[RedisProtocol] | None = None

    async def evalsha(
        self, sha: str, keys: list[str], args: list[Any], *, acked: bool = True
    ) -> Any:
        """The script's reply; when `acked`, only once the replicas have its writes."""
        command = ("EVALSHA", sha, len(keys), *keys, *args)
        return await self.call(keys[0] if keys else "", command, acked=acked)

    async def call(self, key: str, command: tuple[Any, ...], *, acked: bool = False) -> Any:
        """Any command, pipelined like the scripts; `key` names its slot on a cluster.
        When `acked`, answered only once the replicas have its writes."""
        protocol = self._protocol
        if protocol is None or protocol.lost:
            protocol = await self._connect()
        return await protocol.call(command, acked=acked)

    async def calls(self, commands: Sequence[SlotCommand]) -> list[Any]:
        """Plain commands, pipelined like the scripts and answered in their order, each
        reply or its error as a value: one future each, no task (the relay reads a
        thousand outboxes a pass)."""
        protocol = self._protocol
        if protocol is None or protocol.lost:
            try:
                protocol = await self._connect()
            except NotSent as e:  # each command's answer, as a failed call's would be
                return [e] * len(commands)
        replies = [protocol.call(command) for _, command in commands]
        return await asyncio.gather(*replies, return_exceptions=True)

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
        self._protocol = await open_connection(self.options, self.timeout_s, self.replica_ack)
        return self._protocol


async def open_connection(
    options: dict[str, Any], timeout_s: float, replica_ack: ReplicaAck = NO_REPLICA_ACK
) -> RedisProtocol:
    """A connection to the Redis that redis-py's connection `options` name, logged in."""
    loop = asyncio.get_running_loop()

    def protocol_factory() -> RedisProtocol:
        return RedisProtocol(timeout_s, replica_ack)

    try:
        if "path" in options:
            opening = loop.create_unix_connection(protocol_factory, options["path"])
        else:
            opening = loop.create_connection(
                protocol_factory, options.get("host", "localhost"), options.get("port", 6379)
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


@dataclass(eq=False)
class HeldReplies:
    """The acked calls of one write, answered when the WAIT that ends it answers."""

    wanted: int
    replies: list[tuple[asyncio.Future[Any], Any]] = field(default_factory=list)

    def release(self, acked: Any) -> None:
        """Answer each call: an error reply as it is (the call wrote nothing), any
        other reply only if `acked` (the WAIT's reply) says enough replicas have it."""
        short = isinstance(acked, Exception) or acked < self.wanted
        for waiter, reply in self.replies:
            if waiter.done():  # its caller was cancelled
                continue
            if isinstance(reply, Exception):
                waiter.set_exception(reply)
            elif short:
                waiter.set_exception(ReplicasNotAcked(self.wanted, acked))
            else:
                waiter.set_result(reply)

    def fail(self, error: Exception) -> None:
        for waiter, _ in self.replies:
            if not waiter.done():
                waiter.set_exception(error)


# What a reply answers: a caller's future (held until the write's WAIT answers when
# the HeldReplies is given), or, with no future, the WAIT of that HeldReplies.
Waiter = tuple[asyncio.Future[Any] | None, HeldReplies | None]


class RedisProtocol(asyncio.Protocol):
    def __init__(self, timeout_s: float, replica_ack: ReplicaAck = NO_REPLICA_ACK) -> None:
        self.timeout_s = timeout_s
        self.replica_ack = replica_ack
        # Made by the loop's protocol factory; kept, as each get_running_loop() is a
        # getpid() system call on Python 3.11.
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.reader = hiredis.Reader(encoding="utf-8", replyError=BaseParser.parse_error)
        self.waiting: deque[Waiter] = deque()
        self.unsent: list[bytes] = []
        self.held: HeldReplies | None = None  # the acked calls among `unsent`
        self.replicas_pending = False  # a WAIT was written and not yet answered
        self.sent = 0  # commands written so far (calls and WAITs)
        self.answered = 0  # replies read so far
        self.lost = False
        self.gone = asyncio.Event()

    def call(self, command: tuple[Any, ...], *, acked: bool = False) -> asyncio.Future[Any]:
        """Send `command` with the next write. An `acked` call is answered only after
        the WAIT that ends its write, when `replica_ack` asks for replicas."""
        if self.lost:
            raise NotSent("the Redis connection was lost")
        reply: asyncio.Future[Any] = self.loop.create_future()
        if not self.unsent and not self.replicas_pending:
            self.loop.call_soon(self._flush)
        held = None
        if acked and self.replica_ack.replicas:
            held = self.held = self.held or HeldReplies(self.replica_ack.replicas)
        self.waiting.append((reply, held))
        self.unsent.append(hiredis.pack_command(command))
        return reply

    def _flush(self) -> None:
        if self.lost or self.transport is None or not self.unsent:
            return
        if self.held is not None:  # one WAIT after the write's last call covers them all
            wait: tuple[Any, ...] = ("WAIT", self.replica_ack.replicas, self.replica_ack.timeout_ms)
            self.unsent.append(hiredis.pack_command(wait))
            self.waiting.append((None, self.held))
            self.held = None
            # Redis reads nothing more from this connection until the WAIT answers, so
            # the calls made meanwhile wait here and go out together after it, under
            # one WAIT: a replica that is down costs each call one timeout, not a queue
            # of them.
            self.replicas_pending = True
        self.transport.write(b"".join(self.unsent))
        self.sent += len(self.unsent)
        self.unsent.clear()
        # This write's WAIT may hold its replies for its whole timeout: that is not
        # Redis failing to answer.
        timeout_s = self.timeout_s + self.replica_ack.timeout_s
        self.loop.call_later(timeout_s, self._check_answered, self.sent)

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
            waiter, held = self.waiting.popleft()
            if waiter is None:
                assert held is not None
                held.release(reply)
                self.replicas_pending = False
                if self.unsent:
                    self.loop.call_soon(self._flush)
            elif held is not None:
                held.replies.append((waiter, reply))
            elif waiter.done():  # its caller was cancelled
                continue
            elif isinstance(reply, Exception):
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
        self.held = None
        written = len(self.waiting) - len(self.unsent)  # the queued calls come last
        while self.waiting:
            waiter, held = self.waiting.popleft()
            if waiter is None:
                assert held is not None
                held.fail(error)  # answered calls whose WAIT never answered: they ran
            elif not waiter.done():
                waiter.set_exception(error if written > 0 else NotSent(str(error)))
            written -= 1
        if self.transport is not None:
            self.transport.abort()
