"""Past its ceiling a worker refuses the excess gifts at once, before they reach Redis
([overload], ledger/admission.py). Redis is paused here (SIGSTOP) with a gift in
flight: every further gift is answered `service_unavailable` with `retry_after_ms`
(HTTP: 503 with `Retry-After`) while Redis is still paused, nothing it refused was
written, a payment is not refused, and once Redis is back the same ids and keys go
through, each charged once. The same when the worker's own event loop is late pass
after pass (really blocked here), with Redis fine."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from typing import Any

import httpx
import pytest

from gifting_server.config import load_settings
from tests.conftest import ServerThread
from tests.factories import post_webhook, token
from tests.faults import balances, buy, go_live, purchase, send_gift
from tests.faults.conftest import Serve
from tests.hub.wsclient import WsClient
from tests.topology import AsyncClient, RedisUnderFault

# The gift in flight waits for Redis as long as the test keeps it paused.
LIMITS = {"request_timeout_s": 60.0}
# Each rule of admission alone: the bound on gifts in flight, or the queue's delay
# (the target so short that the gift held by the paused Redis passes it at once).
RULES: dict[str, dict[str, Any]] = {
    "in_flight": {"max_in_flight": 1},
    "queue_delay": {"queue_target_ms": 1, "min_in_flight": 0},
}
ROSE = next(g.coins for g in load_settings({}).gifts if g.id == "rose")
LOOP_LAG_TARGET_MS = 25  # the loop-lag rule is off by default: its test turns it on


async def refused_count(http: httpx.AsyncClient, reason: str) -> float:
    text = (await http.get("/metrics")).text
    line = re.search(
        rf'^gifting_gifts_refused_overloaded_total\{{reason="{reason}"\}} (\S+)$', text, re.M
    )
    return float(line[1]) if line else 0.0


async def gift_until_refused(sender: WsClient) -> tuple[list[str], list[dict[str, Any]]]:
    """Gifts one after another until one is refused: the ids of those before it (they
    wait in flight for Redis), and the refusals of it and of those sent after it while
    its answer was on its way (refused too: the worker only gets further behind)."""
    first = asyncio.ensure_future(sender.next_of("error", timeout=30))
    sent = []
    while not first.done() and len(sent) < 500:
        sent.append(await sender.send_gift("s1", id=f"gift-{len(sent)}"))
        await sender.barrier()
    refusal = await first
    held, refused = sent[: sent.index(refusal["id"])], sent[sent.index(refusal["id"]) + 1 :]
    return held, [refusal, *[await sender.answer_to(message_id) for message_id in refused]]


@pytest.mark.parametrize("rule", RULES)
async def test_gifts_past_the_ceiling_are_refused_at_once_and_go_through_later(
    rule: str, own_redis: RedisUnderFault, own_client: AsyncClient, serve: Serve
) -> None:
    server = serve(own_redis.url, limits=LIMITS, overload=RULES[rule])
    async with (
        httpx.AsyncClient(base_url=server.url, timeout=90) as http,
        await WsClient.open(server.url, token("alice")) as sender,
    ):
        await go_live(http, "s1")
        await buy(http, "alice", "coins_1000")
        before = await balances(own_client, "alice")
        counted = await refused_count(http, rule)

        own_redis.suspend()
        try:
            held, refusals = await gift_until_refused(sender)
            assert held, "the first gift is in flight: nothing waits before it"
            overload = load_settings({}).overload
            for refusal in refusals:
                assert refusal["code"] == "service_unavailable", refusal
                retry_after_ms = refusal["retry_after_ms"]
                assert overload.retry_after_min_ms <= retry_after_ms <= overload.retry_after_max_ms
            # While the gifts before it still wait for Redis, HTTP is refused too.
            response = await send_gift(http, "alice", "http-refused")
            assert response.status_code == 503, response.text
            error = response.json()["error"]
            assert error["code"] == "service_unavailable"
            retry_after = int(response.headers["retry-after"])
            assert retry_after == max(1, -(-error["retry_after_ms"] // 1000))
            # A payment is never refused for load: it waits for Redis like any call.
            payment = asyncio.ensure_future(
                post_webhook(http, purchase("pay-during-overload", "alice"))
            )
            assert await refused_count(http, rule) >= counted + 2
        finally:
            own_redis.resume()

        assert (await payment).status_code == 200
        for message_id in held:
            ack = await sender.answer_to(message_id, timeout=30)
            assert ack["type"] == "ack", ack
        # The refused gifts changed nothing: only the held ones and the payment count.
        coins = int(before["alice"]["coins"]) - ROSE * len(held) + 100
        assert int((await balances(own_client, "alice"))["alice"]["coins"]) == coins
        # The same ids and key, now that the worker keeps up: taken, each charged once.
        for refusal in refusals:
            ack = await sender.gift("s1", id=refusal["id"])
            assert ack["type"] == "ack", ack
        coins -= ROSE * len(refusals)
        response = await send_gift(http, "alice", "http-refused")
        assert response.status_code == 200, response.text
        assert response.json()["coins"] == coins - ROSE
        again = await send_gift(http, "alice", "http-refused")
        assert again.json() == response.json()


class LoopBlocker:
    """Blocks a server's event loop pass after pass, as a worker whose CPU is the
    limit: each pass runs a callback that holds the loop for `block_s`."""

    def __init__(self, server: ServerThread, block_s: float) -> None:
        self.loop = server.server.servers[0].get_loop()
        self.lag = server.server.config.app.state.store.admission.loop_lag
        self.block_s = block_s
        self.stopped = threading.Event()

    def start(self) -> None:
        self.loop.call_soon_threadsafe(self._block)

    async def stop(self, target_s: float) -> None:
        """Stop blocking, and wait until the server's loop runs on time again."""
        self.stopped.set()

        async def on_time() -> None:
            while self.lag.lag() > target_s:
                await asyncio.sleep(0)

        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(on_time(), self.loop))

    def _block(self) -> None:
        if self.stopped.is_set():
            return
        time.sleep(self.block_s)  # the loop is blocked, not this test
        self.loop.call_soon(self._block)


