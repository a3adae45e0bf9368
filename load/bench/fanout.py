"""Fan-out benchmark: one stream, many idle-reading viewers, a steady gift rate.

    python -m load.bench.fanout --viewers 5000 --rate 100 --duration 10

Server pinned to core 0, viewers (split over processes) to core 1. Prints the
server CPU per event delivered to one viewer, delivery latency, missing events
and RSS per idle connection.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import resource
import time
from multiprocessing.connection import Connection
from typing import Any

import orjson
import redis
import uvloop
from websockets.asyncio.client import connect

from gifting_server.ledger import keys
from load.bench.server import BenchServer, cpu_seconds, rss_kib
from load.bench.wsclient import Viewer, ViewerStats

STREAM = "bench"


def viewer_process(port: int, token: str, count: int, pipe: Connection, cpu: int | None) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    uvloop.run(_viewers(port, token, count, pipe))


async def _viewers(port: int, token: str, count: int, pipe: Connection) -> None:
    loop = asyncio.get_running_loop()
    stats = ViewerStats()
    viewers: list[Viewer] = []
    for start in range(0, count, 200):
        batch = []
        for _ in range(min(200, count - start)):
            viewer = Viewer(f"/v1/ws?token={token}", f"127.0.0.1:{port}", STREAM, stats)
            await viewer.connect(("127.0.0.1", port))
            batch.append(viewer)
        await asyncio.gather(*(v.ready for v in batch))
        viewers.extend(batch)
    pipe.send("ready")
    await loop.run_in_executor(None, pipe.recv)  # "reset"
    stats.frames = stats.events = 0
    stats.latencies_ms.clear()
    stats.received_ms.clear()
    begin = os.times()
    pipe.send("reset")
    await loop.run_in_executor(None, pipe.recv)  # "report"
    end = os.times()
    pipe.send(
        {
            "events": stats.events,
            "frames": stats.frames,
            "closed": stats.closed,
            "latencies": stats.latencies_ms,
            "received": stats.received_ms,
            "cpu_s": (end.user - begin.user) + (end.system - begin.system),
        }
    )


async def send_gifts(
    port: int, token: str, rate: float, duration: float, prefix: str = "g"
) -> tuple[int, dict[int, float]]:
    """Send gifts at `rate`; return how many, and when each acked event's gift was sent."""
    sent = 0
    sent_ms: dict[str, float] = {}  # message id → when it was sent
    sent_ms_by_event: dict[int, float] = {}
    async with connect(f"ws://127.0.0.1:{port}/v1/ws?token={token}") as ws:

        async def drain() -> None:
            async for frame in ws:
                answer = orjson.loads(frame)
                if answer.get("type") == "ack":
                    sent_ms_by_event[answer["event_id"]] = sent_ms.pop(answer["id"])

        reader = asyncio.create_task(drain())
        start = time.perf_counter()
        gifts = ("rose", "finger_heart", "doughnut", "rose")
        while (elapsed := time.perf_counter() - start) < duration:
            due = int(elapsed * rate) + 1
            while sent < due:
                message = {"type": "gift", "id": f"{prefix}{sent}", "stream_id": STREAM,
                           "gift_id": gifts[sent % len(gifts)], "count": 1}  # fmt: skip
                sent_ms[message["id"]] = time.time() * 1000
                await ws.send(orjson.dumps(message).decode())
                sent += 1
            await asyncio.sleep(max(0.0, (sent / rate) - (time.perf_counter() - start)))
        await asyncio.sleep(1.0)  # let the last frames land
        reader.cancel()
    return sent, sent_ms_by_event


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Target:
    """What the viewers connect to and what drives events into it."""

    port: int
    pid: int

    def drive(self, rate: float, duration: float) -> int:
        """Offer `rate` events/s for `duration` s; return how many were published."""
        raise NotImplementedError


