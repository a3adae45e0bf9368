"""The browser pages: the OBS overlays, the viewer client and the streamer's studio,
served from the package.

Plain HTML, CSS and JavaScript modules in `gifting_server/overlay/`, no build
step. Read through `importlib.resources`, so they are found in an installed
wheel as well as in a checkout.
"""

from __future__ import annotations

import functools
import hashlib
import re
from importlib import resources

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gifting_server.api.http import store_of
from gifting_server.errors import ErrorCode, GiftingError

PAGES = {
    "/overlay/alerts": "alerts.html",
    "/overlay/leaderboard": "leaderboard.html",
    "/overlay/goal": "goal.html",
    "/overlay/feed": "feed.html",
    "/overlay/battle": "battle.html",
    "/client": "client.html",
    "/docs": "docs.html",  # the OpenAPI document, rendered by docs.js
    "/studio": "studio.html",
}
# The studio previews the overlays in frames of its own: they may be framed by this
# origin only. Every other page (the studio, which holds a token that can cash out,
# and the client) may not be framed at all.
FRAMED_BY_SELF = frozenset(path for path in PAGES if path.startswith("/overlay/"))
STATIC_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*\.(js|css)$")
MEDIA_TYPES = {"js": "text/javascript; charset=utf-8", "css": "text/css; charset=utf-8"}

# Tokens travel in the page's query string: no Referer may carry them away, and
# nothing but this origin may be loaded or contacted.
POLICY = (
    "default-src 'self'; img-src 'self' data:; connect-src 'self'; "
    # the alerts overlay plays a message's speech from a blob: of its fetched WAV
    "media-src 'self' blob:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors {ancestors}"
)
PAGE_HEADERS = {
    "Content-Security-Policy": POLICY.format(ancestors="'none'"),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}
OVERLAY_HEADERS = PAGE_HEADERS | {"Content-Security-Policy": POLICY.format(ancestors="'self'")}
DEMO_PAYMENTS_OFF = b'data-demo-payments="off"'


@functools.cache
def asset(name: str) -> bytes | None:
    item = resources.files("gifting_server").joinpath("overlay", name)
    return item.read_bytes() if item.is_file() else None


async def page(request: Request) -> Response:
    html = asset(PAGES[request.url.path])
    assert html is not None, "the overlay pages ship with the package"
    if store_of(request).settings.demo_payments:
        html = html.replace(DEMO_PAYMENTS_OFF, b'data-demo-payments="on"')
    headers = OVERLAY_HEADERS if request.url.path in FRAMED_BY_SELF else PAGE_HEADERS
    return Response(html, media_type="text/html; charset=utf-8", headers=headers)


async def static(request: Request) -> Response:
    name = request.path_params["name"]
    match = STATIC_NAME.match(name)
    body = asset(name) if match else None
    if match is None or body is None:
        raise GiftingError(ErrorCode.NOT_FOUND, "no such file")
    # OBS keeps browser sources open for hours: revalidate, so an upgrade shows.
    etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
    headers = {"ETag": etag, "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=MEDIA_TYPES[match.group(1)], headers=headers)


routes = [
    *(Route(path, page) for path in PAGES),
    Route("/overlay/static/{name}", static),
]
