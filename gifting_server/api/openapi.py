"""The OpenAPI 3.1 document served at /openapi.json.

Built from data: `operations()` has one row per route (who may call it, its body,
its success answer and the error codes it may give); small helpers spell out the
repeated shapes. Limits (gift count, daily budget, id patterns) come from the
same settings and patterns the request validation uses, so they cannot drift.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from gifting_server.api.streamer_http import OVERLAYS
from gifting_server.api.validation import MAX_BODY_BYTES
from gifting_server.config import Settings
from gifting_server.errors import ErrorCode
from gifting_server.fields import MAX_INT
from gifting_server.ids import ID_PATTERN, KEY_PATTERN, schema_pattern
from gifting_server.ledger.streams import PERIODS

Schema = dict[str, Any]

INT: Schema = {"type": "integer", "minimum": 0, "maximum": MAX_INT}
STR: Schema = {"type": "string"}
URI: Schema = {"type": "string", "format": "uri"}
ID_SCHEMA: Schema = {"type": "string", "pattern": schema_pattern(ID_PATTERN)}
KEY_SCHEMA: Schema = {"type": "string", "pattern": schema_pattern(KEY_PATTERN)}
AUTH_ERRORS = (ErrorCode.UNAUTHORIZED, ErrorCode.FORBIDDEN)
BODY_ERRORS = (ErrorCode.PAYLOAD_TOO_LARGE, ErrorCode.INVALID_REQUEST)
STORAGE_ERRORS = (ErrorCode.SERVICE_UNAVAILABLE, ErrorCode.STORAGE_CORRUPT)
BY_CODE = {e.code: e for e in ErrorCode}


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(required: dict[str, Schema], optional: dict[str, Schema] | None = None) -> Schema:
    """A closed JSON object with `required` properties plus `optional` ones."""
    schema: Schema = {
        "type": "object",
        "properties": {**required, **(optional or {})},
        "additionalProperties": False,
    }
    if required:
        schema["required"] = list(required)
    return schema


def counts(*names: str) -> dict[str, Schema]:
    """Non-negative integer properties: balances and amounts."""
    return dict.fromkeys(names, INT)


def array(items: Schema) -> Schema:
    return {"type": "array", "items": items}


def integer(minimum: int, maximum: int = MAX_INT, **extra: Any) -> Schema:
    return {"type": "integer", "minimum": minimum, "maximum": maximum, **extra}


def enum(*values: str) -> Schema:
    return {"type": "string", "enum": list(values)}


def const(value: str) -> Schema:
    return {"type": "string", "const": value}


def described(schema: Schema, text: str) -> Schema:
    return {**schema, "description": text}


def param(name: str, where: str, schema: Schema, text: str) -> Schema:
    required = where in ("path", "header") and name != "Idempotency-Key"
    return {"name": name, "in": where, "required": required, "schema": schema, "description": text}


def status_is(value: str) -> Schema:
    return obj({"status": const(value)})


def json_content(schema: Schema, media_type: str = "application/json") -> dict[str, Any]:
    return {media_type: {"schema": schema}}


def answer(description: str, schema: Schema, media_type: str = "application/json") -> Schema:
    return {"description": description, "content": json_content(schema, media_type)}


def error_responses(*codes: ErrorCode) -> dict[str, Any]:
    """One response per HTTP status; its body's `code` is one of the listed codes."""
    by_status: dict[int, list[str]] = defaultdict(list)
    for code in codes:
        if code.code not in by_status[code.http_status]:
            by_status[code.http_status].append(code.code)
    responses = {}
    for status, names in sorted(by_status.items()):
        # An overloaded worker, or one holding too many of the user's gifts, says when
        # to come back (docs/overload.md).
        retry = bool({ErrorCode.SERVICE_UNAVAILABLE.code, ErrorCode.RATE_LIMITED.code} & set(names))
        optional = {"retry_after_ms": integer(1)} if retry else None
        error = obj({"error": obj({"code": enum(*names), "message": STR}, optional)})
        responses[str(status)] = answer(" | ".join(names), error)
        if retry:
            responses[str(status)]["headers"] = {
                "Retry-After": {
                    "description": "seconds (at least 1) before the same request again, when"
                    " the worker was overloaded or had too many of the user's gifts under"
                    " way; then also `retry_after_ms` in the body",
                    "schema": integer(1),
                }
            }
    return responses


