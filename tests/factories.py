"""Small builders for tests: tokens, identities, signed webhooks, funded users, live streams."""

from __future__ import annotations

import time

import httpx
import orjson

from gifting_server.auth import Identity, Role, issue_token, sign_webhook
from gifting_server.ledger import payments, streams
from gifting_server.ledger.store import Store
from tests.conftest import SECRET, WEBHOOK_SECRET


def token(user_id: str, role: Role = Role.VIEWER, **kwargs: object) -> str:
    kwargs.setdefault("adult", True)
    return issue_token(SECRET, user_id, role, **kwargs)  # type: ignore[arg-type]


def auth(user_id: str, role: Role = Role.VIEWER, **kwargs: object) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(user_id, role, **kwargs)}"}


def viewer(user_id: str, *, adult: bool = True, name: str | None = None) -> Identity:
    return Identity(user_id=user_id, name=name or user_id.title(), role=Role.VIEWER, adult=adult)


def signed_webhook(
    body: dict[str, object], *, at: int | None = None
) -> tuple[bytes, dict[str, str]]:
    raw = orjson.dumps(body)
    stamp = int(time.time()) if at is None else at
    return raw, {"Gifting-Signature": sign_webhook(WEBHOOK_SECRET, raw, stamp)}


async def post_webhook(client: httpx.AsyncClient, body: dict[str, object]) -> httpx.Response:
    raw, headers = signed_webhook(body)
    return await client.post("/v1/payments/webhook", content=raw, headers=headers)


async def fund(store: Store, user_id: str, package_id: str = "coins_100", times: int = 1) -> None:
    for i in range(times):
        await payments.apply_payment(
            store, user_id, f"fund-{user_id}-{package_id}-{i}", "payment.succeeded", package_id
        )


async def live_stream(store: Store, stream_id: str = "s1", streamer: str = "streamer1") -> str:
    await streams.start_stream(store, streamer, stream_id)
    return stream_id
