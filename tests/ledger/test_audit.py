"""One audit line per business event, on `gifting_server.audit`, from the use cases."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from gifting_server.config import Settings
from gifting_server.errors import GiftingError
from gifting_server.ledger import cashouts, gifts, payments, streams, wallet
from gifting_server.ledger.store import Store
from tests.conftest import make_settings
from tests.factories import fund, live_stream, signed_webhook, viewer


def audited(caplog: pytest.LogCaptureFixture) -> list[tuple[str, dict[str, Any]]]:
    return [
        (r.getMessage(), getattr(r, "fields", {}))
        for r in caplog.records
        if r.name == "gifting_server.audit"
    ]


@pytest.fixture
def settings(redis_url: str, tmp_path: Path) -> Settings:
    return make_settings(redis_url, tmp_path, economy={"holding_period_days": 0})


@pytest.fixture
def caplog(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="gifting_server.audit")
    return caplog


async def test_a_cash_out_is_audited_when_created_replayed_and_paid(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    await fund(store, "alice", "coins_50000")
    await live_stream(store)
    rose = store.settings.gift("rose")
    assert rose is not None
    await gifts.run_send_gift(store, viewer("alice"), "s1", rose, 4000, "earn")
    caplog.clear()

    created = await wallet.cashout(store, "streamer1", 2000, "co-1")
    await wallet.cashout(store, "streamer1", 2000, "co-1")
    await cashouts.complete(store, created.cashout_id, "paid")

    [(first, fields), (again, _), (paid, paid_fields)] = audited(caplog)
    assert (first, again, paid) == ("cashout_created", "cashout_replayed", "cashout_paid")
    assert fields["cashout_id"] == created.cashout_id
    assert (fields["diamonds"], fields["cents"], fields["streamer_id"]) == (2000, 1000, "streamer1")
    assert paid_fields["cashout_id"] == created.cashout_id


async def test_streams_are_audited_once_per_start_and_end(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    await streams.start_stream(store, "streamer1", "s1")
    await streams.start_stream(store, "streamer1", "s1")  # live already: no line
    await streams.end_stream(store, "streamer1", "s1")
    await streams.end_stream(store, "streamer1", "s1")  # ended already: no line

    assert [message for message, _ in audited(caplog)] == ["stream_started", "stream_ended"]


async def test_a_refund_and_a_refused_signature_are_audited_without_the_signature(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    event = {"event_id": "e1", "user_id": "bob", "package_id": "coins_100"}
    raw, headers = signed_webhook({**event, "type": "payment.succeeded"})
    await payments.apply_signed_webhook(store, raw, headers["Gifting-Signature"])
    raw, headers = signed_webhook({**event, "event_id": "e2", "type": "payment.refunded"})
    await payments.apply_signed_webhook(store, raw, headers["Gifting-Signature"])
    forged = headers["Gifting-Signature"][:-4] + "0000"
    with pytest.raises(GiftingError):
        await payments.apply_signed_webhook(store, raw, forged)

    lines = audited(caplog)
    assert [message for message, _ in lines] == [
        "payment_applied",
        "payment_refunded",
        "webhook_signature_rejected",
    ]
    assert lines[1][1]["coins_clawed_back"] == 100
    assert forged not in str(lines) and "v1=" not in str(lines)
