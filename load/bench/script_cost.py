"""What one gift costs Redis, in instructions: `python -m load.bench.script_cost`.

Runs a redis-server under valgrind's callgrind, counting only inside EVALSHA (and
ZREM), sends N and then 2N gifts (200 senders, one stream) and reports the
difference per gift, for every path a gift takes:

- one Redis: the single send_gift script (a gift alone in its loop pass), and
  send_gifts, the gifts of one pass in one call (8 and 32 a call by default);
- a cluster: the steps of a gift across slots (gift_gate, debit_gift,
  credit_stream, credit_streamer, then a ZREM of the outbox; ledger/transfers.py),
  run on one redis-server with `gifts_across_slots` (every key on one node). What a
  cluster node does besides (redirections, replication) is not in it: this is the
  cost of the steps themselves, summed as if all the masters were one. The
  gifts run 200 at a time (`--in-flight`) through the server's own code, so
  their gates and credits batch as a worker's do (ledger/transfer_batch.py);
  the transfers a call are printed with the figure.

Unlike microseconds, the count does not drift with whatever else the machine is
doing, so two versions of a script can be compared from one run to the next.
Takes a few minutes; needs valgrind.

Each figure is printed against the budget (BUDGET per gift on one Redis, the steps
across slots at most CLUSTER_FACTOR times that) and against the baseline, the
figures this same command gave at commit 0c3606b (recorded, not re-measured: the
scripts' arguments may change, and the baseline's scripts need their own callers).

    python -m load.bench.script_cost [--gifts 2000] [--script path/to/send_gift.lua]
    python -m load.bench.script_cost --path both     # single and cluster, no batch
    python -m load.bench.script_cost --path single   # or: --path cluster
    python -m load.bench.script_cost --path sides    # the stream's and the streamer's slot
    python -m load.bench.script_cost --path cluster --in-flight 32  # smaller batches
    python -m load.bench.script_cost --path batch [--batch-sizes 1,8,32]  # send_gifts
    python -m load.bench.script_cost --with-webhook   # the stream has a webhook endpoint
    python -m load.bench.script_cost --subscribers 4  # 4 workers follow the stream's channel
    python -m load.bench.script_cost --battle  # every gift during a live battle of the stream
    python -m load.bench.script_cost --profile-dir DIR  # keep each run's callgrind output
    python -m load.bench.script_cost --path batch --as-function  # send_gifts by FCALL

The callgrind outputs kept (DIR/callgrind-<gifts>.out, the last run of each size) are
for `callgrind_annotate --inclusive=yes --tree=calling DIR/callgrind-4000.out`: where
a gift's instructions go (docs/performance.md, "The Lua around the commands").
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import itertools
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import redis
from prometheus_client import REGISTRY

from gifting_server.auth import Identity, Role
from gifting_server.config import Settings, load_settings
from gifting_server.ledger import battles, keys, payments, streams, transfers
from gifting_server.ledger.clock import DAY_MS, held_until
from gifting_server.ledger.gift_batch import CONFIG_ARGS, batch_call, split_replies
from gifting_server.ledger.gifts import event_fragment, gift_call
from gifting_server.ledger.scripts import script_source, with_includes
from gifting_server.ledger.store import Store, connect_single
from gifting_server.ledger.transfer_batch import GateChecks, StreamCredits, StreamerCredits
from load.bench.server import LIMITS, SECRET, WEBHOOK_SECRET

SENDERS = 200
STREAM, STREAMER = "cost", "cost_streamer"
OPPONENT = "cost_opponent"  # its stream's id and its streamer's (--battle)
# Gifts across slots in flight at once: enough to keep the slow (valgrind) Redis busy
# (--in-flight). Their credits are batched as a worker's are (ledger/transfer_batch.py):
# the transfers debited within one window share their stream's and their streamer's
# call, so the batches' size follows how many are in flight; it is printed with the
# figure (the calls of the 2N run).
CONCURRENT_TRANSFERS = 200
# Counted: every script call, and the ZREM that clears a transfer from the outbox
# (no script of a gift calls ZREM, so the two never nest); FCALL for --as-function.
COUNTED = ("evalShaCommand", "zremCommand", "fcallCommand")

# The budget of Redis instructions per acknowledged gift, and the baseline it is held
# against: BENCHMARKS.md, "Redis instructions per gift".
BUDGET = 170_000
CLUSTER_FACTOR = 1.5
BASELINE_COMMIT = "0c3606b"
BASELINE = {"single": 377_660, "cluster": 572_013}
# send_gifts per gift before one journal entry and one PUBLISH a call (commit 3d56905,
# `--path batch --gifts 640`, recorded): what the batched path's levers are held against.
BATCH_BEFORE_COMMIT = "3d56905"
BATCH_BEFORE = {8: 243_940, 32: 230_011}
# Recorded, not compared: before the clock once a stream and call and the all-time board
# folded (fb10b79), send_gift 312,069 (--path single), send_gifts 239,833 at 8 a call and
# 220,821 at 32, across slots 504,261; after, 305,319, 224,365, 203,853 and 497,947
# (BENCHMARKS.md, "the clock once a call, the all-time board folded"); with the fold
# undone, 313,309 (batch 1), 235,984, 215,927 and 505,069.
# KEYS and ARGV bound to locals (docs/performance.md, "Per call"): send_gift 303,051 ->
# 299,877 / 300,590, send_gifts at 8 a call 211,154 / 212,245 -> 207,898 / 208,041 / 209,980,
# at 32 186,878 -> 183,727 / 184,392 (--path batch --batch-sizes 1,8,32, 2,000 gifts).

# Sends `gifts` gifts to a Redis at `url` (a client to it given too).
Sender = Callable[[redis.Redis, str, Settings, int], None]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def count_instructions(gifts: int, send: Sender, battle: bool = False) -> int:
    """Instructions inside EVALSHA and ZREM for `gifts` gifts, setup included."""
    work = Path(tempfile.mkdtemp(prefix="gifting-cost-"))
    port = free_port()
    toggles = [f"--toggle-collect={name}" for name in COUNTED]
    valgrind = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={work}/callgrind.out",
         *toggles, "redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    try:
        for _ in range(300):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.1)
        (work / "limits.toml").write_text(LIMITS)
        settings = load_settings(
            {"GIFTING_REDIS_URL": url, "GIFTING_DATA_DIR": str(work),
             "GIFTING_SECRET": SECRET, "GIFTING_WEBHOOK_SECRET": WEBHOOK_SECRET,
             "GIFTING_CONFIG": str(work / "limits.toml")}
        )  # fmt: skip
        asyncio.run(_setup(url, settings, battle))
        listeners = [subscribed(port) for _ in range(SUBSCRIBERS)]
        send(client, url, settings, gifts)
        client.shutdown(nosave=True)
        for listener in listeners:
            listener.close()
    except redis.ConnectionError:
        pass  # SHUTDOWN closes the connection it came on
    finally:
        client.close()
        valgrind.wait(timeout=120)
    annotated = subprocess.run(
        ["callgrind_annotate", str(work / "callgrind.out")], capture_output=True, text=True
    ).stdout
    if PROFILE_DIR is not None:
        PROFILE_DIR.mkdir(parents=True, exist_ok=True)
        shutil.copy(work / "callgrind.out", PROFILE_DIR / f"callgrind-{gifts}.out")
    shutil.rmtree(work, ignore_errors=True)
    for line in annotated.splitlines():
        if "PROGRAM TOTALS" in line:
            return int(line.split()[0].replace(",", ""))
    raise RuntimeError("callgrind_annotate printed no totals")


# The mean transfers a credit call in the last per_gift's 2N run ("" when none).
LAST_BATCHES = ""

# --profile-dir DIR: where each run's callgrind output is kept (None: not kept).
PROFILE_DIR: Path | None = None


# --subscribers N: N connections follow the stream's channel, as the workers with
# viewers of it do; a PUBLISH then also writes each message to each of them (they never
# read it: what Redis does with the bytes after the script is not counted).
SUBSCRIBERS = 0


def subscribed(port: int) -> socket.socket:
    """A connection subscribed to the bench stream's channel, its confirmation read."""
    listener = socket.create_connection(("127.0.0.1", port))
    channel = keys.stream_channel(STREAM).encode()
    listener.sendall(b"*2\r\n$9\r\nSUBSCRIBE\r\n$%d\r\n%s\r\n" % (len(channel), channel))
    confirmation = b""
    while not confirmation.endswith(b":1\r\n"):
        confirmation += listener.recv(4096)
    return listener


