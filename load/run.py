"""`make load`: locust, headless, against a server this starts (or --host); reports in
load/reports/.

    python -m load.run --users 2000 --spawn-rate 200 --run-time 60s
    python -m load.run --host http://10.0.0.5:8000 --users 500 -- --msgpack

Without --host it starts `gifting-server serve` with its embedded Redis in a fresh
data dir, lifts the per-user rate limits (a load test measures capacity, not the
abuse limits), funds the users with `gifting-server load-setup`, runs locust, and
stops the server. With --host, the environment holds that server's GIFTING_SECRET
and GIFTING_WEBHOOK_SECRET (or its GIFTING_DATA_DIR). Exits with locust's code: 0
only when no request failed.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

REPORTS = Path("load/reports")
LOCUSTFILE = Path(__file__).with_name("locustfile.py")
OVERLAY = """\
[limits]
gift_rate_per_s = 100000
gift_burst = 100000
[websocket]
rate_per_s = 100000
burst = 100000
"""


def command(name: str, module: str) -> list[str]:
    """A console script of this virtualenv, or its module run by this interpreter."""
    script = Path(sys.executable).parent / name
    return [str(script)] if script.exists() else [sys.executable, "-m", module]


def pinned(cpus: str | None, argv: list[str]) -> list[str]:
    return ["taskset", "-c", cpus, *argv] if cpus and shutil.which("taskset") else argv


class LocalServer:
    """`gifting-server serve` on a free port, with its own data dir and secrets."""

    def __init__(self, workers: int, cpus: str | None) -> None:
        self.workers = workers
        self.cpus = cpus
        self.data_dir = Path(tempfile.mkdtemp(prefix="gifting-load-"))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        (self.data_dir / "load.toml").write_text(OVERLAY)
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("GIFTING_")},
            "GIFTING_DATA_DIR": str(self.data_dir),
            "GIFTING_SECRET": secrets.token_hex(32),
            "GIFTING_WEBHOOK_SECRET": secrets.token_hex(32),
            "GIFTING_CONFIG": str(self.data_dir / "load.toml"),
        }
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, log: Path) -> None:
        argv = [*command("gifting-server", "gifting_server"), "serve", "--port", str(self.port),
                "--workers", str(self.workers), "--log-level", "warning"]  # fmt: skip
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                pinned(self.cpus, argv), env=self.env, stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"the server exited with {self.process.returncode}: see {log}")
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=1) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise SystemExit(f"the server was not ready within 60 s: see {log}")

    def cpu_seconds(self) -> float:
        """CPU time of the server and every process under it (workers, Redis)."""
        assert self.process is not None
        return sum(cpu_seconds(pid) for pid in process_tree(self.process.pid))

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.data_dir, ignore_errors=True)


def process_tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parent = int(stat[stat.rindex(")") + 2 :].split()[1])
            children.setdefault(parent, []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


ACK_BUCKET = re.compile(r'^gifting_gift_ack_seconds_bucket\{le="([^"]+)",path="ws"\} (\S+)$', re.M)


def ack_histogram(host: str) -> dict[float, float]:
    """The server's own WebSocket gift latency histogram (cumulative), from /metrics."""
    try:
        with urllib.request.urlopen(f"{host}/metrics", timeout=10) as answer:
            text = answer.read().decode()
    except OSError:
        return {}
    return {float(le): float(count) for le, count in ACK_BUCKET.findall(text)}


def bucket_quantile(before: dict[float, float], after: dict[float, float], q: float) -> float:
    """The upper bound (ms) of the bucket holding quantile q of what happened in between."""
    counts = sorted((le, after[le] - before.get(le, 0.0)) for le in after)
    total = counts[-1][1] if counts else 0.0
    for le, count in counts:
        if total and count >= q * total:
            return le * 1000
    return float("nan")


REFUSED = ": refused overloaded, retried"  # hub_socket.REFUSED_OVERLOADED, as locust names it


