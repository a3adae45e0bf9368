"""The deliverer: every worker runs one, in a background task of its own (never on
a gift's path). Each pass it looks at the streams that have endpoints; a stream is
delivered by one worker at a time (a lease in the stream's slot), which keeps its
messages in order. For each enabled endpoint it reads the stream's delivery log
past the endpoint's cursor, sends each message of the kinds the endpoint takes, one
after the other, and moves the cursor past each one answered with a 2xx. A failure
stops that endpoint until its next attempt, `retry_base_ms` doubled per failure in a
row (at most `retry_max_ms`); an endpoint whose oldest undelivered message is older
than `max_age_s` is disabled, with the reason. The cursor is in Redis: a worker that
dies, or a Redis restart, loses nothing; a message sent but not yet recorded is sent
again (at least once, the same message id).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from typing import Any

import httpx
from redis.exceptions import RedisError

from gifting_server import events, metrics
from gifting_server.config import WEBHOOK_LEASE_SPARE_MS, Webhooks
from gifting_server.errors import GiftingError
from gifting_server.ledger import keys
from gifting_server.ledger.store import Store, guarded
from gifting_server.logs import audit
from gifting_server.tasks import cancel_and_wait
from gifting_server.webhooks import records
from gifting_server.webhooks.records import hash_of
from gifting_server.webhooks.send import Attempt, delivery_body, new_client, post

log = logging.getLogger("gifting_server.webhooks")

# Streams one worker delivers at once; the others wait for its next pass.
MAX_STREAMS_AT_ONCE = 64
# A stream's backlog as last seen by this worker counts in its gauge this many passes.
BACKLOG_FRESH_POLLS = 3


def message_id(stream_id: str, event_id: int) -> str:
    """Stable for an event of a stream: every delivery and redelivery of it carries it."""
    return f"msg_{stream_id}_{event_id}"


def retry_delay_ms(failures: int, config: Webhooks) -> int:
    return int(min(config.retry_max_ms, config.retry_base_ms * 2 ** min(failures - 1, 40)))


def _failed(task: asyncio.Task[None]) -> bool:
    return task.done() and not task.cancelled() and task.exception() is not None


async def _end_all(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel each task and wait until every one has ended, however often the caller is
    cancelled meanwhile (a shutdown cancels again every 0.1 s: `cancel_and_wait`), and
    cancel again those that swallowed a cancellation; then the caller's own
    cancellation, if any, goes on."""
    cancelled = False
    while busy := [t for t in tasks if not t.done()]:
        for task in busy:
            task.cancel()
        try:
            await asyncio.wait(busy, timeout=0.1)
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError


