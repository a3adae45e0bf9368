"""The pages over plain HTTP: served from the package, with safe headers."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

import gifting_server

PAGES = [
    "/overlay/alerts",
    "/overlay/leaderboard",
    "/overlay/goal",
    "/overlay/feed",
    "/overlay/battle",
    "/client",
    "/studio",
]
OVERLAY_DIR = Path(gifting_server.__file__).parent / "overlay"
STATIC = [
    "hub.js",
    "common.js",
    "alerts.js",
    "alerts-speech.js",
    "client.js",
    "overlay.css",
    "client.css",
    "feed.js",
    "feed-model.js",
    "studio.js",
    "studio-links.js",
    "studio-earnings.js",
    "studio.css",
    "battle.js",
    "battle-bar.js",
    "battle.css",
    "studio-battle.js",
]


@pytest.mark.parametrize("path", PAGES)
async def test_each_page_is_html_that_keeps_its_token_to_itself(
    http: httpx.AsyncClient, path: str
) -> None:
    response = await http.get(f"{path}?stream_id=s1&token=abc")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert "default-src 'self'" in response.headers["content-security-policy"]
    assert response.headers["cache-control"] == "no-store"
    assert '<script type="module" src="/overlay/static/' in response.text
    assert "http://" not in response.text and "https://" not in response.text  # no outside assets


@pytest.mark.parametrize("path", PAGES)
async def test_only_overlays_may_be_framed_and_only_by_this_server(
    http: httpx.AsyncClient, path: str
) -> None:
    # The studio previews overlays in frames; the studio and the client are never framed.
    policy = (await http.get(path)).headers["content-security-policy"]
    expected = "'self'" if path.startswith("/overlay/") else "'none'"
    assert f"frame-ancestors {expected}" in policy


@pytest.mark.parametrize("name", STATIC)
async def test_static_files_are_served_with_their_type_and_revalidated(
    http: httpx.AsyncClient, name: str
) -> None:
    response = await http.get(f"/overlay/static/{name}")
    assert response.status_code == 200
    kind = "text/javascript" if name.endswith(".js") else "text/css"
    assert response.headers["content-type"] == f"{kind}; charset=utf-8"
    assert response.headers["cache-control"] == "no-cache"
    again = await http.get(
        f"/overlay/static/{name}", headers={"If-None-Match": response.headers["etag"]}
    )
    assert again.status_code == 304 and again.content == b""


async def test_no_page_loads_anything_from_outside_the_server(http: httpx.AsyncClient) -> None:
    files = sorted(p.name for p in OVERLAY_DIR.iterdir() if p.suffix in (".js", ".css", ".html"))
    assert set(STATIC) <= set(files)
    for name in files:
        text = (OVERLAY_DIR / name).read_text()
        assert "http://" not in text and "https://" not in text and "url(" not in text, name
        assert "@import" not in text, name
        if name.endswith((".js", ".css")):
            assert (await http.get(f"/overlay/static/{name}")).status_code == 200, name


@pytest.mark.parametrize(
    "name", ["nope.js", "alerts.html", "..%2Fapp.py", "%2E%2E%2F__init__.py", "hub.js.map", ".js"]
)
async def test_anything_else_under_static_is_not_found(http: httpx.AsyncClient, name: str) -> None:
    response = await http.get(f"/overlay/static/{name}")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


async def test_the_client_page_says_whether_demo_payments_are_on(
    http: httpx.AsyncClient,
) -> None:
    response = await http.get("/client")
    assert 'data-demo-payments="off"' in response.text
    assert (await http.post("/v1/demo/payments", json={})).status_code == 404
