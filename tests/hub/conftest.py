"""Fixtures of the hub tests: in-process servers with hub settings of the test's
choosing, and two real `gifting-server serve` processes sharing the test Redis."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import topology
from tests.conftest import SECRET, WEBHOOK_SECRET, ServerThread, server_factory
from tests.hub.redis_proxy import RedisProxy
from tests.redis_process import free_port

REPO = Path(__file__).resolve().parents[2]

# Generous per-user and per-connection limits, so that only the tests about
# limits meet them, and a combo window long enough that no streak ends by itself.
HUB_DEFAULTS: dict[str, dict[str, Any]] = {
    "limits": {"gift_rate_per_s": 10_000, "gift_burst": 10_000, "combo_window_ms": 600_000},
    "websocket": {"rate_per_s": 10_000, "burst": 10_000},
}

StartServer = Callable[..., ServerThread]


@pytest.fixture
def start_server(redis_url: str, tmp_path: Path) -> Iterator[StartServer]:
    """`start_server(websocket={...}, limits={...}, history={...})` → a running server."""
    with server_factory(tmp_path, HUB_DEFAULTS) as start:
        yield lambda **sections: start(redis_url, **sections)


@pytest.fixture
def redis_proxy(redis_url: str) -> Iterator[RedisProxy]:
    """A proxy in front of the test Redis (flushed for this test)."""
    if topology.on_cluster():
        pytest.skip(
            "single Redis only: a cluster client reaches every node directly at the "
            "address the cluster announces, so a proxy in front of one node sees nothing"
        )
    proxy = RedisProxy(int(redis_url.rsplit(":", 1)[1].split("/")[0]))
    yield proxy
    proxy.close()


@pytest.fixture
def start_proxied_server(redis_proxy: RedisProxy, tmp_path: Path) -> Iterator[StartServer]:
    """`start_server`, but the server reaches Redis through `redis_proxy`."""
    with server_factory(tmp_path, HUB_DEFAULTS) as start:
        yield lambda **sections: start(redis_proxy.url, **sections)


class Worker:
    def __init__(self, port: int, env: dict[str, str], log: Path) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log
        self.log = log.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gifting_server", "serve", "--port", str(port)],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def wait_healthy(self, deadline: float) -> None:
        with httpx.Client(base_url=self.url, timeout=1.0) as client:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"worker died at start:\n{self.log_path.read_text()}")
                with contextlib.suppress(httpx.TransportError):
                    if client.get("/healthz").status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"worker not healthy:\n{self.log_path.read_text()}")
                time.sleep(0.05)

    def stop(self) -> str | None:
        """Stop the worker; what went wrong in it, if anything."""
        problem = None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                problem = "did not stop within 10 s of SIGTERM"
        self.log.close()
        output = self.log_path.read_text(errors="replace")
        # uvicorn re-raises SIGTERM after a clean shutdown: -15 is a normal exit here
        if "Traceback" in output or self.process.returncode not in (0, -signal.SIGTERM):
            problem = problem or f"exit code {self.process.returncode}"
        return f"worker on port {self.port}: {problem}\n{output}" if problem else None


WORKER_CONFIG = """\
[limits]
gift_rate_per_s = 10000
gift_burst = 10000
combo_window_ms = 1500

[websocket]
rate_per_s = 10000
burst = 10000
"""


@contextlib.contextmanager
def running_workers(
    redis_url: str, tmp_path: Path, count: int = 2, extra_config: str = ""
) -> Iterator[list[Worker]]:
    """`count` `gifting-server serve` processes on one Redis (combo window 1.5 s; more
    TOML sections in `extra_config`). A worker the test killed with SIGKILL is not
    stopped again."""
    config = tmp_path / "workers.toml"
    config.write_text(WORKER_CONFIG + extra_config)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIFTING_")}
    env.update(
        GIFTING_REDIS_URL=redis_url,
        GIFTING_SECRET=SECRET,
        GIFTING_WEBHOOK_SECRET=WEBHOOK_SECRET,
        GIFTING_DATA_DIR=str(tmp_path / "data"),
        GIFTING_CONFIG=str(config),
    )
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    workers: list[Worker] = []
    problems: list[str] = []
    try:
        for i, port in enumerate(ports):
            workers.append(Worker(port, env, tmp_path / f"worker{i}.log"))
        deadline = time.monotonic() + 30
        for worker in workers:
            worker.wait_healthy(deadline)
        yield workers
    finally:
        for worker in workers:
            if worker.process.returncode == -signal.SIGKILL:
                worker.log.close()
            elif problem := worker.stop():
                problems.append(problem)
    assert not problems, "\n".join(problems)


@pytest.fixture
def two_workers(redis_url: str, tmp_path: Path) -> Iterator[list[Worker]]:
    with running_workers(redis_url, tmp_path) as workers:
        yield workers
