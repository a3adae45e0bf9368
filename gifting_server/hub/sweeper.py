"""Periodic work of each worker for the streams it serves: close streaks whose
quiet window passed, publish the viewer count and the top gifters when they
changed, and ping every connection to drop dead peers.

Every publication is an atomic script, so when several workers sweep the same
stream each streak still ends once and each change is published once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable

import orjson

from gifting_server.errors import GiftingError
from gifting_server.hub.hub import Hub
from gifting_server.ledger import keys, streams
from gifting_server.ledger.store import Store, guarded
from gifting_server.tasks import cancel_and_wait

log = logging.getLogger("gifting_server.sweeper")

STREAK_SWEEP_S = 0.1
STATE_PUBLISH_S = 1.0
PRESENCE_TTL_MS = 10_000
TOP_GIFTERS = 10
PING_STEP = 256


class Sweeper:
    def __init__(self, hub: Hub, store: Store, connections: Callable[[], list[object]]) -> None:
        self.hub = hub
        self.store = store
        self.connections = connections
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.task: asyncio.Task[None] | None = None
        # stream → when this worker last wrote its viewer count there (presence); a
        # stream stays here one more round after its last local viewer left, so
        # that its count drops at once instead of when the presence expires.
        self.presence_at: dict[str, float] = {}

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name="sweeper")

    async def stop(self) -> None:
        if self.task:
            await cancel_and_wait(self.task)

    async def _run(self) -> None:
        next_state = next_ping = time.monotonic()
        while True:
            await asyncio.sleep(STREAK_SWEEP_S)
            now = time.monotonic()
            try:
                await self.close_streaks(now)
                await self.publish_viewer_counts(now)
                if now >= next_state:
                    next_state = now + STATE_PUBLISH_S
                    await self.publish_states()
            except GiftingError as e:
                log.warning("sweep skipped: %s", e.message)
            except Exception:
                log.exception("sweep failed")
            if now >= next_ping:
                next_ping = now + self.hub.settings.websocket.ping_interval_s
                self.ping_all()

    def ping_all(self) -> None:
        self._ping_step(self.connections(), 0)

    def _ping_step(self, connections: list[object], start: int) -> None:
        """Ping a slice, then let the loop read its sockets before the next one: a
        ping is a write (~10 µs), and 10,000 of them at once would stall fan-out."""
        for connection in connections[start : start + PING_STEP]:
            try:
                connection.ping()  # type: ignore[attr-defined]
            except Exception:
                # One broken connection must not stop the heartbeat of the others.
                log.exception("ping failed")
        if start + PING_STEP < len(connections):
            asyncio.get_running_loop().call_soon(self._ping_step, connections, start + PING_STEP)

    def streams_to_sweep(self, now: float) -> set[str]:
        for stream_id, until in list(self.hub.gifted_streams.items()):
            if until < now:
                del self.hub.gifted_streams[stream_id]
        return set(self.hub.rooms) | set(self.hub.gifted_streams)

    async def close_streaks(self, now: float) -> None:
        settings = self.store.settings
        for stream_id in self.streams_to_sweep(now):
            await self.store.run_script(
                "close_streaks",
                [
                    keys.open_streaks(stream_id),
                    keys.stream(stream_id),
                    keys.stream_history(stream_id),
                ],
                [
                    self.store.clock(),
                    settings.limits.combo_window_ms,
                    settings.history.max_events,
                    keys.stream_channel(stream_id),
                    100,
                ],
            )

    async def publish_states(self) -> None:
        for stream_id in list(self.hub.rooms):
            await self.publish_top_gifters(stream_id)

    async def publish_viewer_counts(self, now: float) -> None:
        """Each stream's count once a second per stream: a stream this worker just
        began to serve at once, and one whose last local viewer left one more time."""
        for stream_id in set(self.hub.rooms) | set(self.presence_at):
            if now - self.presence_at.get(stream_id, float("-inf")) < STATE_PUBLISH_S:
                continue
            local = self.hub.local_viewers(stream_id)
            await self.publish_viewers(stream_id, local)
            if local or stream_id in self.hub.rooms:
                self.presence_at[stream_id] = now
            else:
                del self.presence_at[stream_id]

    async def publish_viewers(self, stream_id: str, local: int) -> int:
        now = self.store.clock()
        key = keys.presence(stream_id)
        redis = self.store.redis
        if local:
            await guarded(redis.hset(key, self.worker_id, f"{local}|{now + PRESENCE_TTL_MS}"))
            await guarded(redis.pexpire(key, PRESENCE_TTL_MS * 6))
        else:
            await guarded(redis.hdel(key, self.worker_id))
        entries: dict[str, str] = await guarded(redis.hgetall(key))  # type: ignore[arg-type]
        total, stale = 0, []
        for worker, value in entries.items():
            count, _, expires = value.partition("|")
            if int(expires) < now:
                stale.append(worker)
            else:
                total += int(count)
        if stale:
            await guarded(redis.hdel(key, *stale))
        await self._publish_state(stream_id, "last_viewers", f'"count":{total}', "viewers")
        return total

    async def publish_top_gifters(self, stream_id: str) -> None:
        entries = await streams.leaderboard(self.store, stream_id, "stream", TOP_GIFTERS)
        body = '"period":"stream","entries":' + orjson.dumps(entries).decode()
        await self._publish_state(stream_id, "last_top", body, "leaderboard")

    async def _publish_state(self, stream_id: str, field: str, state: str, kind: str) -> None:
        await self.store.run_script(
            "publish_state",
            [keys.stream(stream_id), keys.stream_history(stream_id)],
            [
                field,
                state,
                kind,
                self.store.clock(),
                self.store.settings.history.max_events,
                keys.stream_channel(stream_id),
            ],
        )
