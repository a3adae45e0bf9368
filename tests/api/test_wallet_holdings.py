"""GET /v1/wallet for a streamer: the diamonds that can be cashed out now and the ones
still held, each with the moment (unix ms) they are released."""

from __future__ import annotations

import time

import httpx

from gifting_server.config import Settings
from gifting_server.ledger import keys
from gifting_server.ledger.clock import DAY_MS, HOUR_MS, day_number
from tests.api.test_http_flow import ALICE, STREAMER, buy, gift, go_live, wallet_of
from tests.topology import sync_client


def now_ms() -> int:
    return time.time_ns() // 1_000_000


async def test_a_streamers_wallet_shows_held_diamonds_until_the_end_of_their_period(
    http: httpx.AsyncClient, settings: Settings
) -> None:
    hold = settings.economy.holding_period_days * DAY_MS
    await buy(http, "alice", "coins_1000")
    await go_live(http, "s1")
    before = now_ms()
    assert (await gift(http, ALICE, "g1", "hand_hearts", 3)).status_code == 200
    after = now_ms()

    wallet = await wallet_of(http, STREAMER)
    assert (wallet["diamonds"], wallet["diamonds_available"]) == (150, 0)
    [held] = wallet["diamonds_held"]
    assert held["diamonds"] == 150
    assert held["until"] % HOUR_MS == 0  # hourly buckets, rounded up: never sooner
    assert before + hold <= held["until"] < after + hold + HOUR_MS

    viewer = await wallet_of(http, ALICE)
    assert "diamonds_held" not in viewer and "diamonds_available" not in viewer


async def test_diamonds_earned_before_hourly_holds_are_held_to_the_end_of_their_day(
    http: httpx.AsyncClient, settings: Settings
) -> None:
    """Buckets by UTC day, as kept before: released at the end of the day plus the period;
    a released one counts as available."""
    hold = settings.economy.holding_period_days * DAY_MS
    today = day_number(now_ms())
    assert settings.redis_url
    client = sync_client(settings.redis_url)
    client.hset(keys.wallet("streamer1"), "diamonds", 100)
    client.hset(keys.earnings_by_day("streamer1"), mapping={today: 30, today - 30: 50})
    client.close()

    wallet = await wallet_of(http, STREAMER)
    assert wallet["diamonds_held"] == [{"diamonds": 30, "until": (today + 1) * DAY_MS + hold}]
    assert wallet["diamonds_available"] == 70


async def test_a_streamer_with_nothing_held_has_every_diamond_available(
    http: httpx.AsyncClient,
) -> None:
    wallet = await wallet_of(http, STREAMER)
    assert (wallet["diamonds_available"], wallet["diamonds_held"]) == (0, [])
