"""Coins in: payment-provider events applied to wallets, exactly once.

`apply_signed_webhook` is the use case both edges call: the provider's webhook
and the demo purchase, which signs its event like a provider would."""

from __future__ import annotations

from dataclasses import dataclass

from gifting_server.auth import verify_webhook
from gifting_server.errors import ErrorCode, GiftingError
from gifting_server.fields import identifier, invalid, parse_object
from gifting_server.ledger import keys
from gifting_server.ledger.store import Store

PAYMENT_KINDS = ("payment.succeeded", "payment.refunded")


@dataclass(frozen=True)
class PaymentResult:
    coins: int  # the balance after the event
    credited: int  # coins added to the balance (a purchase pays any debt first)
    clawed_back: int  # coins taken back by a refund
    owed: int  # the debt left after the event
    replayed: bool


@dataclass(frozen=True)
class WebhookPayment:
    """A provider's event, as applied."""

    event_id: str
    user_id: str
    kind: str
    result: PaymentResult


async def apply_signed_webhook(store: Store, body: bytes, signature: str | None) -> WebhookPayment:
    """Verify a payment provider's signed event and apply it exactly once."""
    settings = store.settings
    verify_webhook(settings.webhook_secret, body, signature, settings.limits.webhook_tolerance_s)
    data = parse_object(body)
    event_id = identifier(data, "event_id", key=True)
    user_id = identifier(data, "user_id")
    package_id = identifier(data, "package_id")
    payer_id = identifier(data, "payer_id") if data.get("payer_id") is not None else None
    kind = data.get("type")
    if kind not in PAYMENT_KINDS:
        raise invalid(f"type must be one of {', '.join(PAYMENT_KINDS)}")
    result = await apply_payment(store, user_id, event_id, kind, package_id, payer_id)
    return WebhookPayment(event_id, user_id, kind, result)


async def apply_payment(
    store: Store,
    user_id: str,
    event_id: str,
    kind: str,
    package_id: str,
    payer_id: str | None = None,
) -> PaymentResult:
    """Apply a provider event once. `payer_id` (who paid, when the provider says) is
    journaled for the risk report; it changes nothing else."""
    package = store.settings.package(package_id)
    if package is None:
        raise GiftingError(ErrorCode.UNKNOWN_PACKAGE, f"no coin package {package_id!r}")
    if kind not in PAYMENT_KINDS:
        raise GiftingError(ErrorCode.INVALID_REQUEST, f"type must be one of {PAYMENT_KINDS}")
    result = await store.run_script(
        "recharge",
        keys=[
            keys.payment_seen(event_id),
            keys.wallet(user_id),
            keys.purchases(user_id),
            keys.journal(user_id),
        ],
        args=[
            user_id,
            event_id,
            kind,
            package.id,
            package.coins,
            f"{user_id}|{kind}|{package.id}",
            store.clock(),
            payer_id or "",
        ],
    )
    coins, credited, clawed_back, owed = (int(v) for v in result[1:5])
    return PaymentResult(coins, credited, clawed_back, owed, replayed=bool(result[5]))