# --with-webhook: the stream has an endpoint, so each event also goes to its delivery
# log (nothing delivers it here: the log only grows, as it would with a dead receiver).
WITH_WEBHOOK = False


async def _setup(url: str, settings: Settings, battle: bool) -> None:
    store = Store(connect_single(url, 30.0), settings)
    try:
        await streams.start_stream(store, STREAMER, STREAM)
        if WITH_WEBHOOK:
            webhook_keys = [keys.stream(STREAM), keys.stream_webhooks(STREAM),
                keys.stream_webhooks_active(STREAM), keys.webhook(STREAM, "wh_cost"),
                keys.webhook_log(STREAM)]  # fmt: skip
            await store.run_script("add_webhook", webhook_keys,
                [STREAMER, "wh_cost", "https://example.com/hook", "gift", "s", 0])  # fmt: skip
        for i in range(SENDERS):
            await payments.apply_payment(
                store, f"g{i}", f"cost-g{i}", "payment.succeeded", "coins_50000"
            )
        if battle:  # the stream in a live battle (10 minutes) with another
            await streams.start_stream(store, OPPONENT, OPPONENT)
            inviter = Identity(STREAMER, STREAMER, Role.STREAMER)
            invited, _ = await battles.invite(
                store, inviter, STREAM, OPPONENT, settings.battles.max_duration_s, "cost"
            )
            await battles.accept(
                store, Identity(OPPONENT, OPPONENT, Role.STREAMER), invited["battle_id"]
            )
    finally:
        await store.close()


