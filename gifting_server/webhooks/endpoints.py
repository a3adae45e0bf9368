"""A streamer's webhook endpoints: register, list, rotate the secret, enable again,
remove.

An endpoint follows one stream, or all the streamer's streams (following.py). A
stream's endpoint records, its delivery state and the stream's delivery log live
in the stream's slot (ledger/keys.py), so that registering one and feeding the log
are each one script. The streamer's index (webhook id → its stream, or "*") is in
the streamer's slot; it is written first, so a registration cut short leaves an
index entry without an endpoint (skipped when listed, finished by retrying with the
same idempotency key), never an endpoint nobody can see.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

from gifting_server import events
from gifting_server.auth import Identity, Role
from gifting_server.errors import ErrorCode, GiftingError
from gifting_server.ledger import keys
from gifting_server.ledger.store import Store, guarded
from gifting_server.logs import audit
from gifting_server.webhooks import following, records
from gifting_server.webhooks.egress import Target
from gifting_server.webhooks.following import ALL_STREAMS

# The event kinds an endpoint may ask for: every kind the WebSocket protocol carries.
KINDS = tuple(events.KINDS)
# index_webhook's answer when the streamer has `max_per_streamer` endpoints already.
INDEX_FULL = 2


def _webhook_id(user_id: str, idempotency_key: str | None) -> str:
    """A retried registration (same key) names the same endpoint."""
    if idempotency_key is None:
        return "wh_" + secrets.token_hex(10)
    digest = hashlib.sha256(f"{user_id}\n{idempotency_key}".encode()).hexdigest()
    return "wh_" + digest[:20]


def _fingerprint(scope: str, url: str, kinds: tuple[str, ...]) -> str:
    return hashlib.sha256(f"{scope}\n{url}\n{','.join(kinds)}".encode()).hexdigest()[:32]


async def register(
    store: Store,
    who: Identity,
    stream_id: str | None,
    target: Target,
    kinds: tuple[str, ...],
    idempotency_key: str | None,
) -> dict[str, Any]:
    """A new endpoint for `stream_id` (the caller's own, checked by the caller), or
    for all the caller's streams (None): 201's body, with the secret."""
    who.require(Role.STREAMER)
    user = who.user_id
    scope = stream_id or ALL_STREAMS
    webhook_id = _webhook_id(user, idempotency_key)
    index = keys.streamer_webhooks(user)
    record = None if idempotency_key is None else keys.webhook_registration(user, idempotency_key)
    recorded_now = False
    if record is not None:
        fingerprint = _fingerprint(scope, target.url, kinds)
        ttl_s = store.settings.limits.idempotency_ttl_s
        recorded_now = bool(await guarded(store.redis.set(record, fingerprint, ex=ttl_s, nx=True)))
        if await guarded(store.redis.get(record)) != fingerprint:
            raise GiftingError(
                ErrorCode.IDEMPOTENCY_CONFLICT,
                "this idempotency key was already used for a different request; use a new key",
            )
    limit = store.settings.webhooks.max_per_streamer
    # The count and the insert in one step (registrations arriving together).
    indexed = await store.run_script("index_webhook", [index], [webhook_id, scope, limit])
    if int(indexed[1]) == INDEX_FULL:
        if record is not None and recorded_now:  # a refused request changes nothing
            await guarded(store.redis.delete(record))
        raise GiftingError(
            ErrorCode.INVALID_REQUEST, f"at most {limit} webhooks per streamer; delete one"
        )
    kinds_text = ",".join(kinds)
    if stream_id is None:
        secret, replayed = await following.create(store, user, webhook_id, target.url, kinds_text)
        await following.follow_live_streams(store, user, webhook_id)
    else:
        result = await records.add(
            store, user, stream_id, webhook_id, target.url, kinds_text, records.new_secret()
        )
        secret, replayed = str(result[1]), bool(int(result[2]))
    if not replayed:
        audit("webhook_registered", webhook_id=webhook_id, stream_id=scope, streamer_id=user)
    return {
        "webhook_id": webhook_id,
        "secret": secret,
        "stream_id": stream_id,
        "url": target.url,
        "kinds": list(kinds),
    }


async def stream_of(store: Store, who: Identity, webhook_id: str) -> str:
    """The stream of one of the streamer's endpoints ("*": all their streams);
    `unknown_webhook` for any other id (someone else's is not told apart from none)."""
    who.require(Role.STREAMER)
    scope = await guarded(store.redis.hget(keys.streamer_webhooks(who.user_id), webhook_id))
    if scope is None:
        raise GiftingError(ErrorCode.UNKNOWN_WEBHOOK, "no such webhook")
    scope = str(scope)
    if scope == ALL_STREAMS:
        record = keys.streamer_webhook(who.user_id, webhook_id)
    else:
        record = keys.webhook(scope, webhook_id)
    if not await guarded(store.redis.exists(record)):
        raise GiftingError(ErrorCode.UNKNOWN_WEBHOOK, "no such webhook")
    return scope


async def endpoint(
    store: Store, who: Identity, webhook_id: str
) -> tuple[str | None, dict[str, str]]:
    """The endpoint's stream (None: all) and what a delivery to it needs: url, secret."""
    scope = await stream_of(store, who, webhook_id)
    if scope == ALL_STREAMS:
        key = keys.streamer_webhook(who.user_id, webhook_id)
    else:
        key = keys.webhook(scope, webhook_id)
    record = await records.hash_of(store, key)
    if not record:
        raise GiftingError(ErrorCode.UNKNOWN_WEBHOOK, "no such webhook")
    return (None if scope == ALL_STREAMS else scope), record


def attempts_key(who: Identity, stream_id: str | None, webhook_id: str) -> str:
    """Where a test delivery to the endpoint is kept among its attempts."""
    if stream_id is None:
        return keys.streamer_webhook_attempts(who.user_id, webhook_id)
    return keys.webhook_attempts(stream_id, webhook_id)


async def rotate_secret(store: Store, who: Identity, webhook_id: str) -> str:
    scope = await stream_of(store, who, webhook_id)
    secret = records.new_secret()
    if scope == ALL_STREAMS:
        await following.rotate_secret(store, who.user_id, webhook_id, secret)
    else:
        await store.run_script("rotate_webhook_secret", [keys.webhook(scope, webhook_id)], [secret])
    audit("webhook_secret_rotated", webhook_id=webhook_id, stream_id=scope, streamer_id=who.user_id)
    return secret


async def remove(store: Store, who: Identity, webhook_id: str) -> None:
    scope = await stream_of(store, who, webhook_id)
    if scope == ALL_STREAMS:
        await following.remove(store, who.user_id, webhook_id)
    else:
        await records.remove(store, scope, webhook_id)
    await guarded(store.redis.hdel(keys.streamer_webhooks(who.user_id), webhook_id))
    audit("webhook_deleted", webhook_id=webhook_id, stream_id=scope, streamer_id=who.user_id)


async def list_for(store: Store, who: Identity) -> list[dict[str, Any]]:
    """The streamer's endpoints, oldest first, each with its status and recent attempts
    (newest first). The secret is never listed."""
    who.require(Role.STREAMER)
    index = await records.hash_of(store, keys.streamer_webhooks(who.user_id))
    listed = []
    for webhook_id, scope in index.items():
        found = await _listed(store, who, webhook_id, scope)
        if found is not None:
            listed.append(found)
    listed.sort(key=lambda item: (item["created_at"], item["webhook_id"]))
    return listed


async def _listed(
    store: Store, who: Identity, webhook_id: str, scope: str
) -> dict[str, Any] | None:
    """One endpoint as `list_for` shows it; None when it is not (or no longer) there."""
    if scope == ALL_STREAMS:
        return await following.listed(store, who.user_id, webhook_id)
    record = await records.hash_of(store, keys.webhook(scope, webhook_id))
    if not record:
        return None  # a registration cut short (see the module's docstring)
    tried = await records.attempts(store, keys.webhook_attempts(scope, webhook_id))
    return {**records.public(webhook_id, scope, record, tried), **records.delivery_state(record)}


async def enable(store: Store, who: Identity, webhook_id: str) -> dict[str, Any]:
    """A disabled endpoint (or, for all the streamer's streams, each stream's disabled
    record of it) delivered to again, with its id and secret, from the stream's next
    event on: what came before is not sent. An active one is left as it is. The
    answer: the endpoint as `list_for` shows it."""
    scope = await stream_of(store, who, webhook_id)
    if scope == ALL_STREAMS:
        enabled = await following.enable(store, who.user_id, webhook_id)
    else:
        enabled = await records.enable(store, scope, webhook_id)
    if enabled:
        audit("webhook_enabled", webhook_id=webhook_id, stream_id=scope, streamer_id=who.user_id)
    found = await _listed(store, who, webhook_id, scope)
    if found is None:  # deleted meanwhile
        raise GiftingError(ErrorCode.UNKNOWN_WEBHOOK, "no such webhook")
    return found
