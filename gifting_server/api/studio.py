"""The streamer's HTTP endpoints for running a stream: alert control, the goal and
the message settings (CONTRACT.md, "Studio, messages and alert control"). Each
only sets state, so each is safe to repeat and takes no idempotency key."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gifting_server.api.http import authenticated, json_response, store_of, stream_id_of
from gifting_server.api.validation import json_object
from gifting_server.auth import Role, bearer_token, verify_token
from gifting_server.errors import GiftingError
from gifting_server.fields import MAX_INT, checked_id, integer, invalid
from gifting_server.ledger import alerts, goal, stream_settings, streams


def _closed(body: dict[str, Any], *allowed: str, action: str = "") -> None:
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        where = f" with action {action!r}" if action else ""
        raise invalid(f"unknown field {unknown[0]!r}{where}; allowed: {', '.join(allowed)}")


# The fields each alert action takes besides `action`: a field another action takes
# is refused too, so that a body that does not say what it means changes nothing.
ALERT_FIELDS: dict[str, tuple[str, ...]] = {"replay": ("event_id",), "test": ("gift_id", "count")}


async def control_alerts(request: Request) -> Response:
    who = authenticated(request)
    stream_id = stream_id_of(request)
    store = store_of(request)
    body = await json_object(request)
    action = body.get("action")
    if not isinstance(action, str) or action not in alerts.ACTIONS:
        raise invalid(f"action must be one of {', '.join(alerts.ACTIONS)}")
    _closed(body, "action", *ALERT_FIELDS.get(action, ()), action=action)
    event_id = integer(body, "event_id", minimum=1) if "event_id" in body else None
    gift_id = checked_id(body["gift_id"], "gift_id") if "gift_id" in body else None
    limit = store.settings.limits.max_gift_count
    count = integer(body, "count", minimum=1, maximum=limit, default=1)
    emitted = await alerts.control_alerts(
        store, who, stream_id, action, event_id=event_id, gift_id=gift_id, count=count
    )
    return json_response({"stream_id": stream_id, "action": action, "event_id": emitted})


async def put_goal(request: Request) -> Response:
    who = authenticated(request)
    stream_id = stream_id_of(request)
    body = await json_object(request)
    _closed(body, "target", "title", "reset")
    target = integer(body, "target", minimum=1, maximum=MAX_INT)
    title = body.get("title", "")
    if not isinstance(title, str):
        raise invalid("title must be a string")
    reset = body.get("reset", False)
    if type(reset) is not bool:
        raise invalid("reset must be true or false")
    held = await goal.set_goal(store_of(request), who, stream_id, target, title, reset)
    return json_response(
        {
            "target": held.target,
            "progress": held.progress,
            "title": held.title,
            "counted_from": held.counted_from,
        }
    )


async def put_settings(request: Request) -> Response:
    who = authenticated(request)
    stream_id = stream_id_of(request)
    store = store_of(request)
    change = stream_settings.parse_change(await json_object(request), store.settings.messages)
    settings = await stream_settings.change_settings(store, who, stream_id, change)
    return json_response({"stream_id": stream_id, "messages": settings.as_dict()})


async def get_settings(request: Request) -> Response:
    """The stream's streamer gets every setting; anyone else (any token or none) all
    but the blocked words: what a viewer's page needs to offer a message box."""
    stream_id = stream_id_of(request)
    store = store_of(request)
    owner = await streams.streamer_of(store, stream_id)  # also: an unknown stream
    settings = await stream_settings.read_settings(store, stream_id)
    header = request.headers.get("authorization")
    is_owner = False
    if header is not None:
        try:
            who = verify_token(store.settings.secret, bearer_token(header))
        except GiftingError:
            who = None
        is_owner = who is not None and who.role is Role.STREAMER and who.user_id == owner
    shown = settings.as_dict() if is_owner else settings.public()
    return json_response({"stream_id": stream_id, "messages": shown})


async def cashout_rules(request: Request) -> Response:
    """The rules a cash-out is held to, from `[economy]`: for the studio's form (anyone)."""
    economy = store_of(request).settings.economy
    return json_response(
        {
            "min_diamonds": economy.cashout_min_diamonds,
            "daily_cap": {"amount": economy.cashout_daily_cap_cents, "currency": economy.currency},
            "holding_period_days": economy.holding_period_days,
            "diamonds_per_unit": economy.diamonds_per_unit,
            "unit_value": {"amount": economy.cents_per_unit, "currency": economy.currency},
        }
    )


routes = [
    Route("/v1/streams/{stream_id}/alerts", control_alerts, methods=["POST"]),
    Route("/v1/streams/{stream_id}/goal", put_goal, methods=["PUT"]),
    Route("/v1/streams/{stream_id}/settings", put_settings, methods=["PUT"]),
    Route("/v1/streams/{stream_id}/settings", get_settings, methods=["GET"]),
    Route("/v1/cashouts/rules", cashout_rules, methods=["GET"]),
]