async def test_gifts_read_while_the_loop_is_late_are_refused_and_go_through_later(
    own_redis: RedisUnderFault, own_client: AsyncClient, serve: Serve
) -> None:
    """The worker's loop is late pass after pass (Redis is fine, nothing waits for it):
    its gifts would wait for the loop before and after Redis, so new ones are refused
    at once, `service_unavailable` with `retry_after_ms`, and nothing is written; once
    the loop keeps up, the same ids and keys go through, each charged once."""
    target_ms = LOOP_LAG_TARGET_MS
    server = serve(own_redis.url, overload={"loop_lag_target_ms": target_ms})
    async with (
        httpx.AsyncClient(base_url=server.url, timeout=90) as http,
        await WsClient.open(server.url, token("alice")) as sender,
    ):
        await go_live(http, "s1")
        await buy(http, "alice", "coins_1000")
        assert (await sender.gift("s1"))["type"] == "ack"  # the loop's timer runs
        before = await balances(own_client, "alice")
        counted = await refused_count(http, "loop_lag")

        blocker = LoopBlocker(server, block_s=3 * target_ms / 1000)
        blocker.start()
        try:
            refusals = []
            taken = []
            while not refusals and len(taken) < 50:
                answer = await sender.gift("s1", timeout=30)
                (refusals if answer["type"] == "error" else taken).append(answer)
            assert refusals, "the loop was late pass after pass: a gift must be refused"
            for message_id in range(3):  # and every gift after it, while the loop is late
                refusals.append(await sender.gift("s1", id=f"lagged-{message_id}", timeout=30))
            for refusal in refusals:
                assert refusal["code"] == "service_unavailable", refusal
                assert refusal["retry_after_ms"] >= load_settings({}).overload.retry_after_min_ms
            response = await send_gift(http, "alice", "http-lagged")
            assert response.status_code == 503, response.text
            assert int(response.headers["retry-after"]) >= 1
            assert await refused_count(http, "loop_lag") >= counted + len(refusals) + 1
            text = (await http.get("/metrics")).text
            lag = re.search(r"^gifting_event_loop_lag_seconds (\S+)$", text, re.M)
            assert lag and float(lag[1]) > 0, "the loop's lateness is in its gauge"
        finally:
            await blocker.stop(target_ms / 1000)

        # The refused gifts changed nothing: only the ones taken count.
        coins = int(before["alice"]["coins"]) - ROSE * len(taken)
        assert int((await balances(own_client, "alice"))["alice"]["coins"]) == coins
        # The loop keeps up again: the same ids and key go through, each charged once.
        for refusal in refusals:
            ack = await sender.gift("s1", id=refusal["id"])
            assert ack["type"] == "ack", ack
        coins -= ROSE * len(refusals)
        response = await send_gift(http, "alice", "http-lagged")
        assert response.status_code == 200, response.text
        assert response.json()["coins"] == coins - ROSE
