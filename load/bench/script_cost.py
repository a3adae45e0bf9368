"""What one gift costs Redis, in instructions: `python -m load.bench.script_cost`.

Runs a redis-server under valgrind's callgrind, counting only inside EVALSHA,
sends N and then 2N gifts of the send_gift script (200 senders, one stream) and
reports the difference per gift. Unlike microseconds, the count does not drift
with whatever else the machine is doing, so two versions of the script can be
compared from one run to the next. Takes about a minute; needs valgrind.

    python -m load.bench.script_cost [--gifts 2000] [--script path/to/send_gift.lua]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

from gifting_server.auth import Identity, Role
from gifting_server.config import Settings, load_settings
from gifting_server.ledger import payments, streams
from gifting_server.ledger.gifts import gift_call
from gifting_server.ledger.scripts import script_source, with_includes
from gifting_server.ledger.store import Store, connect_single
from load.bench.server import LIMITS, SECRET, WEBHOOK_SECRET

SENDERS = 200
STREAM, STREAMER = "cost", "cost_streamer"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def count_instructions(gifts: int, script: str) -> int:
    """Instructions inside EVALSHA for `gifts` gifts, setup included."""
    work = Path(tempfile.mkdtemp(prefix="gifting-cost-"))
    port = free_port()
    valgrind = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={work}/callgrind.out",
         "--toggle-collect=evalShaCommand", "redis-server", "--port", str(port),
         "--save", "", "--appendonly", "no"],
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
        asyncio.run(_setup(url, settings))
        _send(client, settings, gifts, script)
        client.shutdown(nosave=True)
    except redis.ConnectionError:
        pass  # SHUTDOWN closes the connection it came on
    finally:
        client.close()
        valgrind.wait(timeout=120)
    annotated = subprocess.run(
        ["callgrind_annotate", str(work / "callgrind.out")], capture_output=True, text=True
    ).stdout
    shutil.rmtree(work, ignore_errors=True)
    for line in annotated.splitlines():
        if "PROGRAM TOTALS" in line:
            return int(line.split()[0].replace(",", ""))
    raise RuntimeError("callgrind_annotate printed no totals")


async def _setup(url: str, settings: Settings) -> None:
    store = Store(connect_single(url, 30.0), settings)
    try:
        await streams.start_stream(store, STREAMER, STREAM)
        for i in range(SENDERS):
            await payments.apply_payment(
                store, f"g{i}", f"cost-g{i}", "payment.succeeded", "coins_50000"
            )
    finally:
        await store.close()


def _send(client: redis.Redis, settings: Settings, gifts: int, script: str) -> None:
    sha = client.script_load(script)
    rose = settings.gift("rose")
    assert rose is not None
    now = time.time_ns() // 1_000_000
    connection = client.connection_pool.get_connection()
    for start in range(0, gifts, 200):
        commands = []
        for i in range(start, min(start + 200, gifts)):
            user = f"g{i % SENDERS}"
            sender = Identity(user, user.title(), Role.VIEWER, adult=True)
            call = gift_call(settings, sender, STREAM, STREAMER, rose, 1, f"c{i}", now + i // 50)
            commands.append(("EVALSHA", sha, len(call.keys), *call.keys, *call.args))
        connection.send_packed_command(connection.pack_commands(commands))
        for _ in commands:
            reply = connection.read_response()
            assert reply[0] == 0, reply
    client.connection_pool.release(connection)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--gifts", type=int, default=2000)
    parser.add_argument("--script", type=Path, help="a send_gift.lua to measure instead")
    options = parser.parse_args()
    if not shutil.which("valgrind"):
        sys.exit("valgrind is needed: apt-get install valgrind")
    if options.script:
        script = with_includes(options.script.read_text())
    else:
        script = script_source("send_gift")
    single = count_instructions(options.gifts, script)
    double = count_instructions(2 * options.gifts, script)
    per_gift = (double - single) // options.gifts
    runs = f"{options.gifts:,} and {2 * options.gifts:,} gifts"
    print(f"send_gift: {per_gift:,} instructions of Redis per gift (callgrind, EVALSHA, {runs})")


if __name__ == "__main__":
    main()
