"""`gifting-server load-setup`: funded viewers and their tokens for a load test.

Everything goes through the server's public API, as a payment provider and a
streamer would use it: each stream goes live with its streamer's token, each
user is topped up by signed `payment.succeeded` webhooks, and the tokens are
signed with this machine's secrets (`GIFTING_SECRET`, `GIFTING_WEBHOOK_SECRET`
or the data dir's). The result is a JSON file that `load/locustfile.py` reads.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gifting_server.auth import Role, issue_token, sign_webhook
from gifting_server.config import Settings

if TYPE_CHECKING:
    import httpx

DEFAULT_OUT = Path("load/reports/users.json")
ATTEMPTS = 3  # per request; a payment retried with its event id is credited once


class LoadSetupError(Exception):
    """The server refused a setup step; the message says which and why."""


@dataclass(frozen=True)
class LoadUser:
    user_id: str
    name: str
    stream_id: str
    token: str
    coins: int  # the balance once funded


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "load-setup",
        help="create funded users and their tokens for a load test",
        description="Create funded users and their tokens for load/locustfile.py.",
    )
    parser.add_argument("--users", type=int, required=True, help="how many viewers to fund")
    parser.add_argument(
        "--stream", default="load", help="the stream id (the prefix with --streams)"
    )
    parser.add_argument(
        "--streams", type=int, default=1, help="spread the users over N streams STREAM-1..N"
    )
    parser.add_argument("--host", default="http://127.0.0.1:8000", help="the server's base URL")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the users file to write")
    parser.add_argument(
        "--coins", type=int, default=50_000, help="buy packages until each user has this many"
    )
    parser.add_argument("--prefix", default="load_", help="user ids are PREFIX00001, ...")
    parser.add_argument("--ttl", type=int, default=86_400, help="token lifetime in seconds")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight")


def main(settings: Settings, args: argparse.Namespace) -> int:
    if args.users < 1 or args.streams < 1 or args.concurrency < 1:
        print("error: --users, --streams and --concurrency must be >= 1", file=sys.stderr)
        return 2
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not one line per request
    try:
        document = asyncio.run(
            set_up_load(
                settings,
                args.host,
                stream_ids(args.stream, args.streams),
                [f"{args.prefix}{i:05d}" for i in range(1, args.users + 1)],
                coins=args.coins,
                ttl_s=args.ttl,
                concurrency=args.concurrency,
                progress=lambda line: print(line, file=sys.stderr, flush=True),
            )
        )
    except LoadSetupError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    write_users_file(args.out, document)
    print(f"wrote {len(document['users'])} users to {args.out}", file=sys.stderr)
    return 0


def stream_ids(stream: str, count: int) -> list[str]:
    return [stream] if count == 1 else [f"{stream}-{i}" for i in range(1, count + 1)]


async def set_up_load(
    settings: Settings,
    host: str,
    streams: list[str],
    user_ids: list[str],
    *,
    coins: int = 50_000,
    ttl_s: int = 86_400,
    concurrency: int = 16,
    progress: Callable[[str], None] = lambda line: None,
) -> dict[str, Any]:
    """Put every stream live and buy each user packages until they hold at least `coins`
    (one package at least: every run buys); return the users file's content."""
    try:
        import httpx
    except ImportError:
        raise LoadSetupError("load-setup needs httpx: pip install -e '.[load]'") from None

    started = time.monotonic()
    base_url = host.rstrip("/")
    tls = httpx.create_ssl_context()  # one for all clients: each costs ~30 ms of CPU
    async with httpx.AsyncClient(base_url=base_url, timeout=30, verify=tls) as client:
        package = await largest_package(client)
        for stream_id in streams:
            await go_live(client, settings, stream_id)
    funding = Funding(settings, package, coins, len(user_ids), progress)
    users: dict[int, LoadUser] = {}
    todo = iter(enumerate(user_ids))  # shared by the workers

    async def worker() -> None:
        # One connection per worker: httpx's shared pool costs more CPU than the server
        # spends on a payment once many requests wait in it.
        async with httpx.AsyncClient(base_url=base_url, timeout=30, verify=tls) as client:
            for index, user_id in todo:
                balance = await funding.fund(client, user_id)
                token = issue_token(
                    settings.secret, user_id, Role.VIEWER, name=user_id, adult=True, ttl_s=ttl_s
                )
                stream_id = streams[index % len(streams)]
                users[index] = LoadUser(user_id, user_id, stream_id, token, balance)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    progress(
        f"{len(users)} users with >= {coins} coins on {len(streams)} live stream(s): "
        f"{funding.payments} payments in {time.monotonic() - started:.1f}s"
    )
    return {
        "host": host,
        "streams": streams,
        # Each stream's streamer token, for the locust users that run battles between them.
        "streamers": {s: streamer_token(settings, s, ttl_s) for s in streams},
        "coins": coins,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "users": [asdict(users[i]) for i in range(len(user_ids))],
    }


