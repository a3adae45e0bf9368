"""/overlay/goal in a real chromium: the bar follows the stream's coins to the target."""

from __future__ import annotations

from playwright.sync_api import expect

from tests.overlay.conftest import Live, Pages, screenshot, wait_live, wait_settled

GOAL = {"width": 800, "height": 170}


def test_the_goal_bar_fills_up_and_reaches_the_target(live: Live, pages: Pages) -> None:
    for user in ("alice", "bob"):
        live.fund(user, "coins_5000")
    live.gift("alice", "hand_hearts", count=3)  # 300 before the page opens

    url = live.overlay_url("goal", target=1000, title="New camera fund")
    page = pages.open(url, viewport=GOAL)
    bar = page.locator("#bar")
    expect(bar).to_have_attribute("data-percent", "30")  # from GET /v1/streams/{id}
    wait_live(page)

    live.gift("bob", "corgi")  # 599
    expect(bar).to_have_attribute("data-percent", "59")
    expect(page.locator("#progress")).to_have_text("599")
    expect(page.locator("#target")).to_have_text("1,000")
    expect(page.locator("#reached")).to_be_hidden()
    wait_settled(page)
    screenshot(page, "goal")

    live.gift("alice", "swan")  # 1,298
    expect(bar).to_have_attribute("data-percent", "100")
    expect(page.locator("#reached")).to_be_visible()
    shown = page.evaluate("window.__goal")
    assert shown == {
        "progress": 1298,
        "target": 1000,
        "percent": 100,
        "title": "New camera fund",
        "server": False,  # no goal set on the server: the URL's target
    }
    wait_settled(page)
    screenshot(page, "goal-reached")
