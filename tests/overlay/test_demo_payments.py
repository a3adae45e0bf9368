"""POST /v1/demo/payments: only in demo mode, and only through the webhook's path."""

from __future__ import annotations

import dataclasses
import re
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import orjson
import pytest

from gifting_server.auth import Role, verify_token
from gifting_server.config import Settings, load_settings
from gifting_server.ledger import keys
from gifting_server.ledger.store import Store
from tests.conftest import SECRET, ServerThread
from tests.factories import auth
from tests.ledger.support import journal_entries
from tests.test_cli import Served

PAY = "/v1/demo/payments"


@pytest.fixture
async def demo_http(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    with ServerThread(dataclasses.replace(settings, demo_payments=True)) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            yield client


async def test_a_demo_purchase_is_a_signed_webhook_event_applied_once(
    demo_http: httpx.AsyncClient, store: Store
) -> None:
    body = {"package_id": "coins_500", "idempotency_key": "buy-1"}
    first = await demo_http.post(PAY, json=body, headers=auth("alice"))
    assert first.status_code == 200, first.text
    data = first.json()
    assert data["status"] == "applied" and data["coins"] == 500 and data["credited"] == 500
    assert data["user_id"] == "alice" and data["event_id"].startswith("demo_")

    again = await demo_http.post(PAY, json=body, headers=auth("alice"))
    assert again.json()["status"] == "duplicate" and again.json()["coins"] == 500
    other = await demo_http.post(
        PAY, json={**body, "package_id": "coins_100"}, headers=auth("alice")
    )
    assert other.json()["error"]["code"] == "idempotency_conflict"

    # The journal holds one purchase, exactly like a provider's webhook leaves it.
    entries = await store.redis.xrange(keys.journal("alice"))
    assert [(e[1]["type"], e[1]["coins"]) for e in entries] == [("purchase", "500")]
    assert await store.redis.exists(keys.payment_seen(data["event_id"]))

    # The same key from another viewer is another purchase.
    bob = await demo_http.post(PAY, json=body, headers=auth("bob"))
    assert bob.json()["status"] == "applied"


@pytest.mark.parametrize(
    ("headers", "body", "status", "code"),
    [
        ({}, {"package_id": "coins_500", "idempotency_key": "k"}, 401, "unauthorized"),
        (
            auth("streamer1", Role.STREAMER),
            {"package_id": "coins_500", "idempotency_key": "k"},
            403,
            "forbidden",
        ),
        (
            auth("minor", adult=False),
            {"package_id": "coins_500", "idempotency_key": "k"},
            403,
            "age_verification_required",
        ),
        (auth("alice"), {"package_id": "coins_7", "idempotency_key": "k"}, 404, "unknown_package"),
        (auth("alice"), {"package_id": "coins_500"}, 422, "invalid_request"),
        (auth("alice"), {"idempotency_key": "k", "package_id": 5}, 422, "invalid_request"),
    ],
)
async def test_bad_demo_purchases_are_refused_and_change_nothing(
    demo_http: httpx.AsyncClient,
    store: Store,
    headers: dict[str, str],
    body: dict[str, object],
    status: int,
    code: str,
) -> None:
    response = await demo_http.post(PAY, content=orjson.dumps(body), headers=headers)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert await journal_entries(store.redis) == []


async def test_the_demo_endpoint_is_documented_only_when_it_exists(
    demo_http: httpx.AsyncClient, http: httpx.AsyncClient
) -> None:
    assert PAY in (await demo_http.get("/openapi.json")).json()["paths"]
    assert PAY not in (await http.get("/openapi.json")).json()["paths"]
    page = await demo_http.get("/client")
    assert 'data-demo-payments="on"' in page.text


def test_demo_payments_are_off_unless_configured_or_served_with_demo(tmp_path: Path) -> None:
    env = {"GIFTING_DATA_DIR": str(tmp_path)}
    assert load_settings(env).demo_payments is False
    assert load_settings({**env, "GIFTING_DEMO_PAYMENTS": "1"}).demo_payments is True
    overlay = tmp_path / "demo.toml"
    overlay.write_text("[server]\ndemo_payments = true\n")
    assert load_settings({**env, "GIFTING_CONFIG": str(overlay)}).demo_payments is True


def test_serve_demo_prints_working_urls_and_turns_demo_payments_on(tmp_path: Path) -> None:
    server = Served(tmp_path / "data").start()
    try:
        urls = re.findall(r"(http://\S+/(?:client|studio|overlay/\w+)\?\S+)", server.output())
        clients = [u for u in urls if "/client?" in u]
        overlays = [u for u in urls if "/overlay/" in u]
        studios = [u for u in urls if "/studio?" in u]
        assert (len(clients), len(overlays), len(studios)) == (4, 5, 1), server.output()
        with httpx.Client(timeout=10) as client:
            for url in urls:
                page = client.get(url)
                assert page.status_code == 200 and page.headers["content-type"].startswith(
                    "text/html"
                )
            query = parse_qs(urlsplit(overlays[0]).query)
            who = verify_token(SECRET, query["token"][0])
            assert (who.role, who.stream_id, query["stream_id"]) == (Role.OVERLAY, "demo", ["demo"])
            assert 'data-demo-payments="on"' in client.get(clients[-1]).text
            streamer = verify_token(SECRET, parse_qs(urlsplit(studios[0]).query)["token"][0])
            assert (streamer.role, streamer.user_id) == (Role.STREAMER, "demo_streamer")
            newcomer = parse_qs(urlsplit(clients[-1]).query)["token"][0]
            bought = client.post(
                f"{server.url}{PAY}",
                json={"package_id": "coins_100", "idempotency_key": "first"},
                headers={"Authorization": f"Bearer {newcomer}"},
            )
            assert bought.status_code == 200 and bought.json()["coins"] == 100, bought.text
        assert server.terminate() in (0, -signal.SIGTERM), server.output()
    finally:
        server.cleanup()
