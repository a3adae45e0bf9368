"""The streamer's control of /overlay/alerts and the server's goal on /overlay/goal,
in a real chromium: pause holds back a gift until resume, the paused state survives
a reload, a test alert shows marked, a gift's message shows under its alert."""

from __future__ import annotations

from typing import Any

from playwright.sync_api import Page, expect

from gifting_server.auth import Role
from tests.overlay.conftest import Live, Pages, bearer, wait_live

SHOWN = "window.__alertsShown"


def control(live: Live, **body: Any) -> int:
    response = live.http.post(
        f"/v1/streams/{live.stream_id}/alerts",
        json=body,
        headers=bearer(live.streamer, Role.STREAMER),
    )
    assert response.status_code == 200, response.text
    event_id: int = response.json()["event_id"]
    return event_id


def wait_event(page: Page, event_id: int) -> None:
    """The page has taken every event up to `event_id`."""
    page.wait_for_function(f"() => window.__hub.lastEventId >= {event_id}")


def test_a_gift_sent_while_paused_shows_only_after_resume(live: Live, pages: Pages) -> None:
    live.fund("alice")
    page = pages.open(live.overlay_url("alerts", duration=1, sound="off"))
    wait_live(page)

    paused = control(live, action="pause")
    sent = live.gift("alice", "rose", count=2)["event_id"]
    wait_event(page, max(paused, sent))
    assert page.evaluate("window.__alertsPaused") is True
    assert page.evaluate(SHOWN) == []
    expect(page.locator("#stage .alert")).to_have_count(0)

    control(live, action="resume")
    page.wait_for_function(f"() => {SHOWN}.length === 1")
    assert page.evaluate("window.__alertsPaused") is False
    expect(page.locator("#stage .alert")).to_contain_text("Alice sent Rose x2")


def test_the_paused_state_survives_a_reload(live: Live, pages: Pages) -> None:
    page = pages.open(live.overlay_url("alerts", duration=1, sound="off"))
    wait_live(page)
    wait_event(page, control(live, action="pause"))
    page.reload()
    wait_live(page)
    assert page.evaluate("window.__alertsPaused") is True
    wait_event(page, control(live, action="resume"))
    page.reload()
    wait_live(page)
    assert page.evaluate("window.__alertsPaused") is False


def test_a_test_alert_shows_marked_and_a_message_shows_under_its_alert(
    live: Live, pages: Pages
) -> None:
    live.fund("alice")
    page = pages.open(live.overlay_url("alerts", duration=1, sound="off"))
    wait_live(page)
    control(live, action="test", gift_id="rose")
    page.wait_for_function(f"() => {SHOWN}.length === 1")
    expect(page.locator("#stage .alert.is-test .alert-badge")).to_have_text("TEST")
    assert page.evaluate(f"{SHOWN}[0].test") is True

    response = live.http.post(
        f"/v1/streams/{live.stream_id}/gifts",
        json={
            "gift_id": "finger_heart",
            "idempotency_key": "m1",
            "message": " Hello <b>there</b> ",
        },
        headers=bearer("alice", Role.VIEWER, name="Alice"),
    )
    assert response.status_code == 200, response.text
    page.wait_for_function(f"() => {SHOWN}.length === 2")
    message = page.locator("#stage .alert .alert-message")
    expect(message).to_have_text("Hello <b>there</b>")  # as text, never as HTML
    expect(page.locator("#stage .alert b")).to_have_count(0)


def test_the_servers_goal_wins_over_the_target_in_the_url(live: Live, pages: Pages) -> None:
    live.fund("alice", "coins_5000")
    live.gift("alice", "hand_hearts")  # 100 before the goal: not counted
    response = live.http.put(
        f"/v1/streams/{live.stream_id}/goal",
        json={"target": 400, "title": "New mic"},
        headers=bearer(live.streamer, Role.STREAMER),
    )
    assert response.status_code == 200, response.text
    page = pages.open(live.overlay_url("goal", target=1000, title="Old title"))
    wait_live(page)
    bar = page.locator("#bar")
    expect(page.locator("#title")).to_have_text("New mic")
    expect(page.locator("#target")).to_have_text("400")
    live.gift("alice", "hand_hearts")
    expect(bar).to_have_attribute("data-percent", "25")
    control(live, action="test", gift_id="universe")  # moves no goal
    response = live.http.put(
        f"/v1/streams/{live.stream_id}/goal",
        json={"target": 200, "title": "Reset", "reset": True},
        headers=bearer(live.streamer, Role.STREAMER),
    )
    assert response.status_code == 200, response.text
    expect(page.locator("#title")).to_have_text("Reset")
    expect(bar).to_have_attribute("data-percent", "0")
    live.gift("alice", "hand_hearts")
    expect(bar).to_have_attribute("data-percent", "50")


def test_the_client_shows_the_servers_goal_and_no_test_alert(live: Live, pages: Pages) -> None:
    live.fund("alice", "coins_5000")
    response = live.http.put(
        f"/v1/streams/{live.stream_id}/goal",
        json={"target": 1000, "title": "Road to 1k"},
        headers=bearer(live.streamer, Role.STREAMER),
    )
    assert response.status_code == 200, response.text
    page = pages.open(live.client_url("bob"))
    wait_live(page)
    expect(page.locator("#goal-title")).to_have_text("Road to 1k")
    expect(page.locator("#goal-numbers")).to_have_text("0 / 1,000")
    tested = control(live, action="test", gift_id="universe")
    sent = live.gift("alice", "hand_hearts")["event_id"]
    wait_event(page, max(tested, sent))
    expect(page.locator("#goal-numbers")).to_have_text("100 / 1,000")
    floating = page.evaluate("window.__floating")
    assert [f["event_id"] for f in floating] == [sent]  # the test alert is not shown


def test_clear_skip_and_replay_act_on_the_open_overlay(live: Live, pages: Pages) -> None:
    for user in ("alice", "bob"):
        live.fund(user)
    page = pages.open(live.overlay_url("alerts", duration=60, sound="off"))
    wait_live(page)

    control(live, action="pause")
    live.gift("alice", "rose")
    live.gift("bob", "finger_heart")
    wait_event(page, control(live, action="clear"))
    wait_event(page, control(live, action="resume"))
    assert page.evaluate(SHOWN) == []  # the cleared gifts never show

    sent = live.gift("alice", "doughnut")["event_id"]
    page.wait_for_function(f"() => {SHOWN}.length === 1")
    expect(page.locator("#stage .alert")).to_have_count(1)
    control(live, action="skip")  # long before its 60 s are up
    expect(page.locator("#stage .alert")).to_have_count(0)

    control(live, action="replay", event_id=sent)
    page.wait_for_function(f"() => {SHOWN}.length === 2")
    replayed = page.evaluate(f"{SHOWN}[1]")
    assert (replayed["event_id"], replayed["replay"], replayed["gift_id"]) == (
        sent,
        True,
        "doughnut",
    )
