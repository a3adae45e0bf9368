"""The streamer's studio in a real chromium against a real server: going live, the
activity feed, alert control acting on an open alerts overlay, the goal, the message
settings and the cash-out form's refusals, and the token leaving the address bar."""

from __future__ import annotations

import dataclasses
import itertools
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from playwright.sync_api import Page, expect

from gifting_server.auth import Role
from tests.factories import token
from tests.overlay.conftest import (
    PHONE,
    Live,
    Pages,
    bearer,
    overlay_settings,
    screenshot,
    wait_live,
)

SHOWN = "window.__alertsShown"
_keys = itertools.count(1)


def studio_url(live: Live, **query: str) -> str:
    streamer = token(live.streamer, Role.STREAMER, name="Streamer One")
    return f"{live.url}/studio?{urlencode({**query, 'token': streamer})}"


def open_studio(live: Live, pages: Pages, **viewport: Any) -> Page:
    page = pages.open(studio_url(live, stream_id=live.stream_id), viewport=viewport or None)
    page.on("dialog", lambda dialog: dialog.accept())
    wait_live(page)
    return page


def wait_event(page: Page, event_id: int) -> None:
    page.wait_for_function(f"() => window.__hub.lastEventId >= {event_id}")


def send(live: Live, user_id: str, gift_id: str, message: str | None = None) -> int:
    body: dict[str, Any] = {"gift_id": gift_id, "idempotency_key": f"studio-{next(_keys)}"}
    if message is not None:
        body["message"] = message
    response = live.http.post(
        f"/v1/streams/{live.stream_id}/gifts",
        json=body,
        headers=bearer(user_id, Role.VIEWER, name=user_id.title()),
    )
    assert response.status_code == 200, response.text
    event_id: int = response.json()["event_id"]
    return event_id


def test_going_live_from_the_studio_on_the_streamers_own_stream_id(
    live: Live, pages: Pages
) -> None:
    page = pages.open(studio_url(live))  # no stream_id: the streamer's user id
    page.on("dialog", lambda dialog: dialog.accept())
    # The token that can cash out leaves the address bar at once.
    page.wait_for_function("() => window.__studio && window.__studio.status === 'new'")
    assert "token" not in page.url
    assert page.evaluate("sessionStorage.getItem('studio-token')")
    expect(page.locator("#status-pill")).to_have_text("Not live yet")

    page.locator("#go-live").click()
    expect(page.locator("#status-pill")).to_have_text("LIVE")
    wait_live(page)
    status = live.http.get(f"/v1/streams/{live.streamer}").json()
    assert (status["status"], status["streamer_name"]) == ("live", "Streamer One")

    # A reload keeps working without the token in the URL.
    page.reload()
    wait_live(page)
    expect(page.locator("#status-pill")).to_have_text("LIVE")

    page.locator("#end-stream").click()
    expect(page.locator("#status-pill")).to_have_text("Offline")
    assert live.http.get(f"/v1/streams/{live.streamer}").json()["status"] == "ended"


def test_the_feed_has_each_streak_once_with_its_message_and_the_history_before(
    live: Live, pages: Pages
) -> None:
    live.fund("alice")
    before = send(live, "alice", "hand_hearts", "first!")
    page = open_studio(live, pages)
    rows = page.locator("#feed .feed-row")
    expect(rows).to_have_count(1)  # from the history
    expect(rows.first).to_contain_text("Alice sent Hand Hearts x1")
    expect(rows.first.locator(".feed-message")).to_have_text("first!")

    send(live, "alice", "rose", "hi <b>streamer</b>")
    last = send(live, "alice", "rose", "again")
    wait_event(page, last)
    expect(rows).to_have_count(2)  # one row per streak, newest first
    expect(rows.first).to_contain_text("Alice sent Rose x2")
    expect(rows.first.locator(".feed-message")).to_have_text("again")
    expect(page.locator("#feed b", has_text="streamer")).to_have_count(0)  # text, never HTML

    page.locator("#feed-min").fill("50")
    expect(page.locator("#feed .feed-row:visible")).to_have_count(1)
    expect(page.locator("#feed .feed-row:visible")).to_contain_text("Hand Hearts")
    assert before < last


def test_pause_from_the_studio_holds_a_gift_back_on_an_open_alerts_overlay(
    live: Live, pages: Pages
) -> None:
    live.fund("alice")
    overlay = pages.open(live.overlay_url("alerts", duration=1, sound="off"))
    wait_live(overlay)
    studio = open_studio(live, pages)

    studio.locator("#alerts-pause").click()
    overlay.wait_for_function("() => window.__alertsPaused === true")
    expect(studio.locator("#alerts-state")).to_have_text("paused")
    sent = send(live, "alice", "rose")
    wait_event(overlay, sent)
    assert overlay.evaluate(SHOWN) == []

    studio.locator("#alerts-resume").click()
    overlay.wait_for_function(f"() => {SHOWN}.length === 1")
    expect(overlay.locator("#stage .alert")).to_contain_text("Alice sent Rose")

    # Replay from the feed row: the same gift again, marked as a replay.
    studio.locator("#feed .feed-row .replay").first.click()
    overlay.wait_for_function(f"() => {SHOWN}.length === 2 && {SHOWN}[1].replay")