class OurServer(Target):
    def __init__(self, server: BenchServer) -> None:
        assert server.process is not None
        self.server, self.port, self.pid = server, server.port, server.process.pid
        self.store = redis.Redis.from_url(server.redis_url)
        self.drives = 0
        self.gift_sent_ms: dict[int, float] = {}  # event id → when its gift was sent

    def seq(self) -> int:
        return int(self.store.hget(keys.stream(STREAM), "seq") or 0)

    def drive(self, rate: float, duration: float) -> int:
        before = self.seq()
        self.drives += 1  # fresh message ids: a repeated id would be an idempotent replay
        token = self.server.token("gifter")
        _, self.gift_sent_ms = asyncio.run(
            send_gifts(self.port, token, rate, duration, prefix=f"d{self.drives}-")
        )
        return self.quiet_seq() - before

    def quiet_seq(self, quiet_s: float = 1.0, timeout_s: float = 8.0) -> int:
        """The newest event id once none came for `quiet_s`: the last streak closes a
        combo window after the last gift, and an event still being written to the
        viewers when they report would be miscounted."""
        seq, since, deadline = self.seq(), time.monotonic(), time.monotonic() + timeout_s
        while time.monotonic() - since < quiet_s and time.monotonic() < deadline:
            time.sleep(0.1)
            if (newer := self.seq()) != seq:
                seq, since = newer, time.monotonic()
        return seq


def prepare(server: BenchServer) -> OurServer:
    import httpx

    server.go_live(STREAM)
    with httpx.Client() as client:
        server.fund(client, "gifter", times=4)
    return OurServer(server)


def measure(
    target: Target, token: str, viewers: int, rate: float, duration: float, procs: int
) -> dict[str, Any]:
    resource.setrlimit(resource.RLIMIT_NOFILE, (20000, 20000))
    rss_before = rss_kib(target.pid)
    pipes, workers = [], []
    for i in range(procs):
        parent, child = mp.Pipe()
        share = viewers // procs + (1 if i < viewers % procs else 0)
        worker = mp.Process(target=viewer_process, args=(target.port, token, share, child, 1))
        worker.start()
        pipes.append(parent)
        workers.append(worker)
    try:
        for pipe in pipes:
            assert pipe.recv() == "ready"
        time.sleep(1.5)  # let presence and leaderboard settle before measuring RSS
        rss_after = rss_kib(target.pid)
        for pipe in pipes:
            pipe.send("reset")
        for pipe in pipes:
            assert pipe.recv() == "reset"
        cpu_before = cpu_seconds(target.pid)
        published = target.drive(rate, duration)
        cpu_after = cpu_seconds(target.pid)
        reports = []
        for pipe in pipes:
            pipe.send("report")
            reports.append(pipe.recv())
    finally:
        for worker in workers:
            worker.terminate()
            worker.join()
    delivered = sum(r["events"] for r in reports)
    latencies = [x for r in reports for x in r["latencies"]]
    # The same sampled frames, from the gift's send instead of the event's creation:
    # also counts the time a gift waited in the server before its script ran.
    sent_ms = getattr(target, "gift_sent_ms", {})
    from_gift = [
        received - sent_ms[event_id]
        for r in reports
        for event_id, received in r["received"]
        if event_id in sent_ms
    ]
    server_cpu = cpu_after - cpu_before
    return {
        "viewers": viewers,
        "events_per_s": round(published / duration, 1),
        "deliveries": delivered,
        "missing_deliveries": published * viewers - delivered,
        "frames": sum(r["frames"] for r in reports),
        "delivery_p50_ms": round(percentile(latencies, 0.5), 2),
        "delivery_p99_ms": round(percentile(latencies, 0.99), 2),
        "gift_to_delivery_p50_ms": round(percentile(from_gift, 0.5), 2),
        "gift_to_delivery_p99_ms": round(percentile(from_gift, 0.99), 2),
        "server_cpu_s": round(server_cpu, 3),
        "us_per_delivery": round(server_cpu * 1e6 / max(delivered, 1), 3),
        "client_cpu_s": round(sum(r["cpu_s"] for r in reports), 3),
        "rss_kib_per_connection": round((rss_after - rss_before) / viewers, 2),
        "closed_connections": sum(r["closed"] for r in reports),
    }


def run(viewers: int, rate: float, duration: float, procs: int, port: int) -> dict[str, Any]:
    server = BenchServer(port, cpu=0)
    server.start()
    try:
        target = prepare(server)
        return measure(target, server.token("viewer"), viewers, rate, duration, procs)
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--viewers", type=int, default=5000)
    parser.add_argument("--rate", type=float, default=100, help="gifts per second offered")
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--procs", type=int, default=2, help="viewer client processes")
    parser.add_argument("--port", type=int, default=8701)
    args = parser.parse_args()
    result = run(args.viewers, args.rate, args.duration, args.procs, args.port)
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
