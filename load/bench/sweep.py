"""Goodput past the ceiling (`make bench`, the "Overload" section): one worker offered
more and more gifts per second, on one Redis and on a Redis Cluster.

Each topology gets a fresh bench server (one worker, pinned to core 0 with every
Redis node, as `serve` runs the embedded Redis on the server's core): over its
embedded Redis, then over a local cluster of 3 masters and 3 replicas
(`cluster.local_cluster`). The same open-loop load (`gifts.drive`) from `gifters`
connections on core 1, each gift to one of `streams` live streams at random, runs
at each offered rate in turn for `duration` s. Per rate: gifts acknowledged per
second, refused per second (`service_unavailable`: the worker past its ceiling,
`[overload]`), any other error, unanswered, and the p50 / p99 of the acknowledged
gifts' latency. Refused gifts are not retried: the offered rate stays what it says.

    python -m load.bench.sweep [--topology single|cluster] [--rates 2000,4000,8000] \
        [--duration 10] [--gifters 1000] [--streams 100]      # as JSON
        [--tree DIR]    # another version's tree served instead (one Redis): before/after
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import orjson
import uvloop

from load.bench.cluster import _fund, local_cluster, spread_names
from load.bench.fanout import percentile
from load.bench.gifts import drive
from load.bench.server import BenchServer, cpu_seconds

REFUSED = "service_unavailable"
# Admission as good as off: for a comparison with the worker as it was without it.
# More of the [overload] table that the server's LIMITS (bench/server.py) end with.
NO_ADMISSION = """
queue_target_ms = 60000
loop_lag_target_ms = 60000
max_in_flight = 1000000
"""


async def lagging(drive_load: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
    """`drive_load`'s outcome, with how late the gifters' own loop ran a 5 ms timer
    (ms, every turn): an answer read late by a busy client is counted late too."""
    lateness: list[float] = []

    async def watch() -> None:
        while True:
            due = time.perf_counter() + 0.005
            await asyncio.sleep(0.005)
            lateness.append((time.perf_counter() - due) * 1000)

    watcher = asyncio.ensure_future(watch())
    try:
        outcome = await drive_load
    finally:
        watcher.cancel()
    return {**outcome, "client_lateness": lateness}


def rows(
    server: BenchServer, rates: list[float], duration: float, gifters: int, streams: int
) -> list[dict[str, Any]]:
    pairs, users = spread_names(streams, gifters)
    for stream, streamer in pairs:
        server.go_live(stream, streamer)
    asyncio.run(_fund(server, users))
    tokens = [server.token(user) for user in users]
    os.sched_setaffinity(0, {1})
    results = []
    assert server.process is not None
    for rate in rates:
        cpu_before = cpu_seconds(server.process.pid)
        client_cpu_before = time.process_time()
        outcome = uvloop.run(lagging(
            drive(server.port, tokens, rate, duration, uuid.uuid4().hex[:8],
                  tuple(stream for stream, _ in pairs))
        ))  # fmt: skip
        cpu = cpu_seconds(server.process.pid) - cpu_before
        client_cpu = time.process_time() - client_cpu_before
        errors = dict(outcome["errors"])
        refused = errors.pop(REFUSED, 0)
        latencies = outcome["latencies"]
        results.append(
            {
                "offered_per_s": rate,
                "acked_per_s": round(len(latencies) / duration),
                "refused_per_s": round(refused / duration),
                "other_errors": errors,
                "unanswered": outcome["unanswered"],
                "ack_p50_ms": round(percentile(latencies, 0.5), 1),
                "ack_p99_ms": round(percentile(latencies, 0.99), 1),
                # the worker's CPU (not Redis's) over the rate's run, by answer
                "server_cpu_share": round(cpu / duration, 2),
                "server_us_per_answer": round(cpu * 1e6 / max(len(latencies) + refused, 1), 1),
                # the gifters' own CPU (core 1): near 1, the load, not the worker, is the limit
                "client_cpu_share": round(client_cpu / duration, 2),
                "client_loop_late_p99_ms": round(percentile(outcome["client_lateness"], 0.99), 1),
            }
        )
    return results


def single(
    port: int, rates: list[float], extra_config: str = "", tree: Path | None = None, **load: Any
) -> list[dict[str, Any]]:
    server = BenchServer(port, cpu=0, extra_config=extra_config, tree=tree)
    server.start()
    try:
        return rows(server, rates, **load)
    finally:
        server.stop()


def on_cluster(
    port: int, rates: list[float], extra_config: str = "", **load: Any
) -> list[dict[str, Any]]:
    with local_cluster(cpu=0) as cluster:
        server = BenchServer(port, cpu=0, extra_config=extra_config, redis_url=cluster.urls[0])
        server.start()
        try:
            return rows(server, rates, **load)
        finally:
            server.stop()


def markdown(sweep: dict[str, Any], command: str) -> list[str]:
    load = sweep["load"]
    lines = [
        "## Overload: goodput past the ceiling",
        "",
        f"Produced by `{command}` (`load/bench/sweep.py`): one worker "
        f"(core 0, with every Redis node) offered an open-loop load from {load['gifters']} "
        f"gifter connections (core 1), each gift to one of {load['streams']} live streams, "
        f"{load['duration']:.0f} s per rate; refused gifts are not retried. Past its ceiling "
        "the worker refuses the excess at once (`service_unavailable` with `retry_after_ms`, "
        "`[overload]`, docs/overload.md) and keeps acknowledging about its ceiling, each "
        "within about `queue_target_ms` over its base latency. p50 / p99 are of the "
        'acknowledged gifts; "refused" counts every `service_unavailable`, storage '
        "timeouts included. On this shared 2-core machine the figures move with whatever "
        "else runs: say how busy it was (load average, `/proc/pressure/cpu`).",
        "",
        "| topology | offered/s | acked/s | refused/s | other errors | unanswered "
        "| ack p50 ms | ack p99 ms | worker CPU, cores | worker µs per answer "
        "| gifters' CPU, cores | gifters' loop late p99 ms |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, label in (("single", "one Redis"), ("cluster", "cluster (3+3)")):
        for row in sweep.get(name, []):
            lines.append(
                f"| {label} | {row['offered_per_s']:.0f} | {row['acked_per_s']} | "
                f"{row['refused_per_s']} | {row['other_errors'] or 'none'} | "
                f"{row['unanswered']} | {row['ack_p50_ms']} | {row['ack_p99_ms']} | "
                f"{row['server_cpu_share']} | {row['server_us_per_answer']} | "
                f"{row['client_cpu_share']} | {row['client_loop_late_p99_ms']} |"
            )
    return [*lines, ""]


def sweep(
    single_rates: list[float],
    cluster_rates: list[float],
    duration: float,
    gifters: int,
    streams: int,
    extra_config: str = "",
    tree: Path | None = None,
) -> dict[str, Any]:
    load = {"duration": duration, "gifters": gifters, "streams": streams}
    results: dict[str, Any] = {"load": load}
    if single_rates:
        results["single"] = single(8715, single_rates, extra_config, tree, **load)
    if cluster_rates:
        results["cluster"] = on_cluster(8716, cluster_rates, extra_config, **load)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description="Goodput past the ceiling.")
    parser.add_argument("--topology", choices=("single", "cluster", "both"), default="both")
    parser.add_argument("--rates", default="2000,4000,6000,8000")
    parser.add_argument("--cluster-rates", default="", help="default: --rates")
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--gifters", type=int, default=1000)
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument(
        "--no-admission", action="store_true", help="[overload] as good as off, to compare"
    )
    parser.add_argument(
        "--overload",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an [overload] setting, e.g. max_in_flight=1 (with min_in_flight=1: nearly "
        "every gift refused, what a refusal costs)",
    )
    parser.add_argument(
        "--redis",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a [redis] setting, e.g. gift_batch_window_ms=0 (the gifts of one loop pass a call)",
    )
    parser.add_argument(
        "--tree",
        type=Path,
        default=None,
        help="one Redis only: another tree's gifting_server (a checkout of another "
        "version) served instead of this one's",
    )
    options = parser.parse_args()
    rates = [float(r) for r in options.rates.split(",")]
    cluster_rates = (
        [float(r) for r in options.cluster_rates.split(",")] if (options.cluster_rates) else rates
    )
    results = sweep(
        rates if options.topology in ("single", "both") else [],
        cluster_rates if options.topology in ("cluster", "both") else [],
        options.duration,
        options.gifters,
        options.streams,
        (NO_ADMISSION if options.no_admission else "")
        + "".join(f"{setting.replace('=', ' = ', 1)}\n" for setting in options.overload)
        + ("[redis]\n" if options.redis else "")
        + "".join(f"{setting.replace('=', ' = ', 1)}\n" for setting in options.redis),
        options.tree,
    )
    print(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())
    print("\n".join(markdown(results, "python -m load.bench.sweep")))


if __name__ == "__main__":
    main()
