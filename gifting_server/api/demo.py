"""Demo payments: a viewer buys coins when there is no payment provider.

Mounted only with `[server] demo_payments` on (`gifting-server serve --demo`).
The server plays the provider: it signs a `payment.succeeded` event with the
webhook secret and hands it to the very code a provider's webhook runs, so a
demo purchase goes through the signature check, the package price list and
exactly-once crediting like a real one.
"""

from __future__ import annotations

import hashlib
import time

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gifting_server.api.http import (
    idempotency_key,
    identity,
    signed_payment_response,
    store_of,
)
from gifting_server.api.validation import json_object
from gifting_server.auth import Role, sign_webhook
from gifting_server.errors import ErrorCode, GiftingError
from gifting_server.fields import identifier


async def demo_payment(request: Request) -> Response:
    who = identity(request, Role.VIEWER)
    store = store_of(request)
    if store.settings.limits.require_age_verification and not who.adult:
        raise GiftingError(
            ErrorCode.AGE_VERIFICATION_REQUIRED, "buying coins needs an age-verified (18+) account"
        )
    body = await json_object(request)
    package_id = identifier(body, "package_id")
    key = idempotency_key(request, body)
    # One provider event per (viewer, key): a retried purchase is credited once.
    digest = hashlib.sha256(f"{who.user_id}|{key}".encode()).hexdigest()[:32]
    event = {
        "event_id": f"demo_{digest}",
        "type": "payment.succeeded",
        "user_id": who.user_id,
        "package_id": package_id,
    }
    raw = orjson.dumps(event)
    signature = sign_webhook(store.settings.webhook_secret, raw, int(time.time()))
    return await signed_payment_response(store, raw, signature)


routes = [Route("/v1/demo/payments", demo_payment, methods=["POST"])]