class Deliverer:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.config = store.settings.webhooks
        self.token = secrets.token_hex(8)  # this worker's name on a lease
        self.running: dict[str, asyncio.Task[None]] = {}
        self.backlog: dict[str, tuple[int, float]] = {}
        self.task: asyncio.Task[None] | None = None
        # Made here, not at start: the test endpoint uses it from the app's first request.
        self.http = new_client()

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name="webhook deliverer")

    async def stop(self) -> None:
        if self.task:
            await cancel_and_wait(self.task)
        for task in list(self.running.values()):
            await cancel_and_wait(task)
        await self.http.aclose()

    async def _run(self) -> None:
        failing = False  # one line when Redis goes away and one when it is back, not one a pass
        while True:
            try:
                await self.pass_once()
                if failing:
                    log.info("webhook deliveries resumed")
                failing = False
            except (GiftingError, RedisError, OSError) as e:
                if not failing:
                    log.warning("webhook deliveries wait for Redis: %s", e)
                failing = True
            except Exception:
                log.exception("webhook deliveries failed a pass")
            await asyncio.sleep(self.config.poll_ms / 1000)

    async def pass_once(self) -> None:
        """Start delivering each stream with endpoints that no one delivers now."""
        stream_ids = await self._members(keys.WEBHOOK_STREAMS)
        for stream_id in stream_ids:
            if stream_id in self.running or len(self.running) >= MAX_STREAMS_AT_ONCE:
                continue
            # Before the lease is asked for: its time runs from no sooner than this.
            leased_at = time.monotonic()
            if not await self._lease(stream_id, self.config.lease_ms):
                continue
            task = asyncio.create_task(self._deliver_stream(stream_id, leased_at))
            self.running[stream_id] = task
            task.add_done_callback(self._forget_task)
        self._report_backlog()

    def _forget_task(self, task: asyncio.Task[None]) -> None:
        for stream_id, running in list(self.running.items()):
            if running is task:
                del self.running[stream_id]

    async def _members(self, key: str) -> set[str]:
        return {str(m) for m in await guarded(self.store.redis.smembers(key))}

    async def _lease(self, stream_id: str, ttl_ms: int) -> bool:
        result = await self.store.run_script(
            "webhook_lease", [keys.webhook_lease(stream_id)], [self.token, ttl_ms]
        )
        return int(result[1]) == 1

    async def _deliver_stream(self, stream_id: str, leased_at: float) -> None:
        # Stop in time for the last attempt to end while the lease still holds, counted
        # from the lease's request, not from this task's start: a task that starts late
        # (a busy loop) must not send an attempt another worker's lease may cover.
        spare_s = WEBHOOK_LEASE_SPARE_MS / 1000
        deadline = leased_at + self.config.lease_ms / 1000 - self.config.timeout_s - spare_s
        try:
            active = await self._members(keys.stream_webhooks_active(stream_id))
            if not active:
                await self._forget_if_idle(stream_id)
                return
            await self._deliver_round(stream_id, active, deadline)
            await self._trim(stream_id)
        except (GiftingError, RedisError, OSError) as e:
            log.warning("webhook deliveries of stream %s stopped: %s", stream_id, e)
        except Exception:
            log.exception("webhook deliveries of stream %s failed", stream_id)
        finally:
            with contextlib.suppress(GiftingError, RedisError, OSError):  # it ends by itself
                await self._lease(stream_id, 0)

    async def _deliver_round(self, stream_id: str, active: set[str], deadline: float) -> None:
        """Deliver each endpoint of the stream, on its own, until none has anything
        left. While one endpoint's attempt is under way, an endpoint that was done (or
        that was registered after the round began) is started again each `poll_ms`:
        its new messages must not wait for another's receiver to time out. Every
        endpoint's delivery ends before the round does, and so before the lease is
        given up: an error of one must not leave another delivering unleased."""
        poll_s = self.config.poll_ms / 1000
        running: dict[str, asyncio.Task[None]] = {}
        try:
            while True:
                for webhook_id in sorted(active):
                    task = running.get(webhook_id)
                    if task is None or (task.done() and not _failed(task)):
                        running[webhook_id] = asyncio.create_task(
                            self._deliver_endpoint(stream_id, webhook_id, deadline)
                        )
                busy = [t for t in running.values() if not t.done()]
                if busy:
                    await asyncio.wait(busy, timeout=poll_s)
                # Ended when every endpoint's delivery has: one still on its way to an
                # attempt (reading the log, the secret) may yet start one that hangs,
                # and the others must go on being started meanwhile.
                if any(_failed(t) for t in running.values()) or all(
                    t.done() for t in running.values()
                ):
                    break
                if time.monotonic() >= deadline:
                    break
                active = await self._members(keys.stream_webhooks_active(stream_id))
            # Past the round's end (or an endpoint's error) the others end by themselves,
            # by the deadline at the latest.
            busy = [t for t in running.values() if not t.done()]
            if busy:
                await asyncio.wait(busy)
        except BaseException:
            # Cancelled (a shutdown), here or while waiting for the others, or the log
            # unreadable: end every endpoint's delivery before the lease is given up.
            await _end_all(list(running.values()))
            raise
        for task in running.values():
            error = task.exception() if _failed(task) else None
            if error is not None:
                raise error

    async def _forget_if_idle(self, stream_id: str) -> None:
        """No endpoint left to deliver to: take the stream off the set the deliverers
        read, then look again, for a registration may have come in between (it adds
        the stream after its endpoint: endpoints.register)."""
        redis = self.store.redis
        await guarded(redis.srem(keys.WEBHOOK_STREAMS, stream_id))
        if await guarded(redis.scard(keys.stream_webhooks_active(stream_id))):
            await guarded(redis.sadd(keys.WEBHOOK_STREAMS, stream_id))
        self.backlog.pop(stream_id, None)

    async def _deliver_endpoint(self, stream_id: str, webhook_id: str, deadline: float) -> None:
        """Deliver what the endpoint has waiting, in order, until it is all delivered,
        an attempt fails or the lease runs short."""
        redis = self.store.redis
        record = await hash_of(self.store, keys.webhook(stream_id, webhook_id))
        if not record or record.get("status") != "active":
            return
        kinds = set(record.get("kinds", "").split(","))
        cursor = int(record.get("cursor") or 0)
        failures = int(record.get("failures") or 0)
        next_at = int(record.get("next_at") or 0)
        passed = cursor  # the cursor to record: past what was delivered or not wanted
        while time.monotonic() < deadline:
            entries = await guarded(
                redis.xrange(
                    keys.webhook_log(stream_id), min=f"({passed}-0", count=self.config.batch
                )
            )
            if not entries:
                break  # the round starts it again while another's attempt goes on
            for entry_id, fields in entries:
                event_json = str((fields or {}).get("e", ""))
                event_id = int(str(entry_id).partition("-")[0])
                try:
                    envelope = events.envelope_of(event_json.encode())
                except ValueError:
                    passed = event_id  # not an event: nothing to deliver
                    continue
                if envelope.kind not in kinds:
                    passed = event_id
                    continue
                now = self.store.clock()
                if now - envelope.ts > self.config.max_age_s * 1000:
                    await self._record(stream_id, webhook_id, passed, cursor, failures, next_at)
                    await self._disable(stream_id, webhook_id, record, event_id, envelope.ts)
                    return
                if now < next_at or time.monotonic() >= deadline:
                    await self._record(stream_id, webhook_id, passed, cursor, failures, next_at)
                    return
                secret = await self._secret(stream_id, webhook_id, record)
                if secret is None:
                    return  # deleted or disabled meanwhile
                mid = message_id(stream_id, event_id)
                attempt = await self._attempt(stream_id, record["url"], secret, mid, event_json)
                if attempt.ok:
                    passed, failures, next_at = event_id, 0, 0
                    await self._record(stream_id, webhook_id, passed, -1, 0, 0, attempt, mid)
                    cursor = passed
                else:
                    failures += 1
                    next_at = attempt.at_ms + retry_delay_ms(failures, self.config)
                    await self._record(
                        stream_id, webhook_id, passed, cursor, failures, next_at, attempt, mid
                    )
                    return
        await self._record(stream_id, webhook_id, passed, cursor, failures, next_at)

    async def _secret(self, stream_id: str, webhook_id: str, record: dict[str, str]) -> str | None:
        """The secret in force, read before each attempt (a rotation signs the next
        delivery); None when the endpoint was deleted or disabled meanwhile."""
        redis = self.store.redis
        secret, status = await guarded(
            redis.hmget(keys.webhook(stream_id, webhook_id), "secret", "status")
        )
        if status != "active":
            return None
        if record.get("scope") != records.SCOPE_ALL:
            return str(secret)
        # The secret of the streamer's endpoint for all their streams.
        owner = keys.streamer_webhook(record.get("streamer", ""), webhook_id)
        secret = await guarded(redis.hget(owner, "secret"))
        if secret is None:  # deleted after this stream's record was added: remove it too
            await records.remove(self.store, stream_id, webhook_id)
            return None
        return str(secret)

    async def _attempt(
        self, stream_id: str, url: str, secret: str, mid: str, event_json: str
    ) -> Attempt:
        attempt = await post(
            self.http,
            url,
            secret,
            mid,
            delivery_body(mid, stream_id, event_json),
            timeout_s=self.config.timeout_s,
            max_body_bytes=self.config.max_body_bytes,
            max_response_bytes=self.config.max_response_bytes,
            allow_private=self.config.allow_private,
        )
        metrics.WEBHOOK_DELIVERIES.labels(outcome="ok" if attempt.ok else "failed").inc()
        return attempt

    async def _record(
        self,
        stream_id: str,
        webhook_id: str,
        passed: int,
        cursor: int,
        failures: int,
        next_at: int,
        attempt: Attempt | None = None,
        mid: str = "",
    ) -> None:
        """Write the endpoint's state when something changed (`cursor`: the one stored)."""
        if attempt is None and passed == cursor:
            return
        await self.store.run_script(
            "record_webhook_attempt",
            [keys.webhook(stream_id, webhook_id), keys.webhook_attempts(stream_id, webhook_id)],
            [
                str(passed) if passed != cursor else "",
                failures,
                next_at,
                json.dumps(attempt.public(mid)) if attempt else "",
                self.config.attempts_kept,
            ],
        )

    async def _disable(
        self, stream_id: str, webhook_id: str, record: dict[str, str], event_id: int, ts: int
    ) -> None:
        reason = (
            f"message {message_id(stream_id, event_id)} (from {ts} unix ms) was not delivered"
            f" within [webhooks] max_age_s = {self.config.max_age_s}"
        )
        result = await self.store.run_script(
            "disable_webhook",
            [
                keys.stream(stream_id),
                keys.stream_webhooks_active(stream_id),
                keys.webhook(stream_id, webhook_id),
                keys.webhook_log(stream_id),
            ],
            [webhook_id, reason, self.store.clock()],
        )
        if int(result[1]):
            metrics.WEBHOOKS_DISABLED.inc()
            audit(
                "webhook_disabled",
                webhook_id=webhook_id,
                stream_id=stream_id,
                streamer_id=record.get("streamer", ""),
                reason=reason,
            )

    async def _trim(self, stream_id: str) -> None:
        """Drop from the log what every enabled endpoint has: entries up to the lowest
        cursor. An endpoint registered meanwhile starts at the stream's last event,
        past anything dropped."""
        redis = self.store.redis
        active = await self._members(keys.stream_webhooks_active(stream_id))
        cursors = []
        for webhook_id in active:
            cursor = await guarded(redis.hget(keys.webhook(stream_id, webhook_id), "cursor"))
            if cursor is not None:
                cursors.append(int(cursor))
        log_key = keys.webhook_log(stream_id)
        if cursors:
            await guarded(redis.xtrim(log_key, minid=f"{min(cursors)}-1", approximate=False))
        # What is left is what some enabled endpoint still waits for: the backlog.
        self.backlog[stream_id] = (await guarded(redis.xlen(log_key)), time.monotonic())

    def _report_backlog(self) -> None:
        now = time.monotonic()
        fresh_s = BACKLOG_FRESH_POLLS * self.config.poll_ms / 1000
        fresh = {s: b for s, b in self.backlog.items() if now - b[1] < fresh_s}
        self.backlog = fresh
        metrics.WEBHOOK_BACKLOG.set(sum(b for b, _ in fresh.values()))


async def send_test(
    store: Store,
    client: httpx.AsyncClient,
    stream_id: str | None,
    record: dict[str, str],
    attempts_key: str,
) -> dict[str, Any]:
    """A test delivery, now, outside the log: a `test` event the endpoint can tell
    apart, signed with its current secret. The answer says how it went."""
    config = store.settings.webhooks
    now = store.clock()
    mid = f"msg_test_{secrets.token_hex(8)}"
    event_json = f'{{"event_id":0,"kind":"test","ts":{now}}}'
    attempt = await post(
        client,
        record.get("url", ""),
        record.get("secret", ""),
        mid,
        delivery_body(mid, stream_id, event_json),
        timeout_s=config.timeout_s,
        max_body_bytes=config.max_body_bytes,
        max_response_bytes=config.max_response_bytes,
        allow_private=config.allow_private,
    )
    metrics.WEBHOOK_DELIVERIES.labels(outcome="test_ok" if attempt.ok else "test_failed").inc()
    public = attempt.public(mid)
    async with store.redis.pipeline(transaction=False) as pipe:
        pipe.lpush(attempts_key, json.dumps(public))
        pipe.ltrim(attempts_key, 0, config.attempts_kept - 1)
        await guarded(pipe.execute())
    return public
