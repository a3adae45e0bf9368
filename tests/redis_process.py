"""A real redis-server for the tests, on a free port, that tests may kill and restart."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import redis


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# Starts on ports picked by `free_port` before one is found that no other process
# took between the pick and redis-server's bind (the suite runs in parallel).
PORT_ATTEMPTS = 5


class PortTaken(Exception):
    """Another process holds the port: redis-server could not bind it, or the server
    answering on it is not this one."""


class RedisProcess:
    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        # A port this object picked may be picked again while it never started; one
        # given, or one a started server held (a restart), is kept.
        self.port_movable = port is None
        self.process: subprocess.Popen[bytes] | None = None
        self.log_start = 0  # where the log stood when the server last started

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, *extra: str) -> None:
        for attempt in range(1, PORT_ATTEMPTS + 1):
            try:
                self._start(*extra)
            except PortTaken:
                self.stop()
                if not self.port_movable or attempt == PORT_ATTEMPTS:
                    raise
                self.port = free_port()
            else:
                self.port_movable = False
                return

    def _start(self, *extra: str) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is needed for the tests (apt-get install redis-server)"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        command = [
            binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--appendfsync", "always",
            "--save", "",
            "--logfile", str(self.data_dir / "redis.log"),
            *extra,
        ]  # fmt: skip
        log = self.data_dir / "redis.log"
        self.log_start = log.stat().st_size if log.exists() else 0
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL)
        self.wait_ready()

    def wait_ready(self, timeout_s: float = 10.0) -> None:
        """Until this process answers on the port; `PortTaken` when another one holds it
        (a server that answers is asked its pid: another test's Redis could answer)."""
        assert self.process is not None
        pid, deadline = self.process.pid, time.monotonic() + timeout_s
        client = redis.Redis.from_url(self.url, socket_timeout=0.5)
        try:
            while True:
                try:
                    # PING first: a server loading its AOF refuses it, and answers INFO
                    if client.ping() and int(client.info("server")["process_id"]) == pid:
                        return
                    raise PortTaken(f"another process answers on port {self.port}")
                except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
                    pass
                if self.process.poll() is not None:
                    if "Address already in use" in self._log(self.log_start):
                        raise PortTaken(f"port {self.port} was taken before redis-server bound it")
                    raise AssertionError(f"redis died:\n{self._log(self.log_start)[-2000:]}")
                if time.monotonic() > deadline:
                    raise TimeoutError("redis-server did not start")
                time.sleep(0.02)
        finally:
            client.close()

    def _log(self, start: int = 0) -> str:
        """The server's log from byte `start` (what this start wrote: `log_start`)."""
        try:
            with (self.data_dir / "redis.log").open("rb") as log:
                log.seek(start)
                return log.read().decode(errors="replace")
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final fsync; what survives is what the AOF held."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)

    def suspend(self) -> None:
        """SIGSTOP: the server hangs with its sockets open (a stall, not a refusal)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
