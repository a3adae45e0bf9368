"""The HTTP API end to end over a real socket: streams, gifts, leaderboards, wallet, limits,
cash-outs, health, metrics and the OpenAPI document."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.routing import Route

from gifting_server.api import battles_http, streamer_http
from gifting_server.api import http as http_api
from gifting_server.api import speech as speech_api
from gifting_server.api import studio as studio_api
from gifting_server.auth import Role
from gifting_server.config import Settings
from gifting_server.ids import ID_PATTERN, KEY_PATTERN, is_id, schema_pattern
from tests.api import assert_error
from tests.conftest import ServerThread, make_settings
from tests.factories import auth, post_webhook

STREAMER = auth("streamer1", Role.STREAMER, name="Streamer One")
ALICE = auth("alice", name="Alice")
BOB = auth("bob", name="Bob")


async def buy(http: httpx.AsyncClient, user_id: str, package_id: str = "coins_100") -> None:
    body: dict[str, object] = {
        "event_id": f"buy-{user_id}-{package_id}",
        "type": "payment.succeeded",
        "user_id": user_id,
        "package_id": package_id,
    }
    response = await post_webhook(http, body)
    assert response.status_code == 200, response.text


async def go_live(http: httpx.AsyncClient, stream_id: str, who: dict[str, str] = STREAMER) -> None:
    response = await http.post("/v1/streams", json={"stream_id": stream_id}, headers=who)
    assert response.status_code == 201, response.text


async def gift(
    http: httpx.AsyncClient,
    who: dict[str, str],
    key: str,
    gift_id: str = "rose",
    count: int = 1,
    stream_id: str = "s1",
) -> httpx.Response:
    body = {"gift_id": gift_id, "count": count, "idempotency_key": key}
    return await http.post(f"/v1/streams/{stream_id}/gifts", json=body, headers=who)


async def wallet_of(http: httpx.AsyncClient, who: dict[str, str]) -> dict[str, Any]:
    response = await http.get("/v1/wallet", headers=who)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


async def test_create_stream_is_201_then_200_while_live(http: httpx.AsyncClient) -> None:
    first = await http.post("/v1/streams", json={"stream_id": "s1"}, headers=STREAMER)
    assert (first.status_code, first.json()) == (201, {"stream_id": "s1", "status": "live"})
    again = await http.post("/v1/streams", json={"stream_id": "s1"}, headers=STREAMER)
    assert (again.status_code, again.json()) == (200, {"stream_id": "s1", "status": "live"})
    status = await http.get("/v1/streams/s1")
    assert status.json() == {
        "stream_id": "s1",
        "streamer_id": "streamer1",
        "streamer_name": "Streamer One",
        "status": "live",
        "coins_total": 0,
        "alerts_paused": False,
        "goal": None,
    }


async def test_create_stream_without_a_body_picks_an_id(http: httpx.AsyncClient) -> None:
    response = await http.post("/v1/streams", headers=STREAMER)
    assert response.status_code == 201, response.text
    stream_id = response.json()["stream_id"]
    assert is_id(stream_id)
    assert (await http.get(f"/v1/streams/{stream_id}")).json()["status"] == "live"


async def test_gift_debits_the_viewer_credits_the_streamer_and_counts_the_combo(
    http: httpx.AsyncClient,
) -> None:
    await go_live(http, "s1")
    await buy(http, "alice")
    first = await gift(http, ALICE, "k1", count=3)
    assert first.status_code == 200, first.text
    assert first.json() == {"event_id": 1, "coins": 97, "combo": 3}
    second = await gift(http, ALICE, "k2", gift_id="finger_heart", count=2)
    assert second.json() == {"event_id": 2, "coins": 87, "combo": 2}
    alice = await wallet_of(http, ALICE)
    assert alice == {
        "user_id": "alice",
        "coins": 87,
        "diamonds": 0,
        "spent_today": 13,
        "daily_limit": None,
        "owed": 0,
    }
    assert (await wallet_of(http, STREAMER))["diamonds"] == 6  # floor(13 * 50%)
    assert (await http.get("/v1/streams/s1")).json()["coins_total"] == 13


async def test_same_idempotency_key_answers_the_first_result_and_debits_once(
    http: httpx.AsyncClient,
) -> None:
    await go_live(http, "s1")
    await buy(http, "alice")
    first = await gift(http, ALICE, "same", count=2)
    again = await gift(http, ALICE, "same", count=2)
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json()
    assert (await wallet_of(http, ALICE))["coins"] == 98
    assert_error(await gift(http, ALICE, "same", count=3), 409, "idempotency_conflict")
    by_header = await http.post(
        "/v1/streams/s1/gifts",
        json={"gift_id": "rose"},
        headers={**ALICE, "Idempotency-Key": "from-header"},
    )
    assert by_header.status_code == 200, by_header.text
    assert by_header.json()["coins"] == 97  # count defaults to 1


@pytest.mark.parametrize("period", ["stream", "day", "week", "all"])
async def test_leaderboard_ranks_gifters_with_names(period: str, http: httpx.AsyncClient) -> None:
    await go_live(http, "s1")
    await go_live(http, "s2")
    for user_id in ("alice", "bob"):
        await buy(http, user_id)
    assert (await gift(http, ALICE, "a1", count=3)).status_code == 200
    assert (await gift(http, BOB, "b1", gift_id="finger_heart", count=2)).status_code == 200
    assert (await gift(http, ALICE, "a2", count=20, stream_id="s2")).status_code == 200

    response = await http.get(f"/v1/streams/s1/leaderboard?period={period}")
    assert response.status_code == 200, response.text
    # the stream board counts s1 only; day, week and all count the streamer's every stream
    alice_coins = 3 if period == "stream" else 23
    expected = [
        {"rank": 1, "user_id": "alice", "name": "Alice", "coins": alice_coins},
        {"rank": 2, "user_id": "bob", "name": "Bob", "coins": 10},
    ]
    if period == "stream":
        expected = [{**expected[1], "rank": 1}, {**expected[0], "rank": 2}]
    assert response.json() == {"stream_id": "s1", "period": period, "entries": expected}
    top = await http.get(f"/v1/streams/s1/leaderboard?period={period}&limit=1")
    assert top.json()["entries"] == expected[:1]


async def test_leaderboard_defaults_to_the_stream_and_is_empty_before_gifts(
    http: httpx.AsyncClient,
) -> None:
    await go_live(http, "s1")
    response = await http.get("/v1/streams/s1/leaderboard")
    assert response.json() == {"stream_id": "s1", "period": "stream", "entries": []}


async def test_daily_limit_is_enforced_and_can_be_removed(http: httpx.AsyncClient) -> None:
    await go_live(http, "s1")
    await buy(http, "alice")
    assert (await gift(http, ALICE, "k1", count=3)).status_code == 200
    limited = await http.put("/v1/wallet/limits", json={"daily_coin_limit": 5}, headers=ALICE)
    assert limited.status_code == 200, limited.text
    assert (limited.json()["daily_limit"], limited.json()["spent_today"]) == (5, 3)

    assert_error(await gift(http, ALICE, "k2", count=3), 403, "daily_limit_exceeded")
    assert (await wallet_of(http, ALICE))["coins"] == 97
    assert (await gift(http, ALICE, "k3", count=2)).status_code == 200  # exactly the budget
    assert_error(await gift(http, ALICE, "k4"), 403, "daily_limit_exceeded")

    removed = await http.put("/v1/wallet/limits", json={"daily_coin_limit": None}, headers=ALICE)
    assert removed.json()["daily_limit"] is None
    assert (await gift(http, ALICE, "k5")).status_code == 200
    assert (await wallet_of(http, ALICE))["coins"] == 94


async def test_ending_a_stream(http: httpx.AsyncClient) -> None:
    await go_live(http, "s1")
    await buy(http, "alice")
    other = auth("streamer2", Role.STREAMER)
    assert_error(await http.post("/v1/streams/s1/end", headers=other), 403, "not_stream_owner")
    assert (await gift(http, ALICE, "k1")).status_code == 200

    ended = await http.post("/v1/streams/s1/end", headers=STREAMER)
    assert (ended.status_code, ended.json()) == (200, {"stream_id": "s1", "status": "ended"})
    assert_error(await gift(http, ALICE, "k2"), 409, "stream_not_live")
    assert (await wallet_of(http, ALICE))["coins"] == 99
    again = await http.post("/v1/streams/s1/end", headers=STREAMER)
    assert again.status_code == 200
    assert (await http.get("/v1/streams/s1")).json()["status"] == "ended"
    taken = await http.post("/v1/streams", json={"stream_id": "s1"}, headers=other)
    assert_error(taken, 409, "stream_id_taken")

    await go_live(http, "s1")  # the owner reopens it: 201 again
    reopened = await gift(http, ALICE, "k3")
    assert reopened.status_code == 200
    assert reopened.json()["event_id"] == 3  # after gift 1 and stream_ended 2


@pytest.fixture
async def cashout_http(redis_url: str, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """A server whose diamonds can be cashed out at once, from 2 diamonds up."""
    settings = make_settings(
        redis_url, tmp_path, economy={"holding_period_days": 0, "cashout_min_diamonds": 2}
    )
    with ServerThread(settings) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            yield client


async def test_cashout_of_earned_diamonds(cashout_http: httpx.AsyncClient) -> None:
    http = cashout_http
    await go_live(http, "s1")
    await buy(http, "alice")
    assert (await gift(http, ALICE, "k1", count=11)).status_code == 200
    assert (await wallet_of(http, STREAMER))["diamonds"] == 5

    body = {"diamonds": 4, "idempotency_key": "c1"}
    first = await http.post("/v1/cashouts", json=body, headers=STREAMER)
    assert first.status_code == 201, first.text
    data = first.json()
    assert data["cashout_id"]
    assert {k: v for k, v in data.items() if k != "cashout_id"} == {
        "diamonds": 4,
        "amount": {"amount": 2, "currency": "USD"},
        "status": "pending",
        "diamonds_left": 1,
    }
    again = await http.post("/v1/cashouts", json=body, headers=STREAMER)
    assert (again.status_code, again.json()) == (201, data)
    conflict = await http.post(
        "/v1/cashouts", json={"diamonds": 2, "idempotency_key": "c1"}, headers=STREAMER
    )
    assert_error(conflict, 409, "idempotency_conflict")
    more = await http.post(
        "/v1/cashouts", json={"diamonds": 2, "idempotency_key": "c2"}, headers=STREAMER
    )
    assert_error(more, 402, "insufficient_diamonds")
    assert (await wallet_of(http, STREAMER))["diamonds"] == 1


async def test_cashout_waits_for_the_holding_period(http: httpx.AsyncClient) -> None:
    await go_live(http, "s1")
    await buy(http, "alice", "coins_5000")
    assert (await gift(http, ALICE, "k1", gift_id="disco_ball", count=4)).status_code == 200
    assert (await wallet_of(http, STREAMER))["diamonds"] == 2000
    body = {"diamonds": 2000, "idempotency_key": "c1"}
    held = await http.post("/v1/cashouts", json=body, headers=STREAMER)
    assert_error(held, 402, "insufficient_diamonds")


async def test_catalog_lists_gifts_and_packages(
    http: httpx.AsyncClient, settings: Settings
) -> None:
    gifts = (await http.get("/v1/gifts")).json()["gifts"]
    assert [g["id"] for g in gifts] == [g.id for g in settings.gifts]
    rose = next(g for g in gifts if g["id"] == "rose")
    assert {k: rose[k] for k in ("name", "coins", "tier")} == {
        "name": "Rose",
        "coins": 1,
        "tier": 1,
    }
    packages = (await http.get("/v1/coin-packages")).json()["packages"]
    assert packages[0] == {
        "id": "coins_100",
        "coins": 100,
        "price": {"amount": 129, "currency": "USD"},
    }
    assert len(packages) == len(settings.packages)


async def test_health_and_readiness(http: httpx.AsyncClient) -> None:
    health = await http.get("/healthz")
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    ready = await http.get("/readyz")
    assert (ready.status_code, ready.json()) == (200, {"status": "ready"})


async def test_metrics_are_prometheus_text(http: httpx.AsyncClient) -> None:
    await go_live(http, "s1")
    await buy(http, "alice")
    assert (await gift(http, ALICE, "k1")).status_code == 200
    response = await http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert "# TYPE gifting_gift_ack_seconds histogram" in text
    assert re.search(r'^gifting_gift_ack_seconds_count\{path="http"\} [1-9]', text, re.M)
    assert re.search(
        r'^gifting_payments_total\{kind="payment.succeeded",replayed="false"\} [1-9]', text, re.M
    )
    for line in text.splitlines():  # every line is a comment or `name{labels} value`
        assert line.startswith("#") or re.match(r"^[a-zA-Z_:][\w:]*(\{.*\})? \S+$", line), line


def routes_of_the_app() -> list[tuple[str, str]]:
    found = [("/openapi.json", "get"), ("/metrics", "get")]
    every = [
        *http_api.routes,
        *studio_api.routes,
        *speech_api.routes,
        *streamer_http.routes,
        *battles_http.routes,
    ]
    for route in every:
        assert isinstance(route, Route)
        found += [(route.path, m.lower()) for m in route.methods or () if m != "HEAD"]
    return found


def refs_in(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [r for value in node.values() for r in refs_in(value)]
    if isinstance(node, list):
        return [r for value in node for r in refs_in(value)]
    return []


async def test_openapi_documents_every_route(http: httpx.AsyncClient, settings: Settings) -> None:
    response = await http.get("/openapi.json")
    assert response.status_code == 200
    doc = response.json()
    assert doc["openapi"] == "3.1.0"
    assert doc["info"]["title"] and doc["info"]["version"]
    documented = {(path, m) for path, item in doc["paths"].items() for m in item}
    assert documented == set(routes_of_the_app())
    schemas = doc["components"]["schemas"]
    for ref in refs_in(doc):
        assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in schemas, ref
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"

    for path, item in doc["paths"].items():
        for method, op in item.items():
            assert op["summary"] and op["responses"], (path, method)
            assert any(s.startswith("2") for s in op["responses"]), (path, method)
            for status, answer in op["responses"].items():
                if not status.startswith("2"):
                    schema = answer["content"]["application/json"]["schema"]
                    assert schema["required"] == ["error"], (path, method, status)
                    codes = schema["properties"]["error"]["properties"]["code"]["enum"]
                    assert codes and all(re.fullmatch(r"[a-z_]+", c) for c in codes)
            if op["security"]:
                assert {"401", "403"} <= set(op["responses"]), (path, method)
            for name in re.findall(r"\{(\w+)\}", path):
                assert any(p["in"] == "path" and p["name"] == name for p in op["parameters"])

    gift_op = doc["paths"]["/v1/streams/{stream_id}/gifts"]["post"]
    assert set(gift_op["responses"]) >= {"200", "401", "402", "403", "404", "409", "413", "422"}
    gift_errors = gift_op["responses"]["403"]["content"]["application/json"]["schema"]
    assert (
        "daily_limit_exceeded" in gift_errors["properties"]["error"]["properties"]["code"]["enum"]
    )
    gift_body = schemas["GiftRequest"]
    assert gift_body["required"] == ["gift_id"]
    assert gift_body["properties"]["count"]["minimum"] == 1
    assert gift_body["properties"]["count"]["maximum"] == settings.limits.max_gift_count
    assert gift_body["properties"]["gift_id"]["pattern"] == schema_pattern(ID_PATTERN)
    assert gift_body["properties"]["idempotency_key"]["pattern"] == schema_pattern(KEY_PATTERN)
    assert schemas["CashoutRequest"]["properties"]["diamonds"]["minimum"] == 1
    limit = schemas["DailyLimit"]["properties"]["daily_coin_limit"]
    assert limit["type"] == ["integer", "null"]
    assert limit["maximum"] == settings.limits.max_daily_coin_limit
    webhook = doc["paths"]["/v1/payments/webhook"]["post"]
    assert webhook["security"] == []
    assert any(
        p["name"] == "Gifting-Signature" and p["in"] == "header" and p["required"]
        for p in webhook["parameters"]
    )
    metrics = doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert "text/plain" in metrics