class Funding:
    """Buys packages through the signed webhook, and says how far it got."""

    def __init__(
        self,
        settings: Settings,
        package: tuple[str, int],
        coins: int,
        users: int,
        progress: Callable[[str], None],
    ) -> None:
        self.settings = settings
        self.package_id, self.package_coins = package
        self.coins = coins
        self.users = users
        self.progress = progress
        self.run_id = uuid.uuid4().hex[:12]  # new payments per run; a retry reuses its id
        self.started = time.monotonic()
        self.done = 0
        self.payments = 0

    async def fund(self, client: httpx.AsyncClient, user_id: str) -> int:
        """The user's balance after buying until it holds `coins`."""
        balance = 0
        for n in range(max(1, math.ceil(self.coins / self.package_coins))):
            event_id = f"load-{self.run_id}-{user_id}-{n}"
            balance = await pay(client, self.settings, user_id, event_id, self.package_id)
            self.payments += 1
            if balance >= self.coins:
                break
        self.done += 1
        if self.done % max(1, self.users // 10) == 0 or self.done == self.users:
            elapsed = time.monotonic() - self.started
            self.progress(f"funded {self.done}/{self.users} users ({elapsed:.1f}s)")
        return balance


def write_users_file(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)  # it holds bearer tokens
    path.write_text(json.dumps(document, indent=1) + "\n")


async def largest_package(client: httpx.AsyncClient) -> tuple[str, int]:
    packages = (await request(client, "GET", "/v1/coin-packages")).json()["packages"]
    if not packages:
        raise LoadSetupError("the server sells no coin packages")
    biggest = max(packages, key=lambda p: p["coins"])
    return str(biggest["id"]), int(biggest["coins"])


def streamer_token(settings: Settings, stream_id: str, ttl_s: int) -> str:
    """The token of the streamer a load stream belongs to (`<stream>-streamer`)."""
    return issue_token(settings.secret, f"{stream_id}-streamer"[:64], Role.STREAMER, ttl_s=ttl_s)


async def go_live(client: httpx.AsyncClient, settings: Settings, stream_id: str) -> None:
    token = streamer_token(settings, stream_id, 600)
    await request(
        client, "POST", "/v1/streams", json={"stream_id": stream_id}, headers=bearer(token)
    )


async def pay(
    client: httpx.AsyncClient, settings: Settings, user_id: str, event_id: str, package_id: str
) -> int:
    body = json.dumps(
        {
            "event_id": event_id,
            "type": "payment.succeeded",
            "user_id": user_id,
            "package_id": package_id,
        }
    ).encode()

    def signed() -> dict[str, str]:  # fresh on every attempt: the timestamp must be recent
        return {
            "Gifting-Signature": sign_webhook(settings.webhook_secret, body, int(time.time())),
            "Content-Type": "application/json",
        }

    answer = await request(client, "POST", "/v1/payments/webhook", content=body, headers=signed)
    return int(answer.json()["coins"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def request(
    client: httpx.AsyncClient,
    method: str,
    path: str,
    *,
    headers: dict[str, str] | Callable[[], dict[str, str]] | None = None,
    **kwargs: Any,
) -> httpx.Response:
    """One request, retried on connection errors; any answer but 2xx stops the setup."""
    import httpx

    for attempt in range(1, ATTEMPTS + 1):
        try:
            response = await client.request(
                method, path, headers=headers() if callable(headers) else headers, **kwargs
            )
        except httpx.TransportError as e:
            if attempt == ATTEMPTS:
                raise LoadSetupError(f"{method} {client.base_url}{path}: {e!r}") from None
            await asyncio.sleep(0.2 * attempt)
            continue
        if response.is_success:
            return response
        try:
            error = response.json()["error"]
            reason = f"{error['code']}: {error['message']}"
        except (ValueError, KeyError, TypeError):
            reason = response.text[:200]
        if response.status_code == 401:
            reason += " (are GIFTING_SECRET and GIFTING_WEBHOOK_SECRET the server's?)"
        raise LoadSetupError(f"{method} {path} answered {response.status_code} {reason}")
    raise AssertionError("unreachable")
