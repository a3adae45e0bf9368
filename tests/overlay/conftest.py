"""Fixtures of the browser tests: a real server on a real Redis, and one headless
Debian chromium per module, driven by playwright."""

from __future__ import annotations

import dataclasses
import itertools
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, sync_playwright

from gifting_server.auth import Role
from gifting_server.config import Settings
from tests.conftest import ServerThread, make_settings
from tests.factories import signed_webhook, token

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless=new",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# The README's screenshots are refreshed with `UPDATE_SCREENSHOTS=1 make test`; other
# runs write theirs to a temporary folder so that a test run leaves the tree clean.
SCREENSHOTS = (
    Path(__file__).resolve().parents[2] / "docs" / "screenshots"
    if os.environ.get("UPDATE_SCREENSHOTS") == "1"
    else Path(tempfile.gettempdir()) / "gifting-screenshots"
)
PHONE = {"width": 390, "height": 844}
WAIT_MS = 5_000
SCREENSHOT_MS = 30_000

# Generous rate limits so that only the behaviour under test shows, and a short
# combo window so that streaks end quickly.
OVERLAY_SECTIONS: dict[str, dict[str, Any]] = {
    "limits": {"gift_rate_per_s": 10_000, "gift_burst": 10_000, "combo_window_ms": 500},
    "websocket": {"rate_per_s": 10_000, "burst": 10_000},
}

# What a stream scene behind a transparent overlay might look like, for screenshots.
SCENE = (
    "radial-gradient(ellipse at 20% 15%, rgba(120, 80, 255, 0.55), transparent 55%), "
    "radial-gradient(ellipse at 85% 90%, rgba(255, 70, 140, 0.45), transparent 50%), "
    "linear-gradient(135deg, #14213d 0%, #1f2f57 50%, #0b132b 100%)"
)

_keys = itertools.count(1)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "limits(**fields): [limits] of the `live` test server")


def overlay_settings(redis_url: str, data_dir: Path, **limits: Any) -> Settings:
    sections = {**OVERLAY_SECTIONS, "limits": {**OVERLAY_SECTIONS["limits"], **limits}}
    settings = make_settings(redis_url, data_dir, **sections)
    return dataclasses.replace(settings, demo_payments=True)


class Live:
    """A running server plus the HTTP calls the browser tests make around it."""

    def __init__(self, settings: Settings, stream_id: str = "s1") -> None:
        self.settings = settings
        self.stream_id = stream_id
        self.streamer = "streamer1"
        self.server = ServerThread(settings).__enter__()
        self.http = httpx.Client(base_url=self.server.url, timeout=10)

    @property
    def url(self) -> str:
        return self.server.url

    def close(self) -> None:
        self.http.close()
        self.server.__exit__(None, None, None)

    def start_stream(self) -> None:
        response = self.http.post(
            "/v1/streams",
            json={"stream_id": self.stream_id},
            headers=bearer(self.streamer, Role.STREAMER),
        )
        assert response.status_code in (200, 201), response.text

    def end_stream(self) -> None:
        response = self.http.post(
            f"/v1/streams/{self.stream_id}/end", headers=bearer(self.streamer, Role.STREAMER)
        )
        assert response.status_code == 200, response.text

    def fund(self, user_id: str, package_id: str = "coins_1000") -> None:
        body = {
            "event_id": f"fund-{user_id}-{next(_keys)}",
            "type": "payment.succeeded",
            "user_id": user_id,
            "package_id": package_id,
        }
        raw, headers = signed_webhook(body)
        response = self.http.post("/v1/payments/webhook", content=raw, headers=headers)
        assert response.status_code == 200, response.text

    def gift(
        self, user_id: str, gift_id: str = "rose", count: int = 1, http: httpx.Client | None = None
    ) -> dict[str, Any]:
        response = (http or self.http).post(
            f"/v1/streams/{self.stream_id}/gifts",
            json={"gift_id": gift_id, "count": count, "idempotency_key": f"k{next(_keys)}"},
            headers=bearer(user_id, Role.VIEWER, name=user_id.title()),
        )
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    def overlay_url(self, kind: str, **options: object) -> str:
        overlay = token(self.streamer, Role.OVERLAY, stream_id=self.stream_id)
        query = {"stream_id": self.stream_id, "token": overlay, **options}
        return f"{self.url}/overlay/{kind}?{urlencode(query)}"

    def client_url(self, user_id: str) -> str:
        viewer = token(user_id, Role.VIEWER, name=user_id.title())
        return f"{self.url}/client?{urlencode({'stream_id': self.stream_id, 'token': viewer})}"


def bearer(user_id: str, role: Role, **kwargs: object) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(user_id, role, **kwargs)}"}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.skip("no chromium at /usr/bin/chromium (apt-get install chromium; .ci/run does)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def live(request: pytest.FixtureRequest, redis_url: str, tmp_path: Path) -> Iterator[Live]:
    """A live stream `s1` on a running server; `@pytest.mark.limits(...)` changes [limits]."""
    marker = request.node.get_closest_marker("limits")
    running = Live(overlay_settings(redis_url, tmp_path, **(marker.kwargs if marker else {})))
    running.start_stream()
    yield running
    running.close()


class Pages:
    """New pages in their own browser contexts; uncaught page errors fail the test."""

    def __init__(self, browser: Browser) -> None:
        self.browser = browser
        self.contexts: list[Any] = []
        self.errors: list[str] = []

    def open(self, url: str, viewport: dict[str, int] | None = None) -> Page:
        context = self.browser.new_context(viewport=viewport or {"width": 800, "height": 600})
        self.contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on("console", self._on_console)
        page.goto(url)
        return page

    def _on_console(self, message: ConsoleMessage) -> None:
        # The pages' Content-Security-Policy must never have to block anything.
        if "Content Security Policy" in message.text:
            self.errors.append(message.text)

    def close(self) -> None:
        for context in self.contexts:
            context.close()


@pytest.fixture
def pages(browser: Browser) -> Iterator[Pages]:
    opened = Pages(browser)
    yield opened
    opened.close()
    assert not opened.errors, f"uncaught errors in the page: {opened.errors}"


def wait_live(page: Page) -> None:
    """The page's WebSocket is subscribed: events from now on reach it."""
    page.wait_for_function("() => window.__hub && window.__hub.state === 'live'")


def wait_settled(page: Page) -> None:
    """Every finite animation and transition has finished (looping ones go on)."""
    page.wait_for_function(
        """() => document.getAnimations().every(
          a => a.playState !== 'running' || a.effect.getTiming().iterations === Infinity)"""
    )


def screenshot(page: Page, name: str, *, scene: bool = True) -> Path:
    """Save <name>.png in SCREENSHOTS; transparent overlays over a sample stream scene."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    if scene:
        page.evaluate(
            "scene => document.documentElement.style.setProperty('background', scene, 'important')",
            SCENE,
        )
    path = SCREENSHOTS / f"{name}.png"
    # Rendering a full frame with every animation of a big gift running took over
    # WAIT_MS on a 2 GHz core busy with the other test workers.
    page.screenshot(path=str(path), timeout=SCREENSHOT_MS)
    return path
