"""Send gifts over the WebSocket: `python -m gifting_server.tools.gift STREAM rose --times 15`.

Each send waits for its `ack` (or error) and prints it; repeated sends within
the combo window make a streak.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from typing import Any

import msgpack
import orjson
from websockets.asyncio.client import connect

from gifting_server.auth import Role
from gifting_server.config import Settings, load_settings
from gifting_server.tools.client import add_connection_arguments, hub_url, settings_needed


async def send(args: argparse.Namespace, settings: Settings | None) -> int:
    protocol = "gifting.v1.msgpack" if args.msgpack else "gifting.v1.json"
    failures = 0
    async with connect(hub_url(args, Role.VIEWER, settings), subprotocols=[protocol]) as ws:  # type: ignore[list-item]
        for _ in range(args.times):
            message: dict[str, Any] = {
                "type": "gift",
                "id": uuid.uuid4().hex,
                "stream_id": args.stream,
                "gift_id": args.gift,
                "count": args.count,
            }
            await ws.send(
                msgpack.packb(message) if args.msgpack else orjson.dumps(message).decode()
            )
            while True:
                frame = await ws.recv()
                answer = msgpack.unpackb(frame) if args.msgpack else orjson.loads(frame)
                if answer.get("id") == message["id"]:
                    break
            if answer["type"] == "ack":
                print(
                    f"sent: event {answer['event_id']}, combo x{answer['combo']}, "
                    f"{answer['coins']} coins left"
                )
            else:
                failures += 1
                print(f"refused: {answer['code']}: {answer['message']}", file=sys.stderr)
            if args.interval:
                await asyncio.sleep(args.interval)
    return 1 if failures else 0


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m gifting_server.tools.gift", description=__doc__
    )
    parser.add_argument("stream", help="the stream id, e.g. demo")
    parser.add_argument("gift", help="a gift id from GET /v1/gifts, e.g. rose")
    parser.add_argument("--count", type=int, default=1, help="gifts per send")
    parser.add_argument("--times", type=int, default=1, help="how many sends")
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between sends")
    add_connection_arguments(parser, default_user="alice")
    args = parser.parse_args()
    settings = load_settings() if settings_needed(args) else None
    raise SystemExit(asyncio.run(send(args, settings)))


if __name__ == "__main__":
    main()
