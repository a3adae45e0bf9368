"""/overlay/battle and the viewer client's battle bar in a real chromium: real gifts
through the real server move each side's points, the timer counts down to `ends_at`,
and the end names the winner (or a draw)."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from tests.overlay.battle_arena import Arena, arena
from tests.overlay.conftest import PHONE, Pages, screenshot, wait_live, wait_settled

__all__ = ["arena"]
BATTLE = {"width": 800, "height": 220}
LIVE_S = 12  # long enough for the gifts and the checks below on a busy machine
# How long the overlay keeps the winner's banner (its `winner_s`; 10 s by default): long
# enough for the checks and the screenshot of the banner, and not 10 s waited out.
WINNER_S = 4
END_WAIT_MS = (LIVE_S + 10) * 1000


def shown(page: Page) -> dict[str, object]:
    state: dict[str, object] = page.evaluate("window.__battle()")
    return state


def wait_points(page: Page, left: int, right: int) -> None:
    page.wait_for_function(
        "([l, r]) => { const s = window.__battle(); return s.visible && s.left.points === l"
        " && s.right.points === r; }",
        arg=[left, right],
    )


@pytest.mark.slow
def test_the_overlay_moves_with_each_sides_gifts_and_names_the_winner(
    arena: Arena, pages: Pages
) -> None:
    for user in ("alice", "bob", "carol"):
        arena.fund(user, "coins_5000")
    page = pages.open(arena.overlay_url("battle", top=3, winner_s=WINNER_S), viewport=BATTLE)
    wait_live(page)
    root = page.locator("#battle")
    expect(root).to_be_hidden()  # no battle: nothing on the stream

    battle_id = arena.invite(LIVE_S)
    expect(root).to_be_hidden()  # an invite is not a battle yet
    arena.answer(battle_id, "accept")
    expect(root).to_be_visible()
    expect(root).to_have_attribute("data-status", "live")
    expect(page.locator(".battle-timer")).to_have_text(re.compile(r"^0:(0\d|1[0-2])$"))
    expect(page.locator(".battle-name.left")).to_have_text("Streamer One")  # its own side
    expect(page.locator(".battle-name.right")).to_have_text("Streamer Two")
    expect(page.locator(".battle-track")).to_have_attribute("data-share", "50")

    arena.gift_to("s1", "alice", "hand_hearts")  # 100 for s1
    wait_points(page, 100, 0)
    expect(page.locator(".battle-track")).to_have_attribute("data-share", "100")
    arena.gift_to("s2", "bob", "corgi")  # 299 for s2
    wait_points(page, 100, 299)
    expect(page.locator(".battle-track")).to_have_attribute("data-share", "25")
    s1_points = 100 + 2 * gift_coins(arena, "confetti")
    arena.gift_to("s1", "carol", "confetti", count=2)
    wait_points(page, s1_points, 299)
    expect(page.locator(".battle-top.left .battle-contributor")).to_have_count(2)
    expect(page.locator(".battle-top.right .battle-contributor-name")).to_have_text(["Bob"])
    wait_settled(page)
    screenshot(page, "battle")

    banner = page.locator(".battle-banner")
    expect(banner).to_be_visible(timeout=END_WAIT_MS)
    winner = "s1" if s1_points > 299 else "s2"
    name = {"s1": "Streamer One", "s2": "Streamer Two"}[winner]
    expect(banner).to_have_text(f"🏆 {name} wins!")
    expect(page.locator(".battle-timer")).to_have_text("FINAL")
    final = shown(page)
    assert final["status"] == "ended" and final["winner"] == winner
    wait_settled(page)
    screenshot(page, "battle-winner")
    # The banner goes after `winner_s` and the overlay is empty again.
    expect(root).to_be_hidden(timeout=15_000)


def test_a_battle_without_a_gift_is_a_draw_and_a_late_overlay_sees_the_score_at_once(
    arena: Arena, pages: Pages
) -> None:
    arena.fund("alice", "coins_5000")
    battle_id = arena.invite(8)
    arena.answer(battle_id, "accept")
    arena.gift_to("s2", "alice", "rose", count=3)
    # Opened mid-battle, on the invited stream: the state comes with `subscribed`.
    url = arena.overlay_of("s2", color="00c853", opponent_color="#ffab00", compact="on")
    page = pages.open(url, viewport=BATTLE)
    page.wait_for_function("() => window.__battle().status === 'live'")
    wait_points(page, 3, 0)  # its own stream first
    colours = page.evaluate(
        """() => { const s = getComputedStyle(document.getElementById('battle'));
        return [s.getPropertyValue('--battle-left'), s.getPropertyValue('--battle-right')]; }"""
    )
    assert colours == ["#00c853", "#ffab00"]
    expect(page.locator(".battle-tops")).to_be_hidden()  # compact: no contributors
    # The connection drops; a gift lands meanwhile; back with `since`, the score has it.
    page.evaluate("window.__hub.drop()")
    arena.gift_to("s1", "alice", "rose", count=2)
    page.evaluate("window.__hub.connect()")
    wait_points(page, 3, 2)
    # s2 got 3 points, s1 2: s2 wins; then a battle where nobody gifts is a draw.
    expect(page.locator(".battle-banner")).to_have_text("🏆 Streamer Two wins!", timeout=15_000)
    second = arena.invite(1, stream_id="s2", opponent="s1")
    arena.answer(second, "accept", stream_id="s1")
    expect(page.locator(".battle-banner")).to_have_text("🤝 Draw!", timeout=15_000)
    assert page.locator("#battle").get_attribute("data-winner") == "draw"


@pytest.mark.slow
def test_the_viewer_client_shows_the_bar_while_the_battle_runs_and_the_winner_briefly(
    arena: Arena, pages: Pages
) -> None:
    arena.fund("dave", "coins_5000")
    page = pages.open(arena.client_url("dave"), viewport=PHONE)
    wait_live(page)
    strip = page.locator("#battle")
    expect(strip).to_be_hidden()
    battle_id = arena.invite(LIVE_S)
    arena.answer(battle_id, "accept")
    expect(strip).to_be_visible()
    expect(page.locator("#stage")).to_have_class(re.compile(r"\bhas-battle\b"))
    page.locator('.gift[data-gift="hand_hearts"]').click()  # the viewer's own gift to s1
    wait_points(page, 100, 0)
    wait_settled(page)
    screenshot(page, "client-battle", scene=False)
    expect(page.locator("#battle .battle-banner")).to_have_text(
        "🏆 Streamer One wins!", timeout=END_WAIT_MS
    )
    # The winner stays a moment, then the video is clear again.
    expect(strip).to_be_hidden(timeout=12_000)
    expect(page.locator("#stage")).not_to_have_class(re.compile(r"\bhas-battle\b"))


def gift_coins(arena: Arena, gift_id: str) -> int:
    gifts = arena.http.get("/v1/gifts").json()["gifts"]
    coins: int = next(g["coins"] for g in gifts if g["id"] == gift_id)
    return coins
