"""What a Redis node spends to send one event to one subscribing worker:
`python -m load.bench.pubsub_cost`.

A cluster master sends every event of a stream (`SPUBLISH`) to each worker that
follows the stream (`SSUBSCRIBE`), so its pub/sub cost grows with the workers per
stream (docs/scaling.md, "Capacity model"). This starts a redis-server of its own
(free port, no persistence) pinned to core 0, opens `--subscribers` connections
on one channel from core 1, publishes `--messages` events of `--size` bytes in
pipelined batches, waits until every subscriber has every message, and reports
Redis's CPU (`used_cpu_user` + `used_cpu_sys`) per publish and per message
delivered. With `--subscribers 0` it is the cost of a publish alone.

    python -m load.bench.pubsub_cost [--subscribers 100] [--messages 20000] [--size 300]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import subprocess
import time

import redis
import redis.asyncio

from gifting_server.embedded_redis import find_redis_server

CHANNEL = "{s:bench}:events"
BATCH = 100
MARKER = b"$8\r\nsmessage\r\n"
DEADLINE_S = 120.0


class Subscriber(asyncio.Protocol):
    """Counts the `smessage` pushes on its connection (RESP2: each one is an array
    whose first element is the bulk string `smessage`)."""

    def __init__(self) -> None:
        self.messages = 0
        self.tail = b""
        self.subscribed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        channel = CHANNEL.encode()
        transport.write(  # type: ignore[attr-defined]
            b"*2\r\n$10\r\nSSUBSCRIBE\r\n$%d\r\n%s\r\n" % (len(channel), channel)
        )

    def data_received(self, data: bytes) -> None:
        # A marker split across two reads is found in the kept tail, which is too
        # short to hold a whole one (counted already).
        buffer = self.tail + data
        self.messages += buffer.count(MARKER)
        self.tail = buffer[-(len(MARKER) - 1) :]
        if not self.subscribed.done() and b"ssubscribe" in buffer:
            self.subscribed.set_result(None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_cpu_seconds(client: redis.Redis) -> float:
    cpu = client.info("cpu")
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


async def _measure(port: int, subscribers: int, messages: int, size: int) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    readers = []
    for _ in range(subscribers):
        reader = Subscriber()
        await loop.create_connection(lambda r=reader: r, "127.0.0.1", port)  # type: ignore[misc]
        readers.append(reader)
    await asyncio.wait_for(asyncio.gather(*(r.subscribed for r in readers)), 30)
    publisher = redis.asyncio.Redis(port=port)
    control = redis.Redis(port=port)
    payload = b"x" * size
    cpu_before = redis_cpu_seconds(control)
    for _ in range(0, messages, BATCH):
        async with publisher.pipeline(transaction=False) as pipe:
            for _ in range(BATCH):
                pipe.execute_command("SPUBLISH", CHANNEL, payload)
            await pipe.execute()
    deadline = time.monotonic() + DEADLINE_S
    expected = (messages // BATCH) * BATCH
    while any(r.messages < expected for r in readers):
        if time.monotonic() > deadline:
            raise TimeoutError("the subscribers did not get every message")
        await asyncio.sleep(0.01)
    cpu = redis_cpu_seconds(control) - cpu_before
    await publisher.aclose()
    control.close()
    return {
        "subscribers": subscribers,
        "messages": expected,
        "bytes": size,
        "redis_us_per_publish": round(cpu * 1e6 / expected, 2),
        "redis_us_per_delivery": (
            round(cpu * 1e6 / (expected * subscribers), 3) if subscribers else 0.0
        ),
    }


def measure(subscribers: int, messages: int, size: int) -> dict[str, float]:
    port = free_port()
    command = [find_redis_server(), "--port", str(port), "--save", "", "--appendonly", "no"]
    if shutil.which("taskset"):
        command = ["taskset", "-c", "0", *command]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    try:
        client = redis.Redis(port=port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        client.close()
        os.sched_setaffinity(0, {1})
        return asyncio.run(_measure(port, subscribers, messages, size))
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--size", type=int, default=300, help="bytes of each event")
    options = parser.parse_args()
    print(measure(options.subscribers, options.messages, options.size))


if __name__ == "__main__":
    main()
