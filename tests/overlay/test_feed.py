"""/overlay/feed in a real chromium: the latest gifts, one row per streak with its
message, the history before it opened, min_coins and the ticker mode."""

from __future__ import annotations

from playwright.sync_api import expect

from gifting_server.auth import Role
from tests.overlay.conftest import Live, Pages, bearer, wait_live


def test_the_feed_lists_the_latest_streaks_newest_first(live: Live, pages: Pages) -> None:
    live.fund("alice")
    live.gift("alice", "hand_hearts")  # before the page opened: from the history
    page = pages.open(live.overlay_url("feed", limit=2))
    wait_live(page)
    rows = page.locator("#feed .feed-row")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("Alice sent Hand Hearts x1")

    response = live.http.post(
        f"/v1/streams/{live.stream_id}/gifts",
        json={"gift_id": "rose", "idempotency_key": "feed-1", "message": "hello"},
        headers=bearer("alice", Role.VIEWER, name="Alice"),
    )
    assert response.status_code == 200, response.text
    live.gift("alice", "rose")
    expect(rows.first).to_contain_text("Alice sent Rose x2")
    expect(rows.first.locator(".feed-message")).to_have_text("hello")
    live.gift("alice", "finger_heart")
    expect(rows).to_have_count(2)  # limit=2: the oldest row left
    expect(rows.first).to_contain_text("Finger Heart")
    expect(rows.last).to_contain_text("Rose x2")


def test_min_coins_and_the_ticker_mode(live: Live, pages: Pages) -> None:
    live.fund("alice")
    page = pages.open(live.overlay_url("feed", min_coins=50, mode="ticker"))
    wait_live(page)
    assert page.evaluate("document.body.classList.contains('mode-ticker')")
    live.gift("alice", "rose")
    live.gift("alice", "hand_hearts")
    rows = page.locator("#feed .feed-row")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("Hand Hearts")
