"""Locust users for gifting_server: WebSocket gifters and viewers, HTTP gifters.

    gifting-server load-setup --users 2000 --host http://127.0.0.1:8000
    locust -f load/locustfile.py --host http://127.0.0.1:8000 -u 2000 -r 200 -t 60s --headless

Users come from the file `load-setup` writes (funded viewers, their tokens and
streams). WebSocket traffic is reported as requests of type "WS":

    connect            the handshake
    subscribe          `subscribe` until `subscribed`
    gift               a gift sent until its `ack`; a refusal fails with its error code
    gift: refused overloaded, retried
                       an overloaded server refused the gift at once (service_unavailable
                       with retry_after_ms); it is sent again with the same id after
                       that long (plus jitter), as a client would: not a failure
    deliver <kind>     a viewer's delivery latency: arrival time minus the event's `ts`
    event order        a viewer saw a gap or a repeat in the stream's event ids
    connection         the server closed a connection (with the close code)

HTTP gifters report `POST /v1/streams/[id]/gifts` like any locust HTTP request; a 503
with `Retry-After` is retried with the same idempotency key after that long and
reported as `/v1/streams/[id]/gifts: refused overloaded, retried`.

With `--battles N` (and `load-setup --streams 2N` or more), N battle hosts each make
two of the streams battle again and again (docs/battles.md): `POST /v1/battles`,
`POST /v1/battles/[id]/accept`, then `battle ended`, the time from the battle's
`ends_at` until `GET /v1/battles/[id]` showed it ended. The viewers of those streams
report the `battle` events as `deliver battle`, and any gap as `event order`.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import random
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gevent
from hub_socket import (  # locust puts load/ on sys.path
    REFUSED_OVERLOADED,
    EventsOutOfOrder,
    HubSocket,
    overload_retry,
)
from locust import FastHttpUser, User, constant, events, tag, task
from locust.env import Environment
from locust.exception import StopUser

log = logging.getLogger("gifting.load")

# What a crowd gifts: half of all streaks are Roses, most of the rest other cheap
# gifts tapped in streaks; mid-priced gifts now and then, big ones rarely, alone.
ROSE_SHARE = 0.50
TIER_SHARES = {1: 0.30, 2: 0.15, 3: 0.04, 4: 0.01}  # split evenly within a tier
MEAN_EXTRA_TAPS = {1: 8.0, 2: 1.5}  # a streak's taps beyond the first; tiers 3-4 tap once
MAX_TAPS = 60
TEN_PACK_SHARE = 0.10  # cheap gifts sometimes go out ten per tap (the "x10" button)


@events.init_command_line_parser.add_listener
def add_options(parser: Any) -> None:
    group = parser.add_argument_group("gifting_server")
    group.add_argument(
        "--users-file", default="load/reports/users.json", help="written by load-setup"
    )
    group.add_argument("--stream", default="", help="send every user to this stream")
    group.add_argument(
        "--gift-rate", type=float, default=0.2, help="mean gifts (taps) per second per gifter"
    )
    group.add_argument(
        "--tap-interval", type=float, default=0.2, help="mean seconds between taps of a streak"
    )
    group.add_argument("--viewers", type=int, default=0, help="exactly N viewers (0: by weight)")
    group.add_argument(
        "--http-gifters", type=int, default=0, help="exactly N HTTP gifters (0: by weight)"
    )
    group.add_argument("--ack-timeout", type=float, default=10.0, help="seconds to wait for acks")
    group.add_argument(
        "--overload-retries",
        type=int,
        default=5,
        help="times a gift refused by an overloaded server (503 / service_unavailable with"
        " a retry-after) is sent again with the same key after the time it names; the"
        " refusals are reported apart, not as failures",
    )
    group.add_argument("--msgpack", action="store_true", help="speak gifting.v1.msgpack")
    group.add_argument(
        "--battles", type=int, default=0, help="N battle hosts, each battling two streams"
    )
    group.add_argument(
        "--battle-duration",
        type=int,
        default=60,
        help="seconds a battle lasts (within the server's [battles] min/max_duration_s)",
    )


@dataclass(frozen=True)
class Account:
    user_id: str
    token: str
    stream_id: str
    coins: int


class Crowd:
    """The users file's funded accounts, handed out one per locust user, plus the catalog."""

    def __init__(self) -> None:
        self.accounts: list[Account] = []
        self.streamers: dict[str, str] = {}  # stream id -> its streamer's token
        self.catalog: list[dict[str, Any]] = []
        self.order: itertools.count[int] = itertools.count()
        self.offset, self.stride = 0, 1

    def load(self, environment: Environment) -> None:
        options = environment.parsed_options
        document = json.loads(Path(options.users_file).read_text())
        self.accounts = [
            Account(u["user_id"], u["token"], options.stream or u["stream_id"], u["coins"])
            for u in document["users"]
        ]
        self.streamers = dict(document.get("streamers", {}))
        host = (environment.host or "").rstrip("/")
        with urllib.request.urlopen(f"{host}/v1/gifts", timeout=10) as answer:
            self.catalog = json.loads(answer.read())["gifts"]
        # Each worker process takes every stride-th account, so no two share one.
        runner = environment.runner
        self.offset = max(0, getattr(runner, "worker_index", 0))
        processes = getattr(options, "processes", None) or 0
        self.stride = max(1, (os.cpu_count() or 1) if processes == -1 else processes)
        self.order = itertools.count()

    def take(self) -> Account:
        index = self.offset + self.stride * next(self.order)
        if index == len(self.accounts) + self.offset:
            log.warning("more locust users than funded users: accounts are now shared")
        return self.accounts[index % len(self.accounts)]