@dataclass(frozen=True)
class Op:
    """One route of api/http.py as the document shows it."""

    method: str
    path: str
    summary: str
    status: int
    schema: Schema
    roles: tuple[str, ...] = ()  # token roles allowed; empty: no token needed
    body: str | None = None  # a components/schemas name
    body_required: bool = True
    errors: str = ""  # error codes beyond the auth, body and storage ones, space-separated
    params: tuple[Schema, ...] = ()
    more: dict[str, Any] = field(default_factory=dict)  # extra success responses
    media_type: str = "application/json"

    def document(self) -> dict[str, Any]:
        codes = [*(AUTH_ERRORS if self.roles else ()), *(BY_CODE[c] for c in self.errors.split())]
        responses = {
            str(self.status): answer(self.summary, self.schema, self.media_type),
            **self.more,
        }
        op: dict[str, Any] = {
            "summary": self.summary,
            "tags": [self.path.split("/")[2] if self.path.startswith("/v1/") else "ops"],
            "security": [{"bearer": []}] if self.roles else [],
            "responses": responses,
        }
        if self.roles:
            op["description"] = f"Needs a {' or '.join(self.roles)} token."
        if self.body:
            codes += BODY_ERRORS
            op["requestBody"] = {
                "required": self.body_required,
                "content": json_content(ref(self.body)),
            }
        responses.update(error_responses(*codes, *STORAGE_ERRORS))
        if self.params:
            op["parameters"] = list(self.params)
        return op


def operations(settings: Settings) -> list[Op]:
    stream = param("stream_id", "path", ID_SCHEMA, "the stream")
    idem = param("Idempotency-Key", "header", KEY_SCHEMA, "instead of `idempotency_key`")
    signature = param(
        "Gifting-Signature",
        "header",
        {"type": "string", "pattern": r"^t=\d+,v1=[0-9a-f]{64}$"},
        "t=<unix seconds>,v1=<hex HMAC-SHA256(webhook secret, '<t>.<raw body>')>; refused "
        f"when t is more than {settings.limits.webhook_tolerance_s} s away from now",
    )
    period = param("period", "query", {**enum(*PERIODS), "default": "stream"}, "which board")
    limit = param("limit", "query", integer(1, 100, default=10), "entries to return")
    ops = [
        Op("get", "/healthz", "Alive.", 200, status_is("ok")),
        Op("get", "/readyz", "Ready: Redis answers.", 200, status_is("ready")),
        Op("get", "/openapi.json", "This document.", 200, {"type": "object"}),
        Op("get", "/v1/gifts", "The gift catalog.", 200, obj({"gifts": array(ref("Gift"))})),
        Op(
            "get",
            "/v1/coin-packages",
            "The coin packages for sale.",
            200,
            obj({"packages": array(ref("CoinPackage"))}),
        ),
        Op("get", "/v1/wallet", "Your balances.", 200, ref("Wallet"), ("viewer", "streamer")),
        Op(
            "put",
            "/v1/wallet/limits",
            "Set (or, with null, remove) your own daily spending budget.",
            200,
            ref("Wallet"),
            ("viewer",),
            "DailyLimit",
        ),
        Op(
            "post",
            "/v1/payments/webhook",
            "A payment provider event; a repeated event_id changes nothing and answers 200.",
            200,
            ref("PaymentResult"),
            body="PaymentEvent",
            errors="invalid_signature unknown_package idempotency_conflict nothing_to_refund",
            params=(signature,),
        ),
        Op(
            "post",
            "/v1/streams",
            "Go live (201); 200 when the stream was live already.",
            201,
            ref("Stream"),
            ("streamer",),
            "NewStream",
            body_required=False,
            errors="stream_id_taken",
            more={"200": answer("already live", ref("Stream"))},
        ),
        Op(
            "get",
            "/v1/streams/{stream_id}",
            "A stream's status.",
            200,
            ref("StreamStatus"),
            errors="unknown_stream invalid_request",
            params=(stream,),
        ),
        Op(
            "post",
            "/v1/streams/{stream_id}/end",
            "End your stream (ending an ended stream answers 200 again).",
            200,
            ref("Stream"),
            ("streamer",),
            errors="not_stream_owner unknown_stream invalid_request",
            params=(stream,),
        ),
        Op(
            "post",
            "/v1/streams/{stream_id}/gifts",
            "Send a gift; the same idempotency key answers the first result again.",
            200,
            ref("GiftReceipt"),
            ("viewer",),
            "GiftRequest",
            errors="insufficient_funds age_verification_required self_gift daily_limit_exceeded "
            "message_not_allowed unknown_gift unknown_stream stream_not_live "
            "idempotency_conflict rate_limited token_revoked",
            params=(stream, idem),
        ),
        Op(
            "get",
            "/v1/streams/{stream_id}/leaderboard",
            "Top gifters of the stream, or of its streamer by day, week or all time.",
            200,
            ref("Leaderboard"),
            errors="unknown_stream invalid_request",
            params=(stream, period, limit),
        ),
        Op(
            "post",
            "/v1/cashouts",
            "Cash out diamonds older than the holding period.",
            201,
            ref("Cashout"),
            ("streamer",),
            "CashoutRequest",
            errors="insufficient_diamonds cashout_daily_cap cashout_below_minimum "
            "idempotency_conflict",
            params=(idem,),
        ),
        Op(
            "get",
            "/v1/cashouts",
            "Your cash-outs, newest first (at most 100).",
            200,
            obj({"cashouts": array(ref("CashoutRecord"))}),
            ("streamer",),
            errors="invalid_request",
            params=(param("limit", "query", integer(1, 100, default=100), "at most this many"),),
        ),
        Op(
            "post",
            "/v1/cashouts/{cashout_id}/complete",
            "Operator: mark a pending cash-out paid or failed (failed returns its diamonds, "
            "journaled). The same status again answers 200 and changes nothing; the other "
            "status after completion is cashout_conflict.",
            200,
            ref("CashoutRecord"),
            ("admin",),
            "CashoutCompletion",
            errors="unknown_cashout cashout_conflict",
            params=(param("cashout_id", "path", KEY_SCHEMA, "the cash-out"),),
        ),
        Op(
            "post",
            "/v1/streams/{stream_id}/overlay-tokens",
            "Mint an overlay token for your stream and its overlay URLs; with rotate, every "
            "earlier overlay token of the stream is revoked (open overlays are closed with "
            "4001, reason token_revoked; the old token then gets 401 token_revoked).",
            201,
            ref("OverlayToken"),
            ("streamer",),
            "OverlayTokenRequest",
            body_required=False,
            errors="unknown_stream",
            params=(stream,),
        ),
    ]
    if settings.demo_payments:
        ops.append(
            Op(
                "post",
                "/v1/demo/payments",
                "Demo mode only: buy a coin package through the signed webhook path.",
                200,
                ref("PaymentResult"),
                ("viewer",),
                "DemoPayment",
                errors="age_verification_required unknown_package idempotency_conflict",
                params=(idem,),
            )
        )
    if settings.metrics_public:
        ops.append(Op("get", "/metrics", "Prometheus text.", 200, STR, media_type="text/plain"))
    return ops


