"""A stream's endpoint records, as the scripts keep them: add one, remove one, read
one, and show one to its streamer. Shared by the endpoints of one stream
(endpoints.py) and those of all a streamer's streams (following.py)."""

from __future__ import annotations

import json
import secrets
from typing import Any

from gifting_server.ledger import keys
from gifting_server.ledger.store import Store, guarded

SCOPE_ALL = "all"  # a stream's record of an endpoint for all the streamer's streams
SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_hex(24)


async def hash_of(store: Store, key: str) -> dict[str, str]:
    raw = await guarded(store.redis.hgetall(key))
    return {str(k): str(v) for k, v in raw.items()}


async def add(
    store: Store,
    user: str,
    stream_id: str,
    webhook_id: str,
    url: str,
    kinds: str,
    secret: str,
    scope: str = "",
) -> list[Any]:
    """`add_webhook` (its answer: 0, the secret, replayed), then the stream made known
    to the deliverers: after the endpoint, for a deliverer that found the stream with
    nothing to deliver may have just taken it off their set (deliver.py)."""
    result = await store.run_script(
        "add_webhook",
        _endpoint_keys(stream_id, webhook_id),
        [user, webhook_id, url, kinds, secret, store.clock(), scope],
    )
    await guarded(store.redis.sadd(keys.WEBHOOK_STREAMS, stream_id))
    return result


def _endpoint_keys(stream_id: str, webhook_id: str) -> list[str]:
    """The keys add_webhook and enable_webhook take, in their order."""
    return [
        keys.stream(stream_id),
        keys.stream_webhooks(stream_id),
        keys.stream_webhooks_active(stream_id),
        keys.webhook(stream_id, webhook_id),
        keys.webhook_log(stream_id),
    ]


async def remove(store: Store, stream_id: str, webhook_id: str) -> None:
    await store.run_script(
        "remove_webhook",
        [
            keys.stream(stream_id),
            keys.stream_webhooks(stream_id),
            keys.stream_webhooks_active(stream_id),
            keys.webhook(stream_id, webhook_id),
            keys.webhook_attempts(stream_id, webhook_id),
            keys.webhook_log(stream_id),
        ],
        [webhook_id],
    )


async def enable(store: Store, stream_id: str, webhook_id: str) -> bool:
    """`enable_webhook` (whether it was disabled), then the stream made known to the
    deliverers again, after the endpoint, as `add` does."""
    result = await store.run_script(
        "enable_webhook",
        _endpoint_keys(stream_id, webhook_id),
        [webhook_id],
    )
    await guarded(store.redis.sadd(keys.WEBHOOK_STREAMS, stream_id))
    return bool(int(result[1]))


async def attempts(store: Store, key: str) -> list[dict[str, Any]]:
    kept = store.settings.webhooks.attempts_kept
    return [json.loads(a) for a in await guarded(store.redis.lrange(key, 0, kept - 1))]


def delivery_state(record: dict[str, str]) -> dict[str, Any]:
    """Where an endpoint's deliveries to one stream stand."""
    status = record.get("status", "active")
    state: dict[str, Any] = {
        "status": status,
        "delivered_through": int(record.get("cursor", "0") or 0),
        "failures": int(record.get("failures", "0") or 0),
    }
    if status == "disabled":
        state["disabled_reason"] = record.get("reason", "")
        state["disabled_at"] = int(record.get("disabled_at", "0") or 0)
    return state


def public(
    webhook_id: str, stream_id: str | None, record: dict[str, str], tried: list[Any]
) -> dict[str, Any]:
    return {
        "webhook_id": webhook_id,
        "stream_id": stream_id,
        "url": record.get("url", ""),
        "kinds": [k for k in record.get("kinds", "").split(",") if k],
        "created_at": int(record.get("created_at", "0") or 0),
        "attempts": tried,
    }
