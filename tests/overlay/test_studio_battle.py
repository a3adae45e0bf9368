"""Battles from two studios in a real chromium: one invites, the other sees the invite
and accepts or declines it, the inviter cancels before the start, both follow the
live score and its end, and every refusal of the API is said in words."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import pytest
from playwright.sync_api import Page, expect

from gifting_server.auth import Role
from tests.factories import token
from tests.overlay.battle_arena import STREAMERS, Arena, arena
from tests.overlay.conftest import Pages, screenshot, wait_live, wait_settled

__all__ = ["arena"]
END_WAIT_MS = 20_000


def open_studio(arena: Arena, pages: Pages, stream_id: str) -> Page:
    streamer, name = STREAMERS[stream_id]
    query = {"stream_id": stream_id, "token": token(streamer, Role.STREAMER, name=name)}
    page = pages.open(
        f"{arena.url}/studio?{urlencode(query)}", viewport={"width": 1280, "height": 900}
    )
    wait_live(page)
    return page


def invite(page: Page, opponent: str, duration_s: int) -> None:
    page.fill("#battle-opponent", opponent)
    page.fill("#battle-duration", str(duration_s))
    page.click("#battle-form button[type=submit]")


def battle_of(page: Page) -> Any:
    return page.evaluate("window.__studio.battle")


@pytest.mark.slow
def test_invite_cancel_decline_accept_and_the_end_between_two_studios(
    arena: Arena, pages: Pages
) -> None:
    one = open_studio(arena, pages, "s1")
    two = open_studio(arena, pages, "s2")
    expect(one.locator("#battle-range")).to_have_text("1\u2013600")  # the server's own range
    expect(two.locator("#battle-answer")).to_be_hidden()

    # An invite, cancelled by its sender before it starts.
    invite(one, "s2", 30)
    expect(one.locator("#battle-note")).to_have_text("Invite sent to Streamer Two.")
    expect(one.locator("#battle-text")).to_have_text(
        "Waiting for Streamer Two to accept your 30-second battle…"
    )
    expect(one.locator("#battle-form")).to_be_hidden()
    expect(two.locator("#battle-text")).to_have_text(
        "Streamer One invites you to a 30-second battle."
    )
    expect(two.locator("#battle-answer")).to_be_visible()
    expect(two.locator("#battle-expiry")).to_contain_text("The invite expires in")
    one.click("#battle-cancel")
    expect(two.locator("#battle-text")).to_have_text("The battle with Streamer One was cancelled.")
    expect(two.locator("#battle-answer")).to_be_hidden()
    expect(one.locator("#battle-form")).to_be_visible()

    # Declined by the invited streamer.
    invite(one, "s2", 30)
    expect(two.locator("#battle-answer")).to_be_visible()
    two.click("#battle-decline")
    expect(one.locator("#battle-text")).to_have_text("Streamer Two declined your battle.")
    expect(two.locator("#battle-text")).to_have_text("You declined Streamer One's battle.")

    # Accepted: both follow the score, then the end.
    invite(one, "s2", 6)
    expect(two.locator("#battle-accept")).to_be_visible()
    two.click("#battle-accept")
    for page in (one, two):
        expect(page.locator("#battle-state")).to_have_text("LIVE")
        expect(page.locator("#battle-bar")).to_be_visible()
    arena.fund("alice", "coins_5000")
    arena.gift_to("s2", "alice", "hand_hearts")
    # Each studio shows its own stream on the left.
    expect(two.locator("#battle-bar .battle-points.left")).to_have_text("100")
    expect(one.locator("#battle-bar .battle-points.right")).to_have_text("100")
    wait_settled(one)
    screenshot(one.locator(".battle-card"), "studio-battle", scene=False)
    expect(one.locator("#battle-text")).to_have_text(
        "Battle over: Streamer Two wins!", timeout=END_WAIT_MS
    )
    expect(two.locator("#battle-text")).to_have_text("Battle over: Streamer Two wins!")
    expect(two.locator("#battle-bar .battle-banner")).to_have_text("🏆 Streamer Two wins!")
    expect(one.locator("#battle-form")).to_be_visible()  # ready for the next one
    assert battle_of(two)["winner"] == "s2"


def test_each_refusal_of_an_invite_is_said_in_words(arena: Arena, pages: Pages) -> None:
    one = open_studio(arena, pages, "s1")
    note = one.locator("#battle-note")
    invite(one, "", 30)
    expect(note).to_have_text("Write the stream id of the stream you want to battle.")
    invite(one, "s2", 601)
    expect(note).to_have_text("A battle lasts 1 to 600 seconds.")
    invite(one, "nobody_here", 30)  # unknown_stream
    expect(note).to_have_text(
        "There is no stream with that id: ask the other streamer for the stream id they go"
        " live with."
    )
    invite(one, "s1", 30)  # invalid_request
    expect(note).to_have_text("Check the battle's settings: a stream cannot battle itself.")
    expect(note).to_have_attribute("data-kind", "error")

    # battle_conflict: the invited stream is not live.
    ended = arena.http.post("/v1/streams/s2/end", headers=arena.as_streamer("s2"))
    assert ended.status_code == 200, ended.text
    invite(one, "s2", 30)
    expect(note).to_have_text("The battle cannot go ahead: the invited stream is not live.")
    arena.start("s2")

    # battle_conflict: accepting a battle that was cancelled meanwhile, unseen by a page
    # whose connection dropped (it reconnects on its own; here it is kept down).
    two = open_studio(arena, pages, "s2")
    invite(one, "s2", 30)
    expect(two.locator("#battle-accept")).to_be_visible()
    two.evaluate("window.__hub.drop()")
    arena.answer(battle_of(one)["battle_id"], "cancel", stream_id="s1")
    expect(one.locator("#battle-text")).to_have_text("The battle with Streamer Two was cancelled.")
    two.click("#battle-accept")
    expect(two.locator("#battle-note")).to_have_text(
        "The battle cannot go ahead: the battle is cancelled; it can no longer be accepted."
    )
    # …and then shows where the battle stands.
    expect(two.locator("#battle-answer")).to_be_hidden()
    expect(two.locator("#battle-text")).to_have_text("The battle with Streamer One was cancelled.")


def test_a_studio_opened_after_the_invite_shows_it_and_accepts_it(
    arena: Arena, pages: Pages
) -> None:
    battle_id = arena.invite(30)
    two = open_studio(arena, pages, "s2")  # the invite comes with `subscribed`
    expect(two.locator("#battle-text")).to_have_text(
        "Streamer One invites you to a 30-second battle."
    )
    two.click("#battle-accept")
    expect(two.locator("#battle-state")).to_have_text("LIVE")
    assert battle_of(two) == {"battle_id": battle_id, "status": "live", "winner": None}
    one = open_studio(arena, pages, "s1")  # mid-battle: the score at once
    expect(one.locator("#battle-state")).to_have_text("LIVE")
    expect(one.locator("#battle-bar .battle-name.left")).to_have_text("Streamer One")
    expect(one.locator("#battle-form")).to_be_hidden()
