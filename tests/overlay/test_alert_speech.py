"""Gift messages read aloud on /overlay/alerts (`tts=on`), in a real chromium: the
page asks the server for the speech of a gift with a message, and for no other."""

from __future__ import annotations

import shutil

import pytest
from playwright.sync_api import Page, Request

from gifting_server.auth import Role
from tests.overlay.conftest import Live, Pages, bearer, wait_live

pytestmark = pytest.mark.skipif(
    shutil.which("espeak-ng") is None,
    reason="espeak-ng is not installed (apt-get install espeak-ng)",
)
SHOWN = "window.__alertsShown"


def speech_requests(page: Page) -> list[str]:
    seen: list[str] = []

    def note(request: Request) -> None:
        if "/speech/" in request.url:
            seen.append(request.url.rsplit("/", 1)[1])

    page.on("request", note)
    return seen


def test_the_speech_of_a_gift_with_a_message_is_fetched_and_none_for_one_without(
    live: Live, pages: Pages
) -> None:
    live.fund("alice")
    response = live.http.put(
        f"/v1/streams/{live.stream_id}/settings",
        json={"messages": {"tts": True, "tts_min_coins": 1}},
        headers=bearer(live.streamer, Role.STREAMER),
    )
    assert response.status_code == 200, response.text
    page = pages.open(live.overlay_url("alerts", duration=1, sound="off", tts="on"))
    requested = speech_requests(page)
    wait_live(page)

    live.gift("alice", "rose")  # no message: nothing to read
    page.wait_for_function(f"() => {SHOWN}.length === 1")
    with page.expect_response(lambda r: "/speech/" in r.url) as answered:
        sent = live.http.post(
            f"/v1/streams/{live.stream_id}/gifts",
            json={"gift_id": "finger_heart", "idempotency_key": "m1", "message": "Great stream"},
            headers=bearer("alice", Role.VIEWER, name="Alice"),
        )
        assert sent.status_code == 200, sent.text
    speech = answered.value
    assert (speech.status, speech.headers["content-type"]) == (200, "audio/wav")
    assert requested == [str(sent.json()["event_id"])]
    assert page.evaluate(f"{SHOWN}.map(a => a.message)") == ["", "Great stream"]
