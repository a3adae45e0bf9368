"""`make bench`: every figure of the benchmark in one run on this machine.

    python -m load.bench            # ~9 minutes
    BENCH_QUICK=1 python -m load.bench   # about three minutes, smaller sizes

Writes load/results/bench.json and BENCHMARKS.md. Servers are pinned to core 0,
clients to core 1; the client's own CPU is reported next to the server's. The last
step measures Redis CPU per gift on the baseline tree and on this one, back to back
(load/bench/baseline.py).
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from load.bench import baseline, cluster, fanout, gifts, sweep
from load.bench.peer import PeerServer
from load.bench.server import BenchServer, step

ROOT = Path(__file__).resolve().parents[2]
QUICK = os.environ.get("BENCH_QUICK") == "1"
SIZES = {
    "raw_gifts": 5_000 if QUICK else 30_000,
    "gifters": 300 if QUICK else 1_000,
    "gift_rate": 1_000 if QUICK else 2_000,
    "duration": 4.0 if QUICK else 10.0,
    "viewers": 1_000 if QUICK else 5_000,
    "idle_connections": 2_000 if QUICK else 10_000,
    # One Redis beside a Redis Cluster (load/bench/cluster.py): gifts spread over many
    # streams and viewers, at a rate the cluster's six nodes, its worker and the client
    # can carry on two cores.
    "spread_streams": 100,
    "spread_viewers": 500 if QUICK else 2_000,
    "spread_rate": 300 if QUICK else 400,
    "spread_idle_s": 2.0 if QUICK else 5.0,
    # Offered past the ceiling (load/bench/sweep.py): one worker, 1,000 gifters, each
    # rate in turn; the cluster's ceiling here is lower (six nodes on one core).
    "sweep_rates": [2_000, 4_000, 8_000] if QUICK else [2_000, 4_000, 6_000, 8_000, 10_000],
    "sweep_cluster_rates": [500, 1_500, 4_000] if QUICK else [500, 1_000, 2_000, 4_000, 8_000],
    "sweep_duration": 4.0 if QUICK else 10.0,
    "sweep_gifters": 1_000,
    "sweep_streams": 100,
    # Redis CPU per gift against the baseline tree (load/bench/baseline.py): the gift
    # path's load above, each tree in turn (ABBA over the rounds).
    "baseline_gifters": 1_000,
    "baseline_rate": 2_000,
    "baseline_duration": 4.0 if QUICK else 10.0,
    "baseline_rounds": 1 if QUICK else 2,
}


def run() -> dict[str, Any]:
    results: dict[str, Any] = {"quick": QUICK, "sizes": SIZES}
    duration = SIZES["duration"]

    step("gift path: the script alone, then end to end over WebSocket")
    server = BenchServer(8711, cpu=0)
    server.start()
    try:
        target = fanout.prepare(server)
        users = gifts.fund_users(server, SIZES["gifters"])
        results.update(gifts.redis_raw(server, users, SIZES["raw_gifts"]))
        # As `serve` runs it: the embedded Redis on the server's core. Then once more
        # with Redis on the other core (beside the client), as a deployment that gives
        # Redis a core of its own would.
        results.update(gifts.end_to_end(server, users, SIZES["gift_rate"], duration))
        server.pin_redis(1)
        own_core = gifts.end_to_end(server, users, SIZES["gift_rate"], duration)
        results["gift_path_redis_own_core"] = own_core
        token = server.token("viewer")
        step(f"fan-out: {SIZES['viewers']} viewers at 100 events/s")
        at_100 = fanout.measure(target, token, SIZES["viewers"], 100, duration, procs=2)
        step(f"fan-out: {SIZES['viewers']} viewers at 20 events/s")
        at_20 = fanout.measure(target, token, SIZES["viewers"], 20, duration, procs=2)
    finally:
        server.stop()
    results.update(
        fanout_viewers=at_100["viewers"],
        fanout_events_per_s=at_100["events_per_s"],
        delivery_p50_ms=at_100["delivery_p50_ms"],
        delivery_p99_ms=at_100["delivery_p99_ms"],
        missing_deliveries=at_100["missing_deliveries"],
        server_us_per_delivery=at_100["us_per_delivery"],
        fanout_client_cpu_s=at_100["client_cpu_s"],
        delivery_p99_ms_at_20=at_20["delivery_p99_ms"],
        missing_deliveries_at_20=at_20["missing_deliveries"],
        fanout_detail={"at_100": at_100, "at_20": at_20},
    )

    step(f"peer: Node ws broadcast server, {SIZES['viewers']} viewers at 100 events/s")
    peer = PeerServer(8790, cpu=0)
    try:
        peer_100 = fanout.measure(peer, "peer", SIZES["viewers"], 100, duration, procs=2)
    finally:
        peer.stop()
    results.update(
        peer_us_per_delivery=peer_100["us_per_delivery"],
        peer_delivery_p99_ms=peer_100["delivery_p99_ms"],
        peer_missing_deliveries=peer_100["missing_deliveries"],
        fanout_vs_peer=round(peer_100["us_per_delivery"] / results["server_us_per_delivery"], 2),
        peer_detail=peer_100,
    )

    step(f"memory: {SIZES['idle_connections']} idle connections")
    server = BenchServer(8712, cpu=0)
    server.start()
    try:
        target = fanout.prepare(server)
        idle = fanout.measure(
            target, server.token("viewer"), SIZES["idle_connections"], 1, 2.0, procs=2
        )
    finally:
        server.stop()
    results.update(
        rss_kib_per_connection=idle["rss_kib_per_connection"],
        connections_held=idle["viewers"] - idle["closed_connections"],
    )

    step(
        f"one Redis, then a Redis Cluster (3 masters, 3 replicas): {SIZES['spread_rate']} "
        f"gifts/s from {SIZES['spread_viewers']} viewers to {SIZES['spread_streams']} streams"
    )
    results["cluster"] = cluster.compare(
        SIZES["spread_streams"], SIZES["spread_viewers"], SIZES["spread_rate"], duration,
        SIZES["spread_idle_s"],
    )  # fmt: skip

    step(f"overload: offered {SIZES['sweep_rates']} gifts/s on one Redis, "
         f"{SIZES['sweep_cluster_rates']} on the cluster")  # fmt: skip
    results["sweep"] = sweep.sweep(
        SIZES["sweep_rates"], SIZES["sweep_cluster_rates"], SIZES["sweep_duration"],
        SIZES["sweep_gifters"], SIZES["sweep_streams"],
    )  # fmt: skip

    step(f"Redis CPU per gift: the baseline tree ({baseline.BASELINE_COMMIT}) and this one")
    results["baseline"] = baseline.compare(
        baseline.BASELINE_COMMIT, SIZES["baseline_gifters"], SIZES["baseline_rate"],
        SIZES["baseline_duration"], SIZES["baseline_rounds"],
    )  # fmt: skip
    return results


TARGETS = [
    ("redis_us_per_gift", "<=", 12, "Redis CPU per gift"),
    ("ack_p99_ms", "<=", 10, "gift ack p99 at the offered rate"),
    ("delivery_p99_ms", "<=", 100, "delivery p99, 100 events/s"),
    ("delivery_p99_ms_at_20", "<=", 50, "delivery p99, 20 events/s"),
    ("fanout_vs_peer", ">=", 3, "peer CPU / our CPU per delivery"),
    ("rss_kib_per_connection", "<=", 20, "RSS per idle connection"),
]


def markdown(results: dict[str, Any], command: str) -> str:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    server_ratio = results["server_us_per_gift"] / max(results["redis_us_per_gift"], 0.01)
    own_core = results["gift_path_redis_own_core"]
    rows = [
        ("redis_raw_gifts_per_s", results["redis_raw_gifts_per_s"], "gift script alone, pipelined"),
        ("redis_us_per_gift_raw", results["redis_us_per_gift_raw"],
         "the gift script alone (commandstats)"),
        ("redis_us_per_gift", results["redis_us_per_gift"],
         "script time per acknowledged gift end to end (commandstats)"),
        ("redis_process_us_per_gift", results["redis_process_us_per_gift"],
         "all of Redis's CPU per gift: scripts, networking, pub/sub, AOF"),
        ("gifts_per_s", results["gifts_per_s"], f"acked over WS, {results['gifters']} gifters, "
         f"{results['gifts_offered_per_s']}/s offered"),
        ("ack_p50_ms / ack_p99_ms", f"{results['ack_p50_ms']} / {results['ack_p99_ms']}",
         f"refused: {results['gift_errors'] or 'none'}, unanswered: {results['gifts_unanswered']}"),
        ("server_us_per_gift", results["server_us_per_gift"],
         f"{server_ratio:.1f} x redis_us_per_gift; the client used "
         f"{results['gift_client_us_per_gift']} µs per gift"),
        ("ack p50 / p99, Redis on its own core", f"{own_core['ack_p50_ms']} / "
         f"{own_core['ack_p99_ms']}", f"Redis moved beside the client: "
         f"{own_core['gifts_per_s']} gifts/s, server {own_core['server_us_per_gift']} µs and "
         f"Redis {own_core['redis_us_per_gift']} µs per gift"),
        ("fanout_viewers", results["fanout_viewers"], "one stream"),
        ("fanout_events_per_s", results["fanout_events_per_s"], "100 gifts/s offered"),
        ("delivery_p50_ms / p99_ms", f"{results['delivery_p50_ms']} / {results['delivery_p99_ms']}",
         f"missing: {results['missing_deliveries']}"),
        ("delivery_p99_ms at 20/s", results["delivery_p99_ms_at_20"],
         f"missing: {results['missing_deliveries_at_20']}"),
        ("server_us_per_delivery", results["server_us_per_delivery"], "server CPU / deliveries"),
        ("peer_us_per_delivery", results["peer_us_per_delivery"],
         f"Node ws, one frame per event; missing: {results['peer_missing_deliveries']}"),
        ("fanout_vs_peer", results["fanout_vs_peer"], "peer / ours"),
        ("rss_kib_per_connection", results["rss_kib_per_connection"],
         f"{results['connections_held']} idle connections held"),
    ]  # fmt: skip
    lines = [
        "# Benchmarks",
        "",
        f"Produced by `{command}` on {time.strftime('%Y-%m-%d')}: {cpu}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}. The server is pinned to "
        "core 0 and the clients to core 1; both servers (ours and the Node `ws` peer) are "
        "measured in the same run with the same client harness. The gift figures are "
        "measured as `serve` runs: the embedded Redis on the server's core; the gift path "
        "then runs once more with Redis moved to the other core (beside the client).",
        "",
        "| figure | value | note |",
        "| --- | --- | --- |",
        *(f"| `{name}` | {value} | {note} |" for name, value, note in rows),
        "",
        "Targets:",
        "",
        "| target | wanted | measured | met |",
        "| --- | --- | --- | --- |",
    ]
    for key, op, bound, label in TARGETS:
        value = results[key]
        met = value <= bound if op == "<=" else value >= bound
        lines.append(f"| {label} (`{key}`) | {op} {bound} | {value} | {'yes' if met else 'no'} |")
    ratio_met = server_ratio <= 3
    lines.append(
        f"| server CPU per gift (`server_us_per_gift`) | <= 3 x redis_us_per_gift | "
        f"{server_ratio:.1f} x | {'yes' if ratio_met else 'no'} |"
    )
    lines += [
        "",
        "Raw figures: `load/results/bench.json`. Where the time goes and what would close "
        "the gaps: [docs/performance.md](docs/performance.md); Redis instructions per gift: "
        "`python -m load.bench.script_cost`.",
        "",
        *cluster_markdown(results["cluster"], command),
        *sweep.markdown(results["sweep"], command),
        *baseline.markdown(results["baseline"], command),
    ]
    return "\n".join(lines)


def cluster_markdown(compared: dict[str, Any], command: str) -> list[str]:
    load, one, many = compared["load"], compared["single"], compared["cluster"]

    def ratio(key: str) -> str:
        return f"{many[key] / one[key]:.2f}" if one[key] else "—"

    by_master = " / ".join(str(calls) for calls in many["script_calls_by_master"])
    share = many["busiest_master_share"]
    rows = [
        ("script calls per gift", one["script_calls_per_gift"], many["script_calls_per_gift"],
         ratio("script_calls_per_gift"), "`cmdstat_evalsha` calls summed over the masters: "
         "the gift's own (1 script; 4 scripts and a ZREM across slots) and the streams' "
         "streak closing and state publishing"),
        ("commands per gift", one["commands_per_gift"], many["commands_per_gift"],
         ratio("commands_per_gift"), "every command counted by the masters, those the "
         "scripts call included"),
        ("script time per gift, µs", one["script_us_per_gift"], many["script_us_per_gift"],
         ratio("script_us_per_gift"), "`cmdstat_evalsha` usec summed over the masters"),
        ("Redis CPU per gift, µs", one["redis_cpu_us_per_gift"],
         many["redis_cpu_us_per_gift"], ratio("redis_cpu_us_per_gift"),
         "`used_cpu_user` + `used_cpu_sys` deltas summed over the masters: scripts, "
         "networking, pub/sub, AOF (`appendfsync always`), replication"),
        ("replicas' CPU per gift, µs", "—", many["replicas_cpu_us_per_gift"], "",
         "the same, summed over the 3 replicas"),
        ("busiest master's share of script calls", f"{one['busiest_master_share']:.0%}",
         f"{share:.1%}", "", f"script calls by master: {by_master}; wanted <= 45%: "
         f"{'met' if share <= 0.45 else 'not met'}"),
        ("server CPU per gift, µs", one["server_us_per_gift"], many["server_us_per_gift"],
         ratio("server_us_per_gift"), "the one worker's process"),
        ("ack p50 / p99, ms", f"{one['ack_p50_ms']} / {one['ack_p99_ms']}",
         f"{many['ack_p50_ms']} / {many['ack_p99_ms']}", "",
         "noise on the cluster: see above"),
        ("gifts/s acked", one["gifts_per_s"], many["gifts_per_s"], "",
         f"{load['rate']:.0f}/s offered; refused: {one['gift_errors'] or 'none'} / "
         f"{many['gift_errors'] or 'none'}, unanswered: {one['gifts_unanswered']} / "
         f"{many['gifts_unanswered']}"),
        ("Redis memory per gift, bytes", one["memory_bytes_per_gift"],
         many["memory_bytes_per_gift"], ratio("memory_bytes_per_gift"),
         "`used_memory` deltas summed over the masters: what the load left (idempotency "
         "records and credit records, kept `idempotency_ttl_s`; journal entries, kept; "
         "history, capped per stream)"),
        ("idempotency record, bytes", one["key_memory"]["idempotency_record_bytes"],
         many["key_memory"]["idempotency_record_bytes"], "",
         "`MEMORY USAGE`, mean of a sample; across slots it holds the transfer"),
        ("credit records per gift, bytes", "—", 2 * many["key_memory"]["credit_mark_bytes"],
         "", "`{s:S}:credited:…` and `{u:T}:credited:…` (`keys.credited`), kept "
         "`idempotency_ttl_s`"),
        ("history event / journal entry, bytes",
         f"{one['key_memory']['history_bytes_per_event']} / "
         f"{one['key_memory']['journal_bytes_per_entry']}", "", "",
         "`MEMORY USAGE` / the events of a sample of the streams' histories (an "
         "entry holds a batched call's events after its first) and / `XLEN` of the "
         "streamers' journals (one Redis; the same scripts write them on a cluster)"),
        ("a funded viewer, bytes", one["key_memory"]["viewer_bytes"], "", "",
         "every key of a sample of viewers but their idempotency records: wallet, "
         "purchases, payment record, journal with one purchase"),
        ("without load: commands/s, Redis CPU ms/s",
         f"{one['idle_commands_per_s']}, {one['idle_redis_cpu_ms_per_s']}",
         f"{many['idle_commands_per_s']}, {many['idle_redis_cpu_ms_per_s']}", "",
         f"{load['idle_s']:.0f} s with the streams live and no gift: on the cluster, the "
         "worker's transfer relay reading every slot's outbox"),
    ]  # fmt: skip
    return [
        "## Redis Cluster",
        "",
        f"Produced by `{command}` (`load/bench/cluster.py`), in the same run: the same gift "
        f"load from {load['viewers']} viewers' connections, each gift to one of "
        f"{load['streams']} live streams (each of its own streamer) at random, "
        f"{load['rate']:.0f} gifts/s offered for {load['duration']:.0f} s, first against a "
        "fresh server over its embedded Redis, then against a fresh server over a local "
        "Redis Cluster of 3 masters and 3 replicas (`LocalCluster`: free ports, a temporary "
        "directory, AOF `appendfsync always`). One worker each, pinned to core 0 with every "
        "Redis node; the client on core 1. Every node's statistics are reset "
        "(`CONFIG RESETSTAT`) before the load and read after it.",
        "",
        "**On a 2-core machine the cluster's absolute throughput and latency are noise**: "
        "six redis-server processes, the worker and the client share two cores (and this "
        "machine is shared with other work). The figures are the per-gift costs and the "
        "shares; the offered rate is one the cluster carries here, lower than the single "
        "run above. Redis instructions per gift on each path (repeatable, unlike "
        "microseconds): `make bench-script`, below.",
        "",
        "| figure | one Redis | cluster | cluster / one | note |",
        "| --- | --- | --- | --- | --- |",
        *(f"| {name} | {a} | {b} | {r} | {note} |" for name, a, b, r, note in rows),
        "",
    ]


COMPARISONS = "## Comparisons between versions"


def main() -> None:
    results = run()
    out = ROOT / "load" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    command = "BENCH_QUICK=1 make bench" if QUICK else "make bench"
    report = ROOT / "BENCHMARKS.md"
    # Comparisons of two versions are measured by hand, back to back: a new run
    # rewrites the figures above them and keeps them.
    kept = report.read_text().partition(COMPARISONS)[2] if report.exists() else ""
    report.write_text(markdown(results, command) + (f"\n{COMPARISONS}{kept}" if kept else ""))
    print(orjson.dumps({k: v for k, v in results.items() if not k.endswith("detail")},
                       option=orjson.OPT_INDENT_2).decode())  # fmt: skip


if __name__ == "__main__":
    if subprocess.run(["which", "taskset"], capture_output=True).returncode != 0:
        print("[bench] taskset not found: server and clients will share cores", file=sys.stderr)
    main()
