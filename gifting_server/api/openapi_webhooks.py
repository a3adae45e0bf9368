"""The outgoing webhooks' endpoints in the OpenAPI document (api/webhooks_http.py)."""

from __future__ import annotations

from gifting_server.api.openapi import (
    ID_SCHEMA,
    INT,
    KEY_SCHEMA,
    STR,
    URI,
    Op,
    Schema,
    array,
    described,
    enum,
    obj,
    param,
    ref,
)
from gifting_server.config import Settings
from gifting_server.webhooks.egress import MAX_URL_LENGTH
from gifting_server.webhooks.endpoints import KINDS

BOOL: Schema = {"type": "boolean"}
NULLABLE_INT: Schema = {"type": ["integer", "null"]}
NULLABLE_STR: Schema = {"type": ["string", "null"]}
NULLABLE_ID: Schema = {"anyOf": [ID_SCHEMA, {"type": "null"}]}
# Where an endpoint's deliveries to one stream stand (webhooks/records.py).
DELIVERY_STATE: dict[str, Schema] = {
    "delivered_through": described(
        INT, "the last event id delivered to it or passed over (a kind not asked for)"
    ),
    "failures": described(INT, "failed attempts in a row"),
    "disabled_reason": STR,
    "disabled_at": described(INT, "unix ms"),
}


def webhook_operations(settings: Settings) -> list[Op]:
    webhook = param("webhook_id", "path", ID_SCHEMA, "the webhook")
    config = settings.webhooks
    private = "allowed by this server's config" if config.allow_private else "refused (422)"
    return [
        Op(
            "post",
            "/v1/webhooks",
            "Register an endpoint for the events of one of your streams (the kinds asked "
            "for, every event after this call), or without stream_id for all your streams "
            "(those live now and each that goes live later). Each delivery is a POST signed "
            "with the endpoint's secret, which is shown only in this answer (docs/webhooks.md). "
            f"Targets on loopback, link-local or private addresses: {private}. The same "
            "idempotency key answers the same endpoint again.",
            201,
            ref("WebhookCreated"),
            ("streamer",),
            "WebhookRequest",
            errors="unknown_stream idempotency_conflict",
            params=(
                param("Idempotency-Key", "header", KEY_SCHEMA, "instead of `idempotency_key`"),
            ),
        ),
        Op(
            "get",
            "/v1/webhooks",
            "Your endpoints, each with its status (a disabled one says why) and its recent "
            "delivery attempts, newest first. Secrets are never listed.",
            200,
            obj({"webhooks": array(ref("Webhook"))}),
            ("streamer",),
        ),
        Op(
            "delete",
            "/v1/webhooks/{webhook_id}",
            "Remove an endpoint: nothing more is delivered to it.",
            200,
            obj({"webhook_id": ID_SCHEMA, "deleted": BOOL}),
            ("streamer",),
            errors="unknown_webhook invalid_request",
            params=(webhook,),
        ),
        Op(
            "post",
            "/v1/webhooks/{webhook_id}/rotate-secret",
            "A new signing secret for the endpoint, shown once: every delivery from the next "
            "on is signed with it.",
            200,
            obj({"webhook_id": ID_SCHEMA, "secret": STR}),
            ("streamer",),
            errors="unknown_webhook invalid_request",
            params=(webhook,),
        ),
        Op(
            "post",
            "/v1/webhooks/{webhook_id}/enable",
            "Deliver to a disabled endpoint again (for all your streams: each stream where "
            "it was disabled), with the same id and secret, failures and backoff cleared, "
            "from the stream's next event on: events from before this call are not sent. "
            "An active endpoint is left as it is. Answers the endpoint as listed.",
            200,
            ref("Webhook"),
            ("streamer",),
            errors="unknown_webhook invalid_request",
            params=(webhook,),
        ),
        Op(
            "post",
            "/v1/webhooks/{webhook_id}/test",
            "Send the endpoint a test delivery now (an event of kind `test`, event_id 0), "
            "outside the order of the stream's messages; answers how the attempt went. "
            "At most one a second per endpoint (429 `rate_limited` with `retry_after_ms`).",
            200,
            obj({"webhook_id": ID_SCHEMA, "attempt": ref("WebhookAttempt")}),
            ("streamer",),
            errors="unknown_webhook invalid_request rate_limited",
            params=(webhook,),
        ),
    ]


def webhook_schemas(settings: Settings) -> dict[str, Schema]:
    kinds = {**array(enum(*KINDS)), "minItems": 1}
    url: Schema = {**URI, "maxLength": MAX_URL_LENGTH, "pattern": "^https?://"}
    return {
        "WebhookRequest": obj(
            {"url": url, "kinds": kinds},
            {
                "stream_id": described(ID_SCHEMA, "one of your streams; none: all of them"),
                "idempotency_key": KEY_SCHEMA,
            },
        ),
        "WebhookCreated": obj(
            {
                "webhook_id": ID_SCHEMA,
                "secret": described(STR, "signs every delivery; shown only here"),
                "stream_id": NULLABLE_ID,
                "url": URI,
                "kinds": array(STR),
            }
        ),
        "WebhookAttempt": obj(
            {
                "message_id": STR,
                "at": described(INT, "unix ms"),
                "ok": BOOL,
                "status": described(NULLABLE_INT, "the receiver's HTTP status; null: none"),
                "error": described(NULLABLE_STR, "what went wrong; null when ok"),
                "duration_ms": INT,
            }
        ),
        "Webhook": obj(
            {
                "webhook_id": ID_SCHEMA,
                "stream_id": described(NULLABLE_ID, "null: all your streams (see `streams`)"),
                "url": URI,
                "kinds": array(STR),
                "status": enum("active", "disabled"),
                "created_at": described(INT, "unix ms"),
                "attempts": array(ref("WebhookAttempt")),
            },
            {
                **DELIVERY_STATE,
                "streams": described(
                    array(ref("WebhookStream")),
                    "an endpoint for all your streams: where it stands on each it follows",
                ),
            },
        ),
        "WebhookStream": obj(
            {"stream_id": ID_SCHEMA, "status": enum("active", "disabled")},
            DELIVERY_STATE,
        ),
    }
