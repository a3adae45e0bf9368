"""HTTP endpoints of a streamer's outgoing webhooks (docs/webhooks.md)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gifting_server.api.http import identity, json_response, store_of
from gifting_server.api.validation import json_object
from gifting_server.auth import Role
from gifting_server.errors import ErrorCode, GiftingError
from gifting_server.fields import checked_id, checked_key, invalid
from gifting_server.ledger import keys, streams
from gifting_server.ledger.store import guarded
from gifting_server.webhooks import endpoints
from gifting_server.webhooks.deliver import Deliverer, send_test
from gifting_server.webhooks.egress import checked_target, parse_target

FIELDS = ("url", "kinds", "stream_id", "idempotency_key")
MAX_KINDS = len(endpoints.KINDS)


def checked_kinds(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or len(value) > MAX_KINDS:
        raise invalid(
            f"kinds must be a non-empty list of event kinds: {', '.join(endpoints.KINDS)}"
        )
    for kind in value:
        if kind not in endpoints.KINDS:
            raise invalid(f"unknown event kind {kind!r}; known: {', '.join(endpoints.KINDS)}")
    return tuple(sorted(set(value)))


def webhook_id_of(request: Request) -> str:
    return checked_id(request.path_params["webhook_id"], "webhook id")


async def register(request: Request) -> Response:
    who = identity(request, Role.STREAMER)
    body = await json_object(request)
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise invalid(f"unknown field {unknown[0]!r}; allowed: {', '.join(FIELDS)}")
    # No stream_id: all the caller's streams (webhooks/following.py).
    stream_id = (
        None if body.get("stream_id") is None else checked_id(body["stream_id"], "stream_id")
    )
    kinds = checked_kinds(body.get("kinds"))
    key = body.get("idempotency_key", request.headers.get("idempotency-key"))
    idempotency_key = None if key is None else checked_key(key, "idempotency_key")
    store = store_of(request)
    target = parse_target(body.get("url"))
    # Whose stream first: no one makes the server resolve names for a stream not theirs.
    if stream_id is not None:
        await streams.require_owner(store, who, stream_id)
    config = store.settings.webhooks
    target = await checked_target(target, config.allow_private, config.timeout_s)
    created = await endpoints.register(store, who, stream_id, target, kinds, idempotency_key)
    return json_response(created, status=201)


async def list_webhooks(request: Request) -> Response:
    who = identity(request, Role.STREAMER)
    return json_response({"webhooks": await endpoints.list_for(store_of(request), who)})


async def remove(request: Request) -> Response:
    who = identity(request, Role.STREAMER)
    webhook_id = webhook_id_of(request)
    await endpoints.remove(store_of(request), who, webhook_id)
    return json_response({"webhook_id": webhook_id, "deleted": True})


async def rotate_secret(request: Request) -> Response:
    who = identity(request, Role.STREAMER)
    webhook_id = webhook_id_of(request)
    secret = await endpoints.rotate_secret(store_of(request), who, webhook_id)
    return json_response({"webhook_id": webhook_id, "secret": secret})


async def enable(request: Request) -> Response:
    who = identity(request, Role.STREAMER)
    webhook_id = webhook_id_of(request)
    return json_response(await endpoints.enable(store_of(request), who, webhook_id))


# At most one test delivery per endpoint in this long: each makes the server send a
# request to a URL of the streamer's choosing, on demand.
TEST_INTERVAL_MS = 1000


async def test_delivery(request: Request) -> Response:
    who = identity(request, Role.STREAMER)
    webhook_id = webhook_id_of(request)
    store = store_of(request)
    stream_id, record = await endpoints.endpoint(store, who, webhook_id)
    gate = keys.webhook_test_gate(who.user_id, webhook_id)
    if not await guarded(store.redis.set(gate, "1", px=TEST_INTERVAL_MS, nx=True)):
        wait_ms = await guarded(store.redis.pttl(gate))
        raise GiftingError(
            ErrorCode.RATE_LIMITED,
            "one test delivery per endpoint a second; try again shortly",
            retry_after_ms=max(1, int(wait_ms)) if int(wait_ms) > 0 else TEST_INTERVAL_MS,
        )
    deliverer: Deliverer = request.app.state.deliverer
    attempts = endpoints.attempts_key(who, stream_id, webhook_id)
    attempt = await send_test(store, deliverer.http, stream_id, record, attempts)
    return json_response({"webhook_id": webhook_id, "attempt": attempt})


routes = [
    Route("/v1/webhooks", register, methods=["POST"]),
    Route("/v1/webhooks", list_webhooks, methods=["GET"]),
    Route("/v1/webhooks/{webhook_id}", remove, methods=["DELETE"]),
    Route("/v1/webhooks/{webhook_id}/rotate-secret", rotate_secret, methods=["POST"]),
    Route("/v1/webhooks/{webhook_id}/enable", enable, methods=["POST"]),
    Route("/v1/webhooks/{webhook_id}/test", test_delivery, methods=["POST"]),
]