def test_a_test_alert_from_the_studio_moves_no_money(live: Live, pages: Pages) -> None:
    live.fund("alice")
    overlay = pages.open(live.overlay_url("alerts", duration=1, sound="off"))
    wait_live(overlay)
    studio = open_studio(live, pages)
    streamer = bearer(live.streamer, Role.STREAMER)
    wallet_before = live.http.get("/v1/wallet", headers=streamer).json()
    stream_before = live.http.get(f"/v1/streams/{live.stream_id}").json()

    studio.locator("#test-gift").select_option("universe")
    studio.locator("#test-form button[type=submit]").click()
    overlay.wait_for_function(f"() => {SHOWN}.length === 1 && {SHOWN}[0].test")
    expect(studio.locator("#feed .feed-row.is-test .badge")).to_have_text("TEST")
    expect(studio.locator("#alerts-note")).to_have_text("Test alert sent.")

    assert live.http.get("/v1/wallet", headers=streamer).json() == wallet_before
    assert live.http.get(f"/v1/streams/{live.stream_id}").json() == stream_before


def test_the_goal_set_in_the_studio_shows_on_the_goal_overlay(live: Live, pages: Pages) -> None:
    live.fund("alice")
    overlay = pages.open(live.overlay_url("goal", target=5000))
    wait_live(overlay)
    studio = open_studio(live, pages)
    studio.locator("#goal-title").fill("New camera")
    studio.locator("#goal-target-in").fill("400")
    studio.locator("#goal-form button[type=submit]").click()
    expect(overlay.locator("#title")).to_have_text("New camera")
    expect(overlay.locator("#target")).to_have_text("400")

    send(live, "alice", "hand_hearts")
    expect(overlay.locator("#bar")).to_have_attribute("data-percent", "25")
    expect(studio.locator("#goal-progress")).to_have_text("100")

    studio.locator("#goal-reset").check()
    studio.locator("#goal-form button[type=submit]").click()
    expect(overlay.locator("#bar")).to_have_attribute("data-percent", "0")
    expect(studio.locator("#goal-note")).to_have_text("Saved; counting from now.")


def test_message_settings_saved_from_the_studio(live: Live, pages: Pages) -> None:
    studio = open_studio(live, pages)
    expect(studio.locator("#set-max-length")).to_have_value("150")
    studio.locator("#set-min-coins").fill("100")
    studio.locator("#set-blocked").fill("darn\n  heck  \n")
    studio.locator("#set-tts").check()
    studio.locator("#settings-form button[type=submit]").click()
    expect(studio.locator("#settings-note")).to_have_text("Saved.")
    settings = live.http.get(
        f"/v1/streams/{live.stream_id}/settings", headers=bearer(live.streamer, Role.STREAMER)
    ).json()["messages"]
    assert settings["min_coins"] == 100 and settings["tts"] is True
    assert settings["blocked_words"] == ["darn", "heck"]

    studio.locator("#set-max-length").fill("501")  # over the limit of 500
    studio.locator("#settings-form button[type=submit]").click()
    expect(studio.locator("#settings-note")).to_contain_text("max_length")
    expect(studio.locator("#settings-note")).to_have_attribute("data-kind", "error")


def test_each_cash_out_refusal_is_explained_in_words(live: Live, pages: Pages) -> None:
    studio = open_studio(live, pages)
    expect(studio.locator("#cashout-rules")).to_contain_text("at least 2,000 diamonds ($10.00)")
    expect(studio.locator("#diamonds-available")).to_contain_text("0")
    note = studio.locator("#cashout-note")

    studio.locator("#cashout-diamonds").fill("100")
    studio.locator("#cashout-form button[type=submit]").click()
    expect(note).to_have_text("The minimum cash-out is 2,000 diamonds ($10.00).")

    studio.locator("#cashout-diamonds").fill("2000")
    studio.locator("#cashout-form button[type=submit]").click()
    expect(note).to_contain_text("You have 0 diamonds available, fewer than 2,000.")

    studio.locator("#cashout-diamonds").fill("2001")
    studio.locator("#cashout-form button[type=submit]").click()
    expect(note).to_contain_text("multiple of 2")


