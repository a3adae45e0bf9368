"""The broker on a Redis Cluster: sharded pub/sub, so a stream's events stay on the
shard of its slot. One SSUBSCRIBE per stream with local viewers, per worker, sent
to the master of the stream's slot through redis-py's `ClusterPubSub`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from typing import Any, NamedTuple

from redis import exceptions as redis_errors
from redis.asyncio.cluster import ClusterPubSub, RedisCluster

from gifting_server.hub.pubsub_broker import PubSubBroker, stream_of_channel
from gifting_server.ledger import keys

log = logging.getLogger("gifting_server.broker")

# `get_sharded_message` waits this long on each node's connection in turn: an idle
# node delays a message waiting on another by at most this, per idle node.
READ_WAIT_S = 0.01
# A lost node, a failover, a slot moved away, a cluster gone whole (redis-py raises
# `RedisClusterException`, not a `RedisError`, when no node answers the slot map):
# every error of a read or of subscribing again.
LOST = (redis_errors.RedisError, redis_errors.RedisClusterException, OSError, RuntimeError)


class _NodeName(NamedTuple):
    """What `ClusterPubSub.get_sharded_message(target_node=...)` reads of a node."""

    name: str


class ClusterBroker(PubSubBroker):
    """A `Broker` on a Redis Cluster (`decode_responses=False`).

    When a node's connection is lost (a master died) or a node drops a subscription
    (its slot moved to another master), the broker
    reloads the slot map, subscribes every followed stream again on a new
    `ClusterPubSub` and calls `on_resubscribed` for each once confirmed: events
    published while no subscription existed come from the history."""

    reader_name = "cluster-broker-reader"

    def __init__(self, cluster: RedisCluster) -> None:
        timeout_s = cluster.connection_kwargs.get("socket_timeout") or 5.0
        super().__init__(cluster.pubsub(), timeout_s)
        self.pubsub: ClusterPubSub
        self.cluster = cluster
        self.lost = False  # the pubsub lost a node and is not replaced yet
        # channel → SUNSUBSCRIBEs sent on this pubsub and not confirmed yet: a stream
        # left and followed again at once gets the confirmation of its leaving after
        # it is followed again, which is not its node dropping it.
        self.leaving: Counter[bytes] = Counter()

    async def _send_subscribe(self, channel: str) -> None:
        await self.pubsub.ssubscribe(channel)

    async def unsubscribe(self, stream_id: str) -> None:
        if self.confirmed.pop(stream_id, None) is not None:
            channel = keys.stream_channel(stream_id)
            with contextlib.suppress(*LOST):
                async with self.subscribing:
                    self.leaving[channel.encode()] += 1
                    await self.pubsub.sunsubscribe(channel)

    async def _read_forever(self) -> None:
        backoff = 0.05
        while True:
            try:
                if self.lost:
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 2.0)
                    await self._subscribe_again()
                    continue
                if not self.confirmed or not self.pubsub.node_pubsub_mapping:
                    await asyncio.sleep(0.05)  # nothing to read until a stream is followed
                    continue
                await self._read_each_node()
                backoff = 0.05
            except LOST as e:
                log.warning("sharded pub/sub lost (%r); subscribing again", e)
                self.lost = True

    async def _read_each_node(self) -> None:
        """At most one message from each node's connection, each looked up when read.

        Not `get_sharded_message()` round robin: it reads from a list taken before its
        first wait, so it may read a node's pubsub that a concurrent subscribe has put
        in the map but not connected yet, or that its last unsubscribe closed, and
        fail with "pubsub connection not set" on a connection that is fine."""
        waited = False
        for name in list(self.pubsub.node_pubsub_mapping):
            node_pubsub = self.pubsub.node_pubsub_mapping.get(name)
            if node_pubsub is None or node_pubsub.connection is None:
                continue  # closed and dropped, or its first subscribe is under way
            message = await self.pubsub.get_sharded_message(
                target_node=_NodeName(name), timeout=READ_WAIT_S
            )
            waited = True
            if message is not None:
                self._deliver(message)
        if not waited:  # let the subscribe under way connect
            await asyncio.sleep(READ_WAIT_S)

    async def _subscribe_again(self) -> None:
        """A new pubsub over a reloaded slot map, every followed stream subscribed on
        the master that serves it now. Their confirmations call `on_resubscribed`.
        While the cluster is down (no node answers, or the slot's master is still the
        dead one) it fails, and the reader tries again after its backoff."""
        async with self.subscribing:
            with contextlib.suppress(Exception):
                await self.pubsub.aclose()
            try:
                # redis-py tries each node in turn with the full timeout: with every
                # node hung that would hold the reload lock the history reads need.
                async with asyncio.timeout(self.timeout_s):
                    await self.cluster.nodes_manager.initialize()
                # After the reload: a pubsub's own repair on a new map never runs.
                self.pubsub = self.cluster.pubsub()
                self.leaving.clear()  # the closed pubsub's confirmations never come
                for stream_id in list(self.confirmed):
                    await self.pubsub.ssubscribe(keys.stream_channel(stream_id))
                self.lost = False
            except LOST as e:
                log.warning("subscribing again failed (%r); retrying", e)

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind, channel = message["type"], message["channel"]
        if kind == "smessage":
            self._published(channel, message["data"])
        elif kind == "sunsubscribe":
            if self.leaving[channel] > 0:  # asked for by `unsubscribe`
                self.leaving[channel] -= 1
                if not self.leaving[channel]:
                    del self.leaving[channel]
                return
            # Not asked for: the slot moved to another master, which unsubscribed
            # every client of its channels.
            if stream_of_channel(channel) in self.confirmed:
                log.warning("%r unsubscribed by its node (its slot moved)", channel)
                self.lost = True
        elif kind == "ssubscribe":
            self._confirmed(channel)
