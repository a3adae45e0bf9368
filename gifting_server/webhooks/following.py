"""Endpoints for all of a streamer's streams (registered without a `stream_id`).

Such an endpoint is kept with the streamer (keys.streamer_webhook: url, kinds, its
one secret) and added, as a record of scope "all", to each stream it follows, where
the deliverer treats it as any other endpoint of that stream (its own cursor, order
and max_age), signing with the streamer's secret. It follows the streams live when
it is registered and every stream that goes live through the API after
(`on_stream_started`). The two meet in either order: a registration writes the
endpoint, then reads the live streams; a stream's start adds itself to the live
streams, then reads the endpoints. A stream's record whose endpoint was deleted
meanwhile is removed by the deliverer that finds it (deliver.py).
"""

from __future__ import annotations

from typing import Any

from gifting_server.errors import ErrorCode, GiftingError
from gifting_server.ledger import keys
from gifting_server.ledger.store import Store, guarded
from gifting_server.webhooks import records

ALL_STREAMS = "*"  # the streamer's index names this instead of a stream


async def create(
    store: Store, user: str, webhook_id: str, url: str, kinds: str
) -> tuple[str, bool]:
    """The endpoint with the streamer: its secret, and whether it existed (a retried
    registration). The same id with another url or kinds: `idempotency_conflict`."""
    result = await store.run_script(
        "add_streamer_webhook",
        [keys.streamer_webhook(user, webhook_id)],
        [url, kinds, records.new_secret(), store.clock()],
    )
    return str(result[1]), bool(int(result[2]))


async def follow_live_streams(store: Store, user: str, webhook_id: str) -> None:
    for stream_id in await _members(store, keys.streamer_live_streams(user)):
        await _follow(store, user, webhook_id, stream_id)


async def on_stream_started(store: Store, user: str, stream_id: str) -> None:
    """A stream went live (or was live already): every endpoint of the streamer for
    all their streams follows it (again: a record that exists is left as it is)."""
    await guarded(store.redis.sadd(keys.streamer_live_streams(user), stream_id))
    index = await records.hash_of(store, keys.streamer_webhooks(user))
    for webhook_id, scope in sorted(index.items()):
        if scope == ALL_STREAMS:
            await _follow(store, user, webhook_id, stream_id)


async def on_stream_ended(store: Store, user: str, stream_id: str) -> None:
    await guarded(store.redis.srem(keys.streamer_live_streams(user), stream_id))


async def _follow(store: Store, user: str, webhook_id: str, stream_id: str) -> None:
    record = await records.hash_of(store, keys.streamer_webhook(user, webhook_id))
    if not record:
        return  # deleted, or not yet written: its registration adds the stream
    await guarded(store.redis.sadd(keys.streamer_webhook_streams(user, webhook_id), stream_id))
    try:
        await records.add(
            store, user, stream_id, webhook_id, record["url"], record["kinds"], "",
            records.SCOPE_ALL,
        )  # fmt: skip
    except GiftingError as e:
        if e.code not in (ErrorCode.UNKNOWN_STREAM, ErrorCode.NOT_STREAM_OWNER):
            raise  # a stream gone or not the streamer's is not followed


async def remove(store: Store, user: str, webhook_id: str) -> None:
    """The endpoint, then each stream's record of it (one added meanwhile is removed
    by its deliverer: the endpoint is gone)."""
    await guarded(store.redis.delete(keys.streamer_webhook(user, webhook_id)))
    followed = keys.streamer_webhook_streams(user, webhook_id)
    for stream_id in await _members(store, followed):
        await records.remove(store, stream_id, webhook_id)
    await guarded(store.redis.delete(followed, keys.streamer_webhook_attempts(user, webhook_id)))


async def rotate_secret(store: Store, user: str, webhook_id: str, secret: str) -> None:
    """One secret for every stream: each delivery reads it when it is signed."""
    key = keys.streamer_webhook(user, webhook_id)
    if await guarded(store.redis.hset(key, "secret", secret)):
        # HSET added the field: the endpoint had gone meanwhile; take it back out.
        await guarded(store.redis.delete(key))
        raise GiftingError(ErrorCode.UNKNOWN_WEBHOOK, "no such webhook")


async def enable(store: Store, user: str, webhook_id: str) -> bool:
    """Each stream's record of the endpoint enabled again (one removed meanwhile, or
    whose stream is gone, is passed over): whether one was disabled. `unknown_webhook`
    when the endpoint itself was deleted meanwhile (its deletion removes the records
    it finds)."""
    enabled = False
    for stream_id in sorted(await _members(store, keys.streamer_webhook_streams(user, webhook_id))):
        try:
            enabled = await records.enable(store, stream_id, webhook_id) or enabled
        except GiftingError as e:
            if e.code not in (ErrorCode.UNKNOWN_WEBHOOK, ErrorCode.UNKNOWN_STREAM):
                raise
    if not await guarded(store.redis.exists(keys.streamer_webhook(user, webhook_id))):
        raise GiftingError(ErrorCode.UNKNOWN_WEBHOOK, "no such webhook")
    return enabled


async def listed(store: Store, user: str, webhook_id: str) -> dict[str, Any] | None:
    record = await records.hash_of(store, keys.streamer_webhook(user, webhook_id))
    if not record:
        return None
    tried = await records.attempts(store, keys.streamer_webhook_attempts(user, webhook_id))
    streams = []
    for stream_id in sorted(await _members(store, keys.streamer_webhook_streams(user, webhook_id))):
        state = await records.hash_of(store, keys.webhook(stream_id, webhook_id))
        if state:
            streams.append({"stream_id": stream_id, **records.delivery_state(state)})
            tried += await records.attempts(store, keys.webhook_attempts(stream_id, webhook_id))
    tried.sort(key=lambda attempt: -int(attempt.get("at", 0)))
    listed = records.public(
        webhook_id, None, record, tried[: store.settings.webhooks.attempts_kept]
    )
    listed["status"] = "active"
    listed["streams"] = streams
    return listed


async def _members(store: Store, key: str) -> set[str]:
    return {str(m) for m in await guarded(store.redis.smembers(key))}
