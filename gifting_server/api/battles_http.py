"""HTTP endpoints of live battles (CONTRACT.md "Battles", docs/battles.md)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gifting_server.api.http import idempotency_key, identity, json_response, store_of
from gifting_server.api.validation import json_object
from gifting_server.auth import Role
from gifting_server.fields import identifier, integer, invalid
from gifting_server.ledger import battles

INVITE_FIELDS = frozenset({"stream_id", "opponent_stream_id", "duration_s", "idempotency_key"})


async def create_battle(request: Request) -> Response:
    who = identity(request, Role.STREAMER)
    body = await json_object(request)
    unknown = sorted(set(body) - INVITE_FIELDS)
    if unknown:
        raise invalid(f"unknown field {unknown[0]!r}")
    stream_id = identifier(body, "stream_id")
    opponent = identifier(body, "opponent_stream_id")
    store = store_of(request)
    rules = store.settings.battles
    duration_s = integer(
        body, "duration_s", minimum=rules.min_duration_s, maximum=rules.max_duration_s
    )
    key = idempotency_key(request, body)
    battle, created = await battles.invite(store, who, stream_id, opponent, duration_s, key)
    return json_response(battle, status=201 if created else 200)


async def get_battle(request: Request) -> Response:
    return json_response(await battles.get(store_of(request), request.path_params["battle_id"]))


async def accept_battle(request: Request) -> Response:
    who = identity(request, Role.STREAMER)
    battle_id = request.path_params["battle_id"]
    return json_response(await battles.accept(store_of(request), who, battle_id))


async def decline_battle(request: Request) -> Response:
    who = identity(request, Role.STREAMER)
    battle_id = request.path_params["battle_id"]
    return json_response(await battles.decline(store_of(request), who, battle_id))


async def cancel_battle(request: Request) -> Response:
    who = identity(request, Role.STREAMER)
    battle_id = request.path_params["battle_id"]
    return json_response(await battles.cancel(store_of(request), who, battle_id))


routes = [
    Route("/v1/battles", create_battle, methods=["POST"]),
    Route("/v1/battles/{battle_id}", get_battle),
    Route("/v1/battles/{battle_id}/accept", accept_battle, methods=["POST"]),
    Route("/v1/battles/{battle_id}/decline", decline_battle, methods=["POST"]),
    Route("/v1/battles/{battle_id}/cancel", cancel_battle, methods=["POST"]),
]