def schemas(settings: Settings) -> dict[str, Schema]:
    economy, limits = settings.economy, settings.limits
    money = obj({"amount": INT, "currency": const(economy.currency)})
    key = described(KEY_SCHEMA, "required here or in the Idempotency-Key header")
    nullable_int = {"type": ["integer", "null"], "minimum": 0}
    return {
        "Error": obj({"error": obj({"code": STR, "message": STR})}),
        "Money": money,
        "Gift": obj(
            {"id": ID_SCHEMA, "name": STR, "coins": integer(1), "tier": integer(1, 4)},
            {"emoji": STR, "svg": STR},
        ),
        "CoinPackage": obj({"id": ID_SCHEMA, "coins": integer(1), "price": ref("Money")}),
        "Wallet": obj(
            {
                "user_id": ID_SCHEMA,
                **counts("coins", "diamonds", "spent_today"),
                "daily_limit": nullable_int,
                "owed": described(INT, "coins still owed after a refund of spent coins"),
            },
            {
                "diamonds_available": described(
                    INT, "streamers: diamonds past their holding period, for a cash-out"
                ),
                "diamonds_held": described(
                    array(obj({"diamonds": integer(1), "until": INT})),
                    "streamers: diamonds in their holding period, by release time (unix ms)",
                ),
            },
        ),
        "DailyLimit": obj(
            {
                "daily_coin_limit": described(
                    {**nullable_int, "maximum": limits.max_daily_coin_limit},
                    "the most coins you may spend per UTC day; null removes the limit",
                )
            }
        ),
        "DemoPayment": obj({"package_id": ID_SCHEMA}, {"idempotency_key": key}),
        "PaymentEvent": {
            **obj(
                {
                    "event_id": described(KEY_SCHEMA, "the provider's event id"),
                    "type": enum("payment.succeeded", "payment.refunded"),
                    "user_id": ID_SCHEMA,
                    "package_id": ID_SCHEMA,
                },
                {
                    "payer_id": described(
                        {"type": ["string", "null"], "pattern": ID_SCHEMA["pattern"]},
                        "who paid (the provider's card or account id), when it says; kept "
                        "in the journal for `gifting-server reconcile`'s risk report",
                    )
                },
            ),
            "additionalProperties": True,
            "description": "Other fields are ignored: coins come from the server's packages.",
        },
        "PaymentResult": obj(
            {
                "status": enum("applied", "duplicate"),
                "event_id": KEY_SCHEMA,
                "user_id": ID_SCHEMA,
                "coins": described(INT, "the balance after the event"),
                **counts("credited", "clawed_back", "owed"),
            }
        ),
        "NewStream": obj({}, {"stream_id": described(ID_SCHEMA, "default: a new random id")}),
        "Stream": obj({"stream_id": ID_SCHEMA, "status": enum("live", "ended")}),
        "StreamStatus": obj(
            {
                "stream_id": ID_SCHEMA,
                "streamer_id": ID_SCHEMA,
                "streamer_name": described(STR, "the streamer's display name (or id)"),
                "status": enum("live", "ended"),
                "coins_total": INT,
                "alerts_paused": {"type": "boolean"},
                "goal": ref("StreamGoal"),
                "battle_id": described(
                    {"type": ["string", "null"]},
                    "the battle the stream has a pending invite to or is live in (GET "
                    "/v1/battles/{id}), else null",
                ),
            }
        ),
        "GiftRequest": obj(
            {"gift_id": ID_SCHEMA},
            {
                "count": integer(1, limits.max_gift_count, default=1),
                "idempotency_key": key,
                "message": described(
                    STR,
                    "shown with the gift once moderated (controls out, trimmed, blocked "
                    "words masked); at most the stream's max_length characters",
                ),
            },
        ),
        "GiftReceipt": obj(
            {
                "event_id": integer(1),
                "coins": described(INT, "the sender's balance after the gift"),
                "combo": integer(1),
            }
        ),
        "Leaderboard": obj(
            {
                "stream_id": ID_SCHEMA,
                "period": enum(*PERIODS),
                "entries": array(
                    obj({"rank": integer(1), "user_id": ID_SCHEMA, "name": STR, "coins": INT})
                ),
            }
        ),
        "CashoutRequest": obj(
            {"diamonds": integer(1, multipleOf=economy.diamonds_per_unit)},
            {"idempotency_key": key},
        ),
        "Cashout": obj(
            {
                "cashout_id": STR,
                "diamonds": integer(1),
                "amount": ref("Money"),
                "status": const("pending"),
                "diamonds_left": INT,
            }
        ),
        "CashoutRecord": obj(
            {
                "cashout_id": STR,
                "diamonds": integer(1),
                "amount": ref("Money"),
                "status": enum("pending", "paid", "failed"),
                "created_at": described(INT, "unix ms"),
            },
            {"completed_at": described(INT, "unix ms; once paid or failed")},
        ),
        "CashoutCompletion": obj({"status": enum("paid", "failed")}),
        "OverlayTokenRequest": obj(
            {},
            {
                "rotate": described(
                    {"type": "boolean", "default": False},
                    "revoke every earlier overlay token of the stream first",
                )
            },
        ),
        "OverlayToken": obj(
            {
                "token": described(STR, "an overlay token for this stream, valid for a year"),
                "urls": obj({name: URI for name in OVERLAYS}),
            }
        ),
    }


def openapi_document(settings: Settings) -> dict[str, Any]:
    # The streamer's endpoints are described in their own module, which builds on the
    # helpers above (imported here: it imports this module).
    from gifting_server.api.openapi_battles import battle_operations, battle_schemas
    from gifting_server.api.openapi_studio import studio_operations, studio_schemas
    from gifting_server.api.openapi_webhooks import webhook_operations, webhook_schemas

    stream = param("stream_id", "path", ID_SCHEMA, "the stream")
    paths: dict[str, dict[str, Any]] = defaultdict(dict)
    ops = [
        *operations(settings),
        *studio_operations(settings, stream),
        *webhook_operations(settings),
        *battle_operations(settings),
    ]
    for op in ops:
        paths[op.path][op.method] = op.document()
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "gifting_server",
            "version": "1",
            "description": 'Live-stream gifting. Errors are {"error": {"code", "message"}}; '
            f"request bodies are JSON of at most {MAX_BODY_BYTES} bytes.",
        },
        "paths": dict(paths),
        "components": {
            "schemas": {
                **schemas(settings),
                **studio_schemas(settings),
                **webhook_schemas(settings),
                **battle_schemas(settings),
            },
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
