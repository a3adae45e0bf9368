"""Loads the Lua scripts shipped with the package and calls them with EVALSHA.

Calls go through the `ScriptPipeline` (one Redis) or the `ClusterScriptPipeline`;
on NOSCRIPT (a restarted or flushed Redis, a cluster node that never saw the
script) the script is loaded and the call retried, so callers never see that error.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Sequence
from importlib import resources
from typing import Any, ClassVar

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from gifting_server.ledger.cluster_pipeline import ClusterScriptPipeline
from gifting_server.ledger.pipeline import (
    NO_REPLICA_ACK,
    ReplicaAck,
    ScriptPipeline,
    SlotCommand,
)

SCRIPT_NAMES = (
    "send_gift",
    "send_gifts",
    "gift_gate",
    "debit_gift",
    "credit_stream",
    "credit_streamer",
    "credit_stream_batch",
    "gift_gate_batch",
    "credit_streamer_batch",
    "recharge",
    "claim_payment",
    "mark_payment_applied",
    "release_payment_claim",
    "cashout",
    "complete_cashout",
    "rotate_overlay_tokens",
    "set_daily_limit",
    "start_stream",
    "end_stream",
    "close_streaks",
    "publish_state",
    "control_alerts",
    "set_goal",
    "set_stream_settings",
    "index_webhook",
    "add_webhook",
    "add_streamer_webhook",
    "remove_webhook",
    "disable_webhook",
    "enable_webhook",
    "record_webhook_attempt",
    "rotate_webhook_secret",
    "webhook_lease",
    "battle_invite",
    "battle_lock",
    "battle_step",
    "battle_accept",
    "battle_start_side",
    "battle_close_side",
    "battle_release",
    "publish_battle",
)
# Never held for the replicas (`[redis] replicas_acked`): background upkeep no client
# waits on, redone by the next sweep if a failover loses it, and a gift's gate, which
# only reads.
# The deliverer's bookkeeping (lease, attempts) is upkeep too: a lost write redelivers.
UNACKED_SCRIPTS = frozenset(
    {
        "close_streaks",
        "publish_state",
        "gift_gate",
        "gift_gate_batch",
        "webhook_lease",
        "record_webhook_attempt",
    }
)
_LUA = resources.files("gifting_server.ledger") / "lua"
INCLUDE = re.compile(r'^--- @include "([a-z_]+)"$', re.MULTILINE)


def script_source(name: str) -> str:
    """The script as Redis runs it: its `--- @include "x"` lines replaced by lua/include/x.lua."""
    return with_includes((_LUA / f"{name}.lua").read_text())


def with_includes(source: str) -> str:
    """Shared Lua lives in lua/include/ and is inlined where a script names it, as
    bullmq does: Redis still gets one self-contained script, called with EVALSHA."""

    def include(line: re.Match[str]) -> str:
        return (_LUA / "include" / f"{line[1]}.lua").read_text().rstrip("\n")

    return INCLUDE.sub(include, source)


class Scripts:
    """One registered script per state change, looked up by name.

    One `Scripts` (and so one pipeline connection, one per master on a cluster) per
    Redis client and replica acknowledgement: stores built over the same client with
    the same `[redis]` settings share it (`Scripts.of(client, replica_ack)`)."""

    _of_client: ClassVar[
        weakref.WeakKeyDictionary[Redis | RedisCluster, dict[ReplicaAck, Scripts]]
    ] = weakref.WeakKeyDictionary()

    @classmethod
    def of(cls, redis: Redis | RedisCluster, replica_ack: ReplicaAck = NO_REPLICA_ACK) -> Scripts:
        of_client = cls._of_client.setdefault(redis, {})
        scripts = of_client.get(replica_ack)
        if scripts is None:
            scripts = of_client[replica_ack] = cls(redis, replica_ack)
        return scripts

    def __init__(
        self, redis: Redis | RedisCluster, replica_ack: ReplicaAck = NO_REPLICA_ACK
    ) -> None:
        self.redis = redis
        self._scripts: dict[str, AsyncScript] = {
            name: redis.register_script(script_source(name)) for name in SCRIPT_NAMES
        }
        self.pipeline: ScriptPipeline | ClusterScriptPipeline
        if isinstance(redis, RedisCluster):
            sources = {self._scripts[name].sha: script_source(name) for name in SCRIPT_NAMES}
            self.pipeline = ClusterScriptPipeline(redis, sources, replica_ack)
        else:
            self.pipeline = ScriptPipeline(redis, replica_ack)

    async def run(self, name: str, keys: list[str], args: list[Any]) -> list[Any]:
        script = self._scripts[name]
        acked = name not in UNACKED_SCRIPTS
        try:
            result = await self.pipeline.evalsha(script.sha, keys, args, acked=acked)
        except NoScriptError:
            await self.redis.script_load(script.script)
            result = await self.pipeline.evalsha(script.sha, keys, args, acked=acked)
        assert isinstance(result, list)
        return result

    async def command(self, key: str, *command: Any) -> Any:
        """A plain command on `key` through the same pipeline as the scripts: far
        cheaper than redis-py for the calls a gift or the relay makes by the thousand."""
        return await self.pipeline.call(key, command)

    async def commands(self, commands: Sequence[SlotCommand]) -> list[Any]:
        """Many plain commands at once, each with its keys' cluster slot, answered in
        their order, each reply or its error as a value: the relay reads a thousand
        outboxes a pass, a future each rather than a task each."""
        return await self.pipeline.calls(commands)

    async def close(self) -> None:
        await self.pipeline.close()
