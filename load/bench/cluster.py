"""One Redis beside a Redis Cluster, under the same gift load spread over many
streams and viewers (`make bench`, the "Redis Cluster" section).

Each topology gets a fresh bench server (one worker, pinned to core 0): over its
embedded Redis, then over a local cluster of 3 masters and 3 replicas
(`LocalCluster`, free ports, a temporary directory; every node pinned to core 0
too, as the embedded Redis shares the server's core). The same open-loop load of
gifts from many viewer connections (core 1) to many streams, each of its own
streamer, runs on each. Every node's statistics are reset before the load
(`CONFIG RESETSTAT`) and read after it:

- script calls per gift: `cmdstat_evalsha` calls summed over the masters;
- Redis CPU per gift: `used_cpu_user` + `used_cpu_sys` deltas summed over the
  masters (the replicas' own, separately);
- the busiest master's share of the script calls.

On a 2-core machine the cluster's six redis-server processes, its worker and the
client share two cores: its absolute throughput and latency are noise. The
per-gift costs and the shares are the figures.

    python -m load.bench.cluster [--streams 100] [--viewers 2000] [--rate 400] \
        [--duration 10] [--idle 5]      # this part alone, as JSON
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import redis
import uvloop

from gifting_server import events
from gifting_server.auth import sign_webhook
from gifting_server.ledger import keys
from gifting_server.local_cluster import LocalCluster
from load.bench.fanout import percentile
from load.bench.gifts import drive
from load.bench.server import WEBHOOK_SECRET, BenchServer, cpu_seconds

FUNDING_CONCURRENCY = 32
# Commands of the measurement itself, left out of the commands per gift.
OWN_COMMANDS = {"cmdstat_info", "cmdstat_config", "cmdstat_ping"}


@dataclass
class Node:
    name: str
    client: redis.Redis
    master: bool


@dataclass
class NodeStats:
    script_calls: int
    script_usec: int
    commands: int
    cpu_s: float
    calls: dict[str, int]  # by command
    used_memory: int


def node_stats(node: Node) -> NodeStats:
    stats = node.client.info("commandstats")
    cpu = node.client.info("cpu")
    evalsha = stats.get("cmdstat_evalsha", {})
    return NodeStats(
        script_calls=int(evalsha.get("calls", 0)),
        script_usec=int(evalsha.get("usec", 0)),
        commands=sum(int(v["calls"]) for k, v in stats.items() if k not in OWN_COMMANDS),
        cpu_s=float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]),
        calls={k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()},
        used_memory=int(node.client.info("memory")["used_memory"]),
    )


def idle_cost(nodes: list[Node], seconds: float) -> dict[str, float]:
    """What the masters do with no gift: the worker's background work (on a cluster,
    the transfer relay's reads of every slot's outbox), per second. A measurement
    window, not a wait for an outcome."""
    masters = [node for node in nodes if node.master]
    for node in masters:
        node.client.config_resetstat()
    before = [node_stats(node) for node in masters]
    time.sleep(seconds)
    after = [node_stats(node) for node in masters]
    return {
        "idle_commands_per_s": round(
            sum(a.commands - b.commands for a, b in zip(after, before, strict=True)) / seconds
        ),
        "idle_redis_cpu_ms_per_s": round(
            sum(a.cpu_s - b.cpu_s for a, b in zip(after, before, strict=True)) * 1e3 / seconds, 2
        ),
    }


def spread_names(streams: int, viewers: int) -> tuple[list[tuple[str, str]], list[str]]:
    """(stream, its streamer) pairs and viewers: distinct names, so their keys fall
    in slots all over the cluster."""
    return [(f"spread{n}", f"spread_streamer{n}") for n in range(streams)], [
        f"sv{n}" for n in range(viewers)
    ]


async def _fund(server: BenchServer, users: list[str]) -> None:
    limit = asyncio.Semaphore(FUNDING_CONCURRENCY)

    async def one(client: httpx.AsyncClient, user: str) -> None:
        body = orjson.dumps(
            {"event_id": f"spread-{user}", "type": "payment.succeeded",
             "user_id": user, "package_id": "coins_50000"}
        )  # fmt: skip
        async with limit:
            answer = await client.post(
                f"{server.url}/v1/payments/webhook", content=body,
                headers={"Gifting-Signature": sign_webhook(WEBHOOK_SECRET, body, int(time.time()))},
            )  # fmt: skip
            answer.raise_for_status()

    async with httpx.AsyncClient(timeout=30) as client:
        await asyncio.gather(*(one(client, user) for user in users))


def measure(
    server: BenchServer,
    nodes: list[Node],
    streams: int,
    viewers: int,
    rate: float,
    duration: float,
    idle_s: float,
) -> dict[str, Any]:
    """Live streams, funded viewers, `idle_s` without load, then the load, each with
    every node's statistics reset."""
    assert server.process is not None
    pairs, users = spread_names(streams, viewers)
    for stream, streamer in pairs:
        server.go_live(stream, streamer)
    asyncio.run(_fund(server, users))
    tokens = [server.token(user) for user in users]
    os.sched_setaffinity(0, {1})
    idle = idle_cost(nodes, idle_s)
    for node in nodes:
        node.client.config_resetstat()
    before = {node.name: node_stats(node) for node in nodes}
    server_cpu_before = cpu_seconds(server.process.pid)
    outcome = uvloop.run(
        drive(server.port, tokens, rate, duration, uuid.uuid4().hex[:8],
              tuple(stream for stream, _ in pairs))
    )  # fmt: skip
    server_cpu = cpu_seconds(server.process.pid) - server_cpu_before
    after = {node.name: node_stats(node) for node in nodes}
    acked = max(len(outcome["latencies"]), 1)
    masters = [node.name for node in nodes if node.master]
    replicas = [node.name for node in nodes if not node.master]
    calls = {name: after[name].script_calls - before[name].script_calls for name in masters}
    by_command: dict[str, int] = {}
    for name in masters:
        for command, count in after[name].calls.items():
            by_command[command] = (
                by_command.get(command, 0) + count - before[name].calls.get(command, 0)
            )

    def delta(field: str, names: list[str]) -> float:
        return sum(getattr(after[n], field) - getattr(before[n], field) for n in names)

    def per_gift(field: str, names: list[str], scale: float = 1.0) -> float:
        return delta(field, names) * scale / acked

    return {
        "masters": len(masters),
        **idle,
        "gifts_offered_per_s": rate,
        "gifts_per_s": round(len(outcome["latencies"]) / duration, 1),
        "gift_errors": outcome["errors"],
        "gifts_unanswered": outcome["unanswered"],
        "ack_p50_ms": round(percentile(outcome["latencies"], 0.5), 2),
        "ack_p99_ms": round(percentile(outcome["latencies"], 0.99), 2),
        "script_calls_per_gift": round(per_gift("script_calls", masters), 2),
        "commands_per_gift": round(per_gift("commands", masters), 2),
        "script_us_per_gift": round(per_gift("script_usec", masters), 1),
        "redis_cpu_us_per_gift": round(per_gift("cpu_s", masters, 1e6), 1),
        "replicas_cpu_us_per_gift": round(per_gift("cpu_s", replicas, 1e6), 1),
        "busiest_master_share": round(max(calls.values()) / max(sum(calls.values()), 1), 3),
        "script_calls_by_master": list(calls.values()),
        "server_us_per_gift": round(server_cpu * 1e6 / acked, 1),
        # What the load left in the masters' memory: idempotency records and credit
        # records (kept `idempotency_ttl_s`), journal entries (kept), history (capped).
        "memory_bytes_per_gift": round(per_gift("used_memory", masters)),
        "commands_per_gift_by_name": {
            command: round(count / acked, 2)
            for command, count in sorted(by_command.items(), key=lambda item: -item[1])
        },
    }


