"""What a refusal costs the worker: its CPU per gift refused on the WebSocket.

One worker with its embedded Redis (core 0) whose admission lets one gift in flight
at a time (`[overload] min_in_flight = 1, max_in_flight = 1`), offered an open-loop
load of gifts from gifter connections (core 1): nearly every gift is refused
`service_unavailable` by the real rule, as past the ceiling, and the worker's CPU
(user and kernel apart, from /proc; Redis's is not in it) over the load, divided by
the gifts answered, is what a refusal costs. The few gifts taken cost more: they
are counted apart, and their share is small.

    python -m load.bench.refusal [--rate 8000] [--duration 10] [--gifters 1000]
        [--profile FILE]     # py-spy's profile of the worker under the load
        [--tree DIR --rounds N]   # another tree's worker too, in turn: before/after

Timing: run it under `flock /tmp/bench.lock`, and say how busy the machine was.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import uvloop

from load.bench.cluster import spread_names
from load.bench.gifts import drive
from load.bench.server import BenchServer, cpu_split

REFUSE_NEARLY_ALL = "min_in_flight = 1\nmax_in_flight = 1\n"


def measure(
    port: int,
    rate: float,
    duration: float,
    gifters: int,
    profile: str = "",
    tree: Path | None = None,
) -> dict[str, Any]:
    server = BenchServer(port, cpu=0, extra_config=REFUSE_NEARLY_ALL, tree=tree)
    server.start()
    spy: subprocess.Popen[bytes] | None = None
    try:
        pairs, users = spread_names(10, gifters)
        for stream, streamer in pairs:
            server.go_live(stream, streamer)
        tokens = [server.token(user) for user in users]
        os.sched_setaffinity(0, {1})
        assert server.process is not None
        pid = server.process.pid
        if profile:
            spy_bin = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
            # collapsed stacks (text) for a .txt file, else a flame graph
            kind = "raw" if profile.endswith(".txt") else "flamegraph"
            spy = subprocess.Popen(
                [spy_bin, "record", "--pid", str(pid), "--output", profile, "--format", kind,
                 "--rate", "250", "--duration", str(int(duration)), "--nonblocking"],
                stdout=subprocess.DEVNULL,
            )  # fmt: skip
        before: list[float] = []

        def opened() -> None:  # the handshakes are no refusal's: not counted
            before.extend((*cpu_split(pid), time.process_time()))

        streams = tuple(stream for stream, _ in pairs)
        outcome = uvloop.run(
            drive(port, tokens, rate, duration, uuid.uuid4().hex[:8], streams, opened)
        )
        user_after, kernel_after = cpu_split(pid)
        user_before, kernel_before, client_before = before
        client = time.process_time() - client_before
        if spy is not None:
            spy.wait(timeout=60)
    finally:
        server.stop()
    errors = dict(outcome["errors"])
    refused = errors.pop("service_unavailable", 0)
    taken = len(outcome["latencies"]) + sum(errors.values())
    answers = refused + taken
    user, kernel = user_after - user_before, kernel_after - kernel_before
    return {
        "offered_per_s": rate,
        "refused_per_s": round(refused / duration),
        "taken_per_s": round(taken / duration),
        "unanswered": outcome["unanswered"],
        "refused_share": round(refused / max(answers, 1), 4),
        "worker_cpu_share": round((user + kernel) / duration, 2),
        # per answer, nearly all refusals: an upper bound of what a refusal costs
        "worker_us_per_answer": round((user + kernel) * 1e6 / max(answers, 1), 1),
        "worker_user_us_per_answer": round(user * 1e6 / max(answers, 1), 1),
        "worker_kernel_us_per_answer": round(kernel * 1e6 / max(answers, 1), 1),
        "gifters_cpu_share": round(client / duration, 2),
        "gifters_us_per_gift": round(client * 1e6 / max(outcome["sent"], 1), 1),
        "load_average": os.getloadavg()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="What a refusal costs the worker.")
    parser.add_argument("--rate", type=float, default=8000)
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--gifters", type=int, default=1000)
    parser.add_argument("--port", type=int, default=8717)
    parser.add_argument(
        "--profile", default="", help="py-spy's profile of the worker: FILE.svg, or .txt stacks"
    )
    parser.add_argument(
        "--tree",
        action="append",
        default=[],
        type=Path,
        help="a source tree (another version's gifting_server) to measure too, in turn "
        "with this one",
    )
    parser.add_argument("--rounds", type=int, default=1, help="rounds of every tree in turn")
    options = parser.parse_args()
    trees: list[Path | None] = [*options.tree, None]
    for round_ in range(options.rounds):
        for tree in trees:
            result = measure(
                options.port, options.rate, options.duration, options.gifters,
                options.profile, tree,
            )  # fmt: skip
            result = {"tree": str(tree or "this"), "round": round_, **result}
            print(orjson.dumps(result).decode(), flush=True)


if __name__ == "__main__":
    main()
