"""Coins in: payment-provider events applied to wallets, exactly once.

`apply_signed_webhook` is the use case both edges call: the provider's webhook
and the demo purchase, which signs its event like a provider would."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gifting_server.auth import verify_webhook
from gifting_server.errors import ErrorCode, GiftingError
from gifting_server.fields import identifier, invalid, parse_object
from gifting_server.ledger import keys
from gifting_server.ledger.store import Store
from gifting_server.logs import audit

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
    try:
        verify_webhook(
            settings.webhook_secret, body, signature, settings.limits.webhook_tolerance_s
        )
    except GiftingError as e:
        audit("webhook_signature_rejected", reason=e.message, body_bytes=len(body))
        raise
    data = parse_object(body)
    event_id = identifier(data, "event_id", key=True)
    user_id = identifier(data, "user_id")
    package_id = identifier(data, "package_id")
    payer_id = identifier(data, "payer_id") if data.get("payer_id") is not None else None
    kind = data.get("type")
    if kind not in PAYMENT_KINDS:
        raise invalid(f"type must be one of {', '.join(PAYMENT_KINDS)}")
    result = await apply_payment(store, user_id, event_id, kind, package_id, payer_id)
    audit(
        "payment_duplicate"
        if result.replayed
        else ("payment_applied" if kind == "payment.succeeded" else "payment_refunded"),
        event_id=event_id,
        user_id=user_id,
        package_id=package_id,
        coins_credited=result.credited,
        coins_clawed_back=result.clawed_back,
        coins_owed=result.owed,
    )
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
    fingerprint = f"{user_id}|{kind}|{package.id}"
    args = [user_id, event_id, kind, package.id, package.coins, fingerprint, store.clock()]
    args.append(payer_id or "")
    if not store.payments_across_slots:
        return await _recharge(store, keys.payment_seen(event_id), user_id, args)
    return await _apply_across_slots(store, user_id, event_id, fingerprint, args)


async def _recharge(store: Store, record: str, user_id: str, args: list[Any]) -> PaymentResult:
    """recharge.lua, idempotent by `record`: in the user's slot with the user's keys."""
    user_keys = [keys.wallet(user_id), keys.purchases(user_id), keys.journal(user_id)]
    result = await store.run_script("recharge", keys=[record, *user_keys], args=args)
    coins, credited, clawed_back, owed = (int(v) for v in result[1:5])
    return PaymentResult(coins, credited, clawed_back, owed, replayed=bool(result[5]))


async def _apply_across_slots(
    store: Store, user_id: str, event_id: str, fingerprint: str, args: list[Any]
) -> PaymentResult:
    """The payment's record and its user's keys in two slots (a cluster): claim the event
    id in the record's slot, apply it in the user's, then mark the record applied. Each
    step is idempotent; a crash between them leaves a pending claim that the provider's
    retry (it got no 200) finishes (docs/scaling.md, "Payments across slots")."""
    record = keys.payment_seen(event_id)
    claim = await store.run_script("claim_payment", keys=[record], args=[fingerprint])
    if claim[1]:
        coins, credited, clawed_back, owed = (int(v) for v in claim[2:6])
        return PaymentResult(coins, credited, clawed_back, owed, replayed=True)
    try:
        result = await _recharge(store, keys.user_payment(user_id, event_id), user_id, args)
    except GiftingError as refused:
        # Refused before its first write: nothing moved, so free the event id as the
        # one-script path does. Unavailable storage may have run it: keep the claim.
        if refused.code is not ErrorCode.SERVICE_UNAVAILABLE:
            await store.run_script("release_payment_claim", keys=[record], args=[fingerprint])
        raise
    amounts = [result.coins, result.credited, result.clawed_back, result.owed]
    await store.run_script("mark_payment_applied", keys=[record], args=[fingerprint, *amounts])
    return result