def summarize(stats_csv: Path) -> dict[str, Any]:
    """The figures worth a line, from locust's stats CSV."""
    with stats_csv.open() as stats:
        rows = {row["Name"]: row for row in csv.DictReader(stats)}
    summary: dict[str, Any] = {}
    for name in ("gift", "/v1/streams/[id]/gifts", "deliver gift", "connect", "subscribe"):
        row = rows.get(name)
        if row and int(row["Request Count"]):
            summary[name] = {
                "count": int(row["Request Count"]),
                "failures": int(row["Failure Count"]),
                "per_s": round(float(row["Requests/s"]), 1),
                "p50_ms": float(row["50%"]),
                "p99_ms": float(row["99%"]),
            }
    # Gifts an overloaded server refused at once and the gifter sent again (locustfile):
    # their own figure, neither a failure nor an ack.
    summary["refused_overloaded"] = sum(
        int(row["Request Count"]) for name, row in rows.items() if name.endswith(REFUSED)
    )
    total = rows["Aggregated"]
    summary["requests"] = int(total["Request Count"])
    summary["failures"] = int(total["Failure Count"])
    return summary


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=2000, help="gifters (WebSocket and HTTP)")
    parser.add_argument("--viewers", type=int, default=20, help="viewers on top of the gifters")
    parser.add_argument("--spawn-rate", type=float, default=200, help="users started per second")
    parser.add_argument("--run-time", default="60s")
    parser.add_argument("--host", help="a running server (default: start one here)")
    parser.add_argument("--streams", type=int, default=100, help="live streams the users share")
    parser.add_argument("--gift-rate", type=float, default=0.2, help="mean gifts/s per gifter")
    parser.add_argument("--workers", type=int, default=1, help="workers of the local server")
    parser.add_argument("--server-cpus", help="taskset CPU list for the local server, e.g. 0")
    parser.add_argument("--locust-cpus", help="taskset CPU list for locust, e.g. 1")
    parser.add_argument("locust_args", nargs="*", help="more locust arguments, after --")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # every connection is a socket
    REPORTS.mkdir(parents=True, exist_ok=True)
    users_file = REPORTS / "users.json"
    server = None if args.host else LocalServer(args.workers, args.server_cpus)
    try:
        if server:
            server.start(REPORTS / "server.log")
        host = args.host or (server.url if server else "")
        setup = subprocess.run(
            [*command("gifting-server", "gifting_server"), "load-setup",
             "--users", str(args.users + args.viewers), "--streams", str(args.streams),
             "--host", host, "--out", str(users_file)],
            env=server.env if server else None, check=False,
        )  # fmt: skip
        if setup.returncode:
            return setup.returncode  # it said why
        locust = [
            *command("locust", "locust"), "-f", str(LOCUSTFILE), "--headless",
            "--host", host, "--users", str(args.users + args.viewers),
            "--spawn-rate", str(args.spawn_rate), "--run-time", args.run_time,
            "--viewers", str(args.viewers), "--gift-rate", str(args.gift_rate),
            "--users-file", str(users_file), "--csv", str(REPORTS / "load"),
            "--html", str(REPORTS / "load.html"), "--only-summary", *args.locust_args,
        ]  # fmt: skip
        for stale in REPORTS.glob("load_*.csv"):
            stale.unlink()
        print("$", " ".join(locust), flush=True)
        cpu_before = server.cpu_seconds() if server else 0.0
        acks_before = ack_histogram(host)
        locust_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.monotonic()
        code = subprocess.call(pinned(args.locust_cpus, locust))
        seconds = time.monotonic() - started
        locust_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        acks_after = ack_histogram(host)
        server_cpu = server.cpu_seconds() - cpu_before if server else None
    finally:
        if server:
            server.stop()

    if not (REPORTS / "load_stats.csv").exists():
        return code or 1  # locust said why
    summary = summarize(REPORTS / "load_stats.csv")
    if acks_after:  # what the server itself measured: tells its latency from the client's
        summary["server_ws_gift_p50_ms_at_most"] = bucket_quantile(acks_before, acks_after, 0.5)
        summary["server_ws_gift_p99_ms_at_most"] = bucket_quantile(acks_before, acks_after, 0.99)
    if server_cpu is not None:
        summary["server_cpu_cores"] = round(server_cpu / seconds, 2)
    locust_cpu = sum(
        getattr(locust_after, f) - getattr(locust_before, f) for f in ("ru_utime", "ru_stime")
    )
    summary["locust_cpu_cores"] = round(locust_cpu / seconds, 2)
    summary["command"] = " ".join(["python -m load.run", *sys.argv[1:]])
    (REPORTS / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    print(f"reports: {REPORTS}/load.html, {REPORTS}/load_*.csv, {REPORTS}/summary.json")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
