"""HTTP endpoints of a streamer's studio that mint overlay links and pay out:
overlay tokens (with rotation) and cash-outs after they were asked for."""

from __future__ import annotations

from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gifting_server.api.http import identity, json_response, store_of, stream_id_of
from gifting_server.api.validation import json_object, query_int
from gifting_server.auth import Role
from gifting_server.fields import checked_key, invalid
from gifting_server.ledger import cashouts, overlay_tokens

# The overlay pages an overlay token opens (api/pages.py; `feed` is the event list,
# `battle` the stream's live battle).
OVERLAYS = ("alerts", "leaderboard", "goal", "feed", "battle")


def overlay_urls(base_url: str, stream_id: str, token: str) -> dict[str, str]:
    query = urlencode({"stream_id": stream_id, "token": token})
    base = base_url.rstrip("/")
    return {name: f"{base}/overlay/{name}?{query}" for name in OVERLAYS}


async def create_overlay_token(request: Request) -> Response:
    who = identity(request, Role.STREAMER)
    stream_id = stream_id_of(request)
    body = await json_object(request, allow_empty=True)
    # A misspelled "rotate" must not mint a link while the leaked one keeps working.
    unknown = sorted(set(body) - {"rotate"})
    if unknown:
        raise invalid(f"unknown field {unknown[0]!r}; allowed: rotate")
    rotate = body.get("rotate", False)
    if type(rotate) is not bool:
        raise invalid("rotate must be true or false")
    store = store_of(request)
    token = await overlay_tokens.mint(store, who.user_id, stream_id, rotate=rotate)
    urls = overlay_urls(str(request.base_url), stream_id, token)
    return json_response({"token": token, "urls": urls}, status=201)


async def list_cashouts(request: Request) -> Response:
    who = identity(request, Role.STREAMER)
    limit = query_int(request, "limit", default=cashouts.LISTED, minimum=1, maximum=cashouts.LISTED)
    listed = await cashouts.list_cashouts(store_of(request), who.user_id, limit)
    return json_response({"cashouts": listed})


async def complete_cashout(request: Request) -> Response:
    identity(request, Role.ADMIN)
    cashout_id = checked_key(request.path_params["cashout_id"], "cashout id")
    body = await json_object(request)
    status = body.get("status")
    if status not in cashouts.STATUSES:
        raise invalid("status must be paid or failed")
    return json_response(await cashouts.complete(store_of(request), cashout_id, status))


routes = [
    Route("/v1/streams/{stream_id}/overlay-tokens", create_overlay_token, methods=["POST"]),
    # Its POST (asking for a cash-out) is in api/http.py: the router tries both.
    Route("/v1/cashouts", list_cashouts, methods=["GET"]),
    Route("/v1/cashouts/{cashout_id}/complete", complete_cashout, methods=["POST"]),
]
