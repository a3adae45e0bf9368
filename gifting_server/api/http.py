"""HTTP endpoints of CONTRACT.md: authenticate, parse, call the ledger, encode."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gifting_server import metrics
from gifting_server.api.validation import json_object, query_int, raw_body
from gifting_server.auth import Identity, Role, bearer_token, verify_token
from gifting_server.embedded_redis import read_status
from gifting_server.errors import ErrorCode, GiftingError
from gifting_server.fields import (
    MAX_INT,
    checked_id,
    checked_key,
    identifier,
    integer,
    invalid,
    optional_integer,
)
from gifting_server.ledger import gifts, overlay_tokens, payments, streams, wallet
from gifting_server.ledger.store import Store, guarded
from gifting_server.webhooks import following


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(data), status_code=status, headers=headers, media_type="application/json"
    )


def store_of(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


def authenticated(request: Request) -> Identity:
    """Whoever the bearer token says, any role: for use cases that check the role."""
    return verify_token(
        store_of(request).settings.secret, bearer_token(request.headers.get("authorization"))
    )


def identity(request: Request, *roles: Role) -> Identity:
    who = authenticated(request)
    who.require(*roles)
    return who


async def checked_identity(request: Request, *roles: Role) -> Identity:
    """`identity` (any role when none is named), and for an overlay token also that no
    rotation revoked it (401 `token_revoked`, one read of its stream's overlay
    generation): for every endpoint an overlay token may reach."""
    who = authenticated(request)
    await overlay_tokens.check(store_of(request), who)
    if roles:
        who.require(*roles)
    return who


def stream_id_of(request: Request) -> str:
    return checked_id(request.path_params["stream_id"], "stream id")


def idempotency_key(request: Request, body: dict[str, Any]) -> str:
    value = body.get("idempotency_key", request.headers.get("idempotency-key"))
    if value is None:
        raise invalid("idempotency_key is required (in the body or an Idempotency-Key header)")
    return checked_key(value, "idempotency_key")


async def healthz(request: Request) -> Response:
    return json_response({"status": "ok"})


async def readyz(request: Request) -> Response:
    settings = store_of(request).settings
    embedded = read_status(settings.data_dir, settings.redis_url)
    try:
        await guarded(store_of(request).redis.ping())
    except GiftingError as e:
        if embedded is not None:  # say why: `serve` is restarting its Redis
            e = GiftingError(e.code, f"{e.message}: {embedded.describe()}")
        return json_response(e.to_dict(), status=503)
    if embedded is None:
        return json_response({"status": "ready"})
    return json_response(
        {
            "status": "ready",
            "embedded_redis": {"restarts": embedded.restarts, "last_exit": embedded.last_exit},
        }
    )


async def list_gifts(request: Request) -> Response:
    catalog = [g.public() for g in store_of(request).settings.gifts]
    return json_response({"gifts": catalog})


async def list_packages(request: Request) -> Response:
    settings = store_of(request).settings
    currency = settings.economy.currency
    packages = [
        {"id": p.id, "coins": p.coins, "price": {"amount": p.price, "currency": currency}}
        for p in settings.packages
    ]
    return json_response({"packages": packages})


async def get_wallet(request: Request) -> Response:
    who = identity(request, Role.VIEWER, Role.STREAMER)
    store = store_of(request)
    body = await wallet.read_wallet(store, who.user_id)
    if who.role is Role.STREAMER:
        body |= await wallet.read_holdings(store, who.user_id)
    return json_response(body)


async def put_wallet_limits(request: Request) -> Response:
    who = identity(request, Role.VIEWER)
    store = store_of(request)
    body = await json_object(request)
    limit = optional_integer(
        body, "daily_coin_limit", minimum=0, maximum=store.settings.limits.max_daily_coin_limit
    )
    await wallet.set_daily_limit(store, who.user_id, limit)
    return json_response(await wallet.read_wallet(store, who.user_id))


async def payment_webhook(request: Request) -> Response:
    body = await raw_body(request)
    signature = request.headers.get("gifting-signature")
    return await signed_payment_response(store_of(request), body, signature)


async def signed_payment_response(store: Store, body: bytes, signature: str | None) -> Response:
    """Apply a signed provider event and answer it: the webhook's and the demo's answer."""
    applied = await payments.apply_signed_webhook(store, body, signature)
    result = applied.result
    metrics.PAYMENTS.labels(kind=applied.kind, replayed=str(result.replayed).lower()).inc()
    return json_response(
        {
            "status": "duplicate" if result.replayed else "applied",
            "event_id": applied.event_id,
            "user_id": applied.user_id,
            "coins": result.coins,
            "credited": result.credited,
            "clawed_back": result.clawed_back,
            "owed": result.owed,
        }
    )


async def create_stream(request: Request) -> Response:
    who = identity(request, Role.STREAMER)
    body = await json_object(request, allow_empty=True)
    stream_id = (
        identifier(body, "stream_id") if "stream_id" in body else f"st_{uuid.uuid4().hex[:16]}"
    )
    store = store_of(request)
    changed = await streams.start_stream(store, who.user_id, stream_id, who.name)
    # Also when it was live already: a start cut short before this is finished.
    await following.on_stream_started(store, who.user_id, stream_id)
    return json_response({"stream_id": stream_id, "status": "live"}, status=201 if changed else 200)


async def get_stream(request: Request) -> Response:
    return json_response(await streams.stream_status(store_of(request), stream_id_of(request)))


async def end_stream(request: Request) -> Response:
    who = identity(request, Role.STREAMER)
    stream_id = stream_id_of(request)
    await streams.end_stream(store_of(request), who.user_id, stream_id)
    await following.on_stream_ended(store_of(request), who.user_id, stream_id)
    return json_response({"stream_id": stream_id, "status": "ended"})


async def send_gift(request: Request) -> Response:
    try:
        response = await _send_gift(request)
    except GiftingError as e:
        metrics.count_gift("http", e.code.code)
        raise
    except Exception:
        metrics.count_gift("http", ErrorCode.INTERNAL_ERROR.code)
        raise
    metrics.count_gift("http", "ok")
    return response


async def _send_gift(request: Request) -> Response:
    who = await checked_identity(request)  # a revoked overlay token is told so
    store = store_of(request)
    stream_id = stream_id_of(request)
    body = await json_object(request)
    gift_id = identifier(body, "gift_id")
    # Any integer here: the count's range is the gift use case's rule.
    count = integer(body, "count", minimum=-MAX_INT, default=1)
    key = idempotency_key(request, body)
    message = body.get("message")
    if message is not None and not isinstance(message, str):
        raise invalid("message must be a string")
    timed = metrics.GIFT_LATENCY.labels(path="http").time
    receipt = await gifts.send_gift(
        store, who, stream_id, gift_id, count, key, message=message, timed=timed
    )
    return json_response(
        {"event_id": receipt.event_id, "coins": receipt.coins, "combo": receipt.combo}
    )


async def get_leaderboard(request: Request) -> Response:
    stream_id = stream_id_of(request)
    period = request.query_params.get("period", "stream")
    if period not in streams.PERIODS:
        raise invalid(f"period must be one of {', '.join(streams.PERIODS)}")
    limit = query_int(request, "limit", default=10, minimum=1, maximum=100)
    entries = await streams.leaderboard(store_of(request), stream_id, period, limit)
    return json_response({"stream_id": stream_id, "period": period, "entries": entries})


async def create_cashout(request: Request) -> Response:
    who = identity(request, Role.STREAMER)
    store = store_of(request)
    body = await json_object(request)
    diamonds = integer(body, "diamonds", minimum=1, maximum=MAX_INT)
    key = idempotency_key(request, body)
    result = await wallet.cashout(store, who.user_id, diamonds, key)
    return json_response(
        {
            "cashout_id": result.cashout_id,
            "diamonds": result.diamonds,
            "amount": {"amount": result.cents, "currency": result.currency},
            "status": "pending",
            "diamonds_left": result.diamonds_left,
        },
        status=201,
    )


routes = [
    Route("/healthz", healthz),
    Route("/readyz", readyz),
    Route("/v1/gifts", list_gifts),
    Route("/v1/coin-packages", list_packages),
    Route("/v1/wallet", get_wallet),
    Route("/v1/wallet/limits", put_wallet_limits, methods=["PUT"]),
    Route("/v1/payments/webhook", payment_webhook, methods=["POST"]),
    Route("/v1/streams", create_stream, methods=["POST"]),
    Route("/v1/streams/{stream_id}", get_stream),
    Route("/v1/streams/{stream_id}/end", end_stream, methods=["POST"]),
    Route("/v1/streams/{stream_id}/gifts", send_gift, methods=["POST"]),
    Route("/v1/streams/{stream_id}/leaderboard", get_leaderboard),
    Route("/v1/cashouts", create_cashout, methods=["POST"]),
]
