"""The gift path: the script alone pipelined into Redis (the physical limit of the
hot path here), then end to end over WebSocket from many gifter connections."""

from __future__ import annotations

import asyncio
import os
import random
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import redis
import uvloop

from gifting_server.auth import Identity, Role
from gifting_server.config import Settings, load_settings
from gifting_server.ledger.gifts import gift_call
from gifting_server.ledger.scripts import script_source
from load.bench.fanout import STREAM, percentile
from load.bench.gifter import open_gifters
from load.bench.server import SECRET, WEBHOOK_SECRET, BenchServer, cpu_seconds

BATCH = 200


def bench_settings(server: BenchServer) -> Settings:
    return load_settings(
        {
            "GIFTING_DATA_DIR": str(server.data_dir),
            "GIFTING_SECRET": SECRET,
            "GIFTING_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "GIFTING_CONFIG": str(server.data_dir / "bench.toml"),
        }
    )


def fund_users(server: BenchServer, users: int) -> list[str]:
    names = [f"g{i}" for i in range(users)]
    with httpx.Client() as client:
        for name in names:
            server.fund(client, name, times=1)
    return names


def evalsha_stats(client: redis.Redis) -> tuple[int, int]:
    stats = client.info("commandstats").get("cmdstat_evalsha", {})
    return int(stats.get("calls", 0)), int(stats.get("usec", 0))


def redis_cpu_seconds(client: redis.Redis) -> float:
    """All of Redis's CPU: commands, networking, pub/sub and the AOF."""
    cpu = client.info("cpu")
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


def gift_batches(server: BenchServer) -> tuple[float, float]:
    """(script calls that carried gifts, gifts they carried), from the server's /metrics
    (ledger/gift_batch.py; 0, 0 for a server without batching, or on a cluster)."""
    found = {"gifting_gift_batches_total": 0.0, "gifting_gifts_batched_total": 0.0}
    for line in httpx.get(f"{server.url}/metrics", timeout=5).text.splitlines():
        name, _, value = line.partition(" ")
        if name in found:
            found[name] = float(value)
    return found["gifting_gift_batches_total"], found["gifting_gifts_batched_total"]


def redis_raw(server: BenchServer, users: list[str], gifts: int) -> dict[str, Any]:
    """Pre-encoded EVALSHA batches written straight to Redis: no server, little client."""
    settings = bench_settings(server)
    client = redis.Redis.from_url(server.redis_url)
    sha = client.script_load(script_source("send_gift"))
    rose = settings.gift("rose")
    assert rose is not None
    connection = client.connection_pool.get_connection()
    now = time.time_ns() // 1_000_000
    batches = []
    for start in range(0, gifts, BATCH):
        commands = []
        for i in range(start, min(start + BATCH, gifts)):
            user = users[i % len(users)]
            sender = Identity(user, user.title(), Role.VIEWER, adult=True)
            call = gift_call(settings, sender, STREAM, "bench_streamer", rose, 1, f"raw{i}", now)
            commands.append(("EVALSHA", sha, len(call.keys), *call.keys, *call.args))
        batches.append((len(commands), connection.pack_commands(commands)))
    calls_before, usec_before = evalsha_stats(client)
    began = time.perf_counter()
    failed = 0
    for size, packed in batches:
        connection.send_packed_command(packed)
        for _ in range(size):
            reply = connection.read_response()
            failed += reply[0] != 0
    elapsed = time.perf_counter() - began
    calls, usec = evalsha_stats(client)
    client.connection_pool.release(connection)
    client.close()
    return {
        "redis_raw_gifts_per_s": round(gifts / elapsed),
        "redis_raw_failed": failed,
        "redis_us_per_gift_raw": round((usec - usec_before) / max(calls - calls_before, 1), 2),
    }


