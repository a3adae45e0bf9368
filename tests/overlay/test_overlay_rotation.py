"""Rotating the overlay links in a real chromium: an open alerts overlay with the old
link says it was replaced (not that it expired), the new link works."""

from __future__ import annotations

from urllib.parse import urlencode

from playwright.sync_api import expect

from gifting_server.auth import Role, issue_token
from tests.conftest import SECRET
from tests.overlay.conftest import Live, Pages, bearer, wait_live


def mint(live: Live, rotate: bool) -> dict[str, str]:
    response = live.http.post(
        f"/v1/streams/{live.stream_id}/overlay-tokens",
        json={"rotate": rotate},
        headers=bearer(live.streamer, Role.STREAMER),
    )
    assert response.status_code == 201, response.text
    urls: dict[str, str] = response.json()["urls"]
    return urls


def test_an_open_overlay_says_its_link_was_replaced_after_a_rotation(
    live: Live, pages: Pages
) -> None:
    old = pages.open(mint(live, rotate=False)["alerts"] + "&sound=off&duration=1")
    wait_live(old)

    new = mint(live, rotate=True)["alerts"] + "&sound=off&duration=1"
    refused = old.locator(".refused")
    expect(refused).to_contain_text("replaced by a newer one")
    expect(refused).to_have_attribute("data-reason", "token_revoked")
    assert old.evaluate("window.__hub.state") == "refused"

    fresh = pages.open(new)
    wait_live(fresh)
    live.fund("alice")
    live.gift("alice", "rose")
    expect(fresh.locator("#stage .alert")).to_contain_text("Alice sent Rose")
    assert fresh.locator(".refused").count() == 0


def test_an_expired_link_says_so_not_that_it_was_replaced(live: Live, pages: Pages) -> None:
    expired = issue_token(
        SECRET, live.streamer, Role.OVERLAY, stream_id=live.stream_id, ttl_s=1, now=1e9
    )
    query = urlencode({"stream_id": live.stream_id, "token": expired, "sound": "off"})
    page = pages.open(f"{live.url}/overlay/alerts?{query}")
    refused = page.locator(".refused")
    expect(refused).to_contain_text("has expired")
    expect(refused).to_have_attribute("data-reason", "token_expired")