def sender(i: int) -> Identity:
    user = f"g{i % SENDERS}"
    return Identity(user, user.title(), Role.VIEWER, adult=True)


def one_script(script: str) -> Sender:
    """The single-Redis path: one send_gift per gift, pipelined 200 at a time."""

    def send(client: redis.Redis, url: str, settings: Settings, gifts: int) -> None:
        sha = client.script_load(script)
        rose = settings.gift("rose")
        assert rose is not None
        now = time.time_ns() // 1_000_000
        connection = client.connection_pool.get_connection()
        for start in range(0, gifts, 200):
            commands = []
            for i in range(start, min(start + 200, gifts)):
                call = gift_call(
                    settings, sender(i), STREAM, STREAMER, rose, 1, f"c{i}", now + i // 50
                )
                commands.append(("EVALSHA", sha, len(call.keys), *call.keys, *call.args))
            connection.send_packed_command(connection.pack_commands(commands))
            for _ in commands:
                reply = connection.read_response()
                assert reply[0] == 0, reply
        client.connection_pool.release(connection)

    return send


# The lines of lua/include/numbers.lua that bind globals once a call, and what a Redis
# Functions library has instead: its top level runs once, at FUNCTION LOAD, where Redis
# 7.0 gives it only the library API (no `tonumber`, no `string`), so the library binds
# them at each call.
BIND_GLOBALS = "local call, tonumber, format = redis.call, tonumber, string.format"
# Where send_gifts' own statements start, after its includes' definitions.
SEND_GIFTS_BODY = "local KEYS, ARGV = KEYS, ARGV"


def function_library() -> str:
    """send_gifts as a Redis Functions library (`--as-function`, an experiment: the
    server calls it with EVALSHA; docs/performance.md, "Per call"): the includes'
    functions defined once, at FUNCTION LOAD, and the script's body as the function
    `send_gifts`, called with FCALL and the same keys and arguments."""
    source = script_source("send_gifts")
    definitions, body = source.split(SEND_GIFTS_BODY, 1)
    definitions = definitions.replace(BIND_GLOBALS, "local call, tonumber, format")
    return (
        "#!lua name=gifting_cost\n"
        "local function globals() return redis.call, tonumber, string.format end\n"
        f"{definitions}\n"
        "redis.register_function('send_gifts', function(KEYS, ARGV)\n"
        "call, tonumber, format = globals()\n"
        f"{body}\nend)\n"
    )


