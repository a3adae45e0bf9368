"""A streamer's webhook endpoints: register, list, rotate the secret, remove.

An endpoint belongs to one stream; its record, delivery state and the stream's
delivery log live in the stream's slot (ledger/keys.py), so that registering it and
feeding the log are each one script. The streamer's index (webhook id → stream) is
in the streamer's slot; it is written before the endpoint, so a registration cut
short leaves an index entry without an endpoint (skipped when listed, finished by
retrying with the same idempotency key), never an endpoint nobody can see.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from typing import Any

from gifting_server import events
from gifting_server.auth import Identity, Role
from gifting_server.errors import ErrorCode, GiftingError
from gifting_server.ledger import keys, streams
from gifting_server.ledger.store import Store, guarded
from gifting_server.logs import audit
from gifting_server.webhooks.egress import Target

# The event kinds an endpoint may ask for: every kind the WebSocket protocol carries.
KINDS = tuple(events.KINDS)
SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_hex(24)


def _webhook_id(user_id: str, idempotency_key: str | None) -> str:
    """A retried registration (same key) names the same endpoint."""
    if idempotency_key is None:
        return "wh_" + secrets.token_hex(10)
    digest = hashlib.sha256(f"{user_id}\n{idempotency_key}".encode()).hexdigest()
    return "wh_" + digest[:20]


def _fingerprint(stream_id: str, url: str, kinds: tuple[str, ...]) -> str:
    return hashlib.sha256(f"{stream_id}\n{url}\n{','.join(kinds)}".encode()).hexdigest()[:32]


async def register(
    store: Store,
    who: Identity,
    stream_id: str,
    target: Target,
    kinds: tuple[str, ...],
    idempotency_key: str | None,
) -> dict[str, Any]:
    """A new endpoint for `stream_id` (the streamer's own): 201's body, with the secret."""
    await streams.require_owner(store, who, stream_id)
    user = who.user_id
    webhook_id = _webhook_id(user, idempotency_key)
    index = keys.streamer_webhooks(user)
    if idempotency_key is not None:
        record = keys.webhook_registration(user, idempotency_key)
        fingerprint = _fingerprint(stream_id, target.url, kinds)
        ttl_s = store.settings.limits.idempotency_ttl_s
        await guarded(store.redis.set(record, fingerprint, ex=ttl_s, nx=True))
        if await guarded(store.redis.get(record)) != fingerprint:
            raise GiftingError(
                ErrorCode.IDEMPOTENCY_CONFLICT,
                "this idempotency key was already used for a different request; use a new key",
            )
    known = await guarded(store.redis.hget(index, webhook_id))
    if known is None:
        count = await guarded(store.redis.hlen(index))
        limit = store.settings.webhooks.max_per_streamer
        if count >= limit:
            raise GiftingError(
                ErrorCode.INVALID_REQUEST, f"at most {limit} webhooks per streamer; delete one"
            )
        await guarded(store.redis.hset(index, webhook_id, stream_id))
    result = await store.run_script(
        "add_webhook",
        [
            keys.stream(stream_id),
            keys.stream_webhooks(stream_id),
            keys.stream_webhooks_active(stream_id),
            keys.webhook(stream_id, webhook_id),
            keys.webhook_log(stream_id),
        ],
        [user, webhook_id, target.url, ",".join(kinds), new_secret(), store.clock()],
    )
    # After the endpoint: a deliverer that found the stream with nothing to deliver
    # may have just taken it off the set (deliver.py, `_forget_if_idle`).
    await guarded(store.redis.sadd(keys.WEBHOOK_STREAMS, stream_id))
    if not int(result[2]):  # not a replay
        audit("webhook_registered", webhook_id=webhook_id, stream_id=stream_id, streamer_id=user)
    return {
        "webhook_id": webhook_id,
        "secret": str(result[1]),
        "stream_id": stream_id,
        "url": target.url,
        "kinds": list(kinds),
    }


async def stream_of(store: Store, who: Identity, webhook_id: str) -> str:
    """The stream of one of the streamer's endpoints; `unknown_webhook` for any other
    id (someone else's endpoint is not told apart from none)."""
    who.require(Role.STREAMER)
    stream_id = await guarded(store.redis.hget(keys.streamer_webhooks(who.user_id), webhook_id))
    if stream_id is None:
        raise GiftingError(ErrorCode.UNKNOWN_WEBHOOK, "no such webhook")
    exists = await guarded(store.redis.exists(keys.webhook(str(stream_id), webhook_id)))
    if not exists:
        raise GiftingError(ErrorCode.UNKNOWN_WEBHOOK, "no such webhook")
    return str(stream_id)


async def endpoint(store: Store, stream_id: str, webhook_id: str) -> dict[str, str]:
    record = await hash_of(store, keys.webhook(stream_id, webhook_id))
    if not record:
        raise GiftingError(ErrorCode.UNKNOWN_WEBHOOK, "no such webhook")
    return record


async def rotate_secret(store: Store, who: Identity, webhook_id: str) -> str:
    stream_id = await stream_of(store, who, webhook_id)
    secret = new_secret()
    await store.run_script("rotate_webhook_secret", [keys.webhook(stream_id, webhook_id)], [secret])
    audit(
        "webhook_secret_rotated",
        webhook_id=webhook_id,
        stream_id=stream_id,
        streamer_id=who.user_id,
    )
    return secret


async def remove(store: Store, who: Identity, webhook_id: str) -> None:
    stream_id = await stream_of(store, who, webhook_id)
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
    await guarded(store.redis.hdel(keys.streamer_webhooks(who.user_id), webhook_id))
    audit("webhook_deleted", webhook_id=webhook_id, stream_id=stream_id, streamer_id=who.user_id)


async def list_for(store: Store, who: Identity) -> list[dict[str, Any]]:
    """The streamer's endpoints, oldest first, each with its status and recent attempts
    (newest first). The secret is never listed."""
    who.require(Role.STREAMER)
    index = await hash_of(store, keys.streamer_webhooks(who.user_id))
    listed = []
    kept = store.settings.webhooks.attempts_kept
    for webhook_id, stream_id in index.items():
        record = await hash_of(store, keys.webhook(stream_id, webhook_id))
        if not record:
            continue  # a registration cut short (see the module's docstring)
        attempts = await guarded(
            store.redis.lrange(keys.webhook_attempts(stream_id, webhook_id), 0, kept - 1)
        )
        listed.append(public(webhook_id, stream_id, record, [json.loads(a) for a in attempts]))
    listed.sort(key=lambda item: (item["created_at"], item["webhook_id"]))
    return listed


async def hash_of(store: Store, key: str) -> dict[str, str]:
    raw = await guarded(store.redis.hgetall(key))
    return {str(k): str(v) for k, v in raw.items()}


def public(
    webhook_id: str, stream_id: str, record: dict[str, str], attempts: list[Any]
) -> dict[str, Any]:
    status = record.get("status", "active")
    listed: dict[str, Any] = {
        "webhook_id": webhook_id,
        "stream_id": stream_id,
        "url": record.get("url", ""),
        "kinds": [k for k in record.get("kinds", "").split(",") if k],
        "status": status,
        "created_at": int(record.get("created_at", "0") or 0),
        "delivered_through": int(record.get("cursor", "0") or 0),
        "failures": int(record.get("failures", "0") or 0),
        "attempts": attempts,
    }
    if status == "disabled":
        listed["disabled_reason"] = record.get("reason", "")
        listed["disabled_at"] = int(record.get("disabled_at", "0") or 0)
    return listed
