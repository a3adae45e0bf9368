"""Every bad input to every endpoint: the right 4xx code, the contract's error body, and
not one byte changed in Redis. Never a 500. One table, one test."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from gifting_server.auth import Role, issue_token, sign_webhook
from gifting_server.config import Settings
from gifting_server.ledger import streams
from gifting_server.ledger.store import Store, connect
from tests.api import assert_error, snapshot
from tests.conftest import WEBHOOK_SECRET, ServerThread, make_settings
from tests.factories import auth, fund, live_stream

NO_BODY = object()
GIFTS = "/v1/streams/s1/gifts"
LIMITS = "/v1/wallet/limits"
CASHOUTS = "/v1/cashouts"
WEBHOOK = "/v1/payments/webhook"

TOKENS: dict[str, dict[str, str]] = {
    "none": {},
    "viewer": auth("alice", name="Alice"),
    "poor": auth("bob"),
    "minor": auth("kid", adult=False),
    "streamer": auth("streamer1", Role.STREAMER),
    "streamer_as_viewer": auth("streamer1"),
    "other_streamer": auth("streamer2", Role.STREAMER),
    "overlay": auth("streamer1", Role.OVERLAY, stream_id="s1"),
    "admin": auth("root", Role.ADMIN),
    "garbage": {"Authorization": "Bearer not-a-token"},
    "basic": {"Authorization": "Basic YWxpY2U6cHc="},
    "empty_bearer": {"Authorization": "Bearer"},
    "expired": auth("alice", ttl_s=-60),
    "wrong_secret": {
        "Authorization": "Bearer "
        + issue_token("another-secret-0123456789abcdef0123456789", "alice", Role.VIEWER)
    },
}


INVALID = (422, "invalid_request")
FORBIDDEN = (403, "forbidden")
UNAUTHORIZED = (401, "unauthorized")
TOO_LARGE = (413, "payload_too_large")


@dataclass(frozen=True)
class Case:
    expected: tuple[int, str]  # status and error code
    method: str
    path: str
    who: str  # a key of TOKENS, or "webhook": signed by the payment provider
    body: Any  # NO_BODY, bytes sent as they are, or anything else sent as JSON
    headers: tuple[tuple[str, str], ...] = ()


CASES: dict[str, Case] = {}


def add(
    name: str,
    expected: tuple[int, str],
    method: str,
    path: str,
    who: str,
    body: Any = NO_BODY,
    **headers: str,
) -> None:
    assert name not in CASES, name
    CASES[name] = Case(expected, method, path, who, body, tuple(headers.items()))


def replaced(base: dict[str, Any], name: str, value: Any) -> dict[str, Any]:
    return {**base, name: value}


def without(base: dict[str, Any], name: str) -> dict[str, Any]:
    return {k: v for k, v in base.items() if k != name}


NOT_INTEGERS: dict[str, Any] = {
    "float": 1.0,
    "bool": True,
    "string": "1",
    "null": None,
    "list": [1],
    "object": {"n": 1},
    "2**64": 2**64,
    "2**63": 2**63,
    "-2**63": -(2**63),
}
BAD_IDS: dict[str, Any] = {
    "empty": "",
    "space": "ro se",
    "dot": "ro.se",
    "slash": "ro/se",
    "unicode": "rosé",
    "65 chars": "a" * 65,
    "trailing newline": "rose\n",
    "64 chars and a newline": "a" * 64 + "\n",
    "int": 5,
    "bool": True,
    "list": ["rose"],
    "null": None,
}
BAD_KEYS: dict[str, Any] = {
    "empty": "",
    "pipe": "k|1",
    "space": "k 1",
    "129 chars": "k" * 129,
    "trailing newline": "k1\n",
    "int": 7,
    "null": None,
}
BAD_BODIES = {
    "bad json": b"{",
    "trailing comma": b'{"a": 1,}',
    "array": b"[]",
    "array of object": b'[{"gift_id": "rose"}]',
    "string": b'"rose"',
    "number": b"12",
    "null": b"null",
    "empty": b"",
    "not utf-8": b"\xff\xfe\x00",
    "nan": b'{"count": NaN}',
}
WRONG_ROLES = ("viewer", "streamer", "overlay", "admin")
UNAUTHENTICATED = ("none", "garbage", "basic", "empty_bearer", "expired", "wrong_secret")


def add_common(endpoint: str, method: str, path: str, who: str, body: dict[str, Any]) -> None:
    """Bad bodies, an oversized body, wrong roles and missing credentials for one endpoint."""
    if who != "webhook":
        for role in WRONG_ROLES:
            if role != who:
                add(f"{endpoint}: {role} token", FORBIDDEN, method, path, role, body)
        for token in UNAUTHENTICATED:
            add(f"{endpoint}: {token} token", UNAUTHORIZED, method, path, token, body)
    big = replaced(body, "pad", "x" * (16 * 1024 + 1))
    add(f"{endpoint}: body over 16 KiB", TOO_LARGE, method, path, who, big)
    for label, raw in BAD_BODIES.items():
        if not (path == "/v1/streams" and label == "empty"):  # empty: "pick an id for me"
            add(f"{endpoint}: body {label}", INVALID, method, path, who, raw)


# POST /v1/streams/{id}/gifts
GIFT = {"gift_id": "rose", "count": 1, "idempotency_key": "k1"}
GIFTING = ("POST", GIFTS, "viewer")
add_common("gift", *GIFTING, GIFT)
for name in ("gift_id", "idempotency_key"):
    add(f"gift: missing {name}", INVALID, *GIFTING, without(GIFT, name))
# max_gift_count is 99 in config/default.toml
for label, value in {**NOT_INTEGERS, "zero": 0, "negative": -1, "over max": 100}.items():
    add(f"gift: count {label}", INVALID, *GIFTING, replaced(GIFT, "count", value))
for label, value in BAD_IDS.items():
    add(f"gift: gift_id {label}", INVALID, *GIFTING, replaced(GIFT, "gift_id", value))
for label, value in BAD_KEYS.items():
    add(f"gift: key {label}", INVALID, *GIFTING, replaced(GIFT, "idempotency_key", value))
add("gift: unknown gift", (404, "unknown_gift"), *GIFTING, replaced(GIFT, "gift_id", "unicorn"))
for label, stream in {
    "dot": "s.1",
    "space": "s%201",
    "65 chars": "s" * 65,
    "colon": "s:1",
    "trailing newline": "s1%0A",
}.items():
    add(f"gift: stream id {label}", INVALID, "POST", f"/v1/streams/{stream}/gifts", "viewer", GIFT)
for stream, expected in {
    "nope": (404, "unknown_stream"),
    "ended": (409, "stream_not_live"),
}.items():
    add(f"gift: {stream} stream", expected, "POST", f"/v1/streams/{stream}/gifts", "viewer", GIFT)
add("gift: no coins", (402, "insufficient_funds"), "POST", GIFTS, "poor", GIFT)
universe = {**GIFT, "gift_id": "universe", "count": 99}
add("gift: over the balance", (402, "insufficient_funds"), *GIFTING, universe)
add("gift: not 18+", (403, "age_verification_required"), "POST", GIFTS, "minor", GIFT)
add("gift: own stream", (403, "self_gift"), "POST", GIFTS, "streamer_as_viewer", GIFT)
no_key = without(GIFT, "idempotency_key")
add("gift: bad Idempotency-Key header", INVALID, *GIFTING, no_key, **{"Idempotency-Key": "a b"})

# PUT /v1/wallet/limits
LIMITING = ("PUT", LIMITS, "viewer")
add_common("limits", *LIMITING, {"daily_coin_limit": 10})
add("limits: missing field", INVALID, *LIMITING, {})
for label, value in {**NOT_INTEGERS, "negative": -1, "over max": 100_000_001}.items():
    if label != "null":  # null removes the limit
        add(f"limits: {label}", INVALID, *LIMITING, {"daily_coin_limit": value})

# POST /v1/streams
STARTING = ("POST", "/v1/streams", "streamer")
add_common("streams", *STARTING, {"stream_id": "mine"})
for label, value in BAD_IDS.items():
    add(f"streams: stream_id {label}", INVALID, *STARTING, {"stream_id": value})
taken = (409, "stream_id_taken")
add("streams: taken id", taken, "POST", "/v1/streams", "other_streamer", {"stream_id": "s1"})

# POST /v1/streams/{id}/end
for role in ("viewer", "overlay", "admin"):
    add(f"end: {role} token", FORBIDDEN, "POST", "/v1/streams/s1/end", role)
for token in UNAUTHENTICATED:
    add(f"end: {token} token", UNAUTHORIZED, "POST", "/v1/streams/s1/end", token)
not_owner = (403, "not_stream_owner")
add("end: not the owner", not_owner, "POST", "/v1/streams/s1/end", "other_streamer")
add("end: unknown stream", (404, "unknown_stream"), "POST", "/v1/streams/nope/end", "streamer")
add("end: bad stream id", INVALID, "POST", "/v1/streams/s!1/end", "streamer")

# POST /v1/cashouts
CASH = {"diamonds": 2000, "idempotency_key": "c1"}
CASHING = ("POST", CASHOUTS, "streamer")
add_common("cashout", *CASHING, CASH)
for name in CASH:
    add(f"cashout: missing {name}", INVALID, *CASHING, without(CASH, name))
for label, value in {**NOT_INTEGERS, "zero": 0, "negative": -2, "2**53": 2**53}.items():
    add(f"cashout: diamonds {label}", INVALID, *CASHING, replaced(CASH, "diamonds", value))
for label, value in BAD_KEYS.items():
    add(f"cashout: key {label}", INVALID, *CASHING, replaced(CASH, "idempotency_key", value))
add("cashout: not whole cents", INVALID, *CASHING, replaced(CASH, "diamonds", 2001))
below = (422, "cashout_below_minimum")
add("cashout: below minimum", below, *CASHING, replaced(CASH, "diamonds", 2))
add("cashout: no diamonds", (402, "insufficient_diamonds"), *CASHING, CASH)

# POST /v1/streams/{id}/overlay-tokens (an empty body mints: no "empty" case)
MINTING = ("POST", "/v1/streams/s1/overlay-tokens", "streamer")
ROTATE = {"rotate": True}
for role in WRONG_ROLES:
    if role != "streamer":
        add(f"overlay token: {role} token", FORBIDDEN, *MINTING[:2], role, ROTATE)
for token in UNAUTHENTICATED:
    add(f"overlay token: {token} token", UNAUTHORIZED, *MINTING[:2], token, ROTATE)
for label, raw in BAD_BODIES.items():
    if label != "empty":
        add(f"overlay token: body {label}", INVALID, *MINTING, raw)
add("overlay token: body over 16 KiB", TOO_LARGE, *MINTING, {"pad": "x" * (16 * 1024 + 1)})
for label, value in {**NOT_INTEGERS, "int": 1, "yes": "yes"}.items():
    if value is not True:
        add(f"overlay token: rotate {label}", INVALID, *MINTING, {"rotate": value})
add("overlay token: another's stream", FORBIDDEN, *MINTING[:2], "other_streamer", ROTATE)
add("overlay token: unknown stream", (404, "unknown_stream"), "POST",
    "/v1/streams/nope/overlay-tokens", "streamer", ROTATE)  # fmt: skip
add("overlay token: bad stream id", INVALID, "POST", "/v1/streams/a.b/overlay-tokens",
    "streamer", ROTATE)  # fmt: skip

# GET /v1/cashouts
for role in WRONG_ROLES:
    if role != "streamer":
        add(f"cashouts: {role} token", FORBIDDEN, "GET", CASHOUTS, role)
for token in UNAUTHENTICATED:
    add(f"cashouts: {token} token", UNAUTHORIZED, "GET", CASHOUTS, token)
for query in ("limit=0", "limit=101", "limit=x", "limit=-1", "limit=1.5"):
    add(f"cashouts: {query}", INVALID, "GET", f"{CASHOUTS}?{query}", "streamer")

# POST /v1/cashouts/{id}/complete
COMPLETING = ("POST", "/v1/cashouts/co_x.streamer1/complete", "admin")
DONE = {"status": "paid"}
add_common("complete", *COMPLETING, DONE)
for label, value in {"refunded": "refunded", "upper": "PAID", "null": None, "int": 1}.items():
    add(f"complete: status {label}", INVALID, *COMPLETING, {"status": value})
add("complete: no status", INVALID, *COMPLETING, {})
add("complete: unknown", (404, "unknown_cashout"), *COMPLETING, DONE)
add("complete: old-form unknown", (404, "unknown_cashout"), "POST",
    "/v1/cashouts/co_x/complete", "admin", DONE)  # fmt: skip
add("complete: bad id", INVALID, "POST", "/v1/cashouts/co%20x/complete", "admin", DONE)

# POST /v1/payments/webhook, correctly signed
PAYMENT = {"event_id": "e1", "type": "payment.succeeded", "user_id": "a", "package_id": "coins_100"}
PAYING = ("POST", WEBHOOK, "webhook")
add_common("webhook", *PAYING, PAYMENT)
for name in PAYMENT:
    add(f"webhook: missing {name}", INVALID, *PAYING, without(PAYMENT, name))
for name in ("event_id", "user_id", "package_id"):
    for label in ("space", "int", "list", "null", "empty", "trailing newline"):
        add(f"webhook: {name} {label}", INVALID, *PAYING, replaced(PAYMENT, name, BAD_IDS[label]))
add("webhook: event_id 129", INVALID, *PAYING, replaced(PAYMENT, "event_id", "e" * 129))
add("webhook: user_id 65", INVALID, *PAYING, replaced(PAYMENT, "user_id", "u" * 65))
for label, value in {"other": "payment.failed", "int": 1, "empty": "", "null": None}.items():
    add(f"webhook: type {label}", INVALID, *PAYING, replaced(PAYMENT, "type", value))
unknown_package = (404, "unknown_package")
add("webhook: unknown package", unknown_package, *PAYING, replaced(PAYMENT, "package_id", "x"))
add("webhook: unsigned", (401, "invalid_signature"), "POST", WEBHOOK, "viewer", PAYMENT)

# reads with bad input
BOARD = "/v1/streams/s1/leaderboard"
BAD_QUERIES = "period=month period= limit=0 limit=101 limit=-1 limit=abc limit=1.5 limit=1e2"
# superscript two and circled one: str.isdigit() says yes, int() says no
for query in [*BAD_QUERIES.split(), "limit=%C2%B2", "limit=%E2%91%A0", "limit=9999999"]:
    add(f"leaderboard: {query}", INVALID, "GET", f"{BOARD}?{query}", "none")
unknown_stream = (404, "unknown_stream")
add("leaderboard: unknown stream", unknown_stream, "GET", "/v1/streams/x/leaderboard", "none")
add("leaderboard: bad stream id", INVALID, "GET", "/v1/streams/a:b/leaderboard", "none")
add("stream: unknown", unknown_stream, "GET", "/v1/streams/nope", "none")
add("stream: bad id", INVALID, "GET", "/v1/streams/a.b", "none")
for role in ("overlay", "admin"):
    add(f"wallet: {role} token", FORBIDDEN, "GET", "/v1/wallet", role)
for token in UNAUTHENTICATED:
    add(f"wallet: {token} token", UNAUTHORIZED, "GET", "/v1/wallet", token)

# wrong method, unknown path
for method, path in [
    ("GET", GIFTS),
    ("PUT", GIFTS),
    ("DELETE", "/v1/wallet"),
    ("POST", "/v1/wallet"),
    ("GET", LIMITS),
    ("POST", LIMITS),
    ("GET", WEBHOOK),
    ("GET", "/v1/streams"),
    ("DELETE", "/v1/streams/s1"),
    ("GET", "/v1/streams/s1/end"),
    ("POST", BOARD),
    ("PUT", CASHOUTS),
    ("GET", "/v1/cashouts/co_x.streamer1/complete"),
    ("GET", "/v1/streams/s1/overlay-tokens"),
    ("POST", "/healthz"),
    ("POST", "/v1/gifts"),
    ("PATCH", "/v1/coin-packages"),
]:
    add(f"{method} {path}", (405, "method_not_allowed"), method, path, "viewer")
for path in ("/", "/v2/gifts", "/v1/gift", "/v1/streams/s1/gifts/extra", "/v1/gifts/x", "/%00"):
    add(f"GET {path}", (404, "not_found"), "GET", path, "viewer")


@pytest.fixture(scope="module")
def module_settings(session_redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return make_settings(session_redis_url, tmp_path_factory.mktemp("validation"))


@pytest.fixture(scope="module")
def validation_server(module_settings: Settings) -> Iterator[ServerThread]:
    """One server for the whole table; the world is rebuilt in Redis before each case."""
    with ServerThread(module_settings) as running:
        yield running


@pytest.fixture
async def world(redis_url: str, module_settings: Settings) -> AsyncIterator[Store]:
    """A flushed Redis with funded viewers, a live stream s1 of streamer1 and an ended one."""
    assert redis_url == module_settings.redis_url
    client = await connect(redis_url, module_settings.limits.request_timeout_s)
    store = Store(client, module_settings)
    for user_id in ("alice", "kid", "streamer1"):
        await fund(store, user_id)
    await live_stream(store, "s1", "streamer1")
    await live_stream(store, "ended", "streamer1")
    await streams.end_stream(store, "streamer1", "ended")
    yield store
    await store.close()


@pytest.fixture
async def client(validation_server: ServerThread) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=validation_server.url, timeout=10) as http:
        yield http


async def send(http: httpx.AsyncClient, case: Case) -> httpx.Response:
    headers: dict[str, str] = {}
    content: bytes | None = None
    if case.body is not NO_BODY:
        content = case.body if isinstance(case.body, bytes) else json.dumps(case.body).encode()
        headers["Content-Type"] = "application/json"
    if case.who == "webhook":
        raw = content or b""
        headers["Gifting-Signature"] = sign_webhook(WEBHOOK_SECRET, raw, int(time.time()))
    else:
        headers.update(TOKENS[case.who])
    headers.update(case.headers)
    return await http.request(case.method, case.path, content=content, headers=headers)


@pytest.mark.parametrize("name", list(CASES))
async def test_bad_input_is_refused_with_its_code_and_changes_nothing(
    name: str, world: Store, client: httpx.AsyncClient
) -> None:
    case = CASES[name]
    before = await snapshot(world.redis)
    response = await send(client, case)
    assert_error(response, *case.expected)
    assert await snapshot(world.redis) == before


async def test_chunked_body_over_16_kib_is_refused_while_streaming(
    world: Store, client: httpx.AsyncClient
) -> None:
    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the server must count
        yield b'{"gift_id": "rose", "count": 1, "idempotency_key": "k", "pad": "'
        for _ in range(17):
            yield b"x" * 1024
        yield b'"}'

    before = await snapshot(world.redis)
    response = await client.post(GIFTS, content=chunks(), headers=TOKENS["viewer"])
    assert_error(response, 413, "payload_too_large")
    assert await snapshot(world.redis) == before