def test_screenshots_of_the_studio_on_a_laptop_and_a_phone(live: Live, pages: Pages) -> None:
    live.fund("alice", "coins_5000")
    live.fund("bob", "coins_5000")
    send(live, "alice", "hand_hearts", "Love the stream!")
    send(live, "bob", "rose", "hi from Lisbon")
    last = send(live, "bob", "disco_ball", "for the new camera")
    response = live.http.put(
        f"/v1/streams/{live.stream_id}/goal",
        json={"target": 5000, "title": "New camera"},
        headers=bearer(live.streamer, Role.STREAMER),
    )
    assert response.status_code == 200, response.text
    laptop = open_studio(live, pages, width=1440, height=1000)
    wait_event(laptop, last)
    screenshot(laptop, "studio-desktop", scene=False)
    phone = open_studio(live, pages, **PHONE)
    wait_event(phone, last)
    screenshot(phone, "studio-phone", scene=False)


def test_replacing_the_links_from_the_studio_stops_every_earlier_one(
    live: Live, pages: Pages
) -> None:
    studio = open_studio(live, pages)
    studio.wait_for_function("() => window.__overlayUrl")
    old_url = studio.evaluate("window.__overlayUrl")
    assert f"stream_id={live.stream_id}" in old_url and "token=" in old_url
    expect(studio.locator("#link-size")).to_have_text("800 \u00d7 600")
    expect(studio.locator("#all-links li")).to_have_count(5)  # each overlay, to copy
    old = pages.open(old_url)
    wait_live(old)

    studio.locator("#rotate").click()  # the confirmation is accepted
    expect(studio.locator("#links-note")).to_contain_text("every earlier link stopped working")
    refused = old.locator(".refused")
    expect(refused).to_have_attribute("data-reason", "token_revoked")
    expect(refused).to_contain_text("replaced by a newer one")
    new_url = studio.evaluate("window.__overlayUrl")
    assert new_url != old_url
    new = pages.open(new_url)
    wait_live(new)

    # The form builds each overlay's URL with its options and OBS size.
    studio.locator("#opt-kind").select_option("feed")
    studio.locator("#opt-mode").select_option("ticker")
    expect(studio.locator("#link-size")).to_have_text("1280 \u00d7 80")
    assert "/overlay/feed?" in studio.evaluate("window.__overlayUrl")
    assert "mode=ticker" in studio.evaluate("window.__overlayUrl")
    studio.locator("#opt-kind").select_option("battle")
    expect(studio.locator("#link-size")).to_have_text("800 \u00d7 220")
    studio.locator("#opt-compact").check()
    expect(studio.locator("#link-size")).to_have_text("800 \u00d7 110")
    battle_url = studio.evaluate("window.__overlayUrl")
    assert "/overlay/battle?" in battle_url and "compact=on" in battle_url
    expect(studio.locator("#preview")).to_have_attribute("src", re.compile(r"/overlay/battle\?"))


def test_a_cash_out_from_the_studio_and_its_status_in_the_history(
    redis_url: str, tmp_path: Path, pages: Pages
) -> None:
    settings = overlay_settings(redis_url, tmp_path)
    economy = dataclasses.replace(settings.economy, holding_period_days=0)  # none held
    live = Live(dataclasses.replace(settings, economy=economy))
    try:
        live.start_stream()
        live.fund("alice", "coins_5000")
        live.gift("alice", "luxury_car")
        live.gift("alice", "hand_hearts")
        live.fund("alice", "coins_5000")
        live.gift("alice", "luxury_car")  # 2,749 diamonds: half of 5,498 coins
        studio = open_studio(live, pages)
        expect(studio.locator("#diamonds-available")).to_have_text("💎 2,749")
        expect(studio.locator("#cashout-history")).to_have_text("No cash-outs yet.")

        studio.locator("#cashout-diamonds").fill("2000")
        studio.locator("#cashout-form button[type=submit]").click()
        expect(studio.locator("#cashout-note")).to_have_text(
            "Asked for $10.00 (2,000 diamonds): pending until the platform pays it."
        )
        expect(studio.locator("#diamonds-available")).to_have_text("💎 749")
        row = studio.locator("#cashout-history .cashout")
        expect(row).to_have_attribute("data-status", "pending")
        expect(row).to_contain_text("💎 2,000 → $10.00")

        # The operator marks it failed: the diamonds come back, the history says so.
        cashout_id = live.http.get(
            "/v1/cashouts", headers=bearer(live.streamer, Role.STREAMER)
        ).json()["cashouts"][0]["cashout_id"]
        response = live.http.post(
            f"/v1/cashouts/{cashout_id}/complete",
            json={"status": "failed"},
            headers=bearer("ops", Role.ADMIN),
        )
        assert response.status_code == 200, response.text
        studio.reload()
        expect(studio.locator("#cashout-history .cashout")).to_have_attribute(
            "data-status", "failed"
        )
        expect(studio.locator("#diamonds-available")).to_have_text("💎 2,749")
    finally:
        live.close()
