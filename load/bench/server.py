"""Start a gifting_server for a benchmark: its own data dir, embedded Redis,
pinned to a core, with test-sized limits lifted; plus tokens and funding."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import orjson

from gifting_server.auth import Role, issue_token, sign_webhook

SECRET = "bench-token-secret-0123456789abcdef0123456789"
WEBHOOK_SECRET = "bench-webhook-secret-0123456789abcdef012345"
LIMITS = """
[limits]
gift_rate_per_s = 100000
gift_burst = 100000
[websocket]
rate_per_s = 100000
burst = 100000
[overload]
# A gifter here stands for many users: its gifts under way are not one person's.
max_in_flight_per_user = 1000000
"""


def step(name: str) -> None:
    """A progress line of a bench run, on stderr."""
    print(f"[bench] {time.strftime('%H:%M:%S')} {name}", file=sys.stderr, flush=True)


def cpu_split(pid: int) -> tuple[float, float]:
    """(user, kernel) CPU seconds of the process itself, not of its children."""
    # After the command name, which may hold spaces and ")": utime, stime are 14 and 15.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / ticks, int(fields[12]) / ticks


def cpu_seconds(pid: int) -> float:
    """User and kernel CPU seconds of the process itself, not of its children."""
    user, kernel = cpu_split(pid)
    return user + kernel


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class BenchServer:
    def __init__(
        self,
        port: int,
        cpu: int | None = 0,
        extra_config: str = "",
        redis_url: str = "",
        tree: Path | None = None,
    ) -> None:
        """`redis_url`: a Redis (or any node of a Redis Cluster) to serve from instead
        of the embedded one. `tree`: a source tree (another version's checkout) whose
        gifting_server to run, with this environment's packages, instead of this one's."""
        self.port = port
        self.tree = tree
        self.external_redis_url = redis_url
        self.data_dir = Path(tempfile.mkdtemp(prefix="gifting-bench-"))
        (self.data_dir / "bench.toml").write_text(LIMITS + extra_config)
        self.cpu = cpu
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def redis_url(self) -> str:
        if self.external_redis_url:
            return self.external_redis_url
        return f"unix://{self.data_dir / 'redis.sock'}?db=0"

    def start(self) -> None:
        env = dict(
            os.environ,
            GIFTING_DATA_DIR=str(self.data_dir),
            GIFTING_SECRET=SECRET,
            GIFTING_WEBHOOK_SECRET=WEBHOOK_SECRET,
            GIFTING_CONFIG=str(self.data_dir / "bench.toml"),
        )
        env.pop("GIFTING_REDIS_URL", None)
        if self.external_redis_url:
            env["GIFTING_REDIS_URL"] = self.external_redis_url
        if self.tree is not None:
            env["PYTHONPATH"] = str(self.tree)
        command = [sys.executable, "-m", "gifting_server", "serve", "--port", str(self.port),
                   "--log-level", "warning"]  # fmt: skip
        if self.cpu is not None and shutil.which("taskset"):
            command = ["taskset", "-c", str(self.cpu), *command]
        self.process = subprocess.Popen(command, env=env, cwd=self.tree, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if (code := self.process.poll()) is not None:
                raise RuntimeError(f"the benchmark server exited with status {code}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("the benchmark server did not start")

    def redis_pid(self) -> int | None:
        """The embedded redis-server, a child of the server process."""
        assert self.process is not None
        found = subprocess.run(
            ["pgrep", "-P", str(self.process.pid), "redis-server"], capture_output=True, text=True
        ).stdout.split()
        return int(found[0]) if found else None

    def pin_redis(self, cpu: int) -> None:
        """Give Redis a core of its own; started by the server, it shares the server's."""
        pid = self.redis_pid()
        if pid is not None and shutil.which("taskset"):
            subprocess.run(["taskset", "-p", "-c", str(cpu), str(pid)], capture_output=True)

    def stop(self) -> None:
        if self.process:
            self.process.terminate()
            self.process.wait(timeout=30)
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def token(self, user: str, role: Role = Role.VIEWER) -> str:
        return issue_token(SECRET, user, role, name=user.title(), adult=True, ttl_s=3600)

    def go_live(self, stream_id: str, streamer: str = "bench_streamer") -> None:
        response = httpx.post(
            f"{self.url}/v1/streams",
            json={"stream_id": stream_id},
            headers={"Authorization": f"Bearer {self.token(streamer, Role.STREAMER)}"},
        )
        response.raise_for_status()

    def fund(
        self, client: httpx.Client, user: str, times: int = 1, package: str = "coins_50000"
    ) -> None:
        for i in range(times):
            body = orjson.dumps(
                {"event_id": f"bench-{user}-{i}", "type": "payment.succeeded",
                 "user_id": user, "package_id": package}
            )  # fmt: skip
            signature = sign_webhook(WEBHOOK_SECRET, body, int(time.time()))
            client.post(
                f"{self.url}/v1/payments/webhook", content=body,
                headers={"Gifting-Signature": signature},
            ).raise_for_status()  # fmt: skip
