"""/overlay/leaderboard in a real chromium: live ranks and a smooth reorder."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page

from tests.overlay.conftest import Live, Pages, screenshot, wait_live, wait_settled

ORDER = "() => [...document.querySelectorAll('#rows .row')].map(r => r.dataset.userId)"
BOARD = {"width": 400, "height": 330}


def wait_order(page: Page, expected: list[str]) -> None:
    page.wait_for_function(f"expected => ({ORDER})().join() === expected.join()", arg=expected)


def test_the_stream_board_reorders_when_gifts_change_the_ranking(live: Live, pages: Pages) -> None:
    for user in ("alice", "bob", "carol", "dave"):
        live.fund(user, "coins_5000")
    live.gift("alice", "money_gun")  # 500
    live.gift("bob", "corgi")  # 299
    live.gift("carol", "hand_hearts")  # 100

    page = pages.open(live.overlay_url("leaderboard", limit=5), viewport=BOARD)
    wait_order(page, ["alice", "bob", "carol"])  # from GET .../leaderboard at load
    wait_live(page)

    # Rows are kept and moved, not rebuilt, so that they can glide into place.
    page.evaluate("() => { window.__bobRow = document.querySelector('[data-user-id=bob]'); }")
    live.gift("bob", "swan")  # 299 + 699 = 998
    live.gift("dave", "cap")  # 99
    wait_order(page, ["bob", "alice", "carol", "dave"])
    assert page.evaluate("() => window.__bobRow === document.querySelector('[data-user-id=bob]')")
    bob = page.locator("[data-user-id=bob]")
    assert bob.locator(".amount").text_content() == "998"
    assert bob.locator(".rank").text_content() == "1"
    wait_settled(page)
    screenshot(page, "leaderboard")


@pytest.mark.parametrize("period", ["week", "all"])
def test_other_periods_refetch_after_gifts(live: Live, pages: Pages, period: str) -> None:
    for user in ("alice", "bob"):
        live.fund(user)
    live.gift("alice", "doughnut")
    page = pages.open(live.overlay_url("leaderboard", period=period, limit=2), viewport=BOARD)
    wait_order(page, ["alice"])
    wait_live(page)
    live.gift("bob", "hand_hearts")
    wait_order(page, ["bob", "alice"])
    assert page.locator("#period").text_content() in ("This week", "All time")


def test_limit_and_an_empty_board(live: Live, pages: Pages) -> None:
    page = pages.open(live.overlay_url("leaderboard", limit=2, title="Legends"), viewport=BOARD)
    wait_live(page)
    assert page.locator("#empty").is_visible()
    assert page.locator("#title").text_content() == "Legends"
    for user in ("alice", "bob", "carol"):
        live.fund(user)
    live.gift("alice", "rose", count=3)
    live.gift("bob", "rose", count=2)
    live.gift("carol", "rose", count=1)
    wait_order(page, ["alice", "bob"])
    assert not page.locator("#empty").is_visible()
