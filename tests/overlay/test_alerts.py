"""/overlay/alerts in a real chromium: gifts from the HTTP API become alerts."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest
from playwright.sync_api import expect

from gifting_server.config import History
from tests.hub.redis_proxy import RedisProxy, subscribes
from tests.overlay.conftest import Live, Pages, overlay_settings, screenshot, wait_live

SHOWN = "window.__alertsShown"


def test_a_gift_sent_over_http_appears_within_a_second(live: Live, pages: Pages) -> None:
    live.fund("alice")
    page = pages.open(live.overlay_url("alerts", duration=3, sound="off"))
    wait_live(page)

    started = time.monotonic()
    live.gift("alice", "rose", count=5)
    page.wait_for_function(f"() => {SHOWN}.length === 1", timeout=1_000)
    assert time.monotonic() - started < 1.0

    alert = page.locator("#stage .alert")
    expect(alert).to_contain_text("Alice sent Rose x5")
    expect(alert.locator(".art")).to_have_text("🌹")
    shown = page.evaluate(SHOWN)
    assert [(a["name"], a["gift"], a["count"]) for a in shown] == [("Alice", "Rose", 5)]


# Fifteen gifts over HTTP one after another: on a machine busy with other tests a gift
# took up to 0.3 s, and a gap between two of them passed the tests' 500 ms window,
# which ended the streak at nine.
@pytest.mark.limits(combo_window_ms=3_000)
def test_a_fifteen_tap_streak_is_one_alert_that_counts_to_fifteen(live: Live, pages: Pages) -> None:
    live.fund("bob")
    page = pages.open(live.overlay_url("alerts", duration=2, sound="off"))
    wait_live(page)

    for _ in range(15):
        live.gift("bob", "finger_heart")
    count = page.locator("#stage .alert .count")
    expect(count).to_have_text("15")
    expect(page.locator("#stage .alert")).to_have_count(1)
    page.wait_for_function(
        "() => document.querySelector('#stage .alert').dataset.phase === 'shown'"
    )
    screenshot(page, "alerts-streak")

    # The streak's end closes the alert; it was one alert all along.
    page.wait_for_function(f"() => {SHOWN}[0].ended", timeout=10_000)  # the window, then the end
    shown = page.evaluate(SHOWN)
    assert [(a["name"], a["gift"], a["count"]) for a in shown] == [("Bob", "Finger Heart", 15)]
    expect(page.locator("#stage .alert")).to_have_count(0)


def test_alerts_queue_one_at_a_time_in_order_and_skip_small_gifts(live: Live, pages: Pages) -> None:
    for user in ("alice", "bob", "carol"):
        live.fund(user, "coins_5000")
    url = live.overlay_url("alerts", duration=0.5, sound="off", min_coins=10)
    page = pages.open(url)
    wait_live(page)
    # Never two alerts on screen: count them at every animation frame.
    page.evaluate(
        """() => {
          window.__mostAtOnce = 0;
          const watch = () => {
            const now = document.querySelectorAll('#stage .alert').length;
            window.__mostAtOnce = Math.max(window.__mostAtOnce, now);
            requestAnimationFrame(watch);
          };
          watch();
        }"""
    )

    live.gift("alice", "doughnut")  # 30 coins
    live.gift("bob", "rose", count=3)  # 3 coins: under min_coins
    live.gift("carol", "hand_hearts")  # 100
    live.gift("bob", "money_gun")  # 500

    page.wait_for_function(f"() => {SHOWN}.length === 3 && {SHOWN}.every(a => a.ended)")
    page.wait_for_function("() => document.querySelectorAll('#stage .alert').length === 0")
    shown = page.evaluate(SHOWN)
    assert [(a["name"], a["gift_id"]) for a in shown] == [
        ("Alice", "doughnut"),
        ("Carol", "hand_hearts"),
        ("Bob", "money_gun"),
    ]
    assert page.evaluate("window.__mostAtOnce") == 1


def test_template_position_and_theme_come_from_the_query_string(live: Live, pages: Pages) -> None:
    live.fund("carol", "coins_50000")
    url = live.overlay_url(
        "alerts",
        template="{name} just gifted {count} x {gift}!",
        position="top",
        theme="light",
        font_size=20,
        sound="on",
    )
    page = pages.open(url)
    wait_live(page)
    live.gift("carol", "universe")
    alert = page.locator("#stage .alert")
    expect(alert).to_contain_text("Carol just gifted 1 x Universe!")
    expect(alert).to_have_class("alert tier-4")
    assert page.evaluate("getComputedStyle(document.body).fontSize") == "20px"
    assert page.evaluate("document.getElementById('stage').className") == "pos-top"
    assert page.evaluate("document.body.classList.contains('theme-light')")


def test_big_gift_alert_screenshot(live: Live, pages: Pages) -> None:
    live.fund("carol", "coins_50000")
    page = pages.open(live.overlay_url("alerts", duration=6, sound="off"))
    wait_live(page)
    live.gift("carol", "universe")
    page.wait_for_function(
        "() => document.querySelector('#stage .alert.tier-4')?.dataset.phase === 'shown'"
    )
    expect(page.locator("#stage .alert")).to_contain_text("Carol sent Universe x1")
    # Let the confetti fall into the frame.
    page.wait_for_function("() => document.getAnimations().some(a => a.currentTime > 1500)")
    screenshot(page, "alerts")


def test_a_refused_token_is_said_plainly_and_nothing_else_shows(live: Live, pages: Pages) -> None:
    good = live.overlay_url("alerts", sound="off")
    forged = pages.open(good.replace("token=", "token=x"))
    expect(forged.locator(".refused")).to_contain_text("This overlay link was refused")
    other = live.overlay_url("alerts", sound="off").replace("stream_id=s1", "stream_id=s2")
    elsewhere = pages.open(other)
    expect(elsewhere.locator(".refused")).to_contain_text("another stream")
    assert forged.evaluate("window.__hub.state") == "refused"


def test_a_gap_the_server_cannot_replay_ends_the_running_streak(
    redis_url: str, tmp_path: Path, pages: Pages
) -> None:
    """The server's pub/sub connection drops while more is published than the
    history keeps: its fresh `subscribed {recovered: false}` ends the streak on
    screen at once (its end may be among what was lost), not after 10 s of quiet."""
    proxy = RedisProxy(int(redis_url.rsplit(":", 1)[1].split("/")[0]))
    settings = overlay_settings(proxy.url, tmp_path, combo_window_ms=600_000)
    live = Live(dataclasses.replace(settings, history=History(max_events=10)))
    try:
        live.start_stream()
        for user in ("alice", "bob"):
            live.fund(user)
        page = pages.open(live.overlay_url("alerts", duration=3, sound="off"))
        wait_live(page)
        live.gift("alice", "rose")
        page.wait_for_function(f"() => {SHOWN}.length === 1")
        assert page.evaluate(f"{SHOWN}[0].ended") is False  # the streak runs on

        resubscribing = proxy.hold_request(subscribes)
        assert proxy.cut(subscribes) == 1  # the server's pub/sub connection
        assert resubscribing.held.wait(5)
        for _ in range(30):
            live.gift("bob", "finger_heart")
        resubscribing.release()

        page.wait_for_function(f"() => {SHOWN}[0].ended")
    finally:
        live.close()
        proxy.close()
