"""Demo data: a live stream, its streamer and three funded viewers, a rival live stream
to battle, plus ready URLs."""

from __future__ import annotations

import orjson

from gifting_server.auth import Role, issue_token
from gifting_server.config import Settings
from gifting_server.ledger import payments, streams
from gifting_server.ledger.store import Store, connect
from gifting_server.webhooks import following

DEMO_STREAM = "demo"
DEMO_STREAMER = ("demo_streamer", "Demo Streamer")
# A second live stream of another streamer: the demo stream's opponent in a battle.
DEMO_RIVAL_STREAM = "demo_rival"
DEMO_RIVAL = ("demo_rival_streamer", "Demo Rival")
DEMO_VIEWERS = (("alice", "Alice"), ("bob", "Bob"), ("carol", "Carol"))
DEMO_NEWCOMER = ("dana", "Dana")  # starts with no coins: the way to the recharge sheet
DEMO_PACKAGE = "coins_10000"
# Browser source sizes that fit each overlay (width x height, in OBS pixels).
OVERLAYS = (
    ("alerts", "800x600", ""),
    ("leaderboard", "400x500", ""),
    ("goal", "800x160", "&target=5000"),
    ("feed", "400x600", ""),
    ("battle", "800x220", ""),
)


async def seed_demo(settings: Settings, redis_url: str, base_url: str) -> str:
    """Seed idempotently (safe to run on every start) and return what to print."""
    await seed(settings, redis_url)
    return demo_urls(settings, base_url)


async def seed(settings: Settings, redis_url: str) -> None:
    """The live demo stream and its funded viewers; idempotent (the payments by event id)."""
    redis = await connect(redis_url, settings.limits.request_timeout_s)
    store = Store(redis, settings)
    try:
        await streams.start_stream(store, DEMO_STREAMER[0], DEMO_STREAM, DEMO_STREAMER[1])
        await streams.start_stream(store, DEMO_RIVAL[0], DEMO_RIVAL_STREAM, DEMO_RIVAL[1])
        # As POST /v1/streams does: the streamers' webhooks for all streams follow them.
        await following.on_stream_started(store, DEMO_STREAMER[0], DEMO_STREAM)
        await following.on_stream_started(store, DEMO_RIVAL[0], DEMO_RIVAL_STREAM)
        for user_id, _ in DEMO_VIEWERS:
            await payments.apply_payment(
                store, user_id, f"demo-{user_id}-1", "payment.succeeded", DEMO_PACKAGE
            )
    finally:
        await store.close()


def demo_urls(settings: Settings, base_url: str) -> str:
    """The demo's client and overlay URLs and API hints, for a server at `base_url`."""
    week = 7 * 86_400
    lines = [
        "",
        f"gifting_server demo: stream {DEMO_STREAM!r} is live, streamed by {DEMO_STREAMER[1]}",
        "",
        "Viewer clients, one per viewer (open them in several windows or on a phone;"
        " tokens last a week):",
    ]
    for user_id, name in (*DEMO_VIEWERS, DEMO_NEWCOMER):
        token = issue_token(
            settings.secret, user_id, Role.VIEWER, name=name, adult=True, ttl_s=week
        )
        lines.append(f"  {name:<6} {base_url}/client?stream_id={DEMO_STREAM}&token={token}")
    lines.append(
        f"  ({DEMO_NEWCOMER[1]} starts with no coins: a gift leads to the recharge sheet.)"
    )
    if settings.demo_payments:
        lines.append("  Demo payments are on: the recharge sheet buys coins without a provider.")
    streamer = issue_token(
        settings.secret, DEMO_STREAMER[0], Role.STREAMER, name=DEMO_STREAMER[1], ttl_s=week
    )
    overlay = issue_token(
        settings.secret, DEMO_STREAMER[0], Role.OVERLAY, stream_id=DEMO_STREAM, ttl_s=week
    )
    studio = f"{base_url}/studio?stream_id={DEMO_STREAM}&token={streamer}"
    lines += [
        "",
        f"Streamer's studio ({DEMO_STREAMER[1]}: go live, alerts, goal, overlay links,"
        " battles, messages, earnings):",
        f"  {studio}",
    ]
    lines += ["", "OBS browser sources (Sources > + > Browser; paste the URL, set the size):"]
    for kind, size, options in OVERLAYS:
        url = f"{base_url}/overlay/{kind}?stream_id={DEMO_STREAM}{options}&token={overlay}"
        lines.append(f"  {kind:<11} {size:<8} {url}")
    lines += [
        "",
        "HTTP API:",
        f"  streamer token: {streamer}",
        f"  send a gift:    curl -X POST {base_url}/v1/streams/{DEMO_STREAM}/gifts \\",
        "                    -H 'Authorization: Bearer <viewer token>' \\",
        '                    -d \'{"gift_id":"rose","count":1,"idempotency_key":"k1"}\'',
        f"  leaderboard:    {base_url}/v1/streams/{DEMO_STREAM}/leaderboard",
        f"  API spec:       {base_url}/openapi.json",
        "",
        *battle_lines(settings, base_url, streamer),
    ]
    return "\n".join(lines)


def battle_lines(settings: Settings, base_url: str, streamer: str) -> list[str]:
    """How the demo stream battles the rival's (docs/battles.md): invite, accept, watch."""
    rival = issue_token(
        settings.secret, DEMO_RIVAL[0], Role.STREAMER, name=DEMO_RIVAL[1], ttl_s=7 * 86_400
    )
    invite = {
        "stream_id": DEMO_STREAM,
        "opponent_stream_id": DEMO_RIVAL_STREAM,
        "duration_s": 120,
        "idempotency_key": "demo-battle-1",
    }
    return [
        f"A battle: {DEMO_STREAMER[1]} ({DEMO_STREAM!r}) against {DEMO_RIVAL[1]}"
        f" ({DEMO_RIVAL_STREAM!r}, also live), 2 minutes:",
        f"  invite:  curl -X POST {base_url}/v1/battles \\",
        f"             -H 'Authorization: Bearer {streamer}' \\",
        f"             -d '{orjson.dumps(invite).decode()}'",
        "           (answers the battle: its battle_id is BATTLE below; a new"
        " idempotency_key for each new battle)",
        f"  accept:  curl -X POST {base_url}/v1/battles/BATTLE/accept \\",
        f"             -H 'Authorization: Bearer {rival}'",
        "  (or /decline; either streamer may /cancel before it starts)",
        f"  score:   curl {base_url}/v1/battles/BATTLE",
        "  Gifts to either stream count for its side until the end; the viewers of both"
        " streams get `battle` events. To gift to the rival's side, open a viewer's"
        f" client link above with stream_id={DEMO_RIVAL_STREAM}.",
        "",
    ]