def memory_usage(client: redis.Redis, key: str) -> int:
    # SAMPLES 0: every element of a hash or stream counted, not an estimate.
    return int(client.memory_usage(key, samples=0) or 0)


def history_event_count(client: redis.Redis, key: str) -> int:
    """The events a stream's history holds: an entry is one event, or a batched call's
    events to the stream after its first, one a line (gifting_server/events.py), so
    XLEN, its entries, is fewer. The history is capped: read whole."""
    rows: Any = client.xrange(key)
    return sum(len(events.history_events(fields[b"e"])) for _, fields in rows)


def key_memory(client: redis.Redis, streams: int, viewers: int) -> dict[str, int]:
    """Bytes of Redis memory by kind of key, from a sample of what the load wrote."""
    sample_viewers = [f"sv{n}" for n in range(0, viewers, max(viewers // 20, 1))]
    sample_streams = range(0, streams, max(streams // 10, 1))
    viewer_bytes = records = record_bytes = 0
    for user in sample_viewers:
        for key in client.scan_iter(match=f"{{u:{user}}}:*", count=1000):
            if b":idem:" in key:
                records += 1
                record_bytes += memory_usage(client, key)
            else:
                viewer_bytes += memory_usage(client, key)
    events = history_bytes = entries = journal_bytes = 0
    for n in sample_streams:
        events += history_event_count(client, keys.stream_history(f"spread{n}"))
        history_bytes += memory_usage(client, keys.stream_history(f"spread{n}"))
        entries += int(client.xlen(keys.journal(f"spread_streamer{n}")))
        journal_bytes += memory_usage(client, keys.journal(f"spread_streamer{n}"))
    return {
        "viewer_bytes": viewer_bytes // len(sample_viewers),
        "idempotency_record_bytes": record_bytes // max(records, 1),
        "history_bytes_per_event": history_bytes // max(events, 1),
        "journal_bytes_per_entry": journal_bytes // max(entries, 1),
    }


def mean_key_bytes(clients: list[redis.Redis], pattern: str, limit: int = 200) -> int:
    """Mean bytes of up to `limit` keys matching `pattern` on each of `clients`."""
    total = found = 0
    for client in clients:
        for number, key in enumerate(client.scan_iter(match=pattern, count=1000)):
            if number == limit:
                break
            total += memory_usage(client, key)
            found += 1
    return total // max(found, 1)


def single(port: int, **load: Any) -> dict[str, Any]:
    server = BenchServer(port, cpu=0)
    server.start()
    try:
        node = Node("single", redis.Redis.from_url(server.redis_url), master=True)
        try:
            figures = measure(server, [node], **load)
            figures["key_memory"] = key_memory(node.client, load["streams"], load["viewers"])
            return figures
        finally:
            node.client.close()
    finally:
        server.stop()


@contextmanager
def local_cluster(cpu: int | None) -> Iterator[LocalCluster]:
    """3 masters and 3 replicas on free ports in a temporary directory, each node
    pinned to `cpu`; removed afterwards."""
    data_dir = Path(tempfile.mkdtemp(prefix="gifting-bench-cluster-"))
    cluster = LocalCluster(data_dir, masters=3, replicas=1)
    try:
        cluster.start()
        if cpu is not None and shutil.which("taskset"):
            for process in cluster.processes.values():
                subprocess.run(["taskset", "-p", "-c", str(cpu), str(process.pid)],
                               capture_output=True, check=True)  # fmt: skip
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def on_cluster(port: int, **load: Any) -> dict[str, Any]:
    with local_cluster(cpu=0) as cluster:
        nodes = [
            Node(f"{n.role}:{n.port}", redis.Redis(host=n.host, port=n.port), n.role == "master")
            for n in cluster.nodes()
        ]
        server = BenchServer(port, cpu=0, redis_url=cluster.urls[0])
        server.start()
        try:
            figures = measure(server, nodes, **load)
            masters = [node.client for node in nodes if node.master]
            figures["key_memory"] = {
                "idempotency_record_bytes": mean_key_bytes(masters, "{u:*}:idem:*"),
                "credit_mark_bytes": mean_key_bytes(masters, "*:credited:*"),
            }
            return figures
        finally:
            server.stop()
            for node in nodes:
                node.client.close()


def compare(
    streams: int, viewers: int, rate: float, duration: float, idle_s: float
) -> dict[str, Any]:
    load = {"streams": streams, "viewers": viewers, "rate": rate, "duration": duration,
            "idle_s": idle_s}  # fmt: skip
    return {
        "load": load,
        "single": single(8713, **load),
        "cluster": on_cluster(8714, **load),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="One Redis beside a Redis Cluster.")
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--viewers", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=400)
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--idle", type=float, default=5, help="seconds measured without load")
    options = parser.parse_args()
    results = compare(
        options.streams, options.viewers, options.rate, options.duration, options.idle
    )
    print(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