# --as-function: send_gifts is loaded with FUNCTION LOAD and called with FCALL.
AS_FUNCTION = False


def batched(size: int) -> Sender:
    """The single-Redis path as a worker sends it under load: the gifts of one flush in
    send_gifts calls of `size` gifts (ledger/gift_batch.py; size 1 is one send_gift),
    pipelined about 200 gifts at a time; by FCALL with `--as-function`."""

    def send(client: redis.Redis, url: str, settings: Settings, gifts: int) -> None:
        name = "send_gift" if size == 1 else "send_gifts"
        if AS_FUNCTION and size > 1:
            client.function_load(function_library(), replace=True)
            command: tuple[str, ...] = ("FCALL", "send_gifts")
        else:
            command = ("EVALSHA", client.script_load(script_source(name)))
        rose = settings.gift("rose")
        assert rose is not None
        now = time.time_ns() // 1_000_000

        def at(i: int) -> int:  # the clock one_script's gifts see
            return now + i // 50

        connection = client.connection_pool.get_connection()
        per_write = max(1, 200 // size) * size
        for start in range(0, gifts, per_write):
            commands = []
            for first in range(start, min(start + per_write, gifts), size):
                calls = [
                    gift_call(settings, sender(i), STREAM, STREAMER, rose, 1, f"c{i}", at(i))
                    for i in range(first, min(first + size, gifts))
                ]
                if size == 1:
                    keys_, args = calls[0].keys, calls[0].args
                else:
                    queued = [(c.keys, c.args, None) for c in calls]
                    config = (*(calls[0].args[i] for i in CONFIG_ARGS), 1)  # one message
                    keys_, args = batch_call(config, queued)  # type: ignore[arg-type]
                commands.append((*command, len(keys_), *keys_, *args))
            connection.send_packed_command(connection.pack_commands(commands))
            for _ in commands:
                reply = connection.read_response()
                replies = [reply] if size == 1 else split_replies(reply)
                assert all(r[0] == 0 for r in replies), reply
        client.connection_pool.release(connection)

    return send


def across_slots(client: redis.Redis, url: str, settings: Settings, gifts: int) -> None:
    """The cluster path: every step of each gift (ledger/transfers.py), as a worker
    runs them, many gifts at once over the server's own pipelined script calls."""
    asyncio.run(_transfers(url, dataclasses.replace(settings, gifts_across_slots=True), gifts))


def bench_clock() -> Callable[[], int]:
    """The clock the steps across slots read: one_script's (50 gifts a ms), not the
    wall's. Under valgrind a round of the 200 senders takes about the combo window
    (3 s), so with the wall's clock which combos go on, and so the count, would follow
    the speed of the run (a faster version would be counted other work)."""
    start = time.time_ns() // 1_000_000
    calls = itertools.count()
    return lambda: start + next(calls) // 50


async def _transfers(url: str, settings: Settings, gifts: int) -> None:
    store = Store(connect_single(url, 120.0), settings)
    store.clock = bench_clock()
    rose = settings.gift("rose")
    assert rose is not None
    slots = asyncio.Semaphore(CONCURRENT_TRANSFERS)

    async def one(i: int) -> None:
        async with slots:
            identity = sender(i)
            await transfers.send_across_slots(
                store, identity, STREAM, STREAMER, rose, 1, f"c{i}", event_fragment(identity, rose)
            )

    try:
        await asyncio.gather(*(one(i) for i in range(gifts)))
    finally:
        await store.close()


def one_side(side: str) -> Sender:
    """The steps of one slot alone, for each gift: "stream" (`gift_gate`, then
    `credit_stream`) or "streamer" (`credit_streamer`), on the transfer the debit
    would have made. What a hot stream's or a busy streamer's master runs per gift."""

    def send(client: redis.Redis, url: str, settings: Settings, gifts: int) -> None:
        across = dataclasses.replace(settings, gifts_across_slots=True)
        asyncio.run(_side(url, across, gifts, side))

    return send


async def _side(url: str, settings: Settings, gifts: int, side: str) -> None:
    store = Store(connect_single(url, 120.0), settings)
    store.clock = bench_clock()
    rose = settings.gift("rose")
    assert rose is not None
    slots = asyncio.Semaphore(CONCURRENT_TRANSFERS)

    async def one(i: int) -> None:
        identity = sender(i)
        now = store.clock()
        transfer = transfers.Transfer(
            sender=identity.user_id, key=f"c{i}", stream=STREAM, streamer=STREAMER,
            gift=rose.id, count=1, coins=rose.coins, at=now,
            share_bps=settings.economy.creator_share_bps,
            held_until=held_until(now, settings.economy.holding_period_days * DAY_MS),
            fragment=event_fragment(identity, rose), adult=True, nonce=secrets.token_hex(8),
        )  # fmt: skip
        async with slots:
            if side == "stream":
                gate = GateChecks.of(store.scripts)
                gate_call = [keys.stream(STREAM)], [STREAMER, identity.user_id]
                await gate.send(*gate_call, settings.redis)
                call = transfers.credit_stream_call(store, transfer)
                await StreamCredits.of(store.scripts).send(*call, settings.redis)
            else:
                credited = transfers.Credited(i + 1, 1)
                call = transfers.credit_streamer_call(store, transfer, credited, "")
                await StreamerCredits.of(store.scripts).send(*call, settings.redis)

    try:
        await asyncio.gather(*(one(i) for i in range(gifts)))
    finally:
        await store.close()


def transfer_calls() -> dict[str, tuple[float, float]]:
    """The credit calls of gifts across slots so far and the transfers they carried,
    by step (metrics.TRANSFER_CALLS, TRANSFERS_BATCHED)."""
    counts = {}
    for step in ("gift_gate", "credit_stream", "credit_streamer"):
        labels = {"step": step}
        calls = REGISTRY.get_sample_value("gifting_transfer_credit_calls_total", labels)
        carried = REGISTRY.get_sample_value("gifting_transfers_batched_total", labels)
        counts[step] = (calls or 0.0, carried or 0.0)
    return counts


def batch_sizes(before: dict[str, tuple[float, float]]) -> str:
    """The mean transfers a credit call since `before`, by step."""
    after = transfer_calls()
    sizes = []
    for step, (calls, carried) in after.items():
        calls -= before[step][0]
        carried -= before[step][1]
        if calls:
            sizes.append(f"{step} {carried / calls:.1f}")
    return "  transfers a call (the 2N run): " + ", ".join(sizes) if sizes else ""


def per_gift(gifts: int, send: Sender, battle: bool = False) -> int:
    """N gifts and then 2N, each on a fresh server: the difference is N gifts' cost
    alone, without the start, the setup and the shutdown."""
    global LAST_BATCHES
    before = transfer_calls()
    more = count_instructions(2 * gifts, send, battle)
    LAST_BATCHES = batch_sizes(before)
    return (more - count_instructions(gifts, send, battle)) // gifts


def verdict(measured: int, budget: int, baseline: int) -> str:
    """The figure against its budget and against the baseline of BASELINE_COMMIT."""
    within = "within" if measured <= budget else f"{measured - budget:,} over"
    return (
        f"  budget {budget:,}: {within}; baseline ({BASELINE_COMMIT}) {baseline:,}: "
        f"{measured / baseline:.0%} of it"
    )


def batch_verdict(measured: int, size: int) -> str:
    """A send_gifts figure against the budget and against send_gifts before its levers."""
    line = verdict(measured, BUDGET, BASELINE["single"])
    before = BATCH_BEFORE.get(size)
    if before is not None:
        line += f"; send_gifts at {BATCH_BEFORE_COMMIT} {before:,}: {measured / before - 1:+.1%}"
    return line


WITH_WEBHOOK_HELP = "the stream has a webhook endpoint: every event goes to its delivery log too"


def main() -> None:
    global CONCURRENT_TRANSFERS
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--gifts", type=int, default=2000)
    parser.add_argument("--script", type=Path, help="a send_gift.lua to measure instead")
    parser.add_argument(
        "--path", choices=["all", "both", "single", "cluster", "sides", "batch"], default="all",
        help="all: single, cluster and batch (8 and 32 a call); both: single and cluster; "
        "sides: the steps across slots split by the slot that runs them",
    )  # fmt: skip
    parser.add_argument(
        "--batch-sizes", default="1,8,32",
        help="--path batch: the send_gifts sizes to measure (gifts a call)",
    )  # fmt: skip
    parser.add_argument(
        "--in-flight", type=int, default=CONCURRENT_TRANSFERS,
        help="cluster and sides: gifts across slots in flight at once (their credits batch)",
    )  # fmt: skip
    parser.add_argument("--with-webhook", action="store_true", help=WITH_WEBHOOK_HELP)
    parser.add_argument(
        "--subscribers", type=int, default=0,
        help="connections following the stream's channel (a worker each with viewers of it)",
    )  # fmt: skip
    parser.add_argument(
        "--battle", action="store_true",
        help="every gift during a live battle of its stream (its side's points counted)",
    )  # fmt: skip
    parser.add_argument(
        "--as-function", action="store_true",
        help="send_gifts as a Redis Functions library, called with FCALL (an experiment)",
    )  # fmt: skip
    parser.add_argument(
        "--profile-dir", type=Path,
        help="keep each run's callgrind output there, as callgrind-<gifts>.out",
    )  # fmt: skip
    options = parser.parse_args()
    global WITH_WEBHOOK, SUBSCRIBERS, PROFILE_DIR, AS_FUNCTION
    CONCURRENT_TRANSFERS = options.in_flight
    WITH_WEBHOOK, SUBSCRIBERS = options.with_webhook, options.subscribers
    PROFILE_DIR, AS_FUNCTION = options.profile_dir, options.as_function
    battle = options.battle
    if not shutil.which("valgrind"):
        sys.exit("valgrind is needed: apt-get install valgrind")
    if options.script:
        script = with_includes(options.script.read_text())
    else:
        script = script_source("send_gift")
    runs = f"{options.gifts:,} and {2 * options.gifts:,} gifts"
    single = cluster = 0
    if options.path in ("all", "both", "single"):
        single = per_gift(options.gifts, one_script(script), battle)
        print(f"send_gift: {single:,} instructions of Redis per gift (callgrind, EVALSHA, {runs})")
        print(verdict(single, BUDGET, BASELINE["single"]))
    if options.path in ("all", "both", "cluster"):
        cluster = per_gift(options.gifts, across_slots, battle)
        print(
            f"across slots: {cluster:,} instructions of Redis per gift (callgrind, the four "
            f"scripts and the ZREM of one gift's transfer, {runs}, "
            f"{CONCURRENT_TRANSFERS} in flight)"
        )
        print(LAST_BATCHES)
        print(verdict(cluster, int(BUDGET * CLUSTER_FACTOR), BASELINE["cluster"]))
    if single and cluster:
        print(f"across slots / send_gift: {cluster / single:.2f}")
    if options.path in ("all", "batch"):
        sizes = options.batch_sizes if options.path == "batch" else "8,32"
        for size in (int(n) for n in sizes.split(",")):
            cost = per_gift(options.gifts, batched(size), battle)
            print(
                f"send_gifts, {size} a call: {cost:,} instructions of Redis per gift "
                f"(callgrind, {'FCALL' if AS_FUNCTION and size > 1 else 'EVALSHA'}, {runs})"
            )
            print(batch_verdict(cost, size))
    if options.path == "sides":
        stream = per_gift(options.gifts, one_side("stream"), battle)
        print(f"the stream's slot: {stream:,} instructions per gift (gift_gate, credit_stream)")
        print(LAST_BATCHES)
        streamer = per_gift(options.gifts, one_side("streamer"), battle)
        print(f"the streamer's slot: {streamer:,} instructions per gift (credit_streamer)")
        print(LAST_BATCHES)


if __name__ == "__main__":
    main()
