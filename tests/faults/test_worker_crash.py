"""kill -9 one of two `gifting-server serve` workers sharing a Redis while viewers
are connected to it and gifts keep coming: its viewers reconnect to the other
worker and resume with `since`, missing no event and seeing none twice."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from gifting_server.auth import Role
from tests.factories import auth, token
from tests.faults import buy, go_live, send_gift, wait_until
from tests.hub.conftest import Worker, running_workers
from tests.hub.streaks import history_of
from tests.hub.wsclient import JSON, MSGPACK, Event, WsClient

GIFTS_BEFORE = 40
GIFTS_AFTER = 40


@pytest.fixture
def workers(redis_url: str, tmp_path: Path) -> Iterator[list[Worker]]:
    """Two workers on the session's Redis; the one a test kills is not stopped again."""
    with running_workers(redis_url, tmp_path) as started:
        yield started


class Sender:
    """One viewer sending roses through a worker's HTTP API, one after another."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http
        self.event_ids: list[int] = []
        self.stop = asyncio.Event()

    async def run(self) -> None:
        while not self.stop.is_set():
            response = await send_gift(self.http, "carol", f"rose-{len(self.event_ids)}")
            assert response.status_code == 200, response.text
            self.event_ids.append(response.json()["event_id"])


def last_seen(client: WsClient, subscribed: int) -> int:
    return client.events[-1]["event_id"] if client.events else subscribed


# A client socket whose server was killed mid-stream is sometimes reclaimed by the
# garbage collector inside the websockets library before its close ran; that
# ResourceWarning says nothing about the behaviour under test.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.filterwarnings("ignore::ResourceWarning")
async def test_viewers_of_a_killed_worker_resume_on_the_other_missing_nothing(
    workers: list[Worker], redis_url: str
) -> None:
    doomed, survivor = workers
    async with httpx.AsyncClient(base_url=survivor.url, timeout=10) as http:
        await go_live(http, "s1")
        await buy(http, "carol", "coins_10000")
        encodings = [JSON, MSGPACK, JSON]
        on_doomed = [
            await WsClient.open(doomed.url, token(f"v{i}"), encoding=e)
            for i, e in enumerate(encodings)
        ]
        bystander = await WsClient.open(survivor.url, token("bystander"))
        viewers = [*on_doomed, bystander]
        start = {id(v): (await v.subscribe("s1"))["last_event_id"] for v in viewers}

        sender = Sender(http)
        sending = asyncio.create_task(sender.run())
        try:
            await wait_until(lambda: len(sender.event_ids) >= GIFTS_BEFORE, 20, "gifts before")
            await wait_until(
                lambda: all(len(v.events) >= GIFTS_BEFORE // 2 for v in on_doomed),
                20,
                "the doomed worker's viewers to see gifts",
            )
            doomed.process.send_signal(signal.SIGKILL)
            doomed.process.wait()

            resumed: list[WsClient] = []
            for old in on_doomed:
                await old.closed(timeout=10)  # the socket died with the worker
                since = last_seen(old, start[id(old)])
                new = await WsClient.open(survivor.url, token("again"), encoding=old.encoding)
                subscribed = await new.subscribe("s1", since=since)
                assert subscribed["recovered"] is True, subscribed
                resumed.append(new)
            sent_before = len(sender.event_ids)
            await wait_until(
                lambda: len(sender.event_ids) >= sent_before + GIFTS_AFTER, 20, "gifts after"
            )
        finally:
            sender.stop.set()
            await sending
        final = sender.event_ids[-1]

        stored = {e["event_id"]: e for e in map(orjson.loads, await history_of(redis_url, "s1"))}
        # Each viewer: its connection before the kill (if any) then the one after.
        viewers_seen = [[first, then] for first, then in zip(on_doomed, resumed, strict=True)]
        for connections in [*viewers_seen, [bystander]]:
            await connections[-1].events_until(lambda e: e["event_id"] >= final, timeout=10)
            seen: list[Event] = [e for c in connections for e in c.events if e["event_id"] <= final]
            ids = [e["event_id"] for e in seen]
            assert ids == list(range(start[id(connections[0])] + 1, final + 1)), "gap or twice"
            assert all(e == stored[e["event_id"]] for e in seen)
            connections[-1].assert_no_traceback()
        for client in [*on_doomed, *resumed, bystander]:
            await client.close()

        # The survivor serves on as before.
        assert (await http.get("/readyz")).status_code == 200
        wallet = await http.get("/v1/wallet", headers=auth("streamer1", Role.STREAMER))
        assert wallet.json()["diamonds"] == len(sender.event_ids) // 2
