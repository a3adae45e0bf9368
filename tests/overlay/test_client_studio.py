"""The viewer client's side of the studio, in a real chromium: the streamer's display
name, "no such stream", a confirmation above the viewer's own threshold, and the
message box that follows the stream's message settings."""

from __future__ import annotations

from urllib.parse import urlencode

from playwright.sync_api import expect

from gifting_server.auth import Role
from tests.factories import token
from tests.overlay.conftest import Live, Pages, bearer, wait_live


def test_the_client_names_the_streamer_and_says_no_such_stream(live: Live, pages: Pages) -> None:
    page = pages.open(live.client_url("bob"))
    wait_live(page)
    # The `live` fixture went live with a token named after the streamer's id.
    expect(page.locator("#host-name")).to_have_text("streamer1")
    response = live.http.post(
        "/v1/streams",
        json={"stream_id": "named"},
        headers=bearer("streamer2", Role.STREAMER, name="Night Owl"),
    )
    assert response.status_code == 201, response.text
    viewer = token("bob", Role.VIEWER, name="Bob")
    named = pages.open(f"{live.url}/client?{urlencode({'stream_id': 'named', 'token': viewer})}")
    expect(named.locator("#host-name")).to_have_text("Night Owl")

    unknown = pages.open(f"{live.url}/client?{urlencode({'stream_id': 'nope', 'token': viewer})}")
    expect(unknown.locator("#ended-title")).to_have_text("No such stream")
    expect(unknown.locator("#host-name")).to_have_text("No such stream")


def test_a_gift_above_the_viewers_threshold_asks_first(live: Live, pages: Pages) -> None:
    live.fund("bob", "coins_5000")
    page = pages.open(live.client_url("bob"))
    wait_live(page)
    expect(page.locator("#ask-above-coins")).to_have_text("1,000")
    page.locator('.gift[data-gift="luxury_car"]').click()
    expect(page.locator("#confirm")).to_be_visible()
    expect(page.locator("#confirm-text")).to_contain_text("Luxury Car costs 🪙 2,699 coins")
    page.locator("#confirm-cancel").click()
    expect(page.locator("#confirm")).to_be_hidden()
    assert page.evaluate("window.__acks") == []

    page.locator('.gift[data-gift="luxury_car"]').click()
    page.locator("#confirm-send").click()
    page.wait_for_function("() => window.__acks.length === 1")

    # The viewer's own threshold, kept across reloads.
    page.once("dialog", lambda dialog: dialog.accept("0"))
    page.locator("#ask-above").click()
    expect(page.locator("#ask-above-coins")).to_have_text("0")
    page.reload()
    wait_live(page)
    expect(page.locator("#ask-above-coins")).to_have_text("0")
    page.locator('.gift[data-gift="rose"]').click()
    expect(page.locator("#confirm")).to_be_visible()


def test_the_message_box_follows_the_streams_settings(live: Live, pages: Pages) -> None:
    live.fund("bob", "coins_5000")
    response = live.http.put(
        f"/v1/streams/{live.stream_id}/settings",
        json={"messages": {"min_coins": 100, "blocked_words": ["darn"]}},
        headers=bearer(live.streamer, Role.STREAMER),
    )
    assert response.status_code == 200, response.text
    page = pages.open(live.client_url("bob"))
    wait_live(page)
    expect(page.locator("#message-box")).to_be_visible()
    expect(page.locator("#message-hint")).to_contain_text("🪙 100 or more")

    page.locator("#gift-message").fill("too cheap")
    page.locator('.gift[data-gift="rose"]').click()
    expect(page.locator("#toast-text")).to_contain_text("A message goes with a gift of 🪙 100")
    assert page.evaluate("window.__acks") == []

    page.locator("#gift-message").fill("well DARN done")
    page.locator('.gift[data-gift="hand_hearts"]').click()
    page.wait_for_function("() => window.__acks.length === 1")
    expect(page.locator("#gift-message")).to_have_value("")
    board = live.http.get(f"/v1/streams/{live.stream_id}").json()
    assert board["coins_total"] == 100

    response = live.http.put(
        f"/v1/streams/{live.stream_id}/settings",
        json={"messages": {"enabled": False}},
        headers=bearer(live.streamer, Role.STREAMER),
    )
    assert response.status_code == 200, response.text
    expect(page.locator("#message-box")).to_be_hidden()  # from the `settings` event
