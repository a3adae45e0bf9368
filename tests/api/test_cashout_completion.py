"""A streamer's cash-out list, and the operator's verdict on a cash-out: paid, or
failed, which returns its diamonds (journaled) and keeps the ledger reconciled."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gifting_server.auth import Role
from gifting_server.config import Settings
from gifting_server.ledger import keys
from gifting_server.ledger.reconcile import reconcile
from tests.api import assert_error, snapshot
from tests.api.test_http_flow import ALICE, STREAMER, buy, gift, go_live, wallet_of
from tests.conftest import SECRET, WEBHOOK_SECRET, ServerThread, make_settings
from tests.factories import auth
from tests.topology import async_client

ADMIN = auth("ops", Role.ADMIN)


@pytest.fixture
def cashout_settings(redis_url: str, tmp_path: Path) -> Settings:
    """Diamonds can be cashed out at once, from 2 diamonds up."""
    return make_settings(
        redis_url, tmp_path, economy={"holding_period_days": 0, "cashout_min_diamonds": 2}
    )


@pytest.fixture
async def http(cashout_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    with ServerThread(cashout_settings) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            yield client


async def earn_and_cash_out(http: httpx.AsyncClient, *amounts: int) -> list[dict[str, Any]]:
    """streamer1 earns 50 diamonds, then asks for each of `amounts`."""
    await go_live(http, "s1")
    await buy(http, "alice")
    assert (await gift(http, ALICE, "k1", gift_id="hand_hearts")).status_code == 200
    made = []
    for i, diamonds in enumerate(amounts):
        body = {"diamonds": diamonds, "idempotency_key": f"c{i}"}
        response = await http.post("/v1/cashouts", json=body, headers=STREAMER)
        assert response.status_code == 201, response.text
        made.append(response.json())
    return made


async def complete(http: httpx.AsyncClient, cashout_id: str, status: object) -> httpx.Response:
    return await http.post(
        f"/v1/cashouts/{cashout_id}/complete", json={"status": status}, headers=ADMIN
    )


async def audit(settings: Settings) -> list[str]:
    assert settings.redis_url
    client = await async_client(settings.redis_url, decode_responses=True)
    try:
        report = await reconcile(client, settings.economy.creator_share_bps)
    finally:
        await client.aclose()
    return report.problems


async def test_a_streamer_lists_their_cashouts_newest_first(http: httpx.AsyncClient) -> None:
    first, second = await earn_and_cash_out(http, 10, 4)
    listed = (await http.get("/v1/cashouts", headers=STREAMER)).json()["cashouts"]
    assert [c["cashout_id"] for c in listed] == [second["cashout_id"], first["cashout_id"]]
    assert listed[0] == {
        "cashout_id": second["cashout_id"],
        "diamonds": 4,
        "amount": {"amount": 2, "currency": "USD"},
        "status": "pending",
        "created_at": listed[0]["created_at"],
    }
    assert listed[0]["created_at"] >= listed[1]["created_at"] > 1_600_000_000_000
    one = (await http.get("/v1/cashouts?limit=1", headers=STREAMER)).json()["cashouts"]
    assert [c["cashout_id"] for c in one] == [second["cashout_id"]]
    other = auth("streamer2", Role.STREAMER)
    assert (await http.get("/v1/cashouts", headers=other)).json() == {"cashouts": []}


async def test_a_failed_cashout_returns_its_diamonds_and_the_ledger_reconciles(
    http: httpx.AsyncClient, cashout_settings: Settings
) -> None:
    [made] = await earn_and_cash_out(http, 20)
    assert (await wallet_of(http, STREAMER))["diamonds"] == 30
    failed = await complete(http, made["cashout_id"], "failed")
    assert failed.status_code == 200, failed.text
    body = failed.json()
    assert (body["status"], body["diamonds"], body["cashout_id"]) == (
        "failed", 20, made["cashout_id"],
    )  # fmt: skip
    assert body["completed_at"] >= body["created_at"]
    wallet = await wallet_of(http, STREAMER)
    assert (wallet["diamonds"], wallet["diamonds_available"]) == (50, 50)
    assert await audit(cashout_settings) == []

    # The same verdict again answers the same and changes nothing.
    assert cashout_settings.redis_url
    client = await async_client(cashout_settings.redis_url, decode_responses=True)
    before = await snapshot(client)  # type: ignore[arg-type]
    again = await complete(http, made["cashout_id"], "failed")
    assert (again.status_code, again.json()) == (200, body)
    assert_error(await complete(http, made["cashout_id"], "paid"), 409, "cashout_conflict")
    assert await snapshot(client) == before  # type: ignore[arg-type]
    journal = await client.xrange(keys.journal("streamer1"))
    await client.aclose()
    returns = [f for _, f in journal if f["type"] == "cashout_failed"]
    assert returns == [
        {
            "type": "cashout_failed", "user": "streamer1", "cashout": made["cashout_id"],
            "diamonds": "20", "at": returns[0]["at"],
        }
    ]  # fmt: skip
    listed = (await http.get("/v1/cashouts", headers=STREAMER)).json()["cashouts"]
    assert [c["status"] for c in listed] == ["failed"]


async def test_a_paid_cashout_keeps_its_diamonds_gone(
    http: httpx.AsyncClient, cashout_settings: Settings
) -> None:
    [made] = await earn_and_cash_out(http, 20)
    paid = await complete(http, made["cashout_id"], "paid")
    assert (paid.status_code, paid.json()["status"]) == (200, "paid")
    assert (await complete(http, made["cashout_id"], "paid")).json() == paid.json()
    assert_error(await complete(http, made["cashout_id"], "failed"), 409, "cashout_conflict")
    assert (await wallet_of(http, STREAMER))["diamonds"] == 30
    assert await audit(cashout_settings) == []


async def test_a_forged_return_fails_the_audit(
    http: httpx.AsyncClient, cashout_settings: Settings
) -> None:
    """A `cashout_failed` entry that returns more than was cashed out, or twice, is
    found: the wallet and conservation agree with the journal, the legs do not."""
    [made] = await earn_and_cash_out(http, 20)
    assert (await complete(http, made["cashout_id"], "failed")).status_code == 200
    assert cashout_settings.redis_url
    client = await async_client(cashout_settings.redis_url, decode_responses=True)
    await client.xadd(
        keys.journal("streamer1"),
        {"type": "cashout_failed", "user": "streamer1", "cashout": made["cashout_id"],
         "diamonds": "25", "at": "1"},
    )  # fmt: skip
    await client.hincrby(keys.wallet("streamer1"), "diamonds", 25)
    await client.aclose()
    problems = await audit(cashout_settings)
    assert any("returned twice" in p for p in problems), problems
    assert any("returns 25 diamonds" in p for p in problems), problems


@pytest.mark.parametrize(
    ("who", "cashout_id", "status", "http_status", "code"),
    [
        (STREAMER, "MADE", "paid", 403, "forbidden"),
        (ALICE, "MADE", "paid", 403, "forbidden"),
        ({}, "MADE", "paid", 401, "unauthorized"),
        (ADMIN, "MADE", "refunded", 422, "invalid_request"),
        (ADMIN, "MADE", None, 422, "invalid_request"),
        (ADMIN, "MADE", ["paid"], 422, "invalid_request"),
        (ADMIN, "co_0123456789abcdef01234567.streamer1", "paid", 404, "unknown_cashout"),
        (ADMIN, "co_0123456789abcdef01234567.nobody", "failed", 404, "unknown_cashout"),
        (ADMIN, "co_0123456789abcdef", "paid", 404, "unknown_cashout"),
        (ADMIN, "co_x.bad id", "paid", 422, "invalid_request"),
        (ADMIN, "co_x.a.", "paid", 404, "unknown_cashout"),
    ],
)
async def test_bad_completions_change_nothing(
    http: httpx.AsyncClient,
    cashout_settings: Settings,
    who: dict[str, str],
    cashout_id: str,
    status: object,
    http_status: int,
    code: str,
) -> None:
    [made] = await earn_and_cash_out(http, 20)
    target = made["cashout_id"] if cashout_id == "MADE" else cashout_id
    assert cashout_settings.redis_url
    client = await async_client(cashout_settings.redis_url, decode_responses=True)
    before = await snapshot(client)  # type: ignore[arg-type]
    response = await http.post(
        f"/v1/cashouts/{target}/complete", json={"status": status}, headers=who
    )
    assert_error(response, http_status, code)
    assert await snapshot(client) == before  # type: ignore[arg-type]
    await client.aclose()


async def test_listing_needs_a_streamer_token(http: httpx.AsyncClient) -> None:
    assert_error(await http.get("/v1/cashouts", headers=ALICE), 403, "forbidden")
    assert_error(await http.get("/v1/cashouts", headers=ADMIN), 403, "forbidden")
    assert_error(await http.get("/v1/cashouts"), 401, "unauthorized")
    assert_error(await http.get("/v1/cashouts?limit=0", headers=STREAMER), 422, "invalid_request")


async def test_the_cli_completes_a_cashout(
    http: httpx.AsyncClient, cashout_settings: Settings, tmp_path: Path
) -> None:
    [made] = await earn_and_cash_out(http, 20)
    env = {
        "GIFTING_REDIS_URL": str(cashout_settings.redis_url),
        "GIFTING_DATA_DIR": str(tmp_path),
        "GIFTING_SECRET": SECRET,
        "GIFTING_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "PATH": "/usr/bin:/bin",
    }

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "gifting_server", "cashout-complete", *args]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)

    done = cli(made["cashout_id"], "--status", "failed")
    assert done.returncode == 0, done.stderr
    assert '"status":"failed"' in done.stdout
    assert (await wallet_of(http, STREAMER))["diamonds"] == 50
    refused = cli(made["cashout_id"], "--status", "paid")
    assert refused.returncode == 1 and "cashout_conflict" in refused.stderr
    assert cli("co_nope", "--status", "paid").returncode == 1
    assert cli(made["cashout_id"], "--status", "maybe").returncode == 2


async def test_an_unreadable_record_is_storage_corrupt_not_a_crash(
    http: httpx.AsyncClient, cashout_settings: Settings
) -> None:
    [made] = await earn_and_cash_out(http, 20)
    assert cashout_settings.redis_url
    client = await async_client(cashout_settings.redis_url, decode_responses=True)
    await client.hset(keys.cashouts("streamer1"), made["cashout_id"], "{not json")
    await client.aclose()
    assert_error(await http.get("/v1/cashouts", headers=STREAMER), 503, "storage_corrupt")
    assert_error(await complete(http, made["cashout_id"], "failed"), 503, "storage_corrupt")
    assert (await wallet_of(http, STREAMER))["diamonds"] == 30
