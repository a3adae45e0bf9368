"""Coins in: payment-provider events applied to wallets, exactly once."""

from __future__ import annotations

from dataclasses import dataclass

from gifting_server.errors import ErrorCode, GiftingError
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
            keys.JOURNAL,
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