async def drive(
    port: int,
    tokens: list[str],
    rate: float,
    duration: float,
    run: str,
    streams: tuple[str, ...] = (STREAM,),
    opened: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """An open-loop load of `rate` gifts/s for `duration` s from one connection per
    token, each gift to one of `streams` at random; every answer's latency. `opened`
    is called once the connections are open, as the load starts."""
    sent_at: dict[str, float] = {}
    latencies: list[float] = []
    errors: dict[str, int] = {}

    def on_answer(payload: bytes) -> None:
        message = orjson.loads(payload)
        started = sent_at.pop(message.get("id", ""), None)
        if started is None:
            return
        if message["type"] == "ack":
            latencies.append((time.perf_counter() - started) * 1000)
        else:
            errors[message["code"]] = errors.get(message["code"], 0) + 1

    gifters = await open_gifters(port, tokens, on_answer)
    if opened is not None:
        opened()
    gift_ids = ["rose"] * 6 + ["finger_heart", "doughnut", "hand_hearts", "rose"]
    sent = 0
    began = time.perf_counter()
    while (elapsed := time.perf_counter() - began) < duration:
        while sent < int(elapsed * rate) + 1:
            message_id = f"{run}-{sent}"  # also the idempotency key: new per run
            message = {"type": "gift", "id": message_id, "stream_id": random.choice(streams),
                       "gift_id": random.choice(gift_ids), "count": 1}  # fmt: skip
            sent_at[message_id] = time.perf_counter()
            gifters[sent % len(gifters)].send(orjson.dumps(message))
            sent += 1
        # Every millisecond, what is due by then: an open-loop load in 1 ms steps. A
        # shorter sleep rounds to zero on the event loop's clock and would spin.
        await asyncio.sleep(0.001)
    deadline = time.perf_counter() + 5
    while sent_at and time.perf_counter() < deadline:
        await asyncio.sleep(0.05)
    for gifter in gifters:
        gifter.close()
    return {"sent": sent, "latencies": latencies, "errors": errors, "unanswered": len(sent_at)}


def end_to_end(
    server: BenchServer, users: list[str], rate: float, duration: float
) -> dict[str, Any]:
    assert server.process is not None
    os.sched_setaffinity(0, {1})
    client = redis.Redis.from_url(server.redis_url)
    tokens = [server.token(user) for user in users]
    calls_before, usec_before = evalsha_stats(client)
    batches_before, batched_before = gift_batches(server)
    cpu_before = cpu_seconds(server.process.pid)
    redis_cpu_before = redis_cpu_seconds(client)
    client_cpu_before = time.process_time()
    outcome = uvloop.run(drive(server.port, tokens, rate, duration, uuid.uuid4().hex[:8]))
    client_cpu = time.process_time() - client_cpu_before
    cpu = cpu_seconds(server.process.pid) - cpu_before
    redis_cpu = redis_cpu_seconds(client) - redis_cpu_before
    calls, usec = evalsha_stats(client)
    batches, batched = gift_batches(server)
    client.close()
    acked = len(outcome["latencies"])
    return {
        "gifters": len(users),
        "gifts_offered_per_s": rate,
        "gifts_per_s": round(acked / duration, 1),
        "gift_errors": outcome["errors"],
        "gifts_unanswered": outcome["unanswered"],
        "ack_p50_ms": round(percentile(outcome["latencies"], 0.5), 2),
        "ack_p99_ms": round(percentile(outcome["latencies"], 0.99), 2),
        # every script call in the window (gifts, streak closing, state publishing) per gift
        "redis_us_per_gift": round((usec - usec_before) / max(acked, 1), 2),
        "redis_script_calls": calls - calls_before,
        # the mean size of a send_gifts batch (one Redis): gifts over the calls that carried them
        "gifts_per_gift_call": round(
            (batched - batched_before) / max(batches - batches_before, 1), 2
        ),
        "redis_process_us_per_gift": round(redis_cpu * 1e6 / max(acked, 1), 1),
        "server_us_per_gift": round(cpu * 1e6 / max(acked, 1), 1),
        "gift_client_us_per_gift": round(client_cpu * 1e6 / max(acked, 1), 1),
    }
