"""Watch a stream's events live: `python -m gifting_server.tools.watch STREAM`.

Reconnects with backoff and resumes with `since`, so nothing is missed while
the server restarts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from typing import Any

import msgpack
import orjson
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from gifting_server.auth import Role
from gifting_server.config import Settings, load_settings
from gifting_server.tools.client import add_connection_arguments, hub_url, settings_needed


def describe(event: dict[str, Any]) -> str:
    kind = event.get("kind")
    if kind == "gift":
        sender, gift = event["sender"]["name"], event["gift"]
        if event.get("test"):
            return f"test alert: {gift['name']} x{event['count']} (no coins moved)"
        said = f': "{event["message"]}"' if event.get("message") else ""
        if event.get("streak_end"):
            return f"{sender}'s streak of {gift['name']} ended at x{event['combo']}"
        return (
            f"{sender} sent {gift['name']} x{event['count']} "
            f"(combo x{event['combo']}, stream total {event['coins_total']} coins){said}"
        )
    if kind == "viewers":
        return f"{event['count']} watching"
    if kind == "leaderboard":
        top = ", ".join(f"{e['rank']}. {e['name']} {e['coins']}" for e in event["entries"][:3])
        return f"top gifters: {top or 'none yet'}"
    if kind == "stream_ended":
        return "the stream ended"
    if kind == "alerts":
        return f"alerts: {event['action']} ({'paused' if event.get('paused') else 'playing'})"
    if kind == "goal":
        return f"goal: {event['title'] or 'untitled'} {event['progress']}/{event['target']} coins"
    return orjson.dumps(event).decode()


async def watch(args: argparse.Namespace, settings: Settings | None) -> None:
    since: int | None = args.since
    backoff = 0.5
    protocol = "gifting.v1.msgpack" if args.msgpack else "gifting.v1.json"
    while True:
        try:
            async with connect(hub_url(args, Role.VIEWER, settings), subprotocols=[protocol]) as ws:  # type: ignore[list-item]
                subscribe: dict[str, Any] = {"type": "subscribe", "stream_id": args.stream}
                if since is not None:
                    subscribe["since"] = since
                await ws.send(
                    msgpack.packb(subscribe) if args.msgpack else orjson.dumps(subscribe).decode()
                )
                backoff = 0.5
                async for frame in ws:
                    message = msgpack.unpackb(frame) if args.msgpack else orjson.loads(frame)
                    if message["type"] == "subscribed":
                        if not message["recovered"]:
                            state = "rejoined (events were lost: older than the history)"
                        else:
                            state = "joined" if since is None else "resumed"
                        print(f"# {state} {args.stream}: {message['viewers']} watching", flush=True)
                        since = message["last_event_id"] if since is None else since
                    elif message["type"] == "events":
                        for event in message["events"]:
                            since = event["event_id"]
                            print(f"[{event['event_id']}] {describe(event)}", flush=True)
                    elif message["type"] == "error":
                        print(f"# error {message['code']}: {message['message']}", file=sys.stderr)
        except (OSError, ConnectionClosed) as e:
            print(f"# disconnected ({e}); reconnecting in {backoff:.1f}s", file=sys.stderr)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m gifting_server.tools.watch", description=__doc__
    )
    parser.add_argument("stream", help="the stream id, e.g. demo")
    parser.add_argument("--since", type=int, help="replay events after this event id first")
    add_connection_arguments(parser, default_user="watcher")
    with contextlib.suppress(KeyboardInterrupt):
        args = parser.parse_args()
        asyncio.run(watch(args, load_settings() if settings_needed(args) else None))


if __name__ == "__main__":
    main()