crowd = Crowd()


@events.init.add_listener
def fix_user_counts(environment: Environment, **kwargs: Any) -> None:
    options = environment.parsed_options
    if options and options.viewers:
        WebSocketViewer.fixed_count = options.viewers
    if options and options.http_gifters:
        HttpGifter.fixed_count = options.http_gifters
    if options and options.battles:
        BattleHost.fixed_count = options.battles


@events.test_start.add_listener
def load_crowd(environment: Environment, **kwargs: Any) -> None:
    if environment.parsed_options is None:
        return
    try:
        crowd.load(environment)
    except (OSError, ValueError, KeyError) as e:
        log.error("no users (%s): run `gifting-server load-setup`, see --users-file", e)
        environment.process_exit_code = 2
        if environment.runner:
            environment.runner.quit()
        return
    # --tags may leave a user class without a task: do not start users that would idle.
    environment.user_classes[:] = [c for c in environment.user_classes if c.tasks]
    if not environment.parsed_options.battles:  # battle hosts only when asked for
        environment.user_classes[:] = [c for c in environment.user_classes if c is not BattleHost]


@dataclass(frozen=True)
class Streak:
    gift_id: str
    price: int
    taps: int
    count: int  # gifts per tap


class GiftMix:
    """Picks the next streak: which gift, how many taps, as the user's coins allow."""

    def __init__(self, catalog: list[dict[str, Any]], rng: random.Random) -> None:
        self.rng = rng
        self.gifts = sorted(catalog, key=lambda g: g["coins"])
        rose = next((g for g in self.gifts if g["id"] == "rose"), self.gifts[0])
        self.weights = []
        for gift in self.gifts:
            tier = min(4, max(1, int(gift["tier"])))
            siblings = sum(1 for g in self.gifts if g["tier"] == tier and g is not rose)
            share = ROSE_SHARE if gift is rose else TIER_SHARES[tier] / max(1, siblings)
            self.weights.append(share)
        self.mean_taps = sum(
            w * (1 + MEAN_EXTRA_TAPS.get(int(g["tier"]), 0))
            for g, w in zip(self.gifts, self.weights, strict=True)
        ) / sum(self.weights)

    def next(self, coins: int) -> Streak | None:
        gift = self.rng.choices(self.gifts, self.weights)[0]
        tier = int(gift["tier"])
        extra = self.rng.expovariate(1 / MEAN_EXTRA_TAPS[tier]) if tier in MEAN_EXTRA_TAPS else 0
        taps = 1 + min(MAX_TAPS - 1, int(extra))
        count = 10 if tier == 1 and self.rng.random() < TEN_PACK_SHARE else 1
        if coins < gift["coins"] * count:  # what this user can still afford
            gift, count = self.gifts[0], 1
            if coins < gift["coins"]:
                return None
        taps = min(taps, coins // (gift["coins"] * count))
        return Streak(gift["id"], gift["coins"], taps, count)


class Gifter:
    """A viewer who gifts: a streak of taps, then a pause so that on average it sends
    --gift-rate gifts per second. Subclasses say how one tap is sent."""

    environment: Environment

    def start_gifting(self) -> None:
        self.account = crowd.take()
        self.coins = self.account.coins
        self.rng = random.Random()
        self.mix = GiftMix(crowd.catalog, self.rng)
        self.last_streak = (0, 0.0)  # taps, seconds it took

    def look_around(self) -> None:
        """A viewer who just came in watches a while before the first gift, so that a
        crowd spawned at once does not tap its first streaks all in the same second."""
        gevent.sleep(
            self.rng.uniform(0, self.mix.mean_taps / self.environment.parsed_options.gift_rate)
        )

    def send_tap(self, streak: Streak) -> int | None:
        """Send one tap; the coins left, or None when it failed (already reported)."""
        raise NotImplementedError

    def gift_streak(self) -> None:
        streak = self.mix.next(self.coins)
        if streak is None:
            self.last_streak = (1, 0.0)  # out of coins: keep quiet at the gift rate
            return
        started = time.monotonic()
        interval = self.environment.parsed_options.tap_interval
        for tap in range(streak.taps):
            if tap:
                gevent.sleep(self.rng.uniform(0.5, 1.5) * interval)
            coins = self.send_tap(streak)
            if coins is None:
                break
            self.coins = coins
        self.last_streak = (streak.taps, time.monotonic() - started)

    def pause(self) -> float:
        taps, took = self.last_streak
        budget = taps / self.environment.parsed_options.gift_rate
        return max(0.0, self.rng.uniform(0.5, 1.5) * budget - took)


class WebSocketGifter(Gifter, User):
    """Subscribes to its stream, then taps streaks over the WebSocket; each tap waits for
    its ack."""

    weight = 18

    def wait_time(self) -> float:
        return self.pause()

    def on_start(self) -> None:
        self.start_gifting()
        self.hub = HubSocket(self)
        self.join()
        self.look_around()

    def join(self) -> None:
        if self.hub.connect(self.account.token):
            self.hub.subscribe(self.account.stream_id)

    @tag("ws", "gift")
    @task
    def streak(self) -> None:
        if self.hub.is_open:
            self.gift_streak()
        else:  # reconnect, then pause as after a one-tap streak: no tight retry loop
            self.join()
            self.last_streak = (1, 0.0)

    def send_tap(self, streak: Streak) -> int | None:
        ack = self.hub.send_gift(self.account.stream_id, streak.gift_id, streak.count)
        return None if ack is None else int(ack["coins"])

    def on_stop(self) -> None:
        self.hub.close()


class HttpGifter(Gifter, FastHttpUser):
    """Taps streaks with POST /v1/streams/{id}/gifts, each with its own idempotency key."""

    weight = 1

    def wait_time(self) -> float:
        return self.pause()

    def on_start(self) -> None:
        self.start_gifting()
        self.headers = {"Authorization": f"Bearer {self.account.token}"}
        self.look_around()

    @tag("http", "gift")
    @task
    def streak(self) -> None:
        self.gift_streak()

    def send_tap(self, streak: Streak) -> int | None:
        body = {
            "gift_id": streak.gift_id,
            "count": streak.count,
            "idempotency_key": uuid.uuid4().hex,
        }
        retries = self.environment.parsed_options.overload_retries
        for attempt in range(retries + 1):
            answer = self.post_gift(body, retry_later=attempt < retries)
            if not isinstance(answer, float):
                return answer
            gevent.sleep(overload_retry(answer))
        return None

    def post_gift(self, body: dict[str, Any], *, retry_later: bool) -> int | float | None:
        """The coins left after the gift; None when it failed (reported); with
        `retry_later`, the milliseconds an overloaded server asked to wait before the
        same request again (reported apart, not as a failure)."""
        with self.client.post(
            f"/v1/streams/{self.account.stream_id}/gifts",
            json=body,
            headers=self.headers,
            name="/v1/streams/[id]/gifts",
            catch_response=True,
        ) as response:
            if retry_later and response.status_code == 503 and "retry-after" in response.headers:
                response.request_meta["name"] += f": {REFUSED_OVERLOADED}"
                response.success()
                error = response.json().get("error", {})
                seconds = float(response.headers["retry-after"])
                return float(error.get("retry_after_ms", seconds * 1000))
            if response.status_code != 200:
                try:
                    error = response.json()["error"]
                    response.failure(f"{response.status_code} {error['code']}: {error['message']}")
                except (ValueError, KeyError, TypeError):
                    detail = response.text[:100] if response.text else repr(response.error)
                    response.failure(f"{response.status_code} {detail}")
                return None
            return int(response.json()["coins"])


class WebSocketViewer(User):
    """Watches its stream: reports each event's delivery latency (now minus its server
    `ts`) and any gap in event ids; after a disconnect it resumes with `since`."""

    weight = 1
    wait_time = constant(1)

    def on_start(self) -> None:
        self.account = crowd.take()
        self.last_event_id: int | None = None
        self.hub = HubSocket(self, on_events=self.deliveries, on_subscribed=self.subscribed)
        self.join()

    def join(self) -> None:
        if self.hub.connect(self.account.token):
            self.hub.subscribe(self.account.stream_id, since=self.last_event_id)

    @tag("ws", "view")
    @task
    def watch(self) -> None:
        if not self.hub.is_open:
            self.join()

    def subscribed(self, message: dict[str, Any]) -> None:
        if self.last_event_id is not None and not message["recovered"]:
            self.order_failure(f"not recovered after event {self.last_event_id}")
        if self.last_event_id is None or not message["recovered"]:
            self.last_event_id = message.get("last_event_id") or 0

    def deliveries(self, message: dict[str, Any], size: int) -> None:
        now_ms = time.time() * 1000
        share = size // max(1, len(message["events"]))
        for event in message["events"]:
            expected = (self.last_event_id or 0) + 1
            if event["event_id"] != expected:
                self.order_failure(f"expected event {expected}, got {event['event_id']}")
            self.last_event_id = max(self.last_event_id or 0, event["event_id"])
            self.environment.events.request.fire(
                request_type="WS",
                name=f"deliver {event['kind']}",
                response_time=max(0.0, now_ms - event["ts"]),  # same clock on one machine
                response_length=share,
                exception=None,
                context={},
            )

    def order_failure(self, reason: str) -> None:
        self.hub.report("event order", time.perf_counter(), error=EventsOutOfOrder(reason))

    def on_stop(self) -> None:
        self.hub.close()


class BattleHost(FastHttpUser):
    """Two streams' streamers (`--battles`): one invites the other to a battle of
    `--battle-duration` seconds, the other accepts, and once it is over (by the
    server's clock) they battle again. The n-th host takes streams 2n and 2n+1 of the
    users file's `streamers`."""

    weight = 1  # as many as --battles says (fixed_count); none without it
    wait_time = constant(0)
    hosts: itertools.count[int] = itertools.count()

    def on_start(self) -> None:
        streams = sorted(crowd.streamers)
        n = next(BattleHost.hosts)
        if len(streams) < 2 * n + 2:
            log.error("--battles %d needs load-setup --streams %d or more", n + 1, 2 * n + 2)
            raise StopUser
        self.pair = streams[2 * n], streams[2 * n + 1]
        self.rounds = itertools.count()

    @tag("battle")
    @task
    def battle(self) -> None:
        inviter, invited = self.pair
        body = {
            "stream_id": inviter,
            "opponent_stream_id": invited,
            "duration_s": self.environment.parsed_options.battle_duration,
            "idempotency_key": uuid.uuid4().hex,
        }
        battle = self.call("POST", "/v1/battles", "/v1/battles", inviter, body, (201,))
        if battle is None:
            gevent.sleep(1)
            return
        url = f"/v1/battles/{battle['battle_id']}"
        live = self.call("POST", f"{url}/accept", "/v1/battles/[id]/accept", invited)
        if live is None:
            gevent.sleep(1)
            return
        ends_at = live["ends_at"] / 1000
        gevent.sleep(max(0.0, ends_at - time.time()))
        while True:  # the ticker ends it within a tick or so of ends_at
            shown = self.call("GET", url, "/v1/battles/[id]", None)
            if shown is None or shown["status"] == "ended":
                break
            gevent.sleep(0.1)
        if shown is not None:
            self.environment.events.request.fire(
                request_type="BATTLE",
                name="battle ended",
                response_time=max(0.0, time.time() - ends_at) * 1000,
                response_length=0,
                exception=None,
                context={},
            )

    def call(
        self,
        method: str,
        path: str,
        name: str,
        stream_id: str | None,
        body: dict[str, Any] | None = None,
        ok: tuple[int, ...] = (200,),
    ) -> dict[str, Any] | None:
        headers = {"Authorization": f"Bearer {crowd.streamers[stream_id]}"} if stream_id else {}
        with self.client.request(
            method, path, json=body, headers=headers, name=name, catch_response=True
        ) as response:
            if response.status_code not in ok:
                response.failure(f"{response.status_code} {response.text[:100]}")
                return None
            answer: dict[str, Any] = response.json()
            return answer
