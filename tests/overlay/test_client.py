"""/client in a real chromium on a phone-sized screen: send gifts, see everyone's."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.overlay.conftest import PHONE, Live, Pages, screenshot, wait_live, wait_settled


def open_client(pages: Pages, live: Live, user_id: str) -> Page:
    page = pages.open(live.client_url(user_id), viewport=PHONE)
    wait_live(page)
    return page


def tap(page: Page, gift_id: str) -> None:
    page.locator(f'.gift[data-gift="{gift_id}"]').click()


@pytest.mark.limits(combo_window_ms=5_000)  # taps of a slow browser still make one streak
def test_tapping_a_gift_debits_the_balance_and_everyone_sees_it_float(
    live: Live, pages: Pages
) -> None:
    live.fund("alice")  # 1,000 coins
    live.fund("bob", "coins_5000")
    alice = open_client(pages, live, "alice")
    bob = open_client(pages, live, "bob")
    balance = alice.locator("#balance")
    expect(balance).to_have_text("1,000")

    for _ in range(3):
        tap(alice, "rose")
    alice.wait_for_function("() => window.__acks.length === 3")
    expect(balance).to_have_text("997")
    acks = sorted(alice.evaluate("window.__acks"), key=lambda ack: ack["event_id"])
    assert [(a["combo"], a["coins"]) for a in acks] == [(1, 999), (2, 998), (3, 997)]
    expect(alice.locator("#combo")).to_contain_text("x3")
    expect(alice.locator('.gift[data-gift="rose"] .badge')).to_have_text("x3")

    # Bob's client shows Alice's gift floating over the stream, her streak in one banner.
    bob.wait_for_function(
        "() => window.__floating.some(g => g.sender_id === 'alice' && g.combo === 3)"
    )
    banner = bob.locator('.banner[data-sender="alice"][data-gift="rose"]')
    expect(banner).to_contain_text("Alice")
    expect(banner).to_contain_text("x3")
    expect(banner).to_have_count(1)

    # Bob answers with a big gift: the spotlight, and the top gifters at the top.
    tap(bob, "disco_ball")
    alice.wait_for_function("() => window.__floating.some(g => g.gift_id === 'disco_ball')")
    expect(alice.locator(".spot")).to_contain_text("Bob sent Disco Ball!")
    expect(alice.locator("#top-gifters li").first).to_have_attribute("data-user-id", "bob")
    for _ in range(2):
        tap(alice, "rose")
    alice.wait_for_function("() => window.__acks.length === 5")
    # The counters have finished their bump (the emoji keep floating).
    alice.wait_for_function(
        "() => [...document.querySelectorAll('.times')].every(n => !n.getAnimations().length)"
    )
    screenshot(alice, "client", scene=False)


def test_insufficient_funds_leads_to_the_recharge_sheet_and_a_demo_payment(
    live: Live, pages: Pages
) -> None:
    page = open_client(pages, live, "dave")  # no coins yet
    expect(page.locator("#balance")).to_have_text("0")

    tap(page, "hand_hearts")
    toast = page.locator("#toast")
    expect(toast).to_contain_text("Not enough coins for Hand Hearts.")
    recharge = page.locator("#toast-action")
    expect(recharge).to_have_text("Recharge")
    recharge.click()

    sheet = page.locator("#recharge")
    expect(sheet).to_be_visible()
    expect(sheet.locator(".package")).to_have_count(6)
    package = sheet.locator('.package[data-package="coins_500"]')
    expect(package).to_contain_text("500")
    expect(package).to_contain_text("$6.49")
    wait_settled(page)
    screenshot(page, "client-recharge", scene=False)

    package.click()  # the demo payment goes through the signed webhook path
    expect(sheet).to_be_hidden()
    expect(page.locator("#balance")).to_have_text("500")
    wallet = live.http.get("/v1/wallet", headers=_viewer("dave")).json()
    assert wallet["coins"] == 500

    tap(page, "hand_hearts")
    expect(page.locator("#balance")).to_have_text("400")


def test_daily_budget_and_stream_end_are_explained(live: Live, pages: Pages) -> None:
    live.fund("erin")
    response = live.http.put(
        "/v1/wallet/limits", json={"daily_coin_limit": 5}, headers=_viewer("erin")
    )
    assert response.status_code == 200, response.text
    page = open_client(pages, live, "erin")

    tap(page, "doughnut")  # 30 coins, over the budget of 5
    expect(page.locator("#toast")).to_contain_text("daily gift budget")
    expect(page.locator("#balance")).to_have_text("1,000")

    live.end_stream()
    expect(page.locator("#ended")).to_be_visible()
    expect(page.locator("#live-badge")).to_have_text("ENDED")
    page.locator('.gift[data-gift="rose"]').dispatch_event("click")
    expect(page.locator("#toast")).to_contain_text("The stream has ended")


def _viewer(user_id: str) -> dict[str, str]:
    from gifting_server.auth import Role
    from tests.overlay.conftest import bearer

    return bearer(user_id, Role.VIEWER, name=user_id.title())
