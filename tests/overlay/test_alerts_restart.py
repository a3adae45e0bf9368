"""The alerts overlay across a server restart: nothing lost, nothing shown twice."""

from __future__ import annotations

import httpx

from tests.conftest import ServerThread
from tests.overlay.conftest import Live, Pages, wait_live

SHOWN = "window.__alertsShown"


def restarted_on(port: int, live: Live) -> ServerThread:
    """A new server on the port of the stopped one, on the same Redis."""
    server = ServerThread(live.settings, port)
    return server.__enter__()


def test_gifts_sent_while_the_server_restarts_are_each_shown_once_in_order(
    live: Live, pages: Pages
) -> None:
    for user in ("alice", "bob", "carol", "dave"):
        live.fund(user)
    # A second worker on the same Redis takes gifts while the first one is down.
    with ServerThread(live.settings) as other, httpx.Client(base_url=other.url) as other_http:
        page = pages.open(live.overlay_url("alerts", duration=0.5, sound="off"))
        wait_live(page)
        live.gift("alice", "doughnut")
        page.wait_for_function(f"() => {SHOWN}.length === 1")

        port = live.server.port
        live.server.__exit__(None, None, None)  # closes the overlay's socket with 1012
        page.wait_for_function("() => window.__hub.state === 'offline'")
        assert page.locator(".refused").count() == 0  # offline shows nothing broken
        live.gift("bob", "cap", http=other_http)
        live.gift("carol", "hand_hearts", http=other_http)

        live.server = restarted_on(port, live)
        wait_live(page)
        live.gift("dave", "corgi")

        page.wait_for_function(f"() => {SHOWN}.length === 4 && {SHOWN}.every(a => a.ended)")
        page.wait_for_function("() => document.querySelectorAll('#stage .alert').length === 0")
    shown = page.evaluate(SHOWN)
    assert [(a["name"], a["gift_id"]) for a in shown] == [
        ("Alice", "doughnut"),
        ("Bob", "cap"),
        ("Carol", "hand_hearts"),
        ("Dave", "corgi"),
    ]
    assert [a["event_id"] for a in shown] == sorted({a["event_id"] for a in shown})
