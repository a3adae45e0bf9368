"""Overlay tokens minted by the streamer, and their rotation: a rotation closes every
open overlay of the stream with an older token (4001 `token_revoked`) on every
worker, and refuses that token from then on; a new token works."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from gifting_server.auth import Role, issue_token, verify_token
from gifting_server.ledger import keys
from tests.api import assert_error
from tests.api.test_http_flow import ALICE, STREAMER, buy, go_live
from tests.conftest import SECRET, ServerThread, server_factory
from tests.factories import auth, token
from tests.hub.wsclient import WsClient
from tests.topology import async_client

OTHER_STREAMER = auth("streamer2", Role.STREAMER)


@pytest.fixture
def two_workers(redis_url: str, tmp_path: Path) -> Iterator[tuple[ServerThread, ServerThread]]:
    """Two servers over one Redis: two workers of one deployment."""
    with server_factory(tmp_path, {}) as start:
        yield start(redis_url), start(redis_url)


@pytest.fixture
async def http(two_workers: tuple[ServerThread, ServerThread]) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=two_workers[0].url, timeout=10) as client:
        yield client


async def mint(http: httpx.AsyncClient, stream_id: str = "s1", **body: object) -> dict[str, object]:
    response = await http.post(
        f"/v1/streams/{stream_id}/overlay-tokens", json=body, headers=STREAMER
    )
    assert response.status_code == 201, response.text
    data: dict[str, object] = response.json()
    return data


async def test_a_minted_token_comes_with_a_url_for_each_overlay(
    http: httpx.AsyncClient, two_workers: tuple[ServerThread, ServerThread]
) -> None:
    await go_live(http, "s1")
    minted = await mint(http)
    token_ = str(minted["token"])
    who = verify_token(SECRET, token_)
    assert (who.role, who.user_id, who.stream_id, who.generation) == (
        Role.OVERLAY, "streamer1", "s1", 0,
    )  # fmt: skip
    urls = minted["urls"]
    assert isinstance(urls, dict) and set(urls) == {
        "alerts",
        "leaderboard",
        "goal",
        "feed",
        "battle",
    }
    for name, url in urls.items():
        parts = urlsplit(url)
        assert f"{parts.scheme}://{parts.netloc}" == two_workers[0].url
        assert parts.path == f"/overlay/{name}"
        assert parse_qs(parts.query) == {"stream_id": ["s1"], "token": [token_]}
    page = await http.get(urls["alerts"])
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    async with await WsClient.open(two_workers[1].url, token_) as overlay:
        assert (await overlay.subscribe("s1"))["stream_id"] == "s1"


async def test_rotating_closes_old_overlays_on_every_worker_and_refuses_their_tokens(
    http: httpx.AsyncClient, two_workers: tuple[ServerThread, ServerThread]
) -> None:
    await go_live(http, "s1")
    await go_live(http, "s2")
    from_cli = token("streamer1", Role.OVERLAY, stream_id="s1")  # generation 0, as the CLI
    minted = str((await mint(http))["token"])
    other_stream = str((await mint(http, "s2"))["token"])
    clients: list[WsClient] = []
    for server in two_workers:
        for old in (from_cli, minted):
            clients.append(await WsClient.open(server.url, old))
            await clients[-1].subscribe("s1")
    viewers = [await WsClient.open(server.url, token("alice")) for server in two_workers]
    untouched = await WsClient.open(two_workers[1].url, other_stream)
    for client in (*viewers, untouched):
        await client.subscribe("s2" if client is untouched else "s1")

    rotated = await mint(http, rotate=True)
    for client in clients:
        assert await client.closed() == (4001, "token_revoked")
    for client in (*viewers, untouched):
        await client.barrier()  # still open and answering
        assert not client.done

    new = str(rotated["token"])
    assert verify_token(SECRET, new).generation == 1
    for server in two_workers:
        for old in (from_cli, minted):
            async with await WsClient.open(server.url, old) as refused:
                assert await refused.closed() == (4001, "token_revoked")
        async with await WsClient.open(server.url, new) as fresh:
            await fresh.subscribe("s1")
            await fresh.barrier()
    # Minting without rotate keeps the other tokens: the newest generation.
    again = str((await mint(http))["token"])
    assert verify_token(SECRET, again).generation == 1
    async with await WsClient.open(two_workers[0].url, again) as fresh:
        await fresh.subscribe("s1")
    for client in (*viewers, untouched):
        await client.close()
        client.assert_no_traceback()


async def test_a_rotation_is_an_event_in_the_history(
    http: httpx.AsyncClient, two_workers: tuple[ServerThread, ServerThread]
) -> None:
    await go_live(http, "s1")
    async with await WsClient.open(two_workers[1].url, token("alice")) as viewer:
        await viewer.subscribe("s1")
        await mint(http, rotate=True)
        await mint(http, rotate=True)
        seen = await viewer.events_until(lambda e: e.get("generation") == 2)
        revoked = [e for e in seen if e["kind"] == "overlay_revoked"]
        assert [e["generation"] for e in revoked] == [1, 2]


async def test_a_revoked_token_on_http_is_told_token_revoked_not_expired(
    http: httpx.AsyncClient,
) -> None:
    await go_live(http, "s1")
    await buy(http, "alice")
    old = {"Authorization": f"Bearer {token('streamer1', Role.OVERLAY, stream_id='s1')}"}
    body = {"gift_id": "rose", "idempotency_key": "k1"}
    before = await http.post("/v1/streams/s1/gifts", json=body, headers=old)
    assert before.status_code == 403, before.text  # an overlay sends no gifts
    await mint(http, rotate=True)
    assert_error(
        await http.post("/v1/streams/s1/gifts", json=body, headers=old), 401, "token_revoked"
    )
    assert (await http.post("/v1/streams/s1/gifts", json=body, headers=ALICE)).status_code == 200


async def test_an_expired_overlay_token_is_closed_as_expired(
    two_workers: tuple[ServerThread, ServerThread],
) -> None:
    expired = issue_token(SECRET, "streamer1", Role.OVERLAY, stream_id="s1", ttl_s=1, now=1e9)
    async with await WsClient.open(two_workers[0].url, expired) as overlay:
        assert await overlay.closed() == (4001, "token_expired")


@pytest.mark.parametrize(
    ("who", "stream_id", "body", "status", "code"),
    [
        (ALICE, "s1", {}, 403, "forbidden"),
        (OTHER_STREAMER, "s1", {"rotate": True}, 403, "forbidden"),
        (auth("streamer1", Role.OVERLAY, stream_id="s1"), "s1", {}, 403, "forbidden"),
        (auth("admin1", Role.ADMIN), "s1", {}, 403, "forbidden"),
        ({}, "s1", {}, 401, "unauthorized"),
        (STREAMER, "nope", {"rotate": True}, 404, "unknown_stream"),
        (STREAMER, "s1", {"rotate": "yes"}, 422, "invalid_request"),
        (STREAMER, "s1", {"rotate": 1}, 422, "invalid_request"),
        (STREAMER, "bad id!", {}, 422, "invalid_request"),
    ],
)
async def test_only_the_streamer_mints_and_a_refusal_rotates_nothing(
    http: httpx.AsyncClient,
    who: dict[str, str],
    stream_id: str,
    body: dict[str, object],
    status: int,
    code: str,
) -> None:
    await go_live(http, "s1")
    response = await http.post(f"/v1/streams/{stream_id}/overlay-tokens", json=body, headers=who)
    assert_error(response, status, code)
    still = token("streamer1", Role.OVERLAY, stream_id="s1")
    assert verify_token(SECRET, str((await mint(http))["token"])).generation == 0
    async with await WsClient.open(str(http.base_url), still) as overlay:
        await overlay.subscribe("s1")


async def test_an_empty_body_mints_without_rotating(http: httpx.AsyncClient) -> None:
    await go_live(http, "s1")
    response = await http.post("/v1/streams/s1/overlay-tokens", headers=STREAMER)
    assert response.status_code == 201, response.text
    assert verify_token(SECRET, response.json()["token"]).generation == 0


async def test_links_of_an_ended_stream_can_be_rotated(
    http: httpx.AsyncClient, two_workers: tuple[ServerThread, ServerThread]
) -> None:
    """Overlay links outlive a stream: a rotation between streams still revokes them."""
    await go_live(http, "s1")
    old = str((await mint(http))["token"])
    assert (await http.post("/v1/streams/s1/end", headers=STREAMER)).is_success
    async with await WsClient.open(two_workers[1].url, old) as overlay:
        await overlay.subscribe("s1")
        await mint(http, rotate=True)
        assert await overlay.closed() == (4001, "token_revoked")


async def test_the_openapi_document_names_the_new_error_codes(http: httpx.AsyncClient) -> None:
    paths = (await http.get("/openapi.json")).json()["paths"]

    def codes(path: str, method: str, status: str) -> list[str]:
        schema = paths[path][method]["responses"][status]["content"]["application/json"]
        enum: list[str] = schema["schema"]["properties"]["error"]["properties"]["code"]["enum"]
        return enum

    assert "token_revoked" in codes("/v1/streams/{stream_id}/gifts", "post", "401")
    minting = "/v1/streams/{stream_id}/overlay-tokens"
    assert "unknown_stream" in codes(minting, "post", "404")
    assert "forbidden" in codes(minting, "post", "403")
    completing = "/v1/cashouts/{cashout_id}/complete"
    assert codes(completing, "post", "409") == ["cashout_conflict"]
    assert codes(completing, "post", "404") == ["unknown_cashout"]
    assert "get" in paths["/v1/cashouts"] and "post" in paths["/v1/cashouts"]


@pytest.mark.parametrize("body", [{"rotat": True}, {"Rotate": True}, {"rotate": True, "x": 1}])
async def test_a_misspelled_rotate_is_refused_not_a_mint_that_revokes_nothing(
    http: httpx.AsyncClient, body: dict[str, object]
) -> None:
    """A streamer who rotates because a link leaked must not be answered 201 with a
    new link while the leaked one still works: an unknown field is refused."""
    await go_live(http, "s1")
    leaked = token("streamer1", Role.OVERLAY, stream_id="s1")
    response = await http.post("/v1/streams/s1/overlay-tokens", json=body, headers=STREAMER)
    assert_error(response, 422, "invalid_request")
    assert verify_token(SECRET, str((await mint(http))["token"])).generation == 0
    async with await WsClient.open(str(http.base_url), leaked) as overlay:
        await overlay.subscribe("s1")


async def test_an_unreadable_stored_generation_is_storage_corrupt_not_a_crash(
    http: httpx.AsyncClient, redis_url: str
) -> None:
    """The overlay generation read on the way in (a gift with an overlay token, a
    mint) that is no integer is answered 503 `storage_corrupt`, never a 500."""
    await go_live(http, "s1")
    client = await async_client(redis_url, decode_responses=True)
    await client.hset(keys.stream("s1"), "overlay_gen", "abc")
    await client.aclose()
    overlay = auth("streamer1", Role.OVERLAY, stream_id="s1")
    body = {"gift_id": "rose", "idempotency_key": "k1"}
    assert_error(
        await http.post("/v1/streams/s1/gifts", json=body, headers=overlay), 503, "storage_corrupt"
    )
    async with httpx.AsyncClient(base_url=str(http.base_url), timeout=10) as fresh:
        response = await fresh.post("/v1/streams/s1/overlay-tokens", json={}, headers=STREAMER)
    assert_error(response, 503, "storage_corrupt")
