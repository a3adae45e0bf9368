"""Script calls on a Redis Cluster: one pipelined connection per master.

A call goes to the master of its keys' slot, from the cluster client's slot map;
the calls of one loop pass to one master go out in one write, as on one Redis
(`pipeline.py`). Every key of one call must be in one slot, else `CrossSlotCall`.

What the cluster answers is followed here, within one deadline (the client's
socket timeout) for the whole call:

- `MOVED slot host:port`: the slot has a new owner. Resend there, reload the map.
- `ASK slot host:port`: the slot is migrating and the key is already on the target.
  Send `ASKING` and the call there, on one connection, in one write; the map stays.
- `NOSCRIPT` from a node that never saw the script (a promoted replica, the target
  of a migration, a restarted node): load it on that node, send the call again.
- A call that was never written (`NotSent`: the master's connection refused or
  lost before the write): reload the map and send it to the new owner, if the
  slot has one; else it fails, retryable. A call that was written and then lost
  its connection or its deadline may have run, so it is never sent twice: it
  fails with `ConnectionError` / `TimeoutError`, which `store.guarded` turns into
  `service_unavailable`; the client retries with the same idempotency key.

With `[redis] replicas_acked = N`, each master's connection ends every write of
acked calls with one `WAIT` (`pipeline.py`): a call is answered once N replicas of
its master have it, else it fails with `ReplicasNotAcked`. A redirection (MOVED,
ASK, NOSCRIPT) is an error reply, which wrote nothing: it is followed as above.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from redis import exceptions as redis_errors
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from gifting_server.ledger.pipeline import (
    DEFAULT_TIMEOUT_S,
    NO_REPLICA_ACK,
    NotSent,
    RedisProtocol,
    ReplicaAck,
    SlotCommand,
    open_connection,
)
from gifting_server.ledger.slot_map import SlotMapReader

Address = tuple[str, int]
# Keys whose slot `master_of` remembers: the streams, senders and streamers of the
# gifts under way; forgotten all at once past this many (a few MB).
REMEMBERED_SLOTS = 16_384
# A call is redirected at most this often (MOVED, ASK, a reload, a NOSCRIPT load).
MAX_HOPS = 5


class CrossSlotCall(ValueError):
    """A script call whose keys live in more than one cluster slot: a bug in the caller."""


def slot_of(keys: list[str]) -> int:
    # Keys with one hash tag are in one slot: the CRC is computed once, not a key each
    # (a batched credit has dozens of keys). Any other set is checked key by key.
    if keys:
        tag = hash_tag(keys[0])
        if all(hash_tag(key) == tag for key in keys):
            return key_slot(keys[0].encode())
    slots = {key_slot(key.encode()) for key in keys}
    if len(slots) != 1:
        raise CrossSlotCall(
            f"a script's keys must share one cluster slot (one hash tag); {keys!r} "
            f"span slots {sorted(slots)}"
            if slots
            else "a script call needs at least one key"
        )
    return slots.pop()


def hash_tag(key: str) -> str:
    """What Redis hashes of `key`: the text between its first `{` and the next `}` when
    that is not empty, else the whole key (as `redis.crc.key_slot`)."""
    start = key.find("{")
    if start > -1:
        end = key.find("}", start + 1)
        if end > start + 1:
            return key[start + 1 : end]
    return key


class ClusterScriptPipeline:
    def __init__(
        self,
        client: RedisCluster,
        sources: Mapping[str, str],
        replica_ack: ReplicaAck = NO_REPLICA_ACK,
    ) -> None:
        """Reach the masters of `client`'s cluster, with its timeout; `sources` maps
        each script's sha to its source, to load it where it is missing."""
        self.client = client
        self.sources = sources
        self.replica_ack = replica_ack
        self.options = {
            name: value
            for name, value in client.get_connection_kwargs().items()
            if name in ("username", "password")
        }
        timeout = client.get_connection_kwargs().get("socket_timeout")
        self.timeout_s = float(timeout or DEFAULT_TIMEOUT_S)
        # A call may wait for the WAIT of the write before its own, then for its own.
        self.deadline_s = self.timeout_s + 2 * replica_ack.timeout_s
        self._connections: dict[Address, RedisProtocol] = {}
        self._connecting: dict[Address, asyncio.Future[RedisProtocol]] = {}
        self.slot_map = SlotMapReader(client.nodes_manager.initialize, self.timeout_s)
        self._slots: dict[str, int] = {}  # key → its slot (`master_of`)

    def master_of(self, key: str) -> str | None:
        """The master `key`'s calls go to now ("host:port"), by the slot map as last
        read; None before it is read or when no master serves the slot. Asked for each
        step of every gift (its place in flight): a key's slot is remembered."""
        slot = self._slots.get(key)
        if slot is None:
            if len(self._slots) >= REMEMBERED_SLOTS:
                self._slots.clear()
            slot = self._slots[key] = key_slot(key.encode())
        nodes = self.client.nodes_manager.slots_cache.get(slot)
        return nodes[0].name if nodes else None

    def connected_nodes(self) -> list[Address]:
        """The nodes this pipeline has a live connection to (masters, or former ones)."""
        return [address for address, protocol in self._connections.items() if not protocol.lost]

    async def evalsha(
        self, sha: str, keys: list[str], args: list[Any], *, acked: bool = True
    ) -> Any:
        """The script's reply; when `acked`, only once the replicas have its writes."""
        command = ("EVALSHA", sha, len(keys), *keys, *args)
        return await self._routed(slot_of(keys), sha, command, acked)

    async def call(self, key: str, command: tuple[Any, ...], *, acked: bool = False) -> Any:
        """Any command on `key`'s master, pipelined like the scripts; when `acked`,
        answered only once the replicas have its writes."""
        return await self._routed(key_slot(key.encode()), "", command, acked)

    async def calls(self, commands: Sequence[SlotCommand]) -> list[Any]:
        """Plain commands, each on its slot's master, answered in their order, each reply
        or its error as a value. Those whose master is known and connected are written
        at once, a future each (no task, no deadline of their own: the connection's
        timeout bounds them); the rest, and any the cluster redirects or that was never
        written, go the whole way (`call`'s), together. The relay reads a thousand
        outboxes a pass: as a task and a deadline each, and a slot computed from each
        key, that cost an idle worker on a cluster ~30 ms of CPU a second."""
        started = asyncio.get_running_loop().time()  # each command's one deadline counts from here
        answers: list[Any] = [None] * len(commands)
        pending: list[tuple[int, asyncio.Future[Any]]] = []
        slow: list[int] = []
        for i, (slot, command) in enumerate(commands):
            protocol = self._connected(slot)
            if protocol is None:
                slow.append(i)
            else:
                pending.append((i, protocol.call(command)))
        replies = await asyncio.gather(*(reply for _, reply in pending), return_exceptions=True)
        for (i, _), reply in zip(pending, replies, strict=True):
            if isinstance(reply, (redis_errors.AskError, NotSent)):  # MOVED is an AskError
                slow.append(i)
            else:
                answers[i] = reply
        # Together, not one by one: the commands of a master that hangs would each wait
        # out a deadline after the one before.
        routed = [self._routed(commands[i][0], "", commands[i][1], False, started) for i in slow]
        for i, answer in zip(
            slow, await asyncio.gather(*routed, return_exceptions=True), strict=True
        ):
            answers[i] = answer
        return answers

    async def _routed(
        self,
        slot: int,
        sha: str,
        command: tuple[Any, ...],
        acked: bool,
        started: float | None = None,
    ) -> Any:
        # The usual call: its slot's master known and connected, no redirection. Its
        # connection bounds it (a write unanswered in time fails every call of it), so
        # it needs no deadline of its own: a timer each step cost ~5% of a gift's worker
        # CPU. Anything else (a redirection, a call never written, no connection yet)
        # takes the whole route below, within what is left of the deadline: a call held
        # behind a WAIT and dropped unsent with its hung master's connection has waited
        # out most of it already. `started`: when the caller began it, if before now.
        protocol = self._connected(slot)
        if protocol is not None:
            if started is None:
                started = protocol.loop.time()
            try:
                return await protocol.call(command, acked=acked)
            except (redis_errors.AskError, redis_errors.NoScriptError, NotSent):
                pass  # a redirection (MOVED is an AskError) ran nothing: the route follows
        if started is None:
            started = asyncio.get_running_loop().time()
        try:
            async with asyncio.timeout_at(started + self.deadline_s):
                return await self._route(slot, sha, command, acked)
        except TimeoutError:
            raise redis_errors.TimeoutError("Redis Cluster did not answer in time") from None

    def _connected(self, slot: int) -> RedisProtocol | None:
        """The live connection to the master the slot map names for `slot`, if there is
        one: where a call goes straight, without the whole route."""
        nodes = self.client.nodes_manager.slots_cache.get(slot)
        if not nodes:
            return None
        protocol = self._connections.get((nodes[0].host, int(nodes[0].port)))
        return None if protocol is None or protocol.lost else protocol

    async def close(self) -> None:
        connections, self._connections = list(self._connections.values()), {}
        for protocol in connections:
            protocol.close()
        for protocol in connections:
            if protocol.transport is not None:
                await protocol.gone.wait()

    async def _route(self, slot: int, sha: str, command: tuple[Any, ...], acked: bool) -> Any:
        address = await self._owner(slot)
        asking = loaded = False
        for _ in range(MAX_HOPS):
            try:
                protocol = await self._connection(address)
                return await self._send(protocol, command, asking, acked)
            except redis_errors.MovedError as moved:  # before AskError: it is one
                address, asking = moved.node_addr, False
                await self._reload()
            except redis_errors.AskError as ask:
                address, asking = ask.node_addr, True
            except redis_errors.NoScriptError:
                if loaded or sha not in self.sources:
                    raise
                await protocol.call(("SCRIPT", "LOAD", self.sources[sha]))
                loaded = True
            except NotSent:
                await self._reload()
                owner = await self._owner(slot)
                if asking or owner == address:
                    raise
                address = owner
        raise redis_errors.ClusterError(f"slot {slot}: more than {MAX_HOPS} redirections")

    @staticmethod
    async def _send(
        protocol: RedisProtocol, command: tuple[Any, ...], asking: bool, acked: bool
    ) -> Any:
        if not asking:
            return await protocol.call(command, acked=acked)
        asked = protocol.call(("ASKING",))  # answered first: same write, same socket
        try:
            return await protocol.call(command, acked=acked)
        finally:
            if asked.done() and not asked.cancelled():
                asked.exception()  # read, so an error here is not logged as lost

    async def _owner(self, slot: int) -> Address:
        manager = self.client.nodes_manager
        if not manager.slots_cache:
            await self._reload()
        try:
            node = manager.get_node_from_slot(slot)
        except redis_errors.SlotNotCoveredError as e:
            raise NotSent(str(e)) from None
        return node.host, int(node.port)

    async def _reload(self) -> None:
        """Read the slot map again: concurrent calls share one reading, bounded by the
        timeout (`slot_map.py`)."""
        await self.slot_map.read()

    async def _connection(self, address: Address) -> RedisProtocol:
        protocol = self._connections.get(address)
        if protocol is not None and not protocol.lost:
            return protocol
        connecting = self._connecting.get(address)
        if connecting is None:
            connecting = asyncio.ensure_future(self._open(address))
            self._connecting[address] = connecting
        try:
            return await asyncio.shield(connecting)
        finally:
            if connecting.done() and self._connecting.get(address) is connecting:
                del self._connecting[address]

    async def _open(self, address: Address) -> RedisProtocol:
        host, port = address
        protocol = await open_connection(
            {**self.options, "host": host, "port": port}, self.timeout_s, self.replica_ack
        )
        self._connections[address] = protocol
        return protocol
