"""`make run-cluster`: a local Redis Cluster (3 masters, 3 replicas), two
`gifting-server serve` workers over it on PORT and PORT+1, and the demo data.

It prints the nodes' and the workers' URLs and the demo's client and overlay URLs
for each worker, then runs until Ctrl-C (or SIGTERM), which stops every process it
started: the workers first (SIGTERM, then SIGKILL after 15 s), then the nodes. Each
worker runs in a session of its own, as the nodes do, so that a Ctrl-C reaches this
launcher only and the order of the stop is its own. The workers share one data dir
(`<data dir>/server`: the token and webhook secrets, their logs), so a token issued
for one is good on the other; the cluster keeps its nodes in `<data dir>`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import FrameType

from gifting_server.config import Settings, load_settings
from gifting_server.demo import demo_urls, seed
from gifting_server.local_cluster import LocalCluster

STOP_TIMEOUT_S = 15.0


def say(line: str) -> None:
    print(f"run-cluster: {line}", flush=True)


class Worker:
    """One `gifting-server serve` over the cluster, its output in a log file."""

    def __init__(self, host: str, port: int, env: dict[str, str], log_dir: Path) -> None:
        self.url = f"http://{host}:{port}"
        self.log_path = log_dir / f"worker-{port}.log"
        command = [sys.executable, "-m", "gifting_server", "serve", "--host", host]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [*command, "--port", str(port)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/readyz", timeout=1.0) as answer:
                return bool(answer.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        # The worker leads its own process group: the group includes anything it forked.
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            say(f"worker {self.url} did not stop on SIGTERM within {STOP_TIMEOUT_S:.0f} s")
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def wait_ready(workers: list[Worker], timeout_s: float) -> None:
    """Poll every worker's /readyz until all answer 200; fail at once if one exits."""
    deadline = time.monotonic() + timeout_s
    waiting = list(workers)
    while waiting:
        for worker in list(waiting):
            if worker.process.poll() is not None:
                raise RuntimeError(
                    f"worker {worker.url} exited with {worker.process.returncode}; "
                    f"the end of {worker.log_path}:\n{worker.log_tail()}"
                )
            if worker.ready():
                say(f"worker {worker.url} is ready")
                waiting.remove(worker)
        if waiting and time.monotonic() > deadline:
            names = ", ".join(w.url for w in waiting)
            raise RuntimeError(f"no answer from /readyz of {names} within {timeout_s:.0f} s")
        if waiting:
            time.sleep(0.1)


def worker_environment(redis_url: str, data_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        GIFTING_REDIS_URL=redis_url,
        GIFTING_DATA_DIR=str(data_dir),
        GIFTING_DEMO_PAYMENTS="1",  # the recharge sheet buys coins without a provider
    )
    return env


def run(args: argparse.Namespace) -> int:
    data_dir: Path = args.data_dir.resolve()
    server_dir = data_dir / "server"
    cluster = LocalCluster(data_dir, node_timeout_ms=args.node_timeout_ms)
    workers: list[Worker] = []
    try:
        say(f"starting a Redis Cluster (3 masters, 3 replicas) in {data_dir}")
        cluster.start()
        nodes = cluster.nodes()
        ports = {n.node_id: n.port for n in nodes}
        for node in sorted(nodes, key=lambda n: n.port):
            of = f" of :{ports[node.master_id]}" if node.master_id else ""
            pid = cluster.processes[node.port].pid
            say(f"node {node.url} {node.role}{of} (pid {pid})")

        env = worker_environment(cluster.urls[0], server_dir)
        # Read once here first: the secrets are created in the shared data dir before
        # two workers could race to create them.
        settings: Settings = load_settings(env)
        for port in (args.port, args.port + 1):
            workers.append(Worker(args.host, port, env, server_dir))
            process = workers[-1].process
            say(
                f"worker {workers[-1].url} starting (pid {process.pid}, log {workers[-1].log_path})"
            )
        wait_ready(workers, args.ready_timeout_s)

        say("seeding the demo data")
        asyncio.run(seed(settings, cluster.urls[0]))
        for number, worker in enumerate(workers, 1):
            print(f"\n=== worker {number}: {worker.url} ===", flush=True)
            print(demo_urls(settings, worker.url), flush=True)
        print(f"GIFTING_REDIS_URL={cluster.urls[0]}", flush=True)
        say(f"ready: {len(workers)} workers over {len(nodes)} Redis nodes; Ctrl-C stops them all")
        while all(worker.process.poll() is None for worker in workers):
            time.sleep(0.5)  # a Ctrl-C interrupts it; otherwise: has a worker died?
        for worker in workers:
            if worker.process.poll() is not None:
                say(f"worker {worker.url} exited; the end of its log:\n{worker.log_tail()}")
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        # A second Ctrl-C must not leave half of them running.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for worker in workers:
            if worker.process.poll() is None:
                say(f"stopping worker {worker.url}")
            worker.stop()
        say("stopping the Redis nodes")
        cluster.stop()
        say("everything it started has stopped")


def interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gifting_server.run_cluster",
        description="A local Redis Cluster, two workers over it and the demo, until Ctrl-C.",
    )
    parser.add_argument("--data-dir", type=Path, default=Path("data/cluster"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--port", type=int, default=8000, help="the first worker's; +1 for the second"
    )
    parser.add_argument("--node-timeout-ms", type=int, default=5000)
    parser.add_argument("--ready-timeout-s", type=float, default=60.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    signal.signal(signal.SIGTERM, interrupt)
    try:
        return run(args)
    except RuntimeError as e:
        say(f"error: {e}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
